//! The `[[drivers]]` section of an OPC UA driver: the endpoint, its security, the
//! session's credentials and the tags.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use edge_driver_api::config::{Span, Spanned, TableReader};
use edge_driver_api::health::{CommStats, HealthConfig, comm_signal_decls};
use edge_driver_api::{DriverError, SignalDecl, SignalRegistry, WriteLimits};
use opcua::crypto::CertificateStore;
use opcua::types::{MessageSecurityMode, NodeId};

use crate::driver::{OpcuaFactory, Shared};

/// The security policies this driver offers (OPC UA Part 7 names).
pub const POLICIES: [(&str, Policy); 4] = [
    ("None", Policy::None),
    ("Basic256Sha256", Policy::Basic256Sha256),
    ("Aes128_Sha256_RsaOaep", Policy::Aes128Sha256RsaOaep),
    ("Aes256_Sha256_RsaPss", Policy::Aes256Sha256RsaPss),
];

/// A security policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    None,
    Basic256Sha256,
    Aes128Sha256RsaOaep,
    Aes256Sha256RsaPss,
}

impl Policy {
    /// The name async-opcua knows the policy by.
    pub fn stack_name(self) -> &'static str {
        match self {
            Policy::None => "None",
            Policy::Basic256Sha256 => "Basic256Sha256",
            Policy::Aes128Sha256RsaOaep => "Aes128-Sha256-RsaOaep",
            Policy::Aes256Sha256RsaPss => "Aes256-Sha256-RsaPss",
        }
    }
    /// The configuration's name.
    pub fn name(self) -> &'static str {
        POLICIES
            .iter()
            .find(|(_, p)| *p == self)
            .map(|(n, _)| *n)
            .unwrap_or("None")
    }
}

/// The message security modes.
pub const MODES: [(&str, MessageSecurityMode); 3] = [
    ("None", MessageSecurityMode::None),
    ("Sign", MessageSecurityMode::Sign),
    ("SignAndEncrypt", MessageSecurityMode::SignAndEncrypt),
];

/// How values are obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquisition {
    /// Monitored items in a subscription: the server reports changes.
    Subscribe,
    /// A Read of every tag each `poll`.
    Poll,
}

/// A deadband filter of a monitored item.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Deadband {
    Absolute(f64),
    /// Percent of the item's EURange (the server must know it).
    Percent(f64),
}

/// Where a tag's node is.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeRef {
    /// A NodeId (`ns=2;s=Line1.Temp`, `ns=3;i=1001`, `i=2258`).
    Id(NodeId),
    /// A browse path from the Objects folder: `2:Line1/2:Temp` (namespace index
    /// and browse name per element), resolved at connect.
    Path(String),
}

impl std::fmt::Display for NodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeRef::Id(n) => write!(f, "{n}"),
            NodeRef::Path(p) => write!(f, "/Objects/{p}"),
        }
    }
}

/// One `[[drivers.tags]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Tag {
    /// The signal (for an array slice, the first of `name.0 … name.N-1`).
    pub name: String,
    pub node: NodeRef,
    /// A text signal (String, LocalizedText, ... values, as events).
    pub text: bool,
    pub unit: Option<String>,
    /// For array values: the first element taken and how many (`index`,
    /// `elements`); the server sends only that slice (an IndexRange).
    pub index: Option<u32>,
    pub elements: u32,
    pub sampling: Duration,
    pub queue_size: u32,
    pub deadband: Option<Deadband>,
    /// `writable = true` and its limits (a numeric scalar tag only).
    pub write: Option<WriteLimits>,
    pub span: Span,
}

impl Tag {
    /// The signal names of this tag: its name, or `name.i` for an array slice.
    pub fn signal_names(&self) -> Vec<String> {
        if self.elements <= 1 && self.index.is_none() {
            return vec![self.name.clone()];
        }
        (0..self.elements.max(1))
            .map(|i| format!("{}.{i}", self.name))
            .collect()
    }

    /// The IndexRange asked of the server (`""` for the whole value).
    pub fn index_range(&self) -> String {
        match self.index {
            None => String::new(),
            Some(i) if self.elements <= 1 => i.to_string(),
            Some(i) => format!("{i}:{}", i + self.elements - 1),
        }
    }
}

/// Credentials: anonymous or user name and password (the password only from a
/// file or the environment).
#[derive(Clone, PartialEq)]
pub enum Identity {
    Anonymous,
    User { name: String, password: String },
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("Anonymous"),
            Identity::User { name, .. } => write!(f, "User({name}, password hidden)"),
        }
    }
}

/// Validated `opcua` configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct OpcuaConfig {
    pub name: String,
    pub endpoint: String,
    /// Host and port of the endpoint (reachability probes).
    pub host: String,
    pub port: u16,
    pub policy: Policy,
    pub mode: MessageSecurityMode,
    pub identity: Identity,
    /// The client's application URI: `urn:edge-agent:<driver>` unless set; a
    /// given `certificate` must carry it (subjectAltName URI).
    pub application_uri: String,
    /// The client's own certificate (DER or PEM) and private key (PEM); without
    /// them a self-signed pair is made in `pki_dir` at the first secure connect.
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// The certificate store: `trusted/` (servers this client trusts),
    /// `rejected/` (servers it refused), `own/` and `private/`.
    pub pki_dir: PathBuf,
    pub acquisition: Acquisition,
    pub publishing_interval: Duration,
    pub poll: Duration,
    pub timeout: Duration,
    /// Items per CreateMonitoredItems / Read call (the server's operation limit
    /// lowers it further when it announces one).
    pub max_items_per_call: usize,
    pub health: HealthConfig,
    pub tags: Vec<Tag>,
    pub span: Span,
}

/// The default certificate store of a packaged agent (systemd's StateDirectory).
pub const DEFAULT_PKI_DIR: &str = "/var/lib/edge-agent/opcua-pki";

impl OpcuaConfig {
    pub fn parse(r: &mut TableReader<'_>, name: &str) -> Option<OpcuaConfig> {
        let mut ok = true;
        let endpoint = r.req_string("endpoint");
        let hp = endpoint.as_ref().and_then(|e| check_endpoint(r, e));
        ok &= endpoint.is_none() || hp.is_some();
        let policy = r.choice("security_policy", &POLICIES);
        let mode = r.choice("security_mode", &MODES);
        let security = check_security(r, policy, mode);
        let identity = read_identity(r, &mut ok);
        let application_uri = r.string("application_uri");
        let certificate = client_certificate(r, application_uri.as_ref(), name, &mut ok);
        let private_key = private_key(r, &mut ok);
        if certificate.is_some() != private_key.is_some() {
            r.table_error("`certificate` and `private_key` go together")
                .hint("give both files, or neither (a self-signed pair is then made in `pki_dir`)")
                .emit();
            ok = false;
        }
        let application_uri = application_uri
            .map(|u| u.value)
            .unwrap_or_else(|| default_application_uri(name));
        let pki_dir = r
            .string("pki_dir")
            .map(|s| PathBuf::from(s.value))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PKI_DIR));
        let acquisition = r
            .choice(
                "acquisition",
                &[
                    ("subscribe", Acquisition::Subscribe),
                    ("poll", Acquisition::Poll),
                ],
            )
            .map(|v| v.value)
            .unwrap_or(Acquisition::Subscribe);
        let publishing_interval = positive(r, "publishing_interval", Duration::from_secs(1));
        let poll = positive(r, "poll", Duration::from_secs(1));
        let timeout = positive(r, "timeout", Duration::from_secs(5));
        let max_items_per_call = r
            .int_in("max_items_per_call", 1, 100_000)
            .map(|v| v.value as usize)
            .unwrap_or(1000);
        let default_sampling = match acquisition {
            Acquisition::Subscribe => publishing_interval,
            Acquisition::Poll => poll,
        };
        let tags = read_tags(r, default_sampling, &mut ok);
        let period = match acquisition {
            Acquisition::Subscribe => publishing_interval,
            Acquisition::Poll => poll,
        };
        let health = HealthConfig::parse(r, period, timeout);
        let (endpoint, (host, port), (policy, mode)) = (endpoint?, hp?, security?);
        ok.then(|| OpcuaConfig {
            name: name.to_string(),
            endpoint: endpoint.value,
            host,
            port,
            policy,
            mode,
            identity: identity.unwrap_or(Identity::Anonymous),
            application_uri,
            certificate,
            private_key,
            pki_dir,
            acquisition,
            publishing_interval,
            poll,
            timeout,
            max_items_per_call,
            health,
            tags,
            span: r.span(),
        })
    }

    /// Every tag's signals, then the link statistics.
    pub fn signals(&self) -> Vec<SignalDecl> {
        let mut out = Vec::new();
        for t in &self.tags {
            for name in t.signal_names() {
                out.push(SignalDecl {
                    name,
                    unit: t.unit.clone(),
                    span: t.span,
                    text: t.text,
                    address: Some(match t.index {
                        Some(_) => format!("{} [{}]", t.node, t.index_range()),
                        None => t.node.to_string(),
                    }),
                });
            }
        }
        out.extend(comm_signal_decls(&self.name, self.span));
        out
    }

    pub fn into_factory(self, registry: &SignalRegistry) -> Result<OpcuaFactory, DriverError> {
        let period = match self.acquisition {
            Acquisition::Subscribe => self.publishing_interval,
            Acquisition::Poll => self.poll,
        };
        let stats = CommStats::new(&self.name, self.health.clone(), period, registry)?;
        let mut ids = Vec::with_capacity(self.tags.len());
        for t in &self.tags {
            let mut v = Vec::new();
            for n in t.signal_names() {
                v.push(registry.get(&n).ok_or_else(|| {
                    DriverError::config(format!("signal `{n}` was not registered"))
                })?);
            }
            ids.push(v);
        }
        Ok(OpcuaFactory {
            shared: Arc::new(Shared {
                cfg: self,
                stats,
                ids: ids.into_iter().map(Vec::into_boxed_slice).collect(),
            }),
        })
    }
}

/// `opc.tcp://host[:port][/path]` → host and port (4840 by default).
fn check_endpoint(r: &TableReader<'_>, e: &Spanned<String>) -> Option<(String, u16)> {
    match split_endpoint(&e.value) {
        Ok(hp) => Some(hp),
        Err(why) => {
            r.error(
                e.span,
                "endpoint",
                format!("`{}` is not an OPC UA endpoint: {why}", e.value),
            )
            .expected("opc.tcp://host:port/path, e.g. \"opc.tcp://192.0.2.10:4840\"")
            .emit();
            None
        }
    }
}

/// Splits an endpoint URL into host and port.
pub fn split_endpoint(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("opc.tcp://")
        .ok_or("it does not start with `opc.tcp://`")?;
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']').ok_or("an unclosed `[` in the host")?;
        (h.to_string(), p.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    let port = match port {
        None => 4840,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or(format!("bad port `{p}`"))?,
    };
    Ok((host, port))
}

/// A policy without a mode gets SignAndEncrypt (None for policy None); the two must
/// agree: no security on one side and some on the other is an error.
fn check_security(
    r: &TableReader<'_>,
    policy: Option<Spanned<Policy>>,
    mode: Option<Spanned<MessageSecurityMode>>,
) -> Option<(Policy, MessageSecurityMode)> {
    let p = policy.as_ref().map(|p| p.value).unwrap_or(Policy::None);
    let m = mode
        .as_ref()
        .map(|m| m.value)
        .unwrap_or(if p == Policy::None {
            MessageSecurityMode::None
        } else {
            MessageSecurityMode::SignAndEncrypt
        });
    let none_policy = p == Policy::None;
    let none_mode = m == MessageSecurityMode::None;
    if none_policy != none_mode {
        let span = mode
            .as_ref()
            .map(|m| m.span)
            .or(policy.as_ref().map(|p| p.span));
        let msg = if none_policy {
            "security mode Sign / SignAndEncrypt needs a security policy".to_string()
        } else {
            format!(
                "security policy {} needs mode Sign or SignAndEncrypt",
                p.name()
            )
        };
        r.error(span.unwrap_or(r.span()), "security_mode", msg)
            .hint("set both: e.g. security_policy = \"Basic256Sha256\" and security_mode = \"SignAndEncrypt\", or both \"None\"")
            .emit();
        return None;
    }
    Some((p, m))
}

fn read_identity(r: &mut TableReader<'_>, ok: &mut bool) -> Option<Identity> {
    let user = r.string("username");
    let password = edge_driver_api::tls::read_password(r);
    match (user, password) {
        (Some(u), Some(p)) => Some(Identity::User {
            name: u.value,
            password: p,
        }),
        (None, None) => None,
        (Some(u), None) => {
            if !r.has("password_file") && !r.has("password_env") {
                r.error(u.span, "username", "a user name without a password")
                    .hint("add `password_file = \"/etc/edge-agent/opcua.pw\"` or `password_env = \"OPCUA_PASSWORD\"`")
                    .emit();
            }
            *ok = false;
            None
        }
        (None, Some(_)) => {
            r.table_error("a password without a `username`")
                .hint("add `username = \"...\"`")
                .emit();
            *ok = false;
            None
        }
    }
}

/// The application URI of driver `name` when the configuration gives none.
pub fn default_application_uri(name: &str) -> String {
    format!("urn:edge-agent:{name}")
}

/// `certificate`: a readable X.509 certificate (`.der` or `.pem`, as the stack
/// reads them) that carries the client's application URI.
fn client_certificate(
    r: &mut TableReader<'_>,
    uri: Option<&Spanned<String>>,
    name: &str,
    ok: &mut bool,
) -> Option<PathBuf> {
    let s = r.string("certificate")?;
    let path = PathBuf::from(&s.value);
    if let Err(e) = std::fs::File::open(&path) {
        r.error(s.span, "certificate", format!("cannot read `{}`: {e}", s.value))
            .hint("give the path of the client's X.509 certificate (`.der` or `.pem`), readable by the agent's user")
            .emit();
        *ok = false;
        return None;
    }
    let cert = match CertificateStore::read_cert(&path) {
        Ok(c) => c,
        Err(e) => {
            r.error(
                s.span,
                "certificate",
                format!("cannot read the certificate `{}`: {e}", s.value),
            )
            .hint("give an X.509 certificate the agent's user can read, as a `.der` or `.pem` file")
            .emit();
            *ok = false;
            return None;
        }
    };
    let want = uri
        .map(|u| u.value.clone())
        .unwrap_or_else(|| default_application_uri(name));
    if cert.is_application_uri_valid(&want).is_err() {
        r.error(s.span, "certificate", format!("the certificate does not carry the application URI `{want}`"))
            .hint("set `application_uri` to the URI in the certificate's subjectAltName (OPC UA servers check that they match)")
            .emit();
        *ok = false;
        return None;
    }
    Some(path)
}

/// `private_key`: a readable PEM private key.
fn private_key(r: &mut TableReader<'_>, ok: &mut bool) -> Option<PathBuf> {
    let s = r.string("private_key")?;
    let path = PathBuf::from(&s.value);
    if let Err(e) = std::fs::File::open(&path) {
        r.error(
            s.span,
            "private_key",
            format!("cannot read `{}`: {e}", s.value),
        )
        .hint("give the path of the certificate's private key (PEM), readable by the agent's user")
        .emit();
        *ok = false;
        return None;
    }
    if let Err(e) = CertificateStore::read_pkey(&path) {
        r.error(s.span, "private_key", format!("cannot read the private key `{}`: {e}", s.value))
            .hint("give the certificate's RSA private key, PEM (PKCS#1 or PKCS#8), readable by the agent's user")
            .emit();
        *ok = false;
        return None;
    }
    Some(path)
}

/// An optional duration of at least 1 ms.
fn positive(r: &mut TableReader<'_>, key: &'static str, default: Duration) -> Duration {
    match r.duration(key) {
        Some(d) if d.value < Duration::from_millis(1) => {
            r.error(d.span, key, format!("`{key}` must be at least 1ms"))
                .expected("a duration such as \"500ms\" or \"1s\"")
                .emit();
            default
        }
        Some(d) => d.value,
        None => default,
    }
}

fn read_tags(r: &mut TableReader<'_>, default_sampling: Duration, ok: &mut bool) -> Vec<Tag> {
    let readers = r.tables("tags");
    if readers.is_empty() {
        r.table_error("an opcua driver needs at least one tag")
            .hint("add [[drivers.tags]] with name and node; `edge-agent opcua browse --endpoint URL` prints them ready to paste")
            .emit();
        *ok = false;
    }
    let mut tags = Vec::new();
    for mut t in readers {
        match read_tag(&mut t, default_sampling) {
            Some(tag) => tags.push(tag),
            None => *ok = false,
        }
    }
    tags
}

fn read_tag(t: &mut TableReader<'_>, default_sampling: Duration) -> Option<Tag> {
    let name = t.req_string("name");
    let node = read_node(t);
    let text = t
        .choice("type", &[("number", false), ("text", true)])
        .map(|v| v.value)
        .unwrap_or(false);
    let unit = t.string("unit").map(|u| u.value);
    let index = t
        .int_in("index", 0, u32::MAX as i64)
        .map(|v| v.value as u32);
    let elements = t.int_in("elements", 1, 4096);
    let sampling = t
        .duration("sampling")
        .map(|d| d.value)
        .unwrap_or(default_sampling);
    let queue_size = t.int_in("queue_size", 1, 10_000);
    let deadband = read_deadband(t);
    let write = WriteLimits::parse(t);
    if write.is_some() && (text || index.is_some()) {
        t.table_error("only a numeric scalar tag can be written")
            .hint("remove `writable` (text tags and array slices are read-only)")
            .emit();
        return None;
    }
    if let (Some(e), None) = (&elements, index) {
        t.error(e.span, "elements", "`elements` without `index`")
            .hint("add `index = 0` to take the array from its first element")
            .emit();
        return None;
    }
    let deadband = deadband?;
    if text && deadband.is_some() {
        t.table_error("a deadband on a text tag")
            .hint("deadbands filter numbers; remove `deadband` or set `type = \"number\"`")
            .emit();
        return None;
    }
    Some(Tag {
        name: name?.value,
        node: node?,
        text,
        unit,
        index,
        elements: elements.map(|e| e.value as u32).unwrap_or(1),
        sampling,
        queue_size: queue_size.map(|q| q.value as u32).unwrap_or(10),
        deadband,
        write,
        span: t.span(),
    })
}

/// `node = "ns=2;s=Line1.Temp"` or `path = "2:Line1/2:Temp"`, exactly one.
fn read_node(t: &mut TableReader<'_>) -> Option<NodeRef> {
    let node = t.string("node");
    let path = t.string("path");
    match (node, path) {
        (Some(n), None) => match NodeId::from_str(n.value.trim()) {
            Ok(id) => Some(NodeRef::Id(id)),
            Err(_) => {
                t.error(n.span, "node", format!("`{}` is not a NodeId", n.value))
                    .expected("ns=<index>;s=<name>, ns=<index>;i=<number>, ns=<index>;g=<guid> or ns=<index>;b=<base64>, e.g. \"ns=2;s=Line1.Temp\"")
                    .emit();
                None
            }
        },
        (None, Some(p)) => match check_path(&p.value) {
            Ok(()) => Some(NodeRef::Path(p.value.trim_start_matches('/').to_string())),
            Err(why) => {
                t.error(p.span, "path", format!("`{}` is not a browse path: {why}", p.value))
                    .expected("browse names from the Objects folder, each with its namespace index: \"2:Line1/2:Temp\"")
                    .emit();
                None
            }
        },
        (Some(n), Some(_)) => {
            t.error(n.span, "node", "both `node` and `path`")
                .hint("keep one: `node` (a NodeId) or `path` (a browse path)")
                .emit();
            None
        }
        (None, None) => {
            t.table_error("a tag needs `node` or `path`")
                .hint("add e.g. node = \"ns=2;s=Line1.Temp\"")
                .emit();
            None
        }
    }
}

/// Each element of a browse path is `ns:Name` or `Name` (namespace 0).
pub fn check_path(p: &str) -> Result<(), String> {
    let p = p.trim_start_matches('/');
    if p.is_empty() {
        return Err("it is empty".into());
    }
    for el in p.split('/') {
        let name = match el.split_once(':') {
            Some((ns, name)) => {
                ns.parse::<u16>()
                    .map_err(|_| format!("`{ns}` in `{el}` is not a namespace index"))?;
                name
            }
            None => el,
        };
        if name.is_empty() {
            return Err(format!("an empty browse name in `{p}`"));
        }
    }
    Ok(())
}

fn read_deadband(t: &mut TableReader<'_>) -> Option<Option<Deadband>> {
    let value = t.f64("deadband");
    let kind = t.choice("deadband_type", &[("absolute", false), ("percent", true)]);
    let Some(v) = value else {
        if let Some(k) = kind {
            t.error(
                k.span,
                "deadband_type",
                "`deadband_type` without `deadband`",
            )
            .hint("add `deadband = <amount>`")
            .emit();
            return None;
        }
        return Some(None);
    };
    let percent = kind.map(|k| k.value).unwrap_or(false);
    if v.value < 0.0 || (percent && v.value > 100.0) {
        t.error(
            v.span,
            "deadband",
            format!("deadband {} is out of range", v.value),
        )
        .expected(if percent {
            "0 to 100 (percent of the EURange)"
        } else {
            "a non-negative amount in the value's units"
        })
        .emit();
        return None;
    }
    Some(Some(if percent {
        Deadband::Percent(v.value)
    } else {
        Deadband::Absolute(v.value)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_driver_api::config::Diagnostics;

    fn parse(src: &str) -> (Option<OpcuaConfig>, Vec<String>) {
        let table = edge_driver_api::config::parse_document(src).expect("toml");
        let diags = Diagnostics::new();
        let c = {
            let mut r = TableReader::new(&table, "drivers.plc", &diags);
            OpcuaConfig::parse(&mut r, "plc")
        };
        let msgs = diags.into_vec().into_iter().map(|d| d.message).collect();
        (c, msgs)
    }

    const TAG: &str = "[[tags]]\nname = \"l1.temp\"\nnode = \"ns=2;s=Line1.Temp\"\n";

    #[test]
    fn a_plain_endpoint_defaults_to_no_security_and_subscriptions() {
        let (c, d) = parse(&format!("endpoint = \"opc.tcp://127.0.0.1:4840/x\"\n{TAG}"));
        assert!(d.is_empty(), "{d:?}");
        let c = c.expect("valid");
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 4840));
        assert_eq!(c.policy, Policy::None);
        assert_eq!(c.mode, MessageSecurityMode::None);
        assert_eq!(c.acquisition, Acquisition::Subscribe);
        assert_eq!(c.tags[0].signal_names(), vec!["l1.temp"]);
    }

    #[test]
    fn endpoints_are_checked() {
        assert_eq!(split_endpoint("opc.tcp://plc"), Ok(("plc".into(), 4840)));
        assert_eq!(
            split_endpoint("opc.tcp://[::1]:4841/a"),
            Ok(("::1".into(), 4841))
        );
        assert!(split_endpoint("http://plc:4840").is_err());
        assert!(split_endpoint("opc.tcp://plc:x").is_err());
        let (c, d) = parse(&format!("endpoint = \"tcp://plc\"\n{TAG}"));
        assert!(c.is_none());
        assert!(d[0].contains("not an OPC UA endpoint"), "{d:?}");
    }

    #[test]
    fn security_policy_and_mode_must_agree() {
        let (c, _) = parse(&format!(
            "endpoint = \"opc.tcp://h:1\"\nsecurity_policy = \"Basic256Sha256\"\n{TAG}"
        ));
        assert_eq!(c.expect("valid").mode, MessageSecurityMode::SignAndEncrypt);
        let (c, d) = parse(&format!(
            "endpoint = \"opc.tcp://h:1\"\nsecurity_policy = \"None\"\nsecurity_mode = \"Sign\"\n{TAG}"
        ));
        assert!(c.is_none());
        assert!(d[0].contains("needs a security policy"), "{d:?}");
        let (_, d) = parse(&format!(
            "endpoint = \"opc.tcp://h:1\"\nsecurity_policy = \"Basic256\"\n{TAG}"
        ));
        assert!(d[0].contains("not a valid value"), "{d:?}");
    }

    #[test]
    fn bad_node_ids_and_paths_are_config_errors() {
        let (c, d) = parse(
            "endpoint = \"opc.tcp://h:1\"\n[[tags]]\nname = \"a\"\nnode = \"ns=2;x=1\"\n[[tags]]\nname = \"b\"\npath = \"x:Line1\"\n[[tags]]\nname = \"c\"\n",
        );
        assert!(c.is_none());
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].contains("is not a NodeId"));
        assert!(d[1].contains("is not a browse path"));
        assert!(d[2].contains("needs `node` or `path`"));
    }

    #[test]
    fn array_slices_name_one_signal_per_element() {
        let (c, d) = parse(
            "endpoint = \"opc.tcp://h:1\"\n[[tags]]\nname = \"v\"\nnode = \"ns=2;s=Spec\"\nindex = 2\nelements = 3\n",
        );
        assert!(d.is_empty(), "{d:?}");
        let t = &c.expect("valid").tags[0];
        assert_eq!(t.signal_names(), vec!["v.0", "v.1", "v.2"]);
        assert_eq!(t.index_range(), "2:4");
    }

    #[test]
    fn a_user_needs_a_password_from_a_file_or_the_environment() {
        let (c, d) = parse(&format!(
            "endpoint = \"opc.tcp://h:1\"\nusername = \"op\"\n{TAG}"
        ));
        assert!(c.is_none());
        assert!(d[0].contains("without a password"), "{d:?}");
        let (c, d) = parse(&format!(
            "endpoint = \"opc.tcp://h:1\"\nusername = \"op\"\npassword_env = \"EDGE_OPCUA_TEST_UNSET\"\n{TAG}"
        ));
        assert!(c.is_none());
        assert!(d[0].contains("is not set"), "{d:?}");
    }

    #[test]
    fn a_missing_certificate_file_is_reported() {
        let (c, d) = parse(&format!(
            "endpoint = \"opc.tcp://h:1\"\nsecurity_policy = \"Basic256Sha256\"\ncertificate = \"/nonexistent/c.der\"\nprivate_key = \"/nonexistent/k.pem\"\n{TAG}"
        ));
        assert!(c.is_none());
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("cannot read `/nonexistent/c.der`"), "{d:?}");
    }

    #[test]
    fn a_file_that_is_no_certificate_or_key_is_reported() {
        let dir = std::env::temp_dir().join(format!("opcua-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert, key) = (dir.join("c.der"), dir.join("k.pem"));
        std::fs::write(&cert, "not a certificate").expect("write");
        std::fs::write(&key, "not a key").expect("write");
        let (c, d) = parse(&format!(
            "endpoint = \"opc.tcp://h:1\"\nsecurity_policy = \"Basic256Sha256\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n{TAG}",
            cert.display(),
            key.display()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(c.is_none());
        assert!(d[0].starts_with("cannot read the certificate"), "{d:?}");
        assert!(d[1].starts_with("cannot read the private key"), "{d:?}");
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let id = Identity::User {
            name: "op".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{id:?}").contains("s3cret"));
    }
}
