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
    /// Where the value comes from, in the protocol's own notation (`holding 100
    /// f32 unit 1`, `DB1.DBD4`, a topic, a CoAP path), shown by `edge-agent tags`.
    pub address: Option<String>,
}

/// A family of signals a driver may produce at run time, named by a template with
/// `{placeholder}`s filled from the data (e.g. MQTT topic levels:
/// `{line}.{machine}.temp`). Concrete names are interned when the configuration
/// refers to them (an asset windows `l1.m1.temp`); values for names nobody refers
/// to are counted and dropped.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalPattern {
    pub template: String,
    pub unit: Option<String>,
    pub text: bool,
    pub span: Span,
    /// Where the family's values come from (see [`SignalDecl::address`]).
    pub address: Option<String>,
}

impl SignalPattern {
    /// Whether the template can produce `name` (a placeholder stands for one or
    /// more characters).
    pub fn matches(&self, name: &str) -> bool {
        template_matches(&self.template, name)
    }

    /// The declaration of one concrete name of this family.
    pub fn decl(&self, name: &str) -> SignalDecl {
        SignalDecl {
            name: name.to_string(),
            unit: self.unit.clone(),
            span: self.span,
            text: self.text,
            address: self.address.clone(),
        }
    }
}

/// The placeholder names of a template, in order (`None` if a brace is unbalanced).
pub fn template_placeholders(template: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return None;
        }
        let close = rest[open..].find('}')? + open;
        let name = &rest[open + 1..close];
        if name.is_empty() || name.contains('{') {
            return None;
        }
        out.push(name);
        rest = &rest[close + 1..];
    }
    Some(out)
}

fn template_matches(template: &str, name: &str) -> bool {
    match template.find('{') {
        None => template == name,
        Some(open) => {
            let (lit, rest) = template.split_at(open);
            let Some(after) = name.strip_prefix(lit) else {
                return false;
            };
            let Some(close) = rest.find('}') else {
                return false;
            };
            let tail = &rest[close + 1..];
            // The placeholder takes 1.. characters; try every split.
            (1..=after.len())
                .filter(|&i| after.is_char_boundary(i))
                .any(|i| template_matches(tail, &after[i..]))
        }
    }
}

/// Fills a template's placeholders from `captures` into `out` (cleared first);
/// `false` if a placeholder has no capture.
pub fn render_template(template: &str, captures: &[(&str, &str)], out: &mut String) -> bool {
    out.clear();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}').map(|c| c + open) else {
            return false;
        };
        let key = &rest[open + 1..close];
        match captures.iter().find(|(k, _)| *k == key) {
            Some((_, v)) => out.push_str(v),
            None => return false,
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    true
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
    /// See [`SignalDecl::address`].
    pub address: Option<Arc<str>>,
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
            address: decl.address.as_deref().map(Arc::from),
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
            address: None,
        }
    }

    #[test]
    fn templates_match_and_render() {
        let p = SignalPattern {
            template: "{line}.{machine}.temp".into(),
            unit: None,
            text: false,
            span: Span::default(),
            address: None,
        };
        assert!(p.matches("l1.m1.temp"));
        assert!(p.matches("l1.m.x.temp"));
        assert!(!p.matches("l1.temp"));
        assert!(!p.matches("l1.m1.temp2"));
        assert_eq!(template_placeholders("{a}.x.{b}"), Some(vec!["a", "b"]));
        assert_eq!(template_placeholders("{a.x"), None);
        assert_eq!(template_placeholders("a}"), None);
        let mut s = String::new();
        assert!(render_template(
            "{line}.{machine}.temp",
            &[("machine", "m7"), ("line", "l2")],
            &mut s
        ));
        assert_eq!(s, "l2.m7.temp");
        assert!(!render_template("{x}", &[], &mut s));
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
