//! `[[assets]]`: the signals of one machine, their windows, detectors and model
//! bindings; and the implicit asset of each polling driver's link health.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use edge_driver_api::config::{Diagnostic, Diagnostics, NodeValue, Spanned, TableReader, closest};
use edge_driver_api::health::HealthConfig;
use edge_driver_api::{SignalId, SignalPattern, SignalRegistry};
use edge_models::{
    Band, DetectorSpec, Direction, Feature, FeatureConfig, MAX_BANDS, ThresholdSpec, WindowSpec,
};

use super::check_name;
use super::detectors::read_detector;
use super::drivers::Parsed;
use super::models::{ModelLoader, read_model_binding};
use crate::pipeline::{AssetCfg, DetectorCfg, RunningCfg, WindowCfg};

/// A window of an asset, as detectors and model bindings refer to it.
pub(super) struct AssetWindow {
    pub(super) signal: String,
    pub(super) bands: Vec<String>,
    /// The most samples it holds.
    pub(super) capacity: usize,
}

/// Reads every `[[assets]]` section; `names` collects the asset names.
pub(super) fn read(
    root: &mut TableReader<'_>,
    registry: &mut SignalRegistry,
    patterns: &[(String, SignalPattern)],
    names: &mut HashSet<String>,
    loader: &mut ModelLoader,
) -> Vec<AssetCfg> {
    let mut assets = Vec::new();
    for mut a in root.tables("assets") {
        if let Some(asset) = read_asset(&mut a, registry, patterns, names, loader) {
            assets.push(asset);
        }
    }
    assets
}

fn read_asset(
    a: &mut TableReader<'_>,
    registry: &mut SignalRegistry,
    patterns: &[(String, SignalPattern)],
    names: &mut HashSet<String>,
    loader: &mut ModelLoader,
) -> Option<AssetCfg> {
    let name = a.req_string("name");
    let mut ok = name.as_ref().is_none_or(|n| unique_name(a, n, names));
    // Windows, one per signal.
    let mut windows: Vec<WindowCfg> = Vec::new();
    let mut window_signals: Vec<AssetWindow> = Vec::new();
    for mut s in a.tables("signals") {
        match read_signal(&mut s, registry, patterns, &window_signals) {
            Some((w, aw, good)) => {
                windows.push(w);
                window_signals.push(aw);
                ok &= good;
            }
            None => ok = false,
        }
    }
    let mut det_names: HashSet<String> = HashSet::new();
    let mut detectors = Vec::new();
    for mut d in a.tables("detectors") {
        match read_detector(&mut d, registry, &window_signals, &mut det_names) {
            Some(det) => detectors.push(det),
            None => ok = false,
        }
    }
    let mut model_names: HashSet<String> = HashSet::new();
    let mut models = Vec::new();
    for mut m in a.tables("models") {
        match read_model_binding(&mut m, &window_signals, loader, &mut model_names) {
            Some(b) => models.push(b),
            None => ok = false,
        }
    }
    for b in models.iter().filter(|b| det_names.contains(&*b.name)) {
        a.error(
            a.span(),
            "models",
            format!(
                "model binding `{}` has the name of a detector of this asset",
                b.name
            ),
        )
        .hint("alerts are named by detector; rename one of them")
        .emit();
        ok = false;
    }
    let running = match a.table("running") {
        Some(mut r) => {
            let running = read_running(&mut r, &window_signals);
            ok &= running.is_some();
            running
        }
        None => None,
    };
    let name = name?;
    ok.then(|| AssetCfg {
        name: Arc::from(name.value.as_str()),
        windows,
        detectors,
        models,
        running,
    })
}

/// `running = { signal, above, settle = "15m", step = 0.1 }`.
fn read_running(r: &mut TableReader<'_>, windows: &[AssetWindow]) -> Option<RunningCfg> {
    let signal = r.req_string("signal");
    let above = r.req_f64("above");
    let settle = r
        .duration("settle")
        .map_or(Duration::from_secs(900), |d| d.value);
    let step = r.f64_in("step", 0.0, 10.0).map_or(0.1, |v| v.value);
    let signal = signal?;
    let Some(window) = windows.iter().position(|w| w.signal == signal.value) else {
        r.error(
            signal.span,
            "signal",
            format!(
                "`{}` has no window in this asset; the running state is read from its mean",
                signal.value
            ),
        )
        .hint("add an [[assets.signals]] entry for it, or name one of this asset's signals")
        .emit();
        return None;
    };
    Some(RunningCfg {
        window,
        above: above?.value,
        settle_s: settle.as_secs_f64(),
        step,
    })
}

/// A valid asset name not used before (it is added to `names`).
fn unique_name(a: &TableReader<'_>, n: &Spanned<String>, names: &mut HashSet<String>) -> bool {
    let mut ok = check_name(a, "name", n);
    if !names.insert(n.value.clone()) {
        a.error(
            n.span,
            "name",
            format!("asset name `{}` is used twice", n.value),
        )
        .hint("merge the two [[assets]] sections or rename one")
        .emit();
        ok = false;
    }
    ok
}

/// One `[[assets.signals]]` entry: the signal's window and features, and whether
/// its bands were all valid (a window with a bad band is still there for the
/// detectors that name its signal).
fn read_signal(
    s: &mut TableReader<'_>,
    registry: &mut SignalRegistry,
    patterns: &[(String, SignalPattern)],
    seen: &[AssetWindow],
) -> Option<(WindowCfg, AssetWindow, bool)> {
    let sig = s.req_string("signal")?;
    // A name of a run-time family (an MQTT topic template) is interned now.
    if registry.get(&sig.value).is_none()
        && let Some((driver, p)) = patterns.iter().find(|(_, p)| p.matches(&sig.value))
    {
        let _ = registry.intern(&p.decl(&sig.value), driver);
    }
    let id = resolve_signal(s, "signal", &sig, registry)?;
    if registry.meta(id).text {
        s.error(
            sig.span,
            "signal",
            format!("`{}` is a text signal; it has no numbers to window", sig.value),
        )
        .hint("text signals (e.g. S7 STRING tags) are published as events when they change; remove this entry")
        .emit();
        return None;
    }
    if seen.iter().any(|w| w.signal == sig.value) {
        s.error(
            sig.span,
            "signal",
            format!("signal `{}` is listed twice in this asset", sig.value),
        )
        .hint("one [[assets.signals]] entry per signal")
        .emit();
        return None;
    }
    let spec = match s.table("window") {
        Some(mut w) => read_window(&mut w),
        None => Some(WindowSpec::Time {
            size_ns: 60_000_000_000,
            hop_ns: 10_000_000_000,
            max_samples: 4096,
        }),
    };
    let max_samples = s
        .int_in("max_samples", 2, 1_000_000)
        .map(|v| v.value as usize);
    let ewma_alpha = s
        .f64_in("ewma_alpha", 1e-6, 1.0)
        .map(|v| v.value)
        .unwrap_or(0.1);
    let (bands, bands_ok) = read_bands(s);
    let mut spec = spec?;
    if let (WindowSpec::Time { max_samples: m, .. }, Some(ms)) = (&mut spec, max_samples) {
        *m = ms;
    }
    let aw = AssetWindow {
        signal: sig.value.clone(),
        bands: bands.iter().map(|b| b.name.clone()).collect(),
        capacity: spec.capacity(),
    };
    let w = WindowCfg {
        signal: id,
        spec,
        features: FeatureConfig { ewma_alpha, bands },
    };
    Some((w, aw, bands_ok))
}

/// A signal's frequency bands (`bands = [{ name, lo_hz, hi_hz }]`), the valid
/// ones, and whether all were.
fn read_bands(s: &mut TableReader<'_>) -> (Vec<Band>, bool) {
    let mut ok = true;
    let mut bands: Vec<Band> = Vec::new();
    for mut b in s.tables("bands") {
        let bname = b.req_string("name");
        let lo = b.req_f64("lo_hz");
        let hi = b.req_f64("hi_hz");
        let (Some(bname), Some(lo), Some(hi)) = (bname, lo, hi) else {
            ok = false;
            continue;
        };
        if lo.value < 0.0 || hi.value <= lo.value {
            b.error(
                hi.span,
                "hi_hz",
                format!(
                    "band `{}` is empty: [{}, {}) Hz",
                    bname.value, lo.value, hi.value
                ),
            )
            .expected("0 ≤ lo_hz < hi_hz")
            .emit();
            ok = false;
        } else if bands.iter().any(|x| x.name == bname.value) {
            b.error(
                bname.span,
                "name",
                format!("band `{}` is defined twice", bname.value),
            )
            .emit();
            ok = false;
        } else {
            bands.push(Band {
                name: bname.value,
                lo_hz: lo.value,
                hi_hz: hi.value,
            });
        }
    }
    if bands.len() > MAX_BANDS {
        s.error(
            s.span(),
            "bands",
            format!("{} bands configured", bands.len()),
        )
        .expected(format!("at most {MAX_BANDS} bands per signal"))
        .emit();
        ok = false;
    }
    (bands, ok)
}

/// One implicit asset per polling driver: its link-health score against the
/// driver's `[drivers.health]` limits (Warning "sub-healthy", Critical).
pub(super) fn link_health(
    parsed: &[Parsed],
    registry: &SignalRegistry,
    names: &mut HashSet<String>,
    diags: &Diagnostics,
) -> Vec<AssetCfg> {
    let mut assets = Vec::new();
    for (name, _, p) in parsed {
        let Some(h) = p.link_health().filter(|h| h.alerts) else {
            continue;
        };
        let asset = link_asset_name(&name.value);
        if !names.insert(asset.clone()) {
            diags.push(
                Diagnostic::new(
                    name.span,
                    format!("drivers.{}", name.value),
                    format!(
                        "asset name `{asset}` is reserved for the link health of driver `{}`",
                        name.value
                    ),
                )
                .hint("rename that [[assets]] section, or set [drivers.health] alerts = false"),
            );
            continue;
        }
        if let Some(signal) = registry.get(&edge_driver_api::health::health_signal(&name.value)) {
            assets.push(link_health_asset(asset, signal, h));
        }
    }
    assets
}

pub(super) fn resolve_signal(
    r: &TableReader<'_>,
    key: &'static str,
    sig: &Spanned<String>,
    registry: &SignalRegistry,
) -> Option<SignalId> {
    if let Some(id) = registry.get(&sig.value) {
        return Some(id);
    }
    let mut b = r
        .error(sig.span, key, format!("unknown signal `{}`", sig.value))
        .expected("the name of a signal produced by one of the [[drivers]]");
    b = match closest(&sig.value, registry.names()) {
        Some(best) => b.hint(format!("did you mean `{best}`?")),
        None => {
            b.hint("run `edge-agent check-config --list-signals FILE` to see every signal name")
        }
    };
    b.emit();
    None
}

fn read_window(w: &mut TableReader<'_>) -> Option<WindowSpec> {
    let size = w.node("size");
    let hop = w.node("hop");
    let (Some(size), Some(hop)) = (size, hop) else {
        w.table_error("a window needs both `size` and `hop`")
            .expected("size = 256, hop = 128 (samples) or size = \"60s\", hop = \"10s\" (time)")
            .emit();
        return None;
    };
    enum Len {
        Count(i64),
        Time(Duration),
    }
    let max_samples = w
        .int_in("max_samples", 2, 1_000_000)
        .map(|v| v.value as usize);
    let read = |key: &str, node: &edge_driver_api::config::Node| -> Option<Len> {
        match &node.value {
            NodeValue::Int(n) => Some(Len::Count(*n)),
            NodeValue::Str(s) => match edge_driver_api::config::parse_duration(s) {
                Ok(d) => Some(Len::Time(d)),
                Err(msg) => {
                    w.error(
                        node.span,
                        key,
                        format!("window {key} \"{s}\" is not a duration: {msg}"),
                    )
                    .expected("a sample count (integer) or a duration string like \"10s\"")
                    .emit();
                    None
                }
            },
            other => {
                w.error(
                    node.span,
                    key,
                    format!(
                        "window {key} has the wrong type: found {}",
                        other.type_name()
                    ),
                )
                .expected("a sample count (integer) or a duration string like \"10s\"")
                .emit();
                None
            }
        }
    };
    let (s, h) = (read("size", size)?, read("hop", hop)?);
    match (s, h) {
        (Len::Count(s), Len::Count(h)) => {
            if !(2..=65_536).contains(&s) {
                w.error(
                    size.span,
                    "size",
                    format!("window size {s} is out of range"),
                )
                .expected("between 2 and 65536 samples")
                .emit();
                return None;
            }
            if h < 1 {
                w.error(hop.span, "hop", "window hop must be at least 1 sample")
                    .emit();
                return None;
            }
            if h > s {
                w.error(hop.span, "hop", format!("window hop ({h}) is larger than its size ({s})"))
                    .expected("hop ≤ size")
                    .hint("samples between windows would never be looked at; hop = size gives back-to-back windows")
                    .emit();
                return None;
            }
            Some(WindowSpec::Count {
                size: s as usize,
                hop: h as usize,
            })
        }
        (Len::Time(s), Len::Time(h)) => {
            if h.is_zero() || s.is_zero() {
                w.error(
                    hop.span,
                    "hop",
                    "window size and hop must be longer than zero",
                )
                .emit();
                return None;
            }
            if h > s {
                w.error(
                    hop.span,
                    "hop",
                    format!("window hop ({}) is larger than its size ({})", fmt_dur(h), fmt_dur(s)),
                )
                .expected("hop ≤ size")
                .hint("samples between windows would never be looked at; hop = size gives back-to-back windows")
                .emit();
                return None;
            }
            Some(WindowSpec::Time {
                size_ns: s.as_nanos() as u64,
                hop_ns: h.as_nanos() as u64,
                max_samples: max_samples.unwrap_or(4096),
            })
        }
        _ => {
            w.error(
                hop.span,
                "hop",
                "window `size` and `hop` must both be sample counts or both durations",
            )
            .expected("size = 256, hop = 128 or size = \"60s\", hop = \"10s\"")
            .emit();
            None
        }
    }
}

fn fmt_dur(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// The implicit asset that carries a driver's link-health alerts.
pub fn link_asset_name(driver: &str) -> String {
    format!("{driver}.link")
}

fn link_health_asset(name: String, signal: SignalId, h: &HealthConfig) -> AssetCfg {
    AssetCfg {
        name: Arc::from(name.as_str()),
        windows: vec![WindowCfg {
            signal,
            spec: WindowSpec::Time {
                size_ns: 5_000_000_000,
                hop_ns: 5_000_000_000,
                max_samples: 1024,
            },
            features: FeatureConfig::default(),
        }],
        detectors: vec![DetectorCfg {
            name: Arc::from("comm_health"),
            window: 0,
            feature: Feature::Last,
            feature_name: "last".into(),
            predictor: None,
            always: true,
            spec: DetectorSpec::Threshold(ThresholdSpec {
                direction: Direction::Below,
                warning: Some(h.warning),
                critical: Some(h.critical),
                hysteresis: 5.0,
                min_duration_s: 0.0,
            }),
        }],
        models: Vec::new(),
        running: None,
    }
}
