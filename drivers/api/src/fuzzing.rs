//! Entry points of the fuzz targets in `drivers/api/fuzz/` (`cargo fuzz`), also
//! run on the kept corpora by the unit tests below: every decoder of bytes that
//! come from outside — device payloads and configuration files — must never
//! panic, whatever it is given.

use crate::config::{Diagnostics, NodeValue, Table, TableReader, parse_document, render};

/// Reads `bytes` as a TOML configuration the way every section reader does:
/// the document, then every value of every table through [`TableReader`]'s typed
/// getters (strings, numbers, durations, sizes, tables, arrays), and renders
/// whatever diagnostics come out with their `file:line:col`.
pub fn config_document(bytes: &[u8]) {
    let Ok(src) = std::str::from_utf8(bytes) else {
        return;
    };
    let diags = Diagnostics::new();
    match parse_document(src) {
        Ok(table) => walk(&table, "root", &diags, 0),
        Err(errs) => {
            let _ = render("fuzz.toml", src, &errs);
        }
    }
    let _ = render("fuzz.toml", src, &diags.into_vec());
}

fn walk(table: &Table, path: &str, diags: &Diagnostics, depth: usize) {
    if depth > 16 {
        return;
    }
    let mut r = TableReader::new(table, path, diags);
    r.skip_unknown_check();
    for e in &table.entries {
        // The readers take `&'static str` keys: the corpus uses these few.
        let key: &'static str = match e.key.as_str() {
            "a" => "a",
            "b" => "b",
            "name" => "name",
            "poll" => "poll",
            "size" => "size",
            _ => continue,
        };
        let _ = r.string(key);
        let _ = r.f64(key);
        let _ = r.int_in(key, -5, 5);
        let _ = r.bool(key);
        let _ = r.duration(key);
        let _ = r.size(key);
        let _ = r.strings(key);
        for t in r.tables(key) {
            drop(t);
        }
    }
    for e in &table.entries {
        match &e.node.value {
            NodeValue::Table(t) => walk(t, &e.key, diags, depth + 1),
            NodeValue::Array(items) => {
                for n in items {
                    if let NodeValue::Table(t) = &n.value {
                        walk(t, &e.key, diags, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Decodes `bytes` as a device payload in every format (number, text, JSON and
/// CBOR with pointers and a timestamp pointer, SenML JSON and CBOR).
#[cfg(feature = "payload")]
pub fn payload(bytes: &[u8]) {
    use crate::payload::{Format, Pointer, TimeUnit, parse};
    let pointers = || {
        ["/t", "/a/0", "", "/~1x/~0y"]
            .iter()
            .enumerate()
            .map(|(i, p)| Pointer {
                pointer: p.to_string(),
                template: i,
            })
            .collect::<Vec<_>>()
    };
    let formats = [
        Format::Number,
        Format::Text,
        Format::Json {
            values: pointers(),
            timestamp: Some(("/ts".into(), TimeUnit::Millis)),
        },
        Format::Cbor {
            values: pointers(),
            timestamp: Some(("/ts".into(), TimeUnit::Seconds)),
        },
        Format::SenMl,
        Format::SenMlCbor,
    ];
    for f in &formats {
        let _ = parse(f, bytes, 1_700_000_000_000_000_000, &mut |item| {
            assert!(item.template < 4);
            std::hint::black_box(&item);
        });
    }
}

#[cfg(test)]
mod tests {
    fn replay(target: &str, f: fn(&[u8])) {
        crate::testing::replay_corpus(env!("CARGO_MANIFEST_DIR"), target, f);
    }

    #[test]
    fn the_config_reader_corpus_reads_without_panic() {
        replay("config_document", super::config_document);
    }

    #[cfg(feature = "payload")]
    #[test]
    fn the_payload_corpus_decodes_without_panic() {
        replay("payload", super::payload);
    }
}
