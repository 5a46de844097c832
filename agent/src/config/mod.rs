//! The agent's configuration: one TOML file.
//!
//! Two stages:
//! 1. `edge_driver_api::config` parses the text into a spanned tree; one reader per
//!    section pulls typed values out of it and records a diagnostic for every
//!    problem (wrong type, unknown key, bad value) without stopping.
//! 2. Validation across sections: duplicate names, references from detectors to
//!    signals, features and bands, window shapes. Signals are interned to ids here.
//!
//! The result is either a [`Config`] of validated values, or every diagnostic at once,
//! rendered as `file:line:col` with the key path, what was expected and a hint.
//!
//! | file | reads |
//! |---|---|
//! | `sections` | `[agent]`, `[log]`, `[ring]`, `[supervisor]`, `[alerts]`, `[metrics]`, `[telemetry]` |
//! | `delivery` | `[journal]`, `[uplink]`, `[sparkplug]`, `[[alarms]]` |
//! | `commands` | `[commands]` (remote operations) |
//! | `drivers` | `[[drivers]]`: the one table of driver kinds |
//! | `assets` | `[[assets]]`: signals and windows, and each driver's link-health asset |
//! | `detectors` | `[[assets.detectors]]`: the one table of detector kinds |
//! | `models` | `[models]`, `[[assets.models]]` |
//! | `ui` | `[ui]` (the web UI: listen, users, TLS, history) |
//! | `fingerprint` | what a reload compares |
//!
//! Each reader produces the settings type of the part it configures (the ring's
//! `OverflowPolicy`, the journal's `JournalConfig`, the pipeline's `AssetCfg`, ...):
//! config depends on them, never the other way round.

mod assets;
mod commands;
mod delivery;
mod detectors;
mod drivers;
mod fingerprint;
mod models;
mod sections;
mod ui;

use std::collections::HashSet;
use std::sync::Arc;

use edge_driver_api::SignalRegistry;
use edge_driver_api::config::{
    Diagnostic, Diagnostics, Span, Spanned, Table, TableReader, parse_document, render,
};

pub use assets::link_asset_name;
pub use delivery::{JournalSection, UplinkSection};
pub use detectors::detector_kinds;
pub use drivers::exception_names;
pub use drivers::{DriverInstance, driver_kinds};
pub use fingerprint::Fingerprints;
pub use sections::{AgentSection, AlertsSection, LogSection, RingSection};
pub use ui::UiSection;

use crate::ingest::supervisor::BackoffConfig;
use crate::pipeline::AssetCfg;

/// The commented default configuration (simulated plant + the gateway's own health).
pub const DEFAULT_CONFIG: &str = include_str!("../../default-config.toml");

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    pub file: String,
    pub agent: AgentSection,
    pub log: LogSection,
    pub ring: RingSection,
    pub supervisor: BackoffConfig,
    pub alerts: AlertsSection,
    pub journal: Option<JournalSection>,
    pub uplink: Option<UplinkSection>,
    /// The Sparkplug B edge node (off unless `[sparkplug]` is present).
    pub sparkplug: Option<crate::delivery::sparkplug::SparkplugConfig>,
    /// Remote operations (off unless `[commands] enabled = true`).
    pub commands: Option<crate::inbound::commands::CommandsConfig>,
    pub telemetry: Option<crate::pipeline::TelemetryConfig>,
    /// The Prometheus endpoint (off unless `[metrics]` is present).
    pub metrics: Option<crate::ops::metrics::MetricsSection>,
    /// The web UI (off unless `[ui]` is present).
    pub ui: Option<UiSection>,
    /// The alert feedback loop (off unless `[labels]` is present).
    pub labels: Option<crate::delivery::labels::LabelsConfig>,
    /// Local alarm outputs (GPIO).
    pub alarms: Vec<crate::delivery::alarm::AlarmOutputCfg>,
    /// FNV-1a hash of the configuration text (reported in the uplink's birth message).
    pub hash: String,
    /// What each part of the file says, to tell what a reload changes.
    pub fingerprints: Fingerprints,
    pub registry: SignalRegistry,
    pub drivers: Vec<DriverInstance>,
    pub assets: Vec<AssetCfg>,
    /// Every model the assets bind, loaded and validated.
    pub models: Arc<crate::pipeline::scoring::ModelStore>,
}

/// An invalid configuration: every problem, rendered.
#[derive(Debug, thiserror::Error)]
#[error("{rendered}")]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
    pub rendered: String,
}

/// Reads and validates a config file.
pub fn load_file(path: &std::path::Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => parse(&name, &src),
        Err(e) => {
            let d = Diagnostic::new(Span::default(), "", format!("cannot read config file: {e}"))
                .hint("check the path and that the agent's user may read it");
            Err(ConfigError {
                rendered: format!("error: cannot read config file `{name}`: {e}\n"),
                diagnostics: vec![d],
            })
        }
    }
}

/// Parses and validates config text; `file` names it in messages.
pub fn parse(file: &str, src: &str) -> Result<Config, ConfigError> {
    let fail = |diags: Vec<Diagnostic>| ConfigError {
        rendered: render(file, src, &diags),
        diagnostics: diags,
    };
    let table = parse_document(src).map_err(fail)?;
    let diags = Diagnostics::new();
    let mut cfg = read_root(file, &table, &diags);
    if let Some(c) = cfg.as_mut() {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in src.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        c.hash = format!("{h:016x}");
        c.fingerprints = Fingerprints::of(&table);
        if let Some(u) = c.uplink.as_mut() {
            u.config_hash = c.hash.clone();
        }
    }
    if !diags.is_empty() {
        return Err(fail(diags.into_vec()));
    }
    cfg.ok_or_else(|| {
        fail(vec![Diagnostic::new(
            Span::default(),
            "",
            "configuration is incomplete",
        )])
    })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

const NAME_EXPECTED: &str = "1-64 characters from A-Z a-z 0-9 _ - . (names end up in MQTT topics)";

fn check_name(r: &TableReader<'_>, key: &'static str, v: &Spanned<String>) -> bool {
    if valid_name(&v.value) {
        return true;
    }
    r.error(v.span, key, format!("`{}` is not a valid {key}", v.value))
        .expected(NAME_EXPECTED)
        .emit();
    false
}

fn read_root(file: &str, table: &Table, diags: &Diagnostics) -> Option<Config> {
    let mut root = TableReader::new(table, "", diags);
    let agent = sections::agent(&mut root);
    let log = sections::log(&mut root);
    let ring = sections::ring(&mut root);
    let supervisor = sections::supervisor(&mut root);
    let alerts = sections::alerts(&mut root);
    let journal = delivery::journal(&mut root);
    let alarms = delivery::alarms(&mut root);
    let metrics = sections::metrics(&mut root);
    let ui = ui::read(&mut root);
    let labels = sections::labels(&mut root);
    let telemetry = sections::telemetry(&mut root);
    let has_journal = journal.is_some() || root.has("journal");
    let uplink = delivery::uplink(&mut root, has_journal);
    let has_uplink = uplink.is_some() || root.has("uplink");
    let sparkplug = delivery::sparkplug(&mut root, has_uplink);
    let commands_cfg = commands::read(&mut root, has_uplink);
    let mut registry = SignalRegistry::new();
    let parsed = drivers::read(&mut root, &mut registry, diags);
    if let Some((_, keys)) = &sparkplug {
        delivery::check_signals(&root, keys, &registry);
    }
    let mut loader = models::ModelLoader::read(&mut root, file);
    let mut names: HashSet<String> = HashSet::new();
    let mut assets = assets::read(
        &mut root,
        &mut registry,
        &drivers::patterns(&parsed),
        &mut names,
        &mut loader,
    );
    assets.extend(assets::link_health(&parsed, &registry, &mut names, diags));
    drop(root);
    if !diags.is_empty() {
        return None;
    }
    let drivers = drivers::instances(parsed, &registry, diags);
    let agent = agent?;
    let uplink = uplink.map(|u| delivery::for_agent(u, &agent.id));
    let sparkplug = sparkplug.map(|(s, _)| delivery::sparkplug_for_agent(s, &agent.id));
    Some(Config {
        file: file.to_string(),
        agent,
        log,
        ring,
        supervisor,
        alerts,
        journal,
        uplink,
        sparkplug,
        commands: commands_cfg,
        telemetry,
        metrics,
        ui,
        labels,
        alarms,
        hash: String::new(),
        fingerprints: Fingerprints::default(),
        registry,
        drivers,
        assets,
        models: Arc::new(loader.into_store()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparkplug_node_reads_its_keys_and_its_deadbands_name_real_signals() {
        let section = |deadbands: &str| {
            format!(
                "{DEFAULT_CONFIG}\n[journal]\ndir = \"/tmp/j\"\n[uplink]\nhost = \"127.0.0.1\"\n[sparkplug]\ngroup_id = \"plant1\"\ndeadband = 0.2\nprimary_host = \"scada\"\n{deadbands}"
            )
        };
        let cfg = parse(
            "t.toml",
            &section("deadbands = { \"pump1.temperature\" = 0.5 }\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let s = cfg.sparkplug.expect("[sparkplug]");
        assert_eq!(
            (s.edge_node_id.as_str(), s.primary_host.as_deref()),
            (cfg.agent.id.as_ref(), Some("scada"))
        );
        assert_eq!(
            (
                s.deadband_of("pump1.temperature"),
                s.deadband_of("pump1.current")
            ),
            (0.5, 0.2)
        );
        assert_eq!(
            (s.history, s.scan),
            (10_000, std::time::Duration::from_secs(1))
        );
        let e = parse("t.toml", &section("deadbands = { \"pump1.nope\" = 1 }\n"))
            .expect_err("an unknown signal")
            .to_string();
        assert!(
            e.contains("unknown signal `pump1.nope`") && e.contains("sparkplug.deadbands"),
            "{e}"
        );
    }

    #[test]
    fn default_config_parses_and_shows_the_common_detector_kinds() {
        let cfg = match parse("default-config.toml", DEFAULT_CONFIG) {
            Ok(c) => c,
            Err(e) => panic!("default config is invalid:\n{e}"),
        };
        assert!(!cfg.drivers.is_empty());
        let kinds: HashSet<&str> = cfg
            .assets
            .iter()
            .flat_map(|a| a.detectors.iter().map(|d| d.spec.kind()))
            .collect();
        for k in ["threshold", "zscore", "trend", "flatline", "rate_of_change"] {
            assert!(kinds.contains(k), "default config lacks a {k} detector");
        }
    }

    #[test]
    fn every_detector_kind_has_a_row_in_the_readme_detector_table() {
        let readme = include_str!("../../../README.md");
        for k in detector_kinds() {
            let row = format!("\n| `{k}` | ");
            assert!(
                readme.contains(&row),
                "README.md's detector table lacks a row for `{k}` (keys, defaults, what it raises)"
            );
        }
    }

    #[test]
    fn names_are_checked_for_topic_safety() {
        assert!(valid_name("gw-01.line_2"));
        assert!(!valid_name("gw/01"));
        assert!(!valid_name("gw+"));
        assert!(!valid_name(""));
    }

    #[test]
    #[cfg(not(feature = "onnx"))]
    fn a_model_binding_in_a_build_without_onnx_is_a_config_error() {
        let src = format!(
            "{DEFAULT_CONFIG}\n[[assets.models]]\nmanifest = \"bearing_rf/manifest.toml\"\nroles = {{ vibration = \"pump2.vibration\" }}\n"
        );
        let e = match parse("edge-agent.toml", &src) {
            Ok(_) => panic!("a model binding accepted without ONNX support"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("built without ONNX support"), "{e}");
        assert!(e.contains("edge-agent.toml:"), "points into the file: {e}");
    }
}
