//! Small files the agent keeps its state in beside its configuration or journal
//! (the Sparkplug `bdSeq`, the seen command ids, a command carried across a
//! restart, the previous configuration and model manifest): how they are named
//! and written.

use std::path::{Path, PathBuf};

/// `path` with `suffix` appended to its file name (`agent.toml` + `.previous`).
pub fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename
/// over it, fsync the directory. A crash leaves the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = sidecar(path, ".tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}
