//! `edge-agent tags`: the control socket's answer and the table it prints.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::ingest::latest::{TagStatus, TagValue};

/// The control socket's `tags` answer: the tags that matched, of `total`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TagsReport {
    pub agent: String,
    pub total: usize,
    pub tags: Vec<TagStatus>,
}

/// A number in at most 7 significant digits, without trailing zeros.
fn number(x: f64) -> String {
    let a = x.abs();
    if x.fract() == 0.0 && a < 1e15 {
        return format!("{x:.0}");
    }
    if a != 0.0 && !(1e-3..1e7).contains(&a) {
        return format!("{x:.4e}");
    }
    let digits = (7 - (a.max(1.0).log10().floor() as i32 + 1)).clamp(0, 6) as usize;
    let s = format!("{x:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A text value quoted, control characters escaped, cut at 40 characters.
fn text(t: &str) -> String {
    let mut out: String = t.chars().take(40).flat_map(char::escape_debug).collect();
    if t.chars().count() > 40 {
        out.push('…');
    }
    format!("\"{out}\"")
}

fn value(v: Option<&TagValue>) -> String {
    match v {
        None => "-".into(),
        Some(TagValue::Number(x)) => number(*x),
        Some(TagValue::Integer(i)) => i.to_string(),
        Some(TagValue::Bool(b)) => b.to_string(),
        Some(TagValue::Text(t)) => text(t),
    }
}

fn age(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 10.0 => format!("{s:.1}s"),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) if s < 7200.0 => format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64),
        Some(s) => format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        ),
    }
}

fn quality(t: &TagStatus) -> String {
    let q = if t.quality == "bad" {
        "BAD"
    } else {
        t.quality.as_str()
    };
    match &t.reason {
        Some(r) => format!("{q}: {r}"),
        None => q.to_string(),
    }
}

/// The table `edge-agent tags` prints: one line per tag, columns aligned. A bad
/// or stale tag's value is its last good one, with that value's age.
pub fn render_tags(r: &TagsReport, filter: &str) -> String {
    let head = [
        "TAG", "VALUE", "UNIT", "QUALITY", "AGE", "DRIVER", "ADDRESS",
    ];
    let rows: Vec<[String; 7]> = r
        .tags
        .iter()
        .map(|t| {
            let a = if t.quality == "good" {
                t.age_s
            } else {
                t.value_age_s.or(t.age_s)
            };
            [
                t.name.clone(),
                value(t.value.as_ref()),
                t.unit.clone().unwrap_or_default(),
                quality(t),
                age(a),
                t.driver.clone(),
                t.address.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for row in &rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut o = String::new();
    let line = |o: &mut String, cells: &[&str]| {
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            let last = i + 1 == cells.len();
            if last {
                let _ = write!(o, "{c}");
            } else {
                let pad = w.saturating_sub(c.chars().count());
                let _ = write!(o, "{c}{}  ", " ".repeat(pad));
            }
        }
        o.truncate(o.trim_end().len());
        o.push('\n');
    };
    line(&mut o, &head);
    for row in &rows {
        line(&mut o, &row.each_ref().map(String::as_str));
    }
    let bad = r.tags.iter().filter(|t| t.quality != "good").count();
    let _ = match (r.tags.len(), filter.is_empty()) {
        (0, false) => writeln!(o, "no tag matches `{filter}` ({} tags in all)", r.total),
        (n, true) => writeln!(o, "{n} tags, {bad} not good · agent {}", r.agent),
        (n, false) => writeln!(
            o,
            "{n} of {} tags match `{filter}`, {bad} not good · agent {}",
            r.total, r.agent
        ),
    };
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, v: Option<TagValue>, q: &str, reason: Option<&str>) -> TagStatus {
        TagStatus {
            name: name.into(),
            value: v,
            unit: Some("degC".into()),
            quality: q.into(),
            reason: reason.map(str::to_string),
            age_s: Some(0.25),
            value_age_s: Some(75.0),
            driver: "plc".into(),
            address: Some("holding 100 f32, unit 1".into()),
            bad_samples: 0,
        }
    }

    #[test]
    fn the_table_aligns_columns_and_says_why_a_tag_is_bad() {
        let r = TagsReport {
            agent: "gw1".into(),
            total: 3,
            tags: vec![
                tag(
                    "line1.temp",
                    Some(TagValue::Number(21.456789012)),
                    "good",
                    None,
                ),
                tag(
                    "line1.pressure",
                    Some(TagValue::Number(6.0)),
                    "bad",
                    Some("exception 2 (illegal data address)"),
                ),
                tag(
                    "line1.recipe",
                    Some(TagValue::Text("A\n<b>".into())),
                    "good",
                    None,
                ),
            ],
        };
        let out = render_tags(&r, "");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert!(lines[0].starts_with("TAG             VALUE"), "{out}");
        assert!(lines[1].starts_with("line1.temp      21.45679"), "{out}");
        assert!(
            lines[2].contains("BAD: exception 2 (illegal data address)  75s"),
            "the last good value's age: {out}"
        );
        assert!(lines[3].contains("\"A\\n<b>\""), "{out}");
        assert_eq!(lines[4], "3 tags, 1 not good · agent gw1");
        let none = TagsReport { tags: vec![], ..r };
        assert_eq!(
            render_tags(&none, "zz"),
            "TAG  VALUE  UNIT  QUALITY  AGE  DRIVER  ADDRESS\nno tag matches `zz` (3 tags in all)\n"
        );
    }

    #[test]
    fn numbers_keep_seven_significant_digits() {
        for (x, want) in [
            (21.456789012, "21.45679"),
            (6.0, "6"),
            (-0.5, "-0.5"),
            (1234567.8, "1234568"),
            (4e9, "4000000000"),
            (1.5e15, "1.5000e15"),
            (0.0, "0"),
            (1e-5, "1.0000e-5"),
            (3.25e10 + 0.5, "3.2500e10"),
        ] {
            assert_eq!(number(x), want);
        }
    }
}
