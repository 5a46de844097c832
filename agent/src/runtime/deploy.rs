//! Remote `model_deploy` and `model_rollback`: a new version of a configured
//! model, sent by the centre, put in service without a gap.
//!
//! `model_deploy` args: `model` (the manifest's `[model] name` of a model this
//! agent runs), `manifest` (the new manifest's TOML), `onnx` (the model file,
//! base64), `sha256` (of the model file), and for files over one message `upload`
//! (a name for the transfer), `part` (1..=`parts`) and `parts`: each part carries
//! its slice of the base64 text, the last one also the manifest. Then:
//!
//! 1. the model file's SHA-256 must match `sha256` and the manifest's;
//! 2. it is written beside the running manifest as `<stem>.<sha256[..12]>.onnx`
//!    (never over a file in service) and the manifest's `file` pointed at it;
//! 3. **dry run**: the new version is loaded and checked completely — manifest,
//!    hash, inputs and outputs, its reference outputs, and its inputs against
//!    every binding of this configuration — before anything changes;
//! 4. the running manifest is kept as `<manifest>.previous` and the new one renamed
//!    over it (one atomic rename), then swapped in by the model's validated hot
//!    swap: the old version scores until the new one takes over.
//!
//! `model_rollback` (`model`): the `.previous` manifest goes back in service the
//! same way (one level).

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::inbound::commands::{Command, OpResult};
use crate::pipeline::scoring::{LiveModels, ModelHandle, Reload};
use crate::state_file::sidecar;
use edge_models::onnx::manifest::sha256_hex;

fn handle_of(models: &LiveModels, name: &str) -> Result<Arc<ModelHandle>, String> {
    let store = models.get();
    store
        .handles
        .iter()
        .find(|h| h.current().manifest.model.name == name)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<String> = store
                .handles
                .iter()
                .map(|h| h.current().manifest.model.name.clone())
                .collect();
            format!(
                "this agent runs no model `{name}` (it runs: {}); a new model needs a config_update that binds it",
                if names.is_empty() { "none".into() } else { names.join(", ") }
            )
        })
}

/// The whole base64 text of the model file, once every part arrived.
fn assemble(dir: &Path, c: &Command) -> Result<Option<String>, String> {
    let part = c.args["part"].as_u64().unwrap_or(1);
    let parts = c.args["parts"].as_u64().unwrap_or(1);
    let data = c.args["onnx"]
        .as_str()
        .ok_or("`args.onnx` (base64) is missing")?;
    if parts <= 1 {
        return Ok(Some(data.to_string()));
    }
    if part == 0 || part > parts || parts > 1000 {
        return Err(format!(
            "part {part} of {parts}: parts count from 1, at most 1000"
        ));
    }
    let upload = c.args["upload"]
        .as_str()
        .ok_or("a file in parts needs `args.upload`, a name for the transfer")?;
    if upload.is_empty()
        || !upload
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("`args.upload` is letters, digits, `-` and `_`".into());
    }
    let staging = dir.join(format!(".deploy-{upload}"));
    std::fs::create_dir_all(&staging).map_err(|e| format!("cannot stage the upload: {e}"))?;
    std::fs::write(staging.join(format!("part-{part}")), data)
        .map_err(|e| format!("cannot stage part {part}: {e}"))?;
    let mut whole = String::new();
    for i in 1..=parts {
        match std::fs::read_to_string(staging.join(format!("part-{i}"))) {
            Ok(t) => whole.push_str(&t),
            Err(_) => return Ok(None),
        }
    }
    let _ = std::fs::remove_dir_all(&staging);
    Ok(Some(whole))
}

/// Points the manifest's `[model] file` at `file` (a line edit: comments and
/// layout stay as the centre wrote them).
fn repoint(manifest: &str, file: &str) -> Result<String, String> {
    let doc: toml::Table = manifest
        .parse()
        .map_err(|e| format!("the manifest is not TOML: {e}"))?;
    if !doc.get("model").is_some_and(|m| m.is_table()) {
        return Err("the manifest has no [model] section".into());
    }
    let line = format!("file = \"{file}\"");
    let mut out = Vec::new();
    let (mut in_model, mut done) = (false, false);
    for l in manifest.lines() {
        let t = l.trim_start();
        if t.starts_with('[') {
            if in_model && !done {
                out.push(line.clone());
                done = true;
            }
            in_model = t.starts_with("[model]");
        }
        let key = t.split('=').next().unwrap_or("").trim();
        if in_model && !done && key == "file" {
            out.push(line.clone());
            done = true;
            continue;
        }
        out.push(l.to_string());
    }
    if in_model && !done {
        out.push(line);
    }
    let text = out.join("\n") + "\n";
    let check: toml::Table = text
        .parse()
        .map_err(|e| format!("the manifest cannot take a new file name: {e}"))?;
    let named = check
        .get("model")
        .and_then(|m| m.get("file"))
        .and_then(|f| f.as_str());
    if named != Some(file) {
        return Err("the manifest's [model] file could not be set".into());
    }
    Ok(text)
}

/// `model_deploy`.
pub async fn deploy(models: Arc<LiveModels>, c: Command) -> OpResult {
    let name = c.args["model"]
        .as_str()
        .ok_or("`args.model` (the model's name) is missing")?
        .to_string();
    let handle = handle_of(&models, &name)?;
    let manifest_path = handle.manifest_path.clone();
    let dir = manifest_path
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let Some(b64) = assemble(&dir, &c)? else {
        let part = c.args["part"].as_u64().unwrap_or(1);
        return Ok(Some(
            json!({"received_part": part, "parts": c.args["parts"]}),
        ));
    };
    let manifest = c.args["manifest"]
        .as_str()
        .ok_or("`args.manifest` (TOML) is missing")?
        .to_string();
    let expect = c.args["sha256"]
        .as_str()
        .ok_or("`args.sha256` (of the model file) is missing")?
        .to_lowercase();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| "`args.onnx` is not base64".to_string())?;
    let sha = sha256_hex(&bytes);
    if sha != expect {
        return Err(format!(
            "the model file arrived with SHA-256 {sha}, not {expect}: corrupted or incomplete"
        ));
    }
    blocking(Box::new(move || {
        install(&handle, &manifest_path, &manifest, &bytes, &sha)
    }))
    .await
}

/// Writes, dry-runs and swaps in a new version (blocking).
fn install(
    handle: &ModelHandle,
    manifest_path: &Path,
    manifest: &str,
    bytes: &[u8],
    sha: &str,
) -> OpResult {
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let name = handle.current().manifest.model.name.clone();
    let file = format!("{name}.{}.onnx", &sha[..12]);
    let staged = sidecar(manifest_path, ".deploy");
    let cleanup = |msg: String| {
        let _ = std::fs::remove_file(&staged);
        msg
    };
    std::fs::write(dir.join(&file), bytes).map_err(|e| format!("cannot write {file}: {e}"))?;
    let text = repoint(manifest, &file)?;
    std::fs::write(&staged, &text)
        .map_err(|e| cleanup(format!("cannot stage the manifest: {e}")))?;
    if let Err(errs) = handle.dry_run(&staged) {
        if handle.current().manifest.model.file != file {
            let _ = std::fs::remove_file(dir.join(&file));
        }
        return Err(cleanup(format!(
            "the new version failed its dry run; nothing changed: {}",
            errs.join("; ")
        )));
    }
    let previous = sidecar(manifest_path, ".previous");
    let stale = model_file_of(&previous);
    std::fs::copy(manifest_path, &previous)
        .map_err(|e| cleanup(format!("cannot keep the previous manifest: {e}")))?;
    std::fs::rename(&staged, manifest_path)
        .map_err(|e| cleanup(format!("cannot put the manifest in place: {e}")))?;
    let result = swap(handle)?;
    // The version before the previous one is no longer needed.
    if let Some(old) = stale
        && old != file
        && old != model_file_of(&previous).unwrap_or_default()
    {
        let _ = std::fs::remove_file(dir.join(old));
    }
    Ok(Some(result))
}

/// The model file a manifest names.
fn model_file_of(manifest: &Path) -> Option<String> {
    let text = std::fs::read_to_string(manifest).ok()?;
    let doc: toml::Table = text.parse().ok()?;
    Some(doc.get("model")?.get("file")?.as_str()?.to_string())
}

/// Swaps the version on disk in (the hot swap validates it once more).
fn swap(handle: &ModelHandle) -> Result<Value, String> {
    match handle.reload(true) {
        Reload::Swapped { from, to } => Ok(json!({
            "model": to.name,
            "from": from.version,
            "to": to.version,
            "sha256": to.sha256,
        })),
        Reload::Unchanged => {
            let m = handle.current();
            Ok(
                json!({"model": m.manifest.model.name, "to": m.manifest.model.version, "sha256": m.sha256, "unchanged": true}),
            )
        }
        Reload::Rejected { kept, errors } => Err(format!(
            "the new version was rejected at the swap, {} keeps running: {}",
            kept.version,
            errors.join("; ")
        )),
    }
}

/// `model_rollback`: the previous manifest back in service.
pub async fn rollback(models: Arc<LiveModels>, c: Command) -> OpResult {
    let name = c.args["model"]
        .as_str()
        .ok_or("`args.model` (the model's name) is missing")?
        .to_string();
    let handle = handle_of(&models, &name)?;
    blocking(Box::new(move || {
        let path = handle.manifest_path.clone();
        let previous = sidecar(&path, ".previous");
        if !previous.exists() {
            return Err(format!(
                "model `{name}` has no previous version to go back to"
            ));
        }
        if let Err(errs) = handle.dry_run(&previous) {
            return Err(format!(
                "the previous version no longer passes its dry run: {}",
                errs.join("; ")
            ));
        }
        std::fs::rename(&previous, &path)
            .map_err(|e| format!("cannot put the previous manifest back: {e}"))?;
        swap(&handle).map(Some)
    }))
    .await
}

/// Runs file work and validation off the async threads (one instantiation for
/// both operations).
async fn blocking(f: Box<dyn FnOnce() -> OpResult + Send>) -> OpResult {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("the operation failed unexpectedly: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_is_pointed_at_the_versioned_file_keeping_its_comments() {
        let m = "# trained 2026\n[model]\nname = \"m\"\nfile = \"m.onnx\" # old\nsha256 = \"ab\"\n[input]\nname = \"X\"\n";
        let out = repoint(m, "m.0123456789ab.onnx").expect("repointed");
        assert!(out.contains("# trained 2026"));
        assert!(
            out.contains("file = \"m.0123456789ab.onnx\"") && !out.contains("m.onnx\""),
            "{out}"
        );
        let without = "[model]\nname = \"m\"\n[input]\nname = \"X\"\n";
        assert!(
            repoint(without, "x.onnx")
                .expect("added")
                .contains("file = \"x.onnx\"")
        );
        assert!(repoint("[input]\n", "x.onnx").is_err());
    }
}
