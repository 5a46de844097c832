//! Helpers for testing drivers: a sink that keeps every sample it is given.
//!
//! Used by the driver crates' tests and the shared conformance tests; not by the
//! agent at run time.

use std::sync::Mutex;

use tokio::sync::Notify;

use crate::driver::{PushResult, SampleSink};
use crate::sample::Sample;

/// Accepts everything, keeps it in order.
#[derive(Debug, Default)]
pub struct CollectSink {
    samples: Mutex<Vec<Sample>>,
    notify: Notify,
}

impl CollectSink {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything received so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes everything received so far.
    pub fn take(&self) -> Vec<Sample> {
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn len(&self) -> usize {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SampleSink for CollectSink {
    fn try_push(&self, batch: &[Sample]) -> PushResult {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(batch);
        PushResult {
            accepted: batch.len(),
        }
    }
    fn space_available(&self) -> &Notify {
        &self.notify
    }
}

/// Parses the keys of one `[[drivers]]` section from `toml` with `parse`, panicking
/// with the rendered diagnostics if anything is wrong.
pub fn parse_section<C>(
    toml: &str,
    parse: impl FnOnce(&mut crate::config::TableReader<'_>) -> Option<C>,
) -> C {
    use crate::config::{Diagnostics, TableReader, parse_document, render};
    let table = parse_document(toml).unwrap_or_else(|d| panic!("{}", render("t.toml", toml, &d)));
    let diags = Diagnostics::new();
    let cfg = {
        let mut r = TableReader::new(&table, "drivers[0]", &diags);
        parse(&mut r)
    };
    assert!(
        diags.is_empty(),
        "{}",
        render("t.toml", toml, &diags.into_vec())
    );
    cfg.expect("a configuration without diagnostics")
}

/// A registry with `decls` interned for `driver`.
pub fn registry(decls: Vec<crate::SignalDecl>, driver: &str) -> crate::SignalRegistry {
    let mut reg = crate::SignalRegistry::new();
    for d in decls {
        reg.intern(&d, driver).expect("unique signal names");
    }
    reg
}

/// The samples of signal `name`, in order.
pub fn samples_of(samples: &[Sample], reg: &crate::SignalRegistry, name: &str) -> Vec<Sample> {
    let id = reg.get(name).expect("a registered signal");
    samples.iter().filter(|s| s.signal == id).copied().collect()
}

/// Runs `f` on every file of the kept corpus of fuzz target `target` of the
/// crate at `crate_dir` (`<crate_dir>/fuzz/corpus/<target>`: the seeds and what
/// fuzz runs found worth keeping), as the fuzz target does; panics if the corpus
/// has fewer than 5 files. For the unit tests that replay corpora.
pub fn replay_corpus(crate_dir: &str, target: &str, f: fn(&[u8])) {
    let dir = std::path::Path::new(crate_dir)
        .join("fuzz/corpus")
        .join(target);
    let dir = dir.as_path();
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.expect("corpus entry").path();
        f(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
        n += 1;
    }
    assert!(n >= 5, "{}: {n} files", dir.display());
}
