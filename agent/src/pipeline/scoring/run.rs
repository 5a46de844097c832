//! Running models: one [`ModelRun`] per model file (its session and the rows due),
//! and the [`InferenceJob`] that runs them all off the async threads.

use std::sync::Arc;

use edge_driver_api::Timestamp;
use edge_models::onnx::manifest::ValidatedModel;
use edge_models::onnx::{Output, Session};

use super::store::ModelHandle;

/// One model in the pipeline: its version in use, a session and the rows due.
#[derive(Debug)]
pub(crate) struct ModelRun {
    pub(crate) handle: Arc<ModelHandle>,
    pub(crate) generation: u64,
    pub(crate) model: Arc<ValidatedModel>,
    pub(crate) session: Option<Session>,
    pub(crate) row_len: usize,
    pub(crate) xs: Vec<f32>,
    /// (binding slot, time of the row).
    pub(crate) rows: Vec<(u32, Timestamp)>,
    pub(crate) result: Result<Vec<Output>, String>,
}

impl ModelRun {
    pub(crate) fn new(handle: Arc<ModelHandle>) -> ModelRun {
        let model = handle.current();
        let session = match model.model.session() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(model = %model.manifest.model.name, error = %e, "cannot start a model session");
                None
            }
        };
        ModelRun {
            generation: handle.generation(),
            row_len: model.manifest.input.row_len(),
            handle,
            model,
            session,
            xs: Vec::new(),
            rows: Vec::new(),
            result: Ok(Vec::new()),
        }
    }

    /// The scored value of row `k`.
    pub(crate) fn value(&self, k: usize) -> Result<f64, String> {
        let outs = self.result.as_ref().map_err(Clone::clone)?;
        let out = outs
            .get(self.model.alert_output)
            .ok_or_else(|| "the model returned too few outputs".to_string())?;
        let rows = self.rows.len().max(1);
        let v = match out {
            Output::F32 { data, .. } => {
                let width = data.len() / rows;
                data.get(k * width + self.model.alert_column)
                    .map(|v| f64::from(*v))
            }
            Output::I64 { data, .. } => {
                let width = data.len() / rows;
                data.get(k * width + self.model.alert_column)
                    .map(|v| *v as f64)
            }
        };
        let v = v.ok_or_else(|| "the model returned fewer rows than it was given".to_string())?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(format!("it returned {v}"))
        }
    }
}

/// The rows of every model, run on a blocking thread.
#[derive(Debug)]
pub struct InferenceJob {
    pub(crate) runs: Vec<ModelRun>,
}

impl InferenceJob {
    /// Runs every model that has rows. A panic inside a model is an error for its
    /// rows (the runtime contains it and rebuilds the session's state).
    pub fn run(&mut self) {
        for r in self.runs.iter_mut().filter(|r| !r.rows.is_empty()) {
            let rows = r.rows.len();
            r.result = match r.session.as_mut() {
                None => Err("the model has no session".into()),
                Some(s) => s.run(&r.xs, rows).map_err(|e| format!("it failed: {e}")),
            };
        }
    }
}
