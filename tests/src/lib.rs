//! Shared helpers for edge-agent's end-to-end tests.

use std::path::{Path, PathBuf};

use edge_agent::Config;

/// Parses a config from text, panicking with the rendered diagnostics if invalid.
pub fn config(name: &str, src: &str) -> Config {
    match edge_agent::config::parse(name, src) {
        Ok(c) => c,
        Err(e) => panic!("test config {name} is invalid:\n{e}"),
    }
}

/// A fresh, empty directory for one test (removed on drop).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("edge-agent-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads a JSON-lines alert file.
pub fn read_alerts(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("every alert line is JSON"))
        .collect()
}
