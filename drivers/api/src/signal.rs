//! Signal names, interned to [`SignalId`]s once at start-up.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Span;
use crate::sample::SignalId;

/// A signal a driver will produce, as declared by its configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalDecl {
    /// Globally unique name, e.g. `pump1.temperature`.
    pub name: String,
    /// Engineering unit, e.g. `degC`.
    pub unit: Option<String>,
    /// Where in the config file the signal was declared (for duplicate errors).
    pub span: Span,
    /// A text signal (e.g. an S7 STRING): its values travel as events when they
    /// change, never as samples, so it cannot be windowed.
    pub text: bool,
}

/// What the agent knows about an interned signal.
#[derive(Clone, Debug)]
pub struct SignalMeta {
    pub name: Arc<str>,
    pub unit: Option<Arc<str>>,
    /// Name of the driver instance that produces it.
    pub driver: Arc<str>,
    /// See [`SignalDecl::text`].
    pub text: bool,
}

/// A second declaration of a name that already exists.
#[derive(Clone, Debug, thiserror::Error)]
#[error("signal `{name}` is already produced by driver `{first_driver}`")]
pub struct DuplicateSignal {
    pub name: String,
    pub first_driver: String,
    pub first_span: Span,
}

/// The table of all signals. Built once from the configuration, then read-only:
/// ids are dense (`0..len`), so per-signal state is a `Vec` indexed by id.
#[derive(Debug, Default)]
pub struct SignalRegistry {
    meta: Vec<SignalMeta>,
    spans: Vec<Span>,
    by_name: HashMap<Arc<str>, SignalId>,
}

impl SignalRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Interns a declared signal for `driver`.
    pub fn intern(&mut self, decl: &SignalDecl, driver: &str) -> Result<SignalId, DuplicateSignal> {
        if let Some(&id) = self.by_name.get(decl.name.as_str()) {
            return Err(DuplicateSignal {
                name: decl.name.clone(),
                first_driver: self.meta[id.index()].driver.to_string(),
                first_span: self.spans[id.index()],
            });
        }
        let id = SignalId(u32::try_from(self.meta.len()).expect("fewer than 2^32 signals"));
        let name: Arc<str> = Arc::from(decl.name.as_str());
        self.meta.push(SignalMeta {
            name: name.clone(),
            unit: decl.unit.as_deref().map(Arc::from),
            driver: Arc::from(driver),
            text: decl.text,
        });
        self.spans.push(decl.span);
        self.by_name.insert(name, id);
        Ok(id)
    }

    /// The id of a signal name.
    pub fn get(&self, name: &str) -> Option<SignalId> {
        self.by_name.get(name).copied()
    }

    /// The name of an id.
    pub fn name(&self, id: SignalId) -> &str {
        &self.meta[id.index()].name
    }

    pub fn meta(&self, id: SignalId) -> &SignalMeta {
        &self.meta[id.index()]
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// All names, for "did you mean" hints.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.meta.iter().map(|m| &*m.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(name: &str) -> SignalDecl {
        SignalDecl {
            text: false,
            name: name.into(),
            unit: None,
            span: Span::default(),
        }
    }

    #[test]
    fn ids_are_dense_and_duplicates_name_the_first_driver() {
        let mut r = SignalRegistry::new();
        assert_eq!(r.intern(&decl("a"), "d1").ok(), Some(SignalId(0)));
        assert_eq!(r.intern(&decl("b"), "d1").ok(), Some(SignalId(1)));
        let err = r.intern(&decl("a"), "d2").err().map(|e| e.first_driver);
        assert_eq!(err.as_deref(), Some("d1"));
        assert_eq!(r.get("b"), Some(SignalId(1)));
        assert_eq!(r.name(SignalId(0)), "a");
    }
}
