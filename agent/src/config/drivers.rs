//! `[[drivers]]`: the one table of driver kinds, each section parsed by its
//! driver crate, its signals interned.
//!
//! A driver kind is one crate plus one row of [`driver_kinds!`] below (and its
//! cargo feature in `agent/Cargo.toml`).

use std::sync::Arc;

use edge_driver_api::config::{Diagnostic, Diagnostics, Span, Spanned, TableReader, closest};
use edge_driver_api::health::HealthConfig;
use edge_driver_api::{DriverError, DriverFactory, SignalDecl, SignalPattern, SignalRegistry};

use super::check_name;
use crate::ingest::latest::DescribeFn;

/// A configured driver instance.
#[derive(Clone)]
pub struct DriverInstance {
    pub name: Arc<str>,
    pub kind: &'static str,
    pub factory: Arc<dyn DriverFactory>,
}

impl std::fmt::Debug for DriverInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverInstance")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A driver section parsed by its crate, before signal interning.
pub(super) trait ParsedDriver {
    fn signals(&self) -> Vec<SignalDecl>;
    /// The link-health settings of a polling driver (which then publishes
    /// `<name>.comm.health`).
    fn link_health(&self) -> Option<&HealthConfig> {
        None
    }
    /// Families of signals named at run time (e.g. from MQTT topics); concrete
    /// names are interned when an asset uses them.
    fn patterns(&self) -> Vec<SignalPattern> {
        Vec::new()
    }
    fn into_factory(
        self: Box<Self>,
        registry: &SignalRegistry,
    ) -> Result<Arc<dyn DriverFactory>, DriverError>;
}

/// Reads one driver section (its `name` and `kind` already read).
type ParseFn = fn(&mut TableReader<'_>, &str) -> Option<Box<dyn ParsedDriver>>;

/// A driver kind edge-agent knows; `parse` is `None` when this build leaves it out.
struct DriverKind {
    name: &'static str,
    parse: Option<ParseFn>,
    exception: Option<DescribeFn>,
}

/// The table of driver kinds: per row the kind's name, its cargo feature, its
/// crate's config type and how to parse a section, and optionally the config's
/// link-health field, signal-pattern method and the crate's names for device
/// exception codes. Expands to the [`ParsedDriver`] implementations and to
/// [`kinds`].
macro_rules! driver_kinds {
    ($( $name:literal, $feat:literal, $ty:ty, $parse:expr $(, health = $h:ident)? $(, patterns = $p:ident)? $(, exception = $e:path)? ; )*) => {
        $(
            #[cfg(feature = $feat)]
            impl ParsedDriver for $ty {
                fn signals(&self) -> Vec<SignalDecl> {
                    <$ty>::signals(self)
                }
                $(
                    fn link_health(&self) -> Option<&HealthConfig> {
                        Some(&self.$h)
                    }
                )?
                $(
                    fn patterns(&self) -> Vec<SignalPattern> {
                        <$ty>::$p(self)
                    }
                )?
                fn into_factory(
                    self: Box<Self>,
                    registry: &SignalRegistry,
                ) -> Result<Arc<dyn DriverFactory>, DriverError> {
                    Ok(Arc::new(<$ty>::into_factory(*self, registry)?))
                }
            }
        )*

        /// Every driver kind, in this build or not.
        fn kinds() -> Vec<DriverKind> {
            let mut v = Vec::new();
            $(
                #[cfg(feature = $feat)]
                v.push(DriverKind {
                    name: $name,
                    parse: Some(|r, name| {
                        let parse: fn(&mut TableReader<'_>, &str) -> Option<$ty> = $parse;
                        parse(r, name).map(|c| Box::new(c) as Box<dyn ParsedDriver>)
                    }),
                    exception: None $(.or(Some($e as DescribeFn)))?,
                });
                #[cfg(not(feature = $feat))]
                v.push(DriverKind { name: $name, parse: None, exception: None });
            )*
            v
        }
    };
}

driver_kinds! {
    "sim", "sim", edge_driver_sim::SimConfig, |r, _| edge_driver_sim::SimConfig::parse(r);
    "host", "host", edge_driver_host::HostConfig, |r, _| edge_driver_host::HostConfig::parse(r);
    "modbus", "modbus", edge_driver_modbus::ModbusConfig, edge_driver_modbus::ModbusConfig::parse, health = health, exception = edge_driver_modbus::describe_exception;
    "s7", "s7", edge_driver_s7::S7Config, edge_driver_s7::S7Config::parse, health = health, exception = edge_driver_s7::describe_exception;
    "mqtt", "mqtt", edge_driver_mqtt::MqttConfig, edge_driver_mqtt::MqttConfig::parse, patterns = patterns;
    "log", "log", edge_driver_log::LogConfig, edge_driver_log::LogConfig::parse;
    "coap", "coap", edge_driver_coap::CoapConfig, edge_driver_coap::CoapConfig::parse, health = health, patterns = patterns, exception = edge_driver_coap::describe_exception;
    "replay", "replay", edge_driver_replay::ReplayConfig, |r, _| edge_driver_replay::ReplayConfig::parse(r);
    "opcua", "opcua", edge_driver_opcua::OpcuaConfig, edge_driver_opcua::OpcuaConfig::parse, health = health, exception = edge_driver_opcua::describe_status;
}

/// How a driver kind names its devices' exception codes (`None`: a plain number).
pub fn exception_names(kind: &str) -> Option<DescribeFn> {
    kinds().into_iter().find(|k| k.name == kind)?.exception
}

/// Driver kinds compiled into this build.
pub fn driver_kinds() -> Vec<&'static str> {
    kinds()
        .into_iter()
        .filter(|k| k.parse.is_some())
        .map(|k| k.name)
        .collect()
}

/// A `[[drivers]]` section, parsed: its name, kind and the crate's config.
pub(super) type Parsed = (Spanned<String>, &'static str, Box<dyn ParsedDriver>);

/// Reads every `[[drivers]]` section and interns their signals into `registry`.
pub(super) fn read(
    root: &mut TableReader<'_>,
    registry: &mut SignalRegistry,
    diags: &Diagnostics,
) -> Vec<Parsed> {
    let readers = root.tables("drivers");
    if readers.is_empty() && !root.has("drivers") {
        root.table_error("no drivers configured")
            .expected("at least one [[drivers]] section")
            .hint("add e.g. [[drivers]] name = \"host\" kind = \"host\"")
            .emit();
    }
    let kinds = kinds();
    let mut names: Vec<Spanned<String>> = Vec::new();
    let mut parsed = Vec::new();
    for mut d in readers {
        parsed.extend(read_one(&mut d, &kinds, &mut names));
    }
    for (name, _, p) in &parsed {
        intern(&name.value, p.as_ref(), registry, diags);
    }
    parsed
}

/// One `[[drivers]]` section; `names` are the driver names seen before it.
fn read_one(
    d: &mut TableReader<'_>,
    kinds: &[DriverKind],
    names: &mut Vec<Spanned<String>>,
) -> Option<Parsed> {
    let name = d.req_string("name");
    if let Some(n) = &name {
        if !check_name(d, "name", n) {
            return None;
        }
        if names.iter().any(|x| x.value == n.value) {
            d.error(
                n.span,
                "name",
                format!("driver name `{}` is used twice", n.value),
            )
            .hint("give every [[drivers]] section its own name")
            .emit();
        } else {
            names.push(n.clone());
        }
    }
    let kind = d.req_string("kind").and_then(|k| kind_of(d, &k, kinds));
    match (name, kind) {
        (Some(name), Some(kind)) => {
            let parse = kind.parse?;
            let p = parse(d, &name.value)?;
            Some((name, kind.name, p))
        }
        _ => {
            d.skip_unknown_check();
            None
        }
    }
}

/// The kind a section names, if this build has it; otherwise a diagnostic that
/// says which kinds it has (and whether the named one exists in other builds).
fn kind_of<'k>(
    d: &TableReader<'_>,
    k: &Spanned<String>,
    kinds: &'k [DriverKind],
) -> Option<&'k DriverKind> {
    if let Some(found) = kinds
        .iter()
        .find(|x| x.name == k.value && x.parse.is_some())
    {
        return Some(found);
    }
    let built: Vec<&str> = kinds
        .iter()
        .filter(|x| x.parse.is_some())
        .map(|x| x.name)
        .collect();
    let mut b = d.error(k.span, "kind", format!("unknown driver kind `{}`", k.value));
    if kinds.iter().any(|x| x.name == k.value) {
        b = b
            .expected(format!(
                "one of the kinds in this build: {}",
                built.join(", ")
            ))
            .hint(format!(
                "the `{}` driver is not part of this build",
                k.value
            ));
    } else {
        b = b.expected(format!("one of: {}", built.join(", ")));
        if let Some(best) = closest(&k.value, kinds.iter().map(|x| x.name)) {
            b = b.hint(format!("did you mean `{best}`?"));
        }
    }
    b.emit();
    None
}

/// Interns a driver's signals: one diagnostic per declaration site of duplicates
/// (a sim machine declares several signals).
fn intern(driver: &str, p: &dyn ParsedDriver, registry: &mut SignalRegistry, diags: &Diagnostics) {
    let mut dups: Vec<(Span, String, Vec<String>)> = Vec::new();
    for decl in p.signals() {
        if let Err(dup) = registry.intern(&decl, driver) {
            match dups
                .iter_mut()
                .find(|(sp, first, _)| *sp == decl.span && *first == dup.first_driver)
            {
                Some((_, _, names)) => names.push(dup.name),
                None => dups.push((decl.span, dup.first_driver, vec![dup.name])),
            }
        }
    }
    for (span, first, names) in dups {
        let what = if names.len() == 1 {
            format!("duplicate signal `{}`", names[0])
        } else {
            format!("duplicate signals `{}`", names.join("`, `"))
        };
        diags.push(
            Diagnostic::new(
                span,
                format!("drivers.{driver}"),
                format!("{what}: already produced by driver `{first}`"),
            )
            .hint(
                "signal names must be unique across all drivers; rename the machine, prefix or tag",
            ),
        );
    }
}

/// Signal families of run-time-named signals, per driver.
pub(super) fn patterns(parsed: &[Parsed]) -> Vec<(String, SignalPattern)> {
    parsed
        .iter()
        .flat_map(|(name, _, p)| p.patterns().into_iter().map(|pt| (name.value.clone(), pt)))
        .collect()
}

/// The driver instances of a valid configuration (a factory that still refuses its
/// config is a diagnostic).
pub(super) fn instances(
    parsed: Vec<Parsed>,
    registry: &SignalRegistry,
    diags: &Diagnostics,
) -> Vec<DriverInstance> {
    let mut drivers = Vec::new();
    for (name, kind, p) in parsed {
        match p.into_factory(registry) {
            Ok(factory) => drivers.push(DriverInstance {
                name: Arc::from(name.value.as_str()),
                kind,
                factory,
            }),
            Err(e) => diags.push(Diagnostic::new(
                name.span,
                format!("drivers.{}", name.value),
                e.to_string(),
            )),
        }
    }
    drivers
}

#[cfg(all(test, feature = "modbus", feature = "s7", feature = "coap"))]
mod tests {
    use super::exception_names;

    #[test]
    fn each_protocol_names_its_exception_codes() {
        let name = |kind: &str, code: u16| exception_names(kind).map(|f| f(code));
        assert_eq!(
            name("modbus", 2).as_deref(),
            Some("exception 2 (illegal data address)")
        );
        assert_eq!(
            name("s7", 0x0A).as_deref(),
            Some("object does not exist (return code 0x0a)")
        );
        assert_eq!(name("coap", 0x84).as_deref(), Some("4.04 Not Found"));
        assert_eq!(name("coap", 0x9F).as_deref(), Some("4.31"));
        assert_eq!(name("sim", 1), None);
    }
}
