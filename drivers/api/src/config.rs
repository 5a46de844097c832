//! Configuration reading with precise, complete diagnostics.
//!
//! Stage one of config handling: the TOML text is parsed into a [`Table`] tree whose
//! every key and value keeps its byte [`Span`]. Readers ([`TableReader`]) then pull
//! typed values out of it, recording a [`Diagnostic`] for every problem instead of
//! stopping at the first one, and report keys nobody asked for as unknown (with a
//! "did you mean" hint). Stage two (validated newtypes, cross references) lives with
//! whoever owns the section: the agent for assets and detectors, each driver crate
//! for its own table.
//!
//! [`render`] turns diagnostics into `file:line:col` messages with the offending line.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::Duration;

/// A byte range in the configuration source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl From<std::ops::Range<usize>> for Span {
    fn from(r: std::ops::Range<usize>) -> Self {
        Span {
            start: r.start,
            end: r.end,
        }
    }
}

/// A value together with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Spanned<U> {
        Spanned {
            value: f(self.value),
            span: self.span,
        }
    }
}

/// A parsed TOML value.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Table),
}

impl NodeValue {
    /// The TOML type name, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeValue::Str(_) => "a string",
            NodeValue::Int(_) => "an integer",
            NodeValue::Float(_) => "a float",
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Datetime(_) => "a datetime",
            NodeValue::Array(_) => "an array",
            NodeValue::Table(_) => "a table",
        }
    }
}

/// A value and its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: NodeValue,
    pub span: Span,
}

/// One `key = value` of a table.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub node: Node,
}

/// A TOML table, keys in source order.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Table {
    pub entries: Vec<Entry>,
    pub span: Span,
}

impl Table {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// One problem found in the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub span: Span,
    /// Dotted key path, e.g. `drivers[0].machines[1].rate_hz`.
    pub path: String,
    pub message: String,
    pub expected: Option<String>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(span: Span, path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            span,
            path: path.into(),
            message: message.into(),
            expected: None,
            hint: None,
        }
    }
    pub fn expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = Some(expected.into());
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Collects diagnostics. Shared by reference between nested readers.
#[derive(Debug, Default)]
pub struct Diagnostics {
    items: RefCell<Vec<Diagnostic>>,
}

impl Diagnostics {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&self, d: Diagnostic) {
        self.items.borrow_mut().push(d);
    }
    pub fn is_empty(&self) -> bool {
        self.items.borrow().is_empty()
    }
    pub fn len(&self) -> usize {
        self.items.borrow().len()
    }
    /// All diagnostics, sorted by position in the file.
    pub fn into_vec(self) -> Vec<Diagnostic> {
        let mut v = self.items.into_inner();
        v.sort_by_key(|d| (d.span.start, d.span.end));
        v
    }
}

/// Parses TOML text into a spanned tree. Syntax errors come back as diagnostics.
pub fn parse_document(src: &str) -> Result<Table, Vec<Diagnostic>> {
    let (doc, errors) = toml::de::DeTable::parse_recoverable(src);
    if !errors.is_empty() {
        return Err(errors
            .into_iter()
            .map(|e| {
                let span = e.span().map(Span::from).unwrap_or_default();
                Diagnostic::new(span, "", format!("invalid TOML: {}", e.message().trim()))
                    .hint("check quoting, brackets and that every key has a value")
            })
            .collect());
    }
    let span = Span::from(doc.span());
    let diags = Diagnostics::new();
    let table = convert_table(doc.get_ref(), span, "", &diags);
    if diags.is_empty() {
        Ok(table)
    } else {
        Err(diags.into_vec())
    }
}

fn convert_table(t: &toml::de::DeTable<'_>, span: Span, path: &str, diags: &Diagnostics) -> Table {
    let mut entries = Vec::with_capacity(t.len());
    for (k, v) in t.iter() {
        let key = k.get_ref().to_string();
        let child = join(path, &key);
        entries.push(Entry {
            key,
            key_span: Span::from(k.span()),
            node: convert_value(v.get_ref(), Span::from(v.span()), &child, diags),
        });
    }
    Table { entries, span }
}

fn convert_value(v: &toml::de::DeValue<'_>, span: Span, path: &str, diags: &Diagnostics) -> Node {
    use toml::de::DeValue;
    let value = match v {
        DeValue::String(s) => NodeValue::Str(s.to_string()),
        DeValue::Integer(i) => {
            let digits: String = i.as_str().chars().filter(|c| *c != '_').collect();
            let (neg, body) = match digits.strip_prefix('-') {
                Some(rest) => (true, rest.to_string()),
                None => (false, digits.trim_start_matches('+').to_string()),
            };
            let body = body
                .strip_prefix("0x")
                .or_else(|| body.strip_prefix("0o"))
                .or_else(|| body.strip_prefix("0b"))
                .unwrap_or(&body);
            match i64::from_str_radix(body, i.radix()) {
                Ok(n) => NodeValue::Int(if neg { -n } else { n }),
                Err(_) => {
                    diags.push(
                        Diagnostic::new(
                            span,
                            path,
                            format!("integer `{}` is out of range", i.as_str()),
                        )
                        .expected("an integer between -2^63 and 2^63-1"),
                    );
                    NodeValue::Int(0)
                }
            }
        }
        DeValue::Float(f) => {
            let s: String = f.as_str().chars().filter(|c| *c != '_').collect();
            let parsed = match s.as_str() {
                "inf" | "+inf" => Some(f64::INFINITY),
                "-inf" => Some(f64::NEG_INFINITY),
                "nan" | "+nan" | "-nan" => Some(f64::NAN),
                other => other.parse::<f64>().ok(),
            };
            match parsed {
                Some(x) => NodeValue::Float(x),
                None => {
                    diags.push(Diagnostic::new(span, path, format!("invalid float `{s}`")));
                    NodeValue::Float(0.0)
                }
            }
        }
        DeValue::Boolean(b) => NodeValue::Bool(*b),
        DeValue::Datetime(d) => NodeValue::Datetime(d.to_string()),
        DeValue::Array(a) => NodeValue::Array(
            a.iter()
                .enumerate()
                .map(|(i, item)| {
                    convert_value(
                        item.get_ref(),
                        Span::from(item.span()),
                        &format!("{path}[{i}]"),
                        diags,
                    )
                })
                .collect(),
        ),
        DeValue::Table(t) => NodeValue::Table(convert_table(t, span, path, diags)),
    };
    Node { value, span }
}

fn join(path: &str, key: &str) -> String {
    let quoted = if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        format!("\"{key}\"")
    };
    if path.is_empty() {
        quoted
    } else {
        format!("{path}.{quoted}")
    }
}

/// Reads typed values out of one table, recording diagnostics as it goes.
///
/// Every accessor marks its key as known; when the reader is dropped, keys that no
/// accessor asked for are reported as unknown, with the closest known key as a hint.
#[derive(Debug)]
pub struct TableReader<'a> {
    table: &'a Table,
    path: String,
    diags: &'a Diagnostics,
    used: Vec<bool>,
    known: Vec<&'static str>,
    report_unknown: bool,
}

impl<'a> TableReader<'a> {
    pub fn new(table: &'a Table, path: impl Into<String>, diags: &'a Diagnostics) -> Self {
        TableReader {
            table,
            path: path.into(),
            diags,
            used: vec![false; table.entries.len()],
            known: Vec::new(),
            report_unknown: true,
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path of a key of this table.
    pub fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub fn span(&self) -> Span {
        self.table.span
    }

    pub fn diags(&self) -> &'a Diagnostics {
        self.diags
    }

    /// Records an error at `span` for `key` of this table.
    pub fn error(
        &self,
        span: Span,
        key: &str,
        message: impl Into<String>,
    ) -> DiagnosticBuilder<'a> {
        DiagnosticBuilder {
            diags: self.diags,
            diag: Some(Diagnostic::new(span, self.key_path(key), message)),
        }
    }

    /// Records an error about the table itself (e.g. a missing key).
    pub fn table_error(&self, message: impl Into<String>) -> DiagnosticBuilder<'a> {
        DiagnosticBuilder {
            diags: self.diags,
            diag: Some(Diagnostic::new(self.table.span, self.path.clone(), message)),
        }
    }

    /// Whether the key is present (marks it known, not used).
    pub fn has(&mut self, key: &'static str) -> bool {
        self.mark_known(key);
        self.table.get(key).is_some()
    }

    /// Stops unknown-key reporting (for a table whose keys are checked elsewhere).
    pub fn skip_unknown_check(&mut self) {
        self.report_unknown = false;
    }

    fn mark_known(&mut self, key: &'static str) {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
    }

    /// The raw entry for a key, marking it used.
    pub fn entry(&mut self, key: &'static str) -> Option<&'a Entry> {
        self.mark_known(key);
        let idx = self.table.entries.iter().position(|e| e.key == key)?;
        self.used[idx] = true;
        Some(&self.table.entries[idx])
    }

    fn missing(&self, key: &str, expected: &str) {
        self.table_error(format!("missing required key `{key}`"))
            .expected(expected.to_string())
            .hint(format!("add `{key} = ...` to [{}]", self.path))
            .emit();
    }

    fn wrong_type(&self, key: &str, node: &Node, expected: &str) {
        self.error(
            node.span,
            key,
            format!(
                "`{key}` has the wrong type: found {}",
                node.value.type_name()
            ),
        )
        .expected(expected.to_string())
        .emit();
    }

    /// An optional string.
    pub fn string(&mut self, key: &'static str) -> Option<Spanned<String>> {
        let e = self.entry(key)?;
        match &e.node.value {
            NodeValue::Str(s) => Some(Spanned::new(s.clone(), e.node.span)),
            _ => {
                self.wrong_type(key, &e.node, "a string");
                None
            }
        }
    }

    /// A required string.
    pub fn req_string(&mut self, key: &'static str) -> Option<Spanned<String>> {
        if !self.has(key) {
            self.missing(key, "a string");
            return None;
        }
        self.string(key)
    }

    /// An optional number (integers are accepted as floats).
    pub fn f64(&mut self, key: &'static str) -> Option<Spanned<f64>> {
        let e = self.entry(key)?;
        let v = match &e.node.value {
            NodeValue::Float(f) => *f,
            NodeValue::Int(i) => *i as f64,
            _ => {
                self.wrong_type(key, &e.node, "a number");
                return None;
            }
        };
        if !v.is_finite() {
            self.error(e.node.span, key, format!("`{key}` must be a finite number"))
                .expected("a finite number (not nan or inf)")
                .emit();
            return None;
        }
        Some(Spanned::new(v, e.node.span))
    }

    /// A required number.
    pub fn req_f64(&mut self, key: &'static str) -> Option<Spanned<f64>> {
        if !self.has(key) {
            self.missing(key, "a number");
            return None;
        }
        self.f64(key)
    }

    /// An optional number in `[min, max]`.
    pub fn f64_in(&mut self, key: &'static str, min: f64, max: f64) -> Option<Spanned<f64>> {
        let v = self.f64(key)?;
        if v.value < min || v.value > max {
            self.error(
                v.span,
                key,
                format!("`{key}` = {} is out of range", v.value),
            )
            .expected(format!("a number between {min} and {max}"))
            .emit();
            return None;
        }
        Some(v)
    }

    /// An optional integer in `[min, max]`.
    pub fn int_in(&mut self, key: &'static str, min: i64, max: i64) -> Option<Spanned<i64>> {
        let e = self.entry(key)?;
        match &e.node.value {
            NodeValue::Int(i) if (min..=max).contains(i) => Some(Spanned::new(*i, e.node.span)),
            NodeValue::Int(i) => {
                self.error(e.node.span, key, format!("`{key}` = {i} is out of range"))
                    .expected(format!("an integer between {min} and {max}"))
                    .emit();
                None
            }
            NodeValue::Float(f) if f.fract() == 0.0 => {
                self.error(e.node.span, key, format!("`{key}` must be an integer"))
                    .expected("an integer")
                    .hint(format!(
                        "write `{key} = {}` without the decimal point",
                        *f as i64
                    ))
                    .emit();
                None
            }
            _ => {
                self.wrong_type(key, &e.node, "an integer");
                None
            }
        }
    }

    /// An optional boolean.
    pub fn bool(&mut self, key: &'static str) -> Option<Spanned<bool>> {
        let e = self.entry(key)?;
        match &e.node.value {
            NodeValue::Bool(b) => Some(Spanned::new(*b, e.node.span)),
            _ => {
                self.wrong_type(key, &e.node, "true or false");
                None
            }
        }
    }

    /// An optional duration written with a unit: `"250ms"`, `"10s"`, `"5m"`, `"2h"`, `"1d"`.
    pub fn duration(&mut self, key: &'static str) -> Option<Spanned<Duration>> {
        let e = self.entry(key)?;
        match &e.node.value {
            NodeValue::Str(s) => match parse_duration(s) {
                Ok(d) => Some(Spanned::new(d, e.node.span)),
                Err(msg) => {
                    self.error(
                        e.node.span,
                        key,
                        format!("`{key}` = \"{s}\" is not a duration: {msg}"),
                    )
                    .expected(DURATION_EXPECTED)
                    .emit();
                    None
                }
            },
            NodeValue::Int(i) => {
                self.error(e.node.span, key, format!("`{key}` needs a unit"))
                    .expected(DURATION_EXPECTED)
                    .hint(format!("write `{key} = \"{i}s\"` (or \"{i}ms\")"))
                    .emit();
                None
            }
            _ => {
                self.wrong_type(key, &e.node, DURATION_EXPECTED);
                None
            }
        }
    }

    /// A required duration.
    pub fn req_duration(&mut self, key: &'static str) -> Option<Spanned<Duration>> {
        if !self.has(key) {
            self.missing(key, DURATION_EXPECTED);
            return None;
        }
        self.duration(key)
    }

    /// An optional byte size: an integer (bytes) or a string with a unit
    /// (`"512KiB"`, `"64MiB"`, `"1GiB"`, `"100MB"`).
    pub fn size(&mut self, key: &'static str) -> Option<Spanned<u64>> {
        let e = self.entry(key)?;
        match &e.node.value {
            NodeValue::Int(i) if *i >= 0 => Some(Spanned::new(*i as u64, e.node.span)),
            NodeValue::Str(s) => match parse_size(s) {
                Ok(n) => Some(Spanned::new(n, e.node.span)),
                Err(msg) => {
                    self.error(
                        e.node.span,
                        key,
                        format!("`{key}` = \"{s}\" is not a size: {msg}"),
                    )
                    .expected(SIZE_EXPECTED)
                    .emit();
                    None
                }
            },
            _ => {
                self.wrong_type(key, &e.node, SIZE_EXPECTED);
                None
            }
        }
    }

    /// An optional string that must be one of `choices`; returns the mapped value.
    pub fn choice<T: Copy>(
        &mut self,
        key: &'static str,
        choices: &[(&str, T)],
    ) -> Option<Spanned<T>> {
        let s = self.string(key)?;
        if let Some((_, v)) = choices.iter().find(|(name, _)| *name == s.value) {
            return Some(Spanned::new(*v, s.span));
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let mut b = self
            .error(
                s.span,
                key,
                format!("`{}` is not a valid value for `{key}`", s.value),
            )
            .expected(format!("one of: {}", names.join(", ")));
        if let Some(best) = closest(&s.value, names.iter().copied()) {
            b = b.hint(format!("did you mean `{best}`?"));
        }
        b.emit();
        None
    }

    /// An optional sub-table.
    pub fn table(&mut self, key: &'static str) -> Option<TableReader<'a>> {
        let path = self.key_path(key);
        let e = self.entry(key)?;
        match &e.node.value {
            NodeValue::Table(t) => Some(TableReader::new(t, path, self.diags)),
            _ => {
                self.wrong_type(key, &e.node, "a table");
                None
            }
        }
    }

    /// An optional array of tables (`[[key]]`); each element gets its own reader.
    pub fn tables(&mut self, key: &'static str) -> Vec<TableReader<'a>> {
        let path = self.key_path(key);
        let Some(e) = self.entry(key) else {
            return Vec::new();
        };
        let diags = self.diags;
        match &e.node.value {
            NodeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match &item.value {
                        NodeValue::Table(t) => {
                            out.push(TableReader::new(t, format!("{path}[{i}]"), diags))
                        }
                        _ => {
                            diags.push(
                                Diagnostic::new(
                                    item.span,
                                    format!("{path}[{i}]"),
                                    format!(
                                        "`{key}` entries must be tables, found {}",
                                        item.value.type_name()
                                    ),
                                )
                                .expected(format!("[[{key}]] sections or inline tables {{ ... }}")),
                            );
                        }
                    }
                }
                out
            }
            _ => {
                self.wrong_type(key, &e.node, &format!("an array of tables ([[{key}]])"));
                Vec::new()
            }
        }
    }

    /// An optional array of strings.
    pub fn strings(&mut self, key: &'static str) -> Option<Vec<Spanned<String>>> {
        let path = self.key_path(key);
        let e = self.entry(key)?;
        match &e.node.value {
            NodeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match &item.value {
                        NodeValue::Str(s) => out.push(Spanned::new(s.clone(), item.span)),
                        other => self.diags.push(
                            Diagnostic::new(
                                item.span,
                                format!("{path}[{i}]"),
                                format!("found {}", other.type_name()),
                            )
                            .expected("a string"),
                        ),
                    }
                }
                Some(out)
            }
            _ => {
                self.wrong_type(key, &e.node, "an array of strings");
                None
            }
        }
    }

    /// An optional array of numbers (integers are accepted as floats).
    pub fn f64s(&mut self, key: &'static str) -> Option<Vec<Spanned<f64>>> {
        let path = self.key_path(key);
        let e = self.entry(key)?;
        match &e.node.value {
            NodeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match &item.value {
                        NodeValue::Float(f) => out.push(Spanned::new(*f, item.span)),
                        NodeValue::Int(n) => out.push(Spanned::new(*n as f64, item.span)),
                        NodeValue::Bool(b) => {
                            out.push(Spanned::new(f64::from(u8::from(*b)), item.span))
                        }
                        other => self.diags.push(
                            Diagnostic::new(
                                item.span,
                                format!("{path}[{i}]"),
                                format!("found {}", other.type_name()),
                            )
                            .expected("a number"),
                        ),
                    }
                }
                Some(out)
            }
            _ => {
                self.wrong_type(key, &e.node, "an array of numbers");
                None
            }
        }
    }

    /// The raw node of a key (for values with several accepted shapes).
    pub fn node(&mut self, key: &'static str) -> Option<&'a Node> {
        self.entry(key).map(|e| &e.node)
    }
}

impl Drop for TableReader<'_> {
    fn drop(&mut self) {
        if !self.report_unknown || std::thread::panicking() {
            return;
        }
        for (i, e) in self.table.entries.iter().enumerate() {
            if self.used[i] || self.known.contains(&e.key.as_str()) {
                continue;
            }
            let mut d = Diagnostic::new(
                e.key_span,
                join(&self.path, &e.key),
                format!("unknown key `{}`", e.key),
            );
            if !self.known.is_empty() {
                d = d.expected(format!("one of: {}", self.known.join(", ")));
            }
            if let Some(best) = closest(&e.key, self.known.iter().copied()) {
                d = d.hint(format!("did you mean `{best}`?"));
            } else {
                d = d.hint(
                    "remove it, or check the spelling against the config reference in the README",
                );
            }
            self.diags.push(d);
        }
    }
}

/// Builds a diagnostic; [`DiagnosticBuilder::emit`] records it.
#[derive(Debug)]
#[must_use = "call .emit() to record the diagnostic"]
pub struct DiagnosticBuilder<'a> {
    diags: &'a Diagnostics,
    diag: Option<Diagnostic>,
}

impl DiagnosticBuilder<'_> {
    pub fn expected(mut self, e: impl Into<String>) -> Self {
        if let Some(d) = self.diag.as_mut() {
            d.expected = Some(e.into());
        }
        self
    }
    pub fn hint(mut self, h: impl Into<String>) -> Self {
        if let Some(d) = self.diag.as_mut() {
            d.hint = Some(h.into());
        }
        self
    }
    pub fn emit(mut self) {
        if let Some(d) = self.diag.take() {
            self.diags.push(d);
        }
    }
}

/// What a duration looks like, for messages.
pub const DURATION_EXPECTED: &str =
    "a duration string such as \"250ms\", \"10s\", \"5m\", \"2h\" or \"1d\"";

/// What a byte size looks like, for messages.
pub const SIZE_EXPECTED: &str =
    "a byte count or a size string such as \"512KiB\", \"64MiB\", \"1GiB\" or \"100MB\"";

/// Parses `"512KiB"`, `"64MiB"`, `"1GiB"`, `"100MB"`, `"4096"`, `"4096B"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{num}` is not a number"))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` (use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    let bytes = n * mult;
    if !bytes.is_finite() || bytes > 1e15 {
        return Err("too large".into());
    }
    Ok(bytes as u64)
}

/// Parses `"250ms"`, `"1.5s"`, `"5m"`, `"2h"`, `"1d"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| "missing unit (ms, s, m, h or d)".to_string())?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{num}` is not a number"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        other => return Err(format!("unknown unit `{other}` (use ms, s, m, h or d)")),
    };
    if !secs.is_finite() || secs > 1e9 {
        return Err("too large".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
pub fn closest<'c>(word: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(&word.to_ascii_lowercase(), &c.to_ascii_lowercase());
        let limit = (c.len().max(word.len()) / 3).max(1);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    // Optimal string alignment distance: insert, delete, substitute, swap neighbours
    // ("smaple" for "sample" is one edit).
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..floor_char_boundary(src, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Renders diagnostics like a compiler: `error: ...`, `--> file:line:col`, the source
/// line with a caret underline, then the key path, what was expected and a hint.
pub fn render(file: &str, src: &str, diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        let (line, col) = line_col(src, d.span.start);
        let _ = writeln!(out, "error: {}", d.message);
        let _ = writeln!(out, "  --> {file}:{line}:{col}");
        if let Some(text) = src.lines().nth(line - 1) {
            let gutter = line.to_string();
            let pad = " ".repeat(gutter.len());
            let end = floor_char_boundary(src, d.span.end.min(src.len()));
            let start = floor_char_boundary(src, d.span.start.min(src.len()));
            let width = src[start..end]
                .lines()
                .next()
                .map(|l| l.chars().count())
                .unwrap_or(0)
                .clamp(1, text.chars().count().saturating_sub(col - 1).max(1));
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{gutter} | {text}");
            let _ = writeln!(out, "{pad} | {}{}", " ".repeat(col - 1), "^".repeat(width));
        }
        if !d.path.is_empty() {
            let _ = writeln!(out, "  = key: {}", d.path);
        }
        if let Some(e) = &d.expected {
            let _ = writeln!(out, "  = expected: {e}");
        }
        if let Some(h) = &d.hint {
            let _ = writeln!(out, "  = help: {h}");
        }
        out.push('\n');
    }
    let n = diags.len();
    let _ = writeln!(out, "{n} error{} in {file}", if n == 1 { "" } else { "s" });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(src: &str, f: impl FnOnce(&mut TableReader<'_>)) -> Vec<Diagnostic> {
        let table = match parse_document(src) {
            Ok(t) => t,
            Err(d) => return d,
        };
        let diags = Diagnostics::new();
        {
            let mut r = TableReader::new(&table, "", &diags);
            f(&mut r);
        }
        diags.into_vec()
    }

    #[test]
    fn unknown_key_suggests_the_closest_known_key() {
        let d = read("smaple_rate = 3\n", |r| {
            let _ = r.f64("sample_rate");
        });
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].hint.as_deref(), Some("did you mean `sample_rate`?"));
        assert_eq!(line_col("smaple_rate = 3\n", d[0].span.start), (1, 1));
    }

    #[test]
    fn all_errors_are_collected_not_just_the_first() {
        let d = read("a = 'x'\nb = 1\nc = true\n", |r| {
            let _ = r.f64("a");
            let _ = r.string("b");
            let _ = r.req_string("missing");
        });
        // a: wrong type, b: wrong type, c: unknown, missing: required.
        assert_eq!(d.len(), 4);
    }

    #[test]
    fn durations_need_units_and_parse_all_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        let d = read("t = 10\n", |r| {
            let _ = r.duration("t");
        });
        assert_eq!(
            d[0].hint.as_deref(),
            Some("write `t = \"10s\"` (or \"10ms\")")
        );
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let d = read("a = [1, 2\n", |_| {});
        assert_eq!(d.len(), 1);
        assert!(d[0].message.starts_with("invalid TOML"));
    }

    #[test]
    fn integers_in_all_radixes_and_with_underscores() {
        let t = parse_document("a = 0x1F\nb = -1_000\nc = 0b101\n").expect("valid toml");
        let vals: Vec<_> = t.entries.iter().map(|e| e.node.value.clone()).collect();
        assert_eq!(
            vals,
            vec![NodeValue::Int(31), NodeValue::Int(-1000), NodeValue::Int(5)]
        );
    }

    #[test]
    fn render_points_at_line_and_column() {
        let src = "[a]\n  rate = 'fast'\n";
        let d = read(src, |r| {
            if let Some(mut t) = r.table("a") {
                let _ = t.f64("rate");
            }
        });
        let text = render("x.toml", src, &d);
        assert!(text.contains("--> x.toml:2:10"), "{text}");
        assert!(text.contains("= key: a.rate"), "{text}");
        assert!(text.contains("1 error in x.toml"), "{text}");
    }

    #[test]
    fn closest_ignores_far_away_words() {
        assert_eq!(
            closest("kind", ["kinds", "name"].into_iter()),
            Some("kinds")
        );
        assert_eq!(closest("zzzzzz", ["kind", "name"].into_iter()), None);
    }
}
