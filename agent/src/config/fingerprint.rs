//! Structural hashes of a configuration's parts: what a reload compares to tell
//! what changed.

use edge_driver_api::config::{NodeValue, Table};

/// Structural hashes of a configuration's parts (values only: moving a section or
/// editing a comment changes nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprints {
    /// Each `[[drivers]]` section by its name.
    pub drivers: std::collections::BTreeMap<String, u64>,
    /// Every other top-level key (`agent`, `assets`, `uplink`, ...).
    pub sections: std::collections::BTreeMap<String, u64>,
}

impl Fingerprints {
    pub(super) fn of(root: &Table) -> Fingerprints {
        let mut f = Fingerprints::default();
        for e in &root.entries {
            match (&*e.key, &e.node.value) {
                ("drivers", NodeValue::Array(items)) => {
                    for item in items {
                        if let NodeValue::Table(t) = &item.value
                            && let Some(name) = t.get("name")
                            && let NodeValue::Str(n) = &name.node.value
                        {
                            f.drivers.insert(n.clone(), hash_node(&item.value));
                        }
                    }
                }
                (k, v) => {
                    f.sections.insert(k.to_string(), hash_node(v));
                }
            }
        }
        f
    }

    /// Top-level sections whose content differs (added, removed or changed).
    pub fn changed_sections(&self, other: &Fingerprints) -> Vec<String> {
        let mut keys: Vec<&String> = self.sections.keys().chain(other.sections.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| self.sections.get(*k) != other.sections.get(*k))
            .cloned()
            .collect()
    }
}

fn hash_node(v: &NodeValue) -> u64 {
    use std::hash::{Hash, Hasher};
    fn feed(v: &NodeValue, h: &mut std::collections::hash_map::DefaultHasher) {
        match v {
            NodeValue::Str(s) => (0u8, s).hash(h),
            NodeValue::Int(i) => (1u8, i).hash(h),
            NodeValue::Float(x) => (2u8, x.to_bits()).hash(h),
            NodeValue::Bool(b) => (3u8, b).hash(h),
            NodeValue::Datetime(s) => (4u8, s).hash(h),
            NodeValue::Array(items) => {
                (5u8, items.len()).hash(h);
                for i in items {
                    feed(&i.value, h);
                }
            }
            NodeValue::Table(t) => {
                (6u8, t.entries.len()).hash(h);
                for e in &t.entries {
                    e.key.hash(h);
                    feed(&e.node.value, h);
                }
            }
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    feed(v, &mut h);
    h.finish()
}
