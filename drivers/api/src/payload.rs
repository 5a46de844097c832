//! Sensor payload formats: a plain number, text, JSON or CBOR with pointers, and
//! SenML (RFC 8428) in JSON or CBOR.

use serde_json::Value as Json;

/// A value found in a payload.
#[derive(Clone, Debug, PartialEq)]
pub enum Found {
    Number(f64),
    Bool(bool),
    Text(String),
    /// Present but not a usable value (a string in a numeric field, NaN...).
    Bad,
}

/// Delivers a found value to signal `id`: a sample for a numeric signal, an event
/// for a text signal (`text`). Returns `false` when the value does not fit the
/// signal (a number for a text signal, text or garbage for a numeric one — the
/// numeric signal then gets a `Bad(Decode)` sample).
pub fn deliver(
    value: Found,
    text: bool,
    id: crate::SignalId,
    ts: crate::Timestamp,
    ctx: &crate::DriverContext,
    out: &mut Vec<crate::Sample>,
) -> bool {
    use crate::{BadReason, Quality, Sample, Value};
    match (value, text) {
        (Found::Text(s), true) => {
            ctx.emit_text(id, ts, &s);
            true
        }
        (Found::Number(v), false) => {
            out.push(Sample::new_f64(ts, id, v));
            true
        }
        (Found::Bool(b), false) => {
            out.push(Sample {
                ts,
                signal: id,
                value: Value::Bool(b),
                quality: Quality::Good,
            });
            true
        }
        (_, false) => {
            out.push(Sample::bad(ts, id, BadReason::Decode));
            false
        }
        (_, true) => false,
    }
}

/// Unit of a numeric timestamp in a JSON payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Millis,
}

/// One value of a JSON payload.
#[derive(Clone, Debug, PartialEq)]
pub struct Pointer {
    pub pointer: String,
    /// Index of the signal template it feeds.
    pub template: usize,
}

/// How a subscription's payloads are read.
#[derive(Clone, Debug, PartialEq)]
pub enum Format {
    /// The whole payload is a number (`21.5`, ` 3 `, `true`/`false`).
    Number,
    /// The whole payload is text (a text signal).
    Text,
    /// JSON; each pointer feeds one signal; an optional pointer gives the time.
    Json {
        values: Vec<Pointer>,
        timestamp: Option<(String, TimeUnit)>,
    },
    /// SenML JSON: every record is a value; `{name}` in the template is the record's
    /// resolved name (base name + name).
    SenMl,
    /// CBOR (RFC 8949), read with the same pointers as JSON (map keys as text,
    /// array indices as numbers).
    Cbor {
        values: Vec<Pointer>,
        timestamp: Option<(String, TimeUnit)>,
    },
    /// SenML CBOR (RFC 8428 §6: integer labels).
    SenMlCbor,
}

/// CBOR → JSON value (for pointer lookup). Byte strings become hex text; non-text
/// map keys their display form.
fn cbor_to_json(v: ciborium::value::Value) -> Json {
    use ciborium::value::Value as C;
    match v {
        C::Integer(i) => {
            let i: i128 = i.into();
            i64::try_from(i)
                .map(Json::from)
                .unwrap_or_else(|_| Json::from(i as f64))
        }
        C::Float(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        C::Text(t) => Json::String(t),
        C::Bool(b) => Json::Bool(b),
        C::Null => Json::Null,
        C::Bytes(b) => Json::String(b.iter().map(|x| format!("{x:02x}")).collect()),
        C::Tag(_, inner) => cbor_to_json(*inner),
        C::Array(a) => Json::Array(a.into_iter().map(cbor_to_json).collect()),
        C::Map(m) => Json::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        C::Text(t) => t,
                        C::Integer(i) => i128::from(i).to_string(),
                        other => format!("{other:?}"),
                    };
                    (key, cbor_to_json(v))
                })
                .collect(),
        ),
        _ => Json::Null,
    }
}

fn read_cbor(payload: &[u8]) -> Result<Json, PayloadError> {
    let v: ciborium::value::Value =
        ciborium::de::from_reader(payload).map_err(|e| PayloadError::Json(format!("CBOR: {e}")))?;
    Ok(cbor_to_json(v))
}

/// SenML CBOR labels (RFC 8428 table 4) → the JSON names.
fn senml_label(k: &str) -> &str {
    match k {
        "-2" => "bn",
        "-3" => "bt",
        "-4" => "bu",
        "-5" => "bv",
        "0" => "n",
        "1" => "u",
        "2" => "v",
        "3" => "vs",
        "4" => "vb",
        "6" => "t",
        other => other,
    }
}

/// Why a payload yielded nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayloadError {
    NotUtf8,
    NotANumber,
    Json(String),
    NotSenMl(&'static str),
}

/// A value with its (optional) wall time in ns and, for SenML, its name.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub template: usize,
    pub name: Option<String>,
    pub value: Found,
    pub wall_ns: Option<i64>,
}

fn number(v: &Json) -> Found {
    match v {
        Json::Number(n) => n.as_f64().map_or(Found::Bad, Found::Number),
        Json::Bool(b) => Found::Bool(*b),
        Json::String(s) => s.trim().parse::<f64>().map_or(Found::Bad, Found::Number),
        _ => Found::Bad,
    }
}

/// Reads `payload` in `format`, calling `emit` for every value. `now_ns` resolves
/// SenML relative times.
pub fn parse(
    format: &Format,
    payload: &[u8],
    now_ns: i64,
    emit: &mut dyn FnMut(Item),
) -> Result<(), PayloadError> {
    match format {
        Format::Number => {
            let s = std::str::from_utf8(payload).map_err(|_| PayloadError::NotUtf8)?;
            let s = s.trim();
            let v = match s {
                "true" | "on" | "ON" => Found::Bool(true),
                "false" | "off" | "OFF" => Found::Bool(false),
                _ => Found::Number(s.parse::<f64>().map_err(|_| PayloadError::NotANumber)?),
            };
            emit(Item {
                template: 0,
                name: None,
                value: v,
                wall_ns: None,
            });
            Ok(())
        }
        Format::Text => {
            let s = std::str::from_utf8(payload).map_err(|_| PayloadError::NotUtf8)?;
            emit(Item {
                template: 0,
                name: None,
                value: Found::Text(s.to_string()),
                wall_ns: None,
            });
            Ok(())
        }
        Format::Json { values, timestamp } | Format::Cbor { values, timestamp } => {
            let doc: Json = if matches!(format, Format::Cbor { .. }) {
                read_cbor(payload)?
            } else {
                serde_json::from_slice(payload).map_err(|e| PayloadError::Json(e.to_string()))?
            };
            let wall_ns = timestamp.as_ref().and_then(|(p, unit)| {
                let v = doc.pointer(p)?;
                let scale: i64 = match unit {
                    TimeUnit::Seconds => 1_000_000_000,
                    TimeUnit::Millis => 1_000_000,
                };
                // Integers exactly; fractions through f64.
                if let Some(i) = v.as_i64() {
                    return i.checked_mul(scale);
                }
                let ns = v.as_f64()? * scale as f64;
                (ns.is_finite() && ns.abs() < 9.2e18).then_some(ns as i64)
            });
            for p in values {
                // A missing pointer is not an error: devices often omit fields.
                if let Some(v) = doc.pointer(&p.pointer) {
                    emit(Item {
                        template: p.template,
                        name: None,
                        value: number(v),
                        wall_ns,
                    });
                }
            }
            Ok(())
        }
        Format::SenMl | Format::SenMlCbor => {
            let doc: Json = if *format == Format::SenMlCbor {
                match read_cbor(payload)? {
                    Json::Array(records) => Json::Array(
                        records
                            .into_iter()
                            .map(|r| match r {
                                Json::Object(o) => Json::Object(
                                    o.into_iter()
                                        .map(|(k, v)| (senml_label(&k).to_string(), v))
                                        .collect(),
                                ),
                                other => other,
                            })
                            .collect(),
                    ),
                    other => other,
                }
            } else {
                serde_json::from_slice(payload).map_err(|e| PayloadError::Json(e.to_string()))?
            };
            let Json::Array(records) = doc else {
                return Err(PayloadError::NotSenMl("a SenML pack is a JSON array"));
            };
            let (mut bn, mut bt, mut bv) = (String::new(), 0.0f64, 0.0f64);
            for r in &records {
                let Json::Object(o) = r else {
                    return Err(PayloadError::NotSenMl("a SenML record is a JSON object"));
                };
                if let Some(Json::String(s)) = o.get("bn") {
                    bn.clone_from(s);
                }
                if let Some(t) = o.get("bt").and_then(Json::as_f64) {
                    bt = t;
                }
                if let Some(v) = o.get("bv").and_then(Json::as_f64) {
                    bv = v;
                }
                let n = o.get("n").and_then(Json::as_str).unwrap_or("");
                let value = if let Some(v) = o.get("v") {
                    match v.as_f64() {
                        Some(x) => Found::Number(bv + x),
                        None => Found::Bad,
                    }
                } else if let Some(b) = o.get("vb") {
                    b.as_bool().map_or(Found::Bad, Found::Bool)
                } else if let Some(s) = o.get("vs") {
                    s.as_str()
                        .map_or(Found::Bad, |s| Found::Text(s.to_string()))
                } else {
                    // A base-only record carries no value.
                    continue;
                };
                let name = format!("{bn}{n}");
                if name.is_empty() {
                    return Err(PayloadError::NotSenMl("a SenML record without a name"));
                }
                let t = bt + o.get("t").and_then(Json::as_f64).unwrap_or(0.0);
                // RFC 8428: times below 2^28 are relative to now.
                let wall_ns = if t == 0.0 {
                    None
                } else if t.abs() < 268_435_456.0 {
                    Some(now_ns + (t * 1e9) as i64)
                } else {
                    Some((t * 1e9) as i64)
                };
                emit(Item {
                    template: 0,
                    name: Some(name),
                    value,
                    wall_ns,
                });
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(f: &Format, p: &[u8]) -> Result<Vec<Item>, PayloadError> {
        let mut out = Vec::new();
        parse(f, p, 1_000_000_000_000, &mut |i| out.push(i))?;
        Ok(out)
    }

    #[test]
    fn plain_numbers_and_booleans() {
        assert_eq!(
            all(&Format::Number, b" 21.5\n").expect("ok")[0].value,
            Found::Number(21.5)
        );
        assert_eq!(
            all(&Format::Number, b"true").expect("ok")[0].value,
            Found::Bool(true)
        );
        assert!(
            matches!(all(&Format::Number, b"NaN").expect("ok")[0].value, Found::Number(x) if x.is_nan())
        );
        assert_eq!(all(&Format::Number, b"21,5"), Err(PayloadError::NotANumber));
        assert_eq!(
            all(&Format::Number, &[0xFF, 0xFE]),
            Err(PayloadError::NotUtf8)
        );
    }

    #[test]
    fn json_pointers_with_a_millisecond_timestamp() {
        let f = Format::Json {
            values: vec![
                Pointer {
                    pointer: "/t".into(),
                    template: 0,
                },
                Pointer {
                    pointer: "/env/hum".into(),
                    template: 1,
                },
                Pointer {
                    pointer: "/missing".into(),
                    template: 2,
                },
            ],
            timestamp: Some(("/ts".into(), TimeUnit::Millis)),
        };
        let got = all(
            &f,
            br#"{"t": 21.5, "env": {"hum": "40"}, "ts": 1795000000123}"#,
        )
        .expect("ok");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].value, Found::Number(21.5));
        assert_eq!(got[1].value, Found::Number(40.0));
        assert_eq!(got[0].wall_ns, Some(1_795_000_000_123_000_000));
        assert!(matches!(all(&f, b"{oops"), Err(PayloadError::Json(_))));
    }

    #[test]
    fn cbor_and_senml_cbor_read_like_their_json_forms() {
        // {"t": 21.5, "h": 40} in CBOR.
        let cbor = [0xA2, 0x61, b't', 0xF9, 0x4D, 0x60, 0x61, b'h', 0x18, 0x28];
        let f = Format::Cbor {
            values: vec![
                Pointer {
                    pointer: "/t".into(),
                    template: 0,
                },
                Pointer {
                    pointer: "/h".into(),
                    template: 1,
                },
            ],
            timestamp: None,
        };
        let got = all(&f, &cbor).expect("ok");
        assert_eq!(got[0].value, Found::Number(21.5));
        assert_eq!(got[1].value, Found::Number(40.0));
        // [{-2: "dev:", 0: "temp", 2: 23.5}] in SenML CBOR.
        let senml = [
            0x81, 0xA3, 0x21, 0x64, b'd', b'e', b'v', b':', 0x00, 0x64, b't', b'e', b'm', b'p',
            0x02, 0xF9, 0x4D, 0xE0,
        ];
        let got = all(&Format::SenMlCbor, &senml).expect("ok");
        assert_eq!(got[0].name.as_deref(), Some("dev:temp"));
        assert_eq!(got[0].value, Found::Number(23.5));
        assert!(all(&Format::SenMlCbor, &[0xFF, 0x00]).is_err());
    }

    #[test]
    fn senml_resolves_base_name_time_and_value() {
        let p = br#"[{"bn":"urn:dev:ow:10e2073a01080063:","bt":1.320067464e+09,"bu":"%RH","v":20.0,"n":"hum"},
                    {"n":"temp","u":"Cel","v":23.1,"t":2},
                    {"n":"door","vb":true},
                    {"n":"label","vs":"ok"}]"#;
        let got = all(&Format::SenMl, p).expect("ok");
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0].name.as_deref(),
            Some("urn:dev:ow:10e2073a01080063:hum")
        );
        assert_eq!(got[1].value, Found::Number(23.1));
        assert_eq!(got[1].wall_ns, Some(1_320_067_466_000_000_000));
        assert_eq!(got[2].value, Found::Bool(true));
        assert_eq!(got[3].value, Found::Text("ok".into()));
        // Relative time: -5 s from now.
        let rel = all(&Format::SenMl, br#"[{"n":"x","v":1,"t":-5}]"#).expect("ok");
        assert_eq!(rel[0].wall_ns, Some(1_000_000_000_000 - 5_000_000_000));
        assert!(all(&Format::SenMl, br#"{"n":"x"}"#).is_err());
        assert!(all(&Format::SenMl, br#"[{"v":1}]"#).is_err());
    }
}
