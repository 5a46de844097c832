//! `[models]` and `[[assets.models]]`: model bindings, each manifest loaded and
//! validated once however many assets bind it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use edge_driver_api::config::{NodeValue, TableReader};
use edge_models::onnx::manifest::{ManifestError, ValidatedModel};

use super::assets::AssetWindow;
use super::valid_name;
use crate::pipeline::scoring::{
    DriftCfg, ModelBindingCfg, ModelHandle, ModelStore, RoleWindow, resolve_inputs,
};

/// Models met while reading the assets: each manifest is loaded and validated once,
/// however many assets bind it.
pub(super) struct ModelLoader {
    base: PathBuf,
    /// (manifest path, the model or `None` when it failed, the roles of each binding).
    entries: Vec<(PathBuf, Option<ValidatedModel>, Vec<Vec<RoleWindow>>)>,
    /// `[models] watch`: how often model files are checked for a new version.
    watch: Option<Duration>,
}

impl ModelLoader {
    /// `[models]`: where manifests are looked up (relative to the config file's
    /// directory) and how often they are watched.
    pub(super) fn read(root: &mut TableReader<'_>, file: &str) -> ModelLoader {
        let config_dir = Path::new(file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let (base, watch) = match root.table("models") {
            Some(mut m) => {
                let dir = m
                    .string("dir")
                    .map(|d| config_dir.join(d.value))
                    .unwrap_or_else(|| config_dir.clone());
                let watch = m.duration("watch").map(|d| d.value);
                (dir, watch)
            }
            None => (config_dir, None),
        };
        ModelLoader {
            base,
            entries: Vec::new(),
            watch: watch.filter(|d| !d.is_zero()),
        }
    }

    /// Every model that loaded, with the roles of its bindings.
    pub(super) fn into_store(self) -> ModelStore {
        ModelStore {
            handles: self
                .entries
                .into_iter()
                .filter_map(|(path, model, roles)| {
                    Some(Arc::new(ModelHandle::new(path, model?, roles)))
                })
                .collect(),
            watch: self.watch,
        }
    }

    /// The index of a validated model; `Err` carries its problems the first time
    /// (and nothing after, so one broken file is reported once).
    fn load(&mut self, manifest: &str) -> Result<usize, Vec<ManifestError>> {
        let path = self.base.join(manifest);
        if let Some(i) = self.entries.iter().position(|(p, _, _)| *p == path) {
            return match &self.entries[i].1 {
                Some(_) => Ok(i),
                None => Err(Vec::new()),
            };
        }
        match ValidatedModel::load(&path) {
            Ok(m) => {
                self.entries.push((path, Some(m), Vec::new()));
                Ok(self.entries.len() - 1)
            }
            Err(errs) => {
                self.entries.push((path.clone(), None, Vec::new()));
                Err(errs)
            }
        }
    }
}

pub(super) fn read_model_binding(
    m: &mut TableReader<'_>,
    window_signals: &[AssetWindow],
    loader: &mut ModelLoader,
    names: &mut HashSet<String>,
) -> Option<ModelBindingCfg> {
    if !cfg!(feature = "onnx") {
        m.error(
            m.span(),
            "manifest",
            "this edge-agent was built without ONNX support, so it cannot run models".to_string(),
        )
        .hint("remove the [[assets.models]] entries, or install a build with the `onnx` feature (the default build has it)")
        .emit();
        return None;
    }
    let mut ok = true;
    let manifest = m.req_string("manifest");
    let name = m.string("name");
    if let Some(n) = &name {
        if !valid_name(&n.value) || n.value.len() > 57 {
            m.error(n.span, "name", format!("`{}` is not a valid model binding name", n.value))
                .expected("1-57 characters from A-Z a-z 0-9 _ - . (`.health` is appended for its quarantine alerts)")
                .emit();
            ok = false;
        }
    }
    let every = m
        .duration("every")
        .map(|d| d.value)
        .unwrap_or(Duration::from_secs(10));
    let confirm = m
        .int_in("confirm", 1, 1000)
        .map(|v| v.value as u32)
        .unwrap_or(3);
    let quarantine_after = m
        .int_in("quarantine_after", 1, 1000)
        .map(|v| v.value as u32)
        .unwrap_or(3);
    let drift_z = m
        .f64_in("drift_z", 0.1, 1e9)
        .map(|v| v.value)
        .unwrap_or(4.0);
    let drift_rows = m
        .int_in("drift_rows", 1, 1_000_000)
        .map(|v| v.value as u32)
        .unwrap_or(30);
    let drift_dwell = m
        .duration("drift_dwell")
        .map(|v| v.value)
        .unwrap_or(Duration::from_secs(600));
    let roles_span = m.node("roles").map(|n| n.span);
    let (roles, roles_ok) = read_roles(m, window_signals);
    ok &= roles_ok;
    let manifest = manifest?;
    let idx = match loader.load(&manifest.value) {
        Ok(i) => i,
        Err(errs) => {
            for e in errs {
                let hint = if e.hash_mismatch {
                    "if the new file is the one you want, put its `sha256sum` in the manifest's [model] sha256 and run `edge-agent check-config`"
                } else {
                    "fix the model or its manifest"
                };
                m.error(manifest.span, "manifest", e.to_string())
                    .hint(hint)
                    .emit();
            }
            return None;
        }
    };
    let model = loader.entries[idx].1.as_ref()?;
    if let Err(errs) = resolve_inputs(&model.manifest.input, &roles) {
        for e in errs {
            m.error(roles_span.unwrap_or(manifest.span), "roles", e)
                .emit();
        }
        ok = false;
    }
    let name = name
        .map(|n| n.value)
        .unwrap_or_else(|| model.manifest.model.name.clone());
    if !names.insert(name.clone()) {
        m.error(
            m.span(),
            "name",
            format!("model binding `{name}` is used twice in this asset"),
        )
        .hint("give each [[assets.models]] its own `name`")
        .emit();
        ok = false;
    }
    if !ok {
        return None;
    }
    loader.entries[idx].2.push(roles.clone());
    Some(ModelBindingCfg {
        name: Arc::from(name.as_str()),
        model: idx,
        roles,
        every,
        confirm,
        quarantine_after,
        drift: DriftCfg {
            z: drift_z,
            rows: drift_rows,
            dwell: drift_dwell,
        },
    })
}

/// `roles = { vibration = "pump1.vibration", ... }`: the windows of this asset
/// each model role reads; and whether every role was valid.
fn read_roles(m: &mut TableReader<'_>, window_signals: &[AssetWindow]) -> (Vec<RoleWindow>, bool) {
    // roles = { vibration = "pump1.vibration", ... }
    let mut roles = Vec::new();
    let mut ok = true;
    match m.node("roles") {
        None => {
            m.table_error("missing required key `roles`")
                .expected("a table from the model's roles to this asset's signals, e.g. roles = { vibration = \"pump1.vibration\" }")
                .emit();
            ok = false;
        }
        Some(node) => match &node.value {
            NodeValue::Table(t) => {
                for e in &t.entries {
                    let NodeValue::Str(sig) = &e.node.value else {
                        m.error(
                            e.node.span,
                            "roles",
                            format!("role `{}` must name a signal", e.key),
                        )
                        .expected("a signal name (a string)")
                        .emit();
                        ok = false;
                        continue;
                    };
                    let Some(wi) = window_signals.iter().position(|w| w.signal == *sig) else {
                        m.error(
                            e.node.span,
                            "roles",
                            format!("role `{}` names `{sig}`, which has no window in this asset", e.key),
                        )
                        .hint(format!(
                            "add [[assets.signals]] signal = \"{sig}\" (with its window and bands) to this asset"
                        ))
                        .emit();
                        ok = false;
                        continue;
                    };
                    roles.push(RoleWindow {
                        role: e.key.clone(),
                        signal: Arc::from(sig.as_str()),
                        window: wi,
                        bands: window_signals[wi].bands.clone(),
                        capacity: window_signals[wi].capacity,
                    });
                }
            }
            other => {
                m.error(
                    node.span,
                    "roles",
                    format!("`roles` has the wrong type: found {}", other.type_name()),
                )
                .expected("a table, e.g. roles = { vibration = \"pump1.vibration\" }")
                .emit();
                ok = false;
            }
        },
    }
    (roles, ok)
}
