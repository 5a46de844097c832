//! `host`: the gateway's own health, from `/proc` and `/sys`.
//!
//! ```toml
//! [[drivers]]
//! name = "host"
//! kind = "host"
//! interval = "5s"
//! prefix = "host"                      # signal names start with this
//! mounts = ["/", "/var/lib/edge-agent"]
//! thermal = true
//! ```
//!
//! Signals: `host.cpu.usage_pct`, `host.mem.used_pct`, `host.load.1m|5m|15m`,
//! `host.disk.<label>.used_pct` per mount (label `root` for `/`, otherwise the path
//! with `/` replaced by `_`), and `host.temp.<zone>_c` per thermal zone found at
//! start-up. A source that cannot be read (a file missing on this kernel, a mount
//! that went away) yields a bad-quality sample and one warning, never an error: the
//! disk filling up at 3 a.m. must still be reported when the thermal zone is missing.
//!
//! `proc_root` / `sys_root` read another tree (a container with the host's `/proc`
//! mounted elsewhere, or tests).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edge_driver_api::config::{Span, TableReader};
use edge_driver_api::{
    BadReason, BoxFuture, Driver, DriverContext, DriverError, DriverFactory, Sample, SignalDecl,
    SignalId, SignalRegistry, Timestamp,
};

/// Validated `host` configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct HostConfig {
    pub interval: Duration,
    pub prefix: String,
    pub mounts: Vec<(String, PathBuf)>,
    pub thermal: bool,
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
    pub span: Span,
}

/// A thermal zone: its directory and signal label.
#[derive(Clone, Debug, PartialEq)]
struct Zone {
    dir: PathBuf,
    label: String,
}

fn mount_label(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        "root".to_string()
    } else {
        trimmed.replace('/', "_")
    }
}

impl HostConfig {
    pub fn parse(r: &mut TableReader<'_>) -> Option<HostConfig> {
        let interval = r
            .duration("interval")
            .map(|d| d.value)
            .unwrap_or(Duration::from_secs(5));
        let mut ok = true;
        if interval < Duration::from_millis(100) {
            r.error(r.span(), "interval", "`interval` must be at least 100ms")
                .hint("the host driver reads files in /proc; once per second or slower is plenty")
                .emit();
            ok = false;
        }
        let prefix = r
            .string("prefix")
            .map(|s| s.value)
            .unwrap_or_else(|| "host".into());
        let mut mounts = Vec::new();
        let mut labels = HashSet::new();
        for m in r
            .strings("mounts")
            .unwrap_or_else(|| vec![edge_driver_api::config::Spanned::new("/".into(), r.span())])
        {
            if !m.value.starts_with('/') {
                r.error(
                    m.span,
                    "mounts",
                    format!("mount `{}` is not an absolute path", m.value),
                )
                .expected("an absolute path such as \"/\" or \"/var/lib/edge-agent\"")
                .emit();
                ok = false;
                continue;
            }
            let label = mount_label(&m.value);
            if !labels.insert(label.clone()) {
                r.error(
                    m.span,
                    "mounts",
                    format!("mount `{}` is listed twice", m.value),
                )
                .hint("remove the duplicate")
                .emit();
                ok = false;
                continue;
            }
            mounts.push((label, PathBuf::from(m.value)));
        }
        let thermal = r.bool("thermal").map(|b| b.value).unwrap_or(true);
        let proc_root = r
            .string("proc_root")
            .map(|s| s.value)
            .unwrap_or_else(|| "/proc".into());
        let sys_root = r
            .string("sys_root")
            .map(|s| s.value)
            .unwrap_or_else(|| "/sys".into());
        ok.then(|| HostConfig {
            interval,
            prefix,
            mounts,
            thermal,
            proc_root: proc_root.into(),
            sys_root: sys_root.into(),
            span: r.span(),
        })
    }

    fn zones(&self) -> Vec<Zone> {
        if !self.thermal {
            return Vec::new();
        }
        let base = self.sys_root.join("class/thermal");
        let Ok(rd) = std::fs::read_dir(&base) else {
            return Vec::new();
        };
        let mut dirs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("thermal_zone"))
            })
            .collect();
        dirs.sort();
        let mut seen = HashSet::new();
        dirs.into_iter()
            .map(|dir| {
                let kind = std::fs::read_to_string(dir.join("type"))
                    .map(|s| sanitize(s.trim()))
                    .unwrap_or_default();
                let zone = dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("zone")
                    .to_string();
                let mut label = if kind.is_empty() { zone.clone() } else { kind };
                if !seen.insert(label.clone()) {
                    label = format!("{label}_{}", zone.trim_start_matches("thermal_zone"));
                }
                Zone { dir, label }
            })
            .collect()
    }

    /// The signals this driver produces (thermal zones are discovered now).
    pub fn signals(&self) -> Vec<SignalDecl> {
        let p = &self.prefix;
        let decl = |name: String, unit: &str, at: String| SignalDecl {
            text: false,
            name,
            unit: Some(unit.to_string()),
            span: self.span,
            address: Some(at),
        };
        let mut out = vec![
            decl(format!("{p}.cpu.usage_pct"), "%", "/proc/stat".into()),
            decl(format!("{p}.mem.used_pct"), "%", "/proc/meminfo".into()),
            decl(format!("{p}.load.1m"), "", "/proc/loadavg".into()),
            decl(format!("{p}.load.5m"), "", "/proc/loadavg".into()),
            decl(format!("{p}.load.15m"), "", "/proc/loadavg".into()),
        ];
        for (label, path) in &self.mounts {
            let at = format!("statvfs {}", path.display());
            out.push(decl(format!("{p}.disk.{label}.used_pct"), "%", at));
        }
        for z in self.zones() {
            let at = z.dir.join("temp").display().to_string();
            out.push(decl(format!("{p}.temp.{}_c", z.label), "degC", at));
        }
        out
    }

    pub fn into_factory(self, registry: &SignalRegistry) -> Result<HostFactory, DriverError> {
        let id = |name: String| {
            registry
                .get(&name)
                .ok_or_else(|| DriverError::config(format!("signal `{name}` was not registered")))
        };
        let p = self.prefix.clone();
        let ids = Ids {
            cpu: id(format!("{p}.cpu.usage_pct"))?,
            mem: id(format!("{p}.mem.used_pct"))?,
            load: [
                id(format!("{p}.load.1m"))?,
                id(format!("{p}.load.5m"))?,
                id(format!("{p}.load.15m"))?,
            ],
            disks: self
                .mounts
                .iter()
                .map(|(label, path)| Ok((id(format!("{p}.disk.{label}.used_pct"))?, path.clone())))
                .collect::<Result<_, DriverError>>()?,
            zones: self
                .zones()
                .into_iter()
                .map(|z| Ok((id(format!("{p}.temp.{}_c", z.label))?, z.dir)))
                .collect::<Result<_, DriverError>>()?,
        };
        Ok(HostFactory {
            shared: Arc::new((self, ids)),
        })
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Debug)]
struct Ids {
    cpu: SignalId,
    mem: SignalId,
    load: [SignalId; 3],
    disks: Vec<(SignalId, PathBuf)>,
    zones: Vec<(SignalId, PathBuf)>,
}

/// Creates host drivers.
#[derive(Debug, Clone)]
pub struct HostFactory {
    shared: Arc<(HostConfig, Ids)>,
}

impl DriverFactory for HostFactory {
    fn kind(&self) -> &'static str {
        "host"
    }
    fn create(&self) -> Result<Box<dyn Driver>, DriverError> {
        Ok(Box::new(HostDriver {
            shared: self.shared.clone(),
        }))
    }
}

struct HostDriver {
    shared: Arc<(HostConfig, Ids)>,
}

impl Driver for HostDriver {
    fn run(self: Box<Self>, ctx: DriverContext) -> BoxFuture<'static, Result<(), DriverError>> {
        Box::pin(run(self.shared, ctx))
    }
}

/// CPU jiffies: (busy, total).
fn read_cpu(proc_root: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(proc_root.join("stat")).ok()?;
    parse_cpu(&text)
}

/// Parses the aggregate `cpu` line of /proc/stat into (busy, total) jiffies.
pub fn parse_cpu(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let vals: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if vals.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is already in user).
    let total: u64 = vals.iter().take(8).sum();
    let idle = vals[3] + vals.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Parses /proc/meminfo into used % (MemTotal − MemAvailable, or free+buffers+cached
/// on kernels before 3.14 that lack MemAvailable).
pub fn parse_mem(text: &str) -> Option<f64> {
    let field = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    let total = field("MemTotal")?;
    if total <= 0.0 {
        return None;
    }
    let available = field("MemAvailable").or_else(|| {
        Some(field("MemFree")? + field("Buffers").unwrap_or(0.0) + field("Cached").unwrap_or(0.0))
    })?;
    Some(((total - available) / total * 100.0).clamp(0.0, 100.0))
}

/// Parses /proc/loadavg.
pub fn parse_load(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Disk used % as `df` shows it: used / (used + available to unprivileged users).
#[allow(unsafe_code)]
pub fn disk_used_pct(path: &Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized,
    // writable statvfs struct (all-zero is a valid bit pattern for it).
    let (rc, st) = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        let rc = libc::statvfs(c.as_ptr(), &mut st);
        (rc, st)
    };
    if rc != 0 {
        return None;
    }
    let used = st.f_blocks.saturating_sub(st.f_bfree) as f64;
    let avail = st.f_bavail as f64;
    if used + avail <= 0.0 {
        return None;
    }
    Some(used / (used + avail) * 100.0)
}

async fn run(shared: Arc<(HostConfig, Ids)>, ctx: DriverContext) -> Result<(), DriverError> {
    let (cfg, ids) = &*shared;
    let mut prev_cpu = read_cpu(&cfg.proc_root);
    let mut warned: HashSet<String> = HashSet::new();
    let mut batch: Vec<Sample> = Vec::with_capacity(8 + ids.disks.len() + ids.zones.len());
    let mut interval = tokio::time::interval(cfg.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = ctx.cancelled() => return Ok(()),
            _ = interval.tick() => {}
        }
        let ts = ctx.clock().now();
        batch.clear();
        let mut put = |id: SignalId, what: &str, v: Option<f64>, ts: Timestamp| match v {
            Some(v) => batch.push(Sample::new_f64(ts, id, v)),
            None => {
                if warned.insert(what.to_string()) {
                    tracing::warn!(
                        driver = ctx.name(),
                        source = what,
                        "host metric unavailable; reporting bad quality"
                    );
                }
                batch.push(Sample::bad(ts, id, BadReason::Other));
            }
        };
        let cpu_now = read_cpu(&cfg.proc_root);
        let cpu_pct = match (prev_cpu, cpu_now) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some((b1.saturating_sub(b0)) as f64 / (t1 - t0) as f64 * 100.0)
            }
            (Some(_), Some(_)) => None.or(Some(0.0)),
            _ => None,
        };
        if cpu_now.is_some() {
            prev_cpu = cpu_now;
        }
        put(ids.cpu, "cpu", cpu_pct, ts);
        let mem = std::fs::read_to_string(cfg.proc_root.join("meminfo"))
            .ok()
            .and_then(|t| parse_mem(&t));
        put(ids.mem, "meminfo", mem, ts);
        let load = std::fs::read_to_string(cfg.proc_root.join("loadavg"))
            .ok()
            .and_then(|t| parse_load(&t));
        for (i, id) in ids.load.iter().enumerate() {
            put(*id, "loadavg", load.map(|l| l[i]), ts);
        }
        for (id, path) in &ids.disks {
            put(
                *id,
                &format!("disk {}", path.display()),
                disk_used_pct(path),
                ts,
            );
        }
        for (id, dir) in &ids.zones {
            let v = std::fs::read_to_string(dir.join("temp"))
                .ok()
                .and_then(|t| t.trim().parse::<f64>().ok())
                .map(|milli| milli / 1000.0);
            put(*id, &format!("thermal {}", dir.display()), v, ts);
        }
        if ctx.send(&batch).await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests;
