//! OPC UA values to samples: the Variant's type, the status code's quality and
//! the source timestamp's time.

use edge_driver_api::{
    BadReason, DriverContext, Quality, Sample, SignalId, TextChanges, Timestamp, Value,
};
use opcua::types::{DataValue, DateTime, StatusCode, Variant};

use crate::config::Tag;

/// 100 ns ticks from 1601-01-01 (OPC UA's epoch) to 1970-01-01.
const UNIX_EPOCH_TICKS: i64 = 116_444_736_000_000_000;

/// A DateTime as Unix nanoseconds (`None` for the null DateTime).
pub fn unix_ns(t: &DateTime) -> Option<i64> {
    if t.is_null() {
        return None;
    }
    t.checked_ticks()
        .checked_sub(UNIX_EPOCH_TICKS)?
        .checked_mul(100)
}

/// The quality an OPC UA status code gives: Good (any Good code, whatever its
/// info bits) or bad with the code's upper 16 bits (Bad and Uncertain alike).
pub fn quality(status: StatusCode) -> Quality {
    if status.is_good() {
        Quality::Good
    } else {
        Quality::Bad(code(status))
    }
}

/// The bad reason a status code gives: the code's upper 16 bits.
pub fn code(status: StatusCode) -> BadReason {
    BadReason::DeviceException((status.bits() >> 16) as u16)
}

/// A status code's name (`BadNodeIdUnknown`).
pub fn status_name(s: StatusCode) -> &'static str {
    s.sub_code().name()
}

/// A scalar as a number (`None` for non-numeric types).
pub fn number(v: &Variant) -> Option<Value> {
    Some(match v {
        Variant::Boolean(b) => Value::Bool(*b),
        Variant::SByte(x) => Value::I64(*x as i64),
        Variant::Byte(x) => Value::I64(*x as i64),
        Variant::Int16(x) => Value::I64(*x as i64),
        Variant::UInt16(x) => Value::I64(*x as i64),
        Variant::Int32(x) => Value::I64(*x as i64),
        Variant::UInt32(x) => Value::I64(*x as i64),
        Variant::Int64(x) => Value::I64(*x),
        Variant::UInt64(x) => match i64::try_from(*x) {
            Ok(i) => Value::I64(i),
            Err(_) => Value::F64(*x as f64),
        },
        Variant::Float(x) => Value::F64(*x as f64),
        Variant::Double(x) => Value::F64(*x),
        // Seconds since 1970 (an age or a duration can be windowed).
        Variant::DateTime(t) => Value::F64(unix_ns(t)? as f64 / 1e9),
        Variant::StatusCode(s) => Value::I64(s.bits() as i64),
        _ => return None,
    })
}

/// A scalar as text.
pub fn text(v: &Variant) -> Option<String> {
    Some(match v {
        Variant::Empty => return None,
        Variant::String(s) => s.as_ref().to_string(),
        Variant::LocalizedText(t) => t.text.as_ref().to_string(),
        Variant::DateTime(t) => t.to_rfc3339(),
        Variant::ByteString(b) => b
            .as_ref()
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>(),
        Variant::Array(_) => return None,
        other => match number(other) {
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::I64(i)) => i.to_string(),
            Some(Value::F64(f)) => f.to_string(),
            None => other.to_string(),
        },
    })
}

/// The time of a value: its source timestamp, else the server's, else `now`.
pub fn time_of(dv: &DataValue, now: Timestamp) -> Timestamp {
    let wall = dv
        .source_timestamp
        .as_ref()
        .and_then(unix_ns)
        .or_else(|| dv.server_timestamp.as_ref().and_then(unix_ns));
    Timestamp {
        wall_ns: wall.unwrap_or(now.wall_ns),
        ..now
    }
}

/// The elements of a value for a tag's signals: a scalar for one signal, the
/// array's elements for a slice (a server that ignores the IndexRange sends the
/// whole array: the slice is then taken here).
fn elements<'v>(tag: &Tag, v: &'v Variant, n: usize) -> Option<Vec<&'v Variant>> {
    match v {
        Variant::Array(a) => {
            let vals = &a.values;
            let start = if vals.len() > n {
                tag.index.unwrap_or(0) as usize
            } else {
                0
            };
            let slice = vals.get(start..start + n)?;
            Some(slice.iter().collect())
        }
        scalar if n == 1 => Some(vec![scalar]),
        _ => None,
    }
}

/// Where one DataValue goes: the driver's context (text events), the last text
/// of each text signal (slot = signal index: only changes are reported, as a
/// polling Read repeats them), and the batch of samples.
pub struct Out<'a> {
    pub ctx: &'a DriverContext,
    pub texts: &'a mut TextChanges,
    pub samples: &'a mut Vec<Sample>,
}

/// Turns one DataValue of `tag` into samples (numbers) or text events.
pub fn deliver(tag: &Tag, ids: &[SignalId], dv: &DataValue, now: Timestamp, o: &mut Out<'_>) {
    let out = &mut *o.samples;
    let ts = time_of(dv, now);
    let q = quality(dv.status.unwrap_or(StatusCode::Good));
    if let Quality::Bad(why) = q {
        bad(tag, ids, ts, why, out);
        return;
    }
    let empty = Variant::Empty;
    let value = dv.value.as_ref().unwrap_or(&empty);
    let Some(items) = elements(tag, value, ids.len()) else {
        bad(tag, ids, ts, BadReason::Decode, out);
        return;
    };
    for (id, v) in ids.iter().zip(items) {
        if tag.text {
            if let Some(t) = text(v)
                && let Some(changed) = o.texts.update(id.index(), &t)
            {
                o.ctx.emit_text(*id, ts, changed);
            }
            continue;
        }
        out.push(match number(v) {
            Some(Value::F64(f)) => Sample::new_f64(ts, *id, f),
            Some(val) => Sample {
                ts,
                signal: *id,
                value: val,
                quality: Quality::Good,
            },
            None => Sample::bad(ts, *id, BadReason::Decode),
        });
    }
}

/// Bad samples for every signal of a numeric tag (text tags carry no quality).
pub fn bad(tag: &Tag, ids: &[SignalId], ts: Timestamp, why: BadReason, out: &mut Vec<Sample>) {
    if !tag.text {
        out.extend(ids.iter().map(|id| Sample::bad(ts, *id, why)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NodeRef, Tag};
    use edge_driver_api::config::Span;
    use opcua::types::{Array, NodeId, VariantScalarTypeId};
    use std::time::Duration;

    fn tag(index: Option<u32>, elements: u32) -> Tag {
        Tag {
            name: "t".into(),
            node: NodeRef::Id(NodeId::new(2, "x")),
            text: false,
            unit: None,
            index,
            elements,
            sampling: Duration::from_secs(1),
            queue_size: 1,
            deadband: None,
            write: None,
            span: Span::default(),
        }
    }

    fn ctx() -> DriverContext {
        DriverContext::new(
            "t".into(),
            std::sync::Arc::new(edge_driver_api::testing::CollectSink::new()),
            tokio_util::sync::CancellationToken::new(),
            edge_driver_api::Clock::virtual_from(0),
        )
    }

    fn now() -> Timestamp {
        Timestamp {
            wall_ns: 5,
            mono_ns: 7,
            synced: true,
        }
    }

    #[test]
    fn every_numeric_type_becomes_its_value() {
        assert_eq!(number(&Variant::Boolean(true)), Some(Value::Bool(true)));
        assert_eq!(number(&Variant::SByte(-3)), Some(Value::I64(-3)));
        assert_eq!(
            number(&Variant::UInt32(u32::MAX)),
            Some(Value::I64(u32::MAX as i64))
        );
        assert_eq!(
            number(&Variant::Int64(i64::MIN)),
            Some(Value::I64(i64::MIN))
        );
        assert_eq!(
            number(&Variant::UInt64(u64::MAX)),
            Some(Value::F64(u64::MAX as f64))
        );
        assert_eq!(number(&Variant::Float(1.5)), Some(Value::F64(1.5)));
        let t = DateTime::ymd_hms(2026, 1, 2, 3, 4, 5);
        assert_eq!(number(&Variant::from(t)), Some(Value::F64(1_767_323_045.0)));
        assert_eq!(number(&Variant::from("x")), None);
    }

    #[test]
    fn status_codes_become_quality_with_the_code() {
        assert_eq!(quality(StatusCode::Good), Quality::Good);
        assert_eq!(
            quality(StatusCode::BadNodeIdUnknown),
            Quality::Bad(BadReason::DeviceException(0x8034))
        );
        assert_eq!(
            quality(StatusCode::UncertainLastUsableValue),
            Quality::Bad(BadReason::DeviceException(0x4090))
        );
    }

    #[test]
    fn the_source_timestamp_is_the_sample_time() {
        let mut dv = DataValue::new_now(Variant::Double(1.0));
        let src = DateTime::ymd_hms(2026, 1, 2, 3, 4, 5);
        dv.source_timestamp = Some(src);
        assert_eq!(time_of(&dv, now()).wall_ns, 1_767_323_045_000_000_000);
        assert_eq!(time_of(&dv, now()).mono_ns, 7);
        dv.source_timestamp = None;
        dv.server_timestamp = None;
        assert_eq!(time_of(&dv, now()).wall_ns, 5);
    }

    #[test]
    fn an_array_slice_fills_one_signal_per_element() {
        let arr = Array::new(
            VariantScalarTypeId::Double,
            vec![
                Variant::Double(1.0),
                Variant::Double(2.0),
                Variant::Double(3.0),
                Variant::Double(4.0),
            ],
        )
        .expect("array");
        let dv = DataValue::new_now(Variant::Array(Box::new(arr)));
        let (c, mut texts, mut out) = (ctx(), TextChanges::new(2), Vec::new());
        // The server ignored the IndexRange: the slice is taken here.
        let mut o = Out {
            ctx: &c,
            texts: &mut texts,
            samples: &mut out,
        };
        deliver(
            &tag(Some(1), 2),
            &[SignalId(0), SignalId(1)],
            &dv,
            now(),
            &mut o,
        );
        let vals: Vec<f64> = out.iter().map(|s| s.value.as_f64()).collect();
        assert_eq!(vals, vec![2.0, 3.0]);
    }

    #[test]
    fn a_bad_status_or_a_string_on_a_number_tag_is_bad_quality() {
        let (c, mut texts, mut out) = (ctx(), TextChanges::new(1), Vec::new());
        let mut o = Out {
            ctx: &c,
            texts: &mut texts,
            samples: &mut out,
        };
        let dv = DataValue {
            status: Some(StatusCode::BadSensorFailure),
            ..DataValue::new_now(Variant::Double(1.0))
        };
        deliver(&tag(None, 1), &[SignalId(0)], &dv, now(), &mut o);
        let dv = DataValue::new_now(Variant::from("hello"));
        deliver(&tag(None, 1), &[SignalId(0)], &dv, now(), &mut o);
        assert_eq!(
            out.iter().map(|s| s.quality).collect::<Vec<_>>(),
            vec![
                Quality::Bad(BadReason::DeviceException(0x808C)),
                Quality::Bad(BadReason::Decode)
            ]
        );
    }
}
