//! Topic filters with named wildcards: `plant/+line/+machine/temp`, `site/#rest`.

/// One level of a filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Level {
    Literal(String),
    /// `+` or `+name`: exactly one level.
    One(Option<String>),
    /// `#` or `#name`: the rest (zero or more levels); only last.
    Rest(Option<String>),
}

/// A parsed filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub levels: Vec<Level>,
}

impl Filter {
    /// Parses a filter; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Filter, String> {
        if s.is_empty() {
            return Err("the topic filter is empty".into());
        }
        let parts: Vec<&str> = s.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let name = |rest: &str| -> Result<Option<String>, String> {
                if rest.is_empty() {
                    Ok(None)
                } else if rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    Ok(Some(rest.to_string()))
                } else {
                    Err(format!("wildcard name `{rest}` may use only A-Z a-z 0-9 _"))
                }
            };
            if let Some(rest) = p.strip_prefix('+') {
                levels.push(Level::One(name(rest)?));
            } else if let Some(rest) = p.strip_prefix('#') {
                if i + 1 != parts.len() {
                    return Err("`#` must be the last level of the filter".into());
                }
                levels.push(Level::Rest(name(rest)?));
            } else if p.contains(['+', '#']) {
                return Err(format!("`{p}`: a wildcard must fill a whole level"));
            } else {
                levels.push(Level::Literal(p.to_string()));
            }
        }
        Ok(Filter { levels })
    }

    /// The filter as sent to the broker (wildcard names removed).
    pub fn broker_filter(&self) -> String {
        let parts: Vec<&str> = self
            .levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::One(_) => "+",
                Level::Rest(_) => "#",
            })
            .collect();
        parts.join("/")
    }

    /// The wildcard names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.levels
            .iter()
            .filter_map(|l| match l {
                Level::One(Some(n)) | Level::Rest(Some(n)) => Some(n.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Matches `topic`; on success `caps` holds the named wildcards' values (a
    /// `#name` capture joins its levels with `.`, so it can sit in a signal name).
    pub fn matches(&self, topic: &str, caps: &mut Captures) -> bool {
        caps.buf.clear();
        caps.items.clear();
        let mut parts = topic.split('/');
        for (i, l) in self.levels.iter().enumerate() {
            match l {
                Level::Rest(name) => {
                    if i == 0 && topic.starts_with('$') {
                        return false;
                    }
                    let consumed: usize = topic.split('/').take(i).map(|p| p.len() + 1).sum();
                    let rest = topic.get(consumed.min(topic.len())..).unwrap_or("");
                    if let Some(n) = name {
                        let start = caps.buf.len();
                        caps.buf
                            .extend(rest.chars().map(|c| if c == '/' { '.' } else { c }));
                        caps.items.push((n.clone(), start, caps.buf.len()));
                    }
                    return true;
                }
                Level::One(name) => {
                    let Some(p) = parts.next() else { return false };
                    if i == 0 && p.starts_with('$') {
                        return false;
                    }
                    if let Some(n) = name {
                        let start = caps.buf.len();
                        caps.buf.push_str(p);
                        caps.items.push((n.clone(), start, caps.buf.len()));
                    }
                }
                Level::Literal(s) => {
                    if parts.next() != Some(s.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

/// Values of named wildcards from the last match.
#[derive(Clone, Debug, Default)]
pub struct Captures {
    buf: String,
    items: Vec<(String, usize, usize)>,
}

impl Captures {
    /// (name, value) pairs.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.items
            .iter()
            .map(|(n, a, b)| (n.as_str(), &self.buf[*a..*b]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(f: &str, t: &str) -> Option<Vec<(String, String)>> {
        let f = Filter::parse(f).expect("filter");
        let mut c = Captures::default();
        f.matches(t, &mut c).then(|| {
            c.pairs()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    }

    #[test]
    fn named_wildcards_capture_levels() {
        assert_eq!(
            caps("plant/+line/+machine/temp", "plant/l1/m7/temp"),
            Some(vec![
                ("line".into(), "l1".into()),
                ("machine".into(), "m7".into())
            ])
        );
        assert_eq!(caps("plant/+line/+machine/temp", "plant/l1/m7/hum"), None);
        assert_eq!(caps("plant/+line/+machine/temp", "plant/l1/temp"), None);
        assert_eq!(caps("plant/+/x", "plant/a/x"), Some(vec![]));
        assert_eq!(
            caps("site/#rest", "site/a/b/c"),
            Some(vec![("rest".into(), "a.b.c".into())])
        );
        assert_eq!(caps("site/#", "site"), Some(vec![]));
        assert_eq!(caps("#", "$SYS/broker/load"), None);
        assert_eq!(caps("+/x", "$SYS/x"), None);
    }

    #[test]
    fn broker_filters_drop_the_names() {
        let f = Filter::parse("plant/+line/+/t/#rest").expect("filter");
        assert_eq!(f.broker_filter(), "plant/+/+/t/#");
        assert_eq!(f.names(), vec!["line", "rest"]);
    }

    #[test]
    fn malformed_filters_are_explained() {
        for (f, why) in [
            ("", "empty"),
            ("a/#/b", "last level"),
            ("a/b+/c", "whole level"),
            ("a/+li-ne", "A-Z"),
        ] {
            let e = Filter::parse(f).expect_err(f);
            assert!(e.contains(why), "{f}: {e}");
        }
    }
}
