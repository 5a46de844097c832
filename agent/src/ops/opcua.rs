//! `edge-agent opcua browse`: a server's variables as `[[drivers.tags]]` entries,
//! with the connection settings of an `opcua` driver section of a config file
//! (security, credentials, certificate store) or an endpoint without security.

use std::path::Path;

use edge_driver_api::config::{Diagnostics, TableReader, parse_document, render};
use edge_driver_opcua::OpcuaConfig;

/// The connection settings of driver `driver` (kind `opcua`) in `file`: errors
/// rendered at `file:line:col`.
pub fn driver_config(file: &Path, driver: &str) -> Result<OpcuaConfig, String> {
    let src = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let name = file.display().to_string();
    let table = parse_document(&src).map_err(|d| render(&name, &src, &d))?;
    let diags = Diagnostics::new();
    let mut found = None;
    {
        let mut root = TableReader::new(&table, "", &diags);
        root.skip_unknown_check();
        for mut d in root.tables("drivers") {
            // Only this section's connection settings matter here: the agent
            // checks the rest of the file when it runs.
            d.skip_unknown_check();
            let is_it = d.string("name").is_some_and(|n| n.value == driver)
                && d.string("kind").is_some_and(|k| k.value == "opcua");
            if is_it {
                found = Some(OpcuaConfig::parse(&mut d, driver));
            }
        }
    }
    if !diags.is_empty() {
        return Err(render(&name, &src, &diags.into_vec()));
    }
    match found {
        Some(Some(c)) => Ok(c),
        Some(None) => Err(format!("the `{driver}` section of {name} is not valid")),
        None => Err(format!(
            "{name} has no [[drivers]] section with name = \"{driver}\" and kind = \"opcua\""
        )),
    }
}

/// Browses and renders: the tag entries, and how many variables were found.
pub fn browse(
    cfg: &OpcuaConfig,
    node: Option<&str>,
    depth: u32,
    prefix: &str,
) -> Result<(String, usize), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let found = rt.block_on(edge_driver_opcua::browse(cfg, node, depth))?;
    Ok((edge_driver_opcua::render_tags(prefix, &found), found.len()))
}
