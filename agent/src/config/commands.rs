//! `[commands]`: remote operations over the uplink (off unless `enabled = true`).

use std::time::Duration;

use base64::Engine as _;
use edge_driver_api::config::{NodeValue, TableReader, closest};

use crate::inbound::commands::{CommandsConfig, Operation};

/// Reads `[commands]`; `None` when absent, disabled or invalid.
pub(super) fn read(root: &mut TableReader<'_>, has_uplink: bool) -> Option<CommandsConfig> {
    let mut t = root.table("commands")?;
    let enabled = t.bool("enabled").is_some_and(|v| v.value);
    let operations = operations(&mut t);
    let require_signature = t.bool("require_signature").is_none_or(|v| v.value);
    let keys = keys(&mut t);
    let replay_window = t
        .duration("replay_window")
        .map_or(Duration::from_secs(300), |v| v.value);
    let health_window = t
        .duration("health_window")
        .map_or(Duration::from_secs(60), |v| v.value);
    let log_lines = t
        .int_in("log_lines", 1, 100_000)
        .map_or(2000, |v| v.value as usize);
    let mut ok = operations.is_some() && keys.is_some();
    let keys = keys.unwrap_or_default();
    if enabled && require_signature && keys.is_empty() && ok {
        t.table_error("`require_signature` is on (the default), but no `public_keys` are configured")
            .expected("public_keys = { central = \"<base64 of the 32-byte Ed25519 public key>\" }")
            .hint("add the central system's public key, or set require_signature = false on a trusted network")
            .emit();
        ok = false;
    }
    if replay_window < Duration::from_secs(1) || health_window < Duration::from_secs(1) {
        t.table_error("`replay_window` and `health_window` must be at least 1s")
            .hint("the defaults are replay_window = \"5m\" and health_window = \"60s\"")
            .emit();
        ok = false;
    }
    if enabled && !has_uplink {
        t.table_error("commands arrive over the uplink, but no [uplink] is configured")
            .hint("add an [uplink] section with the broker's `host` (and a [journal])")
            .emit();
        ok = false;
    }
    (enabled && ok).then(|| CommandsConfig {
        operations: operations.unwrap_or_default(),
        require_signature,
        keys,
        replay_window,
        health_window,
        log_lines,
    })
}

/// `operations`: the allow-list, by name.
fn operations(t: &mut TableReader<'_>) -> Option<Vec<Operation>> {
    let names = t.strings("operations").unwrap_or_default();
    let mut out = Vec::new();
    let mut ok = true;
    for n in names {
        match Operation::parse(&n.value) {
            Some(op) if !out.contains(&op) => out.push(op),
            Some(_) => {}
            None => {
                let known: Vec<&str> = Operation::ALL.iter().map(|o| o.as_str()).collect();
                let mut e = t
                    .error(
                        n.span,
                        "operations",
                        format!("unknown operation `{}`", n.value),
                    )
                    .expected(format!("some of: {}", known.join(", ")));
                if let Some(best) = closest(&n.value, known.iter().copied()) {
                    e = e.hint(format!("did you mean `{best}`?"));
                }
                e.emit();
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// `public_keys = { name = "base64" }`.
fn keys(t: &mut TableReader<'_>) -> Option<Vec<(String, [u8; 32])>> {
    let Some(node) = t.node("public_keys") else {
        return Some(Vec::new());
    };
    let NodeValue::Table(table) = &node.value else {
        t.error(node.span, "public_keys", "`public_keys` is a table of name = key")
            .hint("e.g. public_keys = { central = \"MCowBQYDK2VwAyEA...\" } (base64 of the raw 32-byte key)")
            .emit();
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for e in &table.entries {
        let raw = match &e.node.value {
            NodeValue::Str(s) => base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .ok(),
            _ => None,
        };
        match raw.as_deref().map(<[u8; 32]>::try_from) {
            Some(Ok(k)) => out.push((e.key.clone(), k)),
            _ => {
                t.error(
                    e.node.span,
                    "public_keys",
                    format!("the key `{}` is not a base64 Ed25519 public key", e.key),
                )
                .expected("base64 of the raw 32-byte public key (44 characters)")
                .hint("`edge-agent keygen` (a build with the `signer` feature, on the signing side) prints a key pair in this form")
                .emit();
                ok = false;
            }
        }
    }
    ok.then_some(out)
}
