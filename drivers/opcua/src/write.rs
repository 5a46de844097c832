//! Writes: a value for a writable numeric tag is written to the node's Value
//! attribute in the node's own type (read first: OPC UA refuses a Variant of
//! another type with BadTypeMismatch), range-checked before it is sent. With
//! `verify`, the value is read back and must be the one written.

use std::time::Duration;

use edge_driver_api::{WriteDone, WriteError, WriteFailure, WriteRequest};
use opcua::client::Session;
use opcua::types::{
    AttributeId, DataValue, NodeId, NumericRange, ReadValueId, StatusCode, TimestampsToReturn,
    Variant, WriteValue,
};

use crate::convert;
use crate::driver::Shared;

/// The tag that carries `signal` and may be written.
fn tag_of(sh: &Shared, req: &WriteRequest) -> Option<usize> {
    sh.cfg
        .tags
        .iter()
        .zip(&sh.ids)
        .position(|(t, ids)| t.write.is_some() && ids.first() == Some(&req.signal))
}

/// `value` as a Variant of the same type as `current`.
pub fn encode(value: f64, current: &Variant) -> Result<Variant, String> {
    let int = |lo: f64, hi: f64| -> Result<f64, String> {
        let r = value.round();
        if (value - r).abs() > 1e-9 {
            return Err(format!("{value} is not a whole number"));
        }
        if r < lo || r > hi {
            return Err(format!(
                "{value} does not fit the node's type ({lo} to {hi})"
            ));
        }
        Ok(r)
    };
    Ok(match current {
        Variant::Boolean(_) => match value {
            0.0 => Variant::Boolean(false),
            1.0 => Variant::Boolean(true),
            _ => return Err(format!("{value} is not a Boolean (0 or 1)")),
        },
        Variant::SByte(_) => Variant::SByte(int(i8::MIN as f64, i8::MAX as f64)? as i8),
        Variant::Byte(_) => Variant::Byte(int(0.0, u8::MAX as f64)? as u8),
        Variant::Int16(_) => Variant::Int16(int(i16::MIN as f64, i16::MAX as f64)? as i16),
        Variant::UInt16(_) => Variant::UInt16(int(0.0, u16::MAX as f64)? as u16),
        Variant::Int32(_) => Variant::Int32(int(i32::MIN as f64, i32::MAX as f64)? as i32),
        Variant::UInt32(_) => Variant::UInt32(int(0.0, u32::MAX as f64)? as u32),
        Variant::Int64(_) => {
            Variant::Int64(int(-9.007_199_254_740_992e15, 9.007_199_254_740_992e15)? as i64)
        }
        Variant::UInt64(_) => Variant::UInt64(int(0.0, 9.007_199_254_740_992e15)? as u64),
        Variant::Float(_) => {
            if value.abs() > f32::MAX as f64 {
                return Err(format!("{value} does not fit a Float"));
            }
            Variant::Float(value as f32)
        }
        Variant::Double(_) => Variant::Double(value),
        other => {
            return Err(format!(
                "the node holds a {:?}, not a number",
                other.scalar_type_id()
            ));
        }
    })
}

/// Reads the Value of `node`.
async fn read(
    session: &Session,
    node: &NodeId,
    timeout: Duration,
) -> Result<DataValue, WriteError> {
    let ids = [ReadValueId::new_value(node.clone())];
    let read = session.read(&ids, TimestampsToReturn::Neither, 0.0);
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(mut v)) if !v.is_empty() => Ok(v.swap_remove(0)),
        Ok(Ok(_)) => Err(WriteError::new(
            WriteFailure::Device,
            "the server read nothing",
        )),
        Ok(Err(e)) => Err(WriteError::new(
            WriteFailure::Communication,
            format!("read: {e}"),
        )),
        Err(_) => Err(WriteError::new(
            WriteFailure::Communication,
            "no answer to a read",
        )),
    }
}

fn refused(code: StatusCode, what: &str) -> WriteError {
    WriteError::new(
        WriteFailure::Device,
        format!(
            "the server refused the {what}: {}",
            crate::describe_status((code.bits() >> 16) as u16)
        ),
    )
}

/// Performs `req` on the node of its tag (`nodes`: per tag, its resolved node).
pub(crate) async fn perform(
    sh: &Shared,
    session: &Session,
    nodes: &[Option<NodeId>],
    req: WriteRequest,
) {
    let r = write(sh, session, nodes, &req).await;
    req.answer(r);
}

async fn write(
    sh: &Shared,
    session: &Session,
    nodes: &[Option<NodeId>],
    req: &WriteRequest,
) -> Result<WriteDone, WriteError> {
    let timeout = sh.cfg.timeout;
    let i = tag_of(sh, req).ok_or_else(|| {
        WriteError::new(WriteFailure::Encode, "no writable tag carries this signal")
    })?;
    let node = nodes.get(i).cloned().flatten().ok_or_else(|| {
        WriteError::new(
            WriteFailure::Device,
            "the tag's browse path did not resolve on the server",
        )
    })?;
    let current = read(session, &node, timeout).await?;
    if let Some(s) = current.status.filter(|s| s.is_bad()) {
        return Err(refused(s, "read of the node's type"));
    }
    let variant = encode(req.value, current.value.as_ref().unwrap_or(&Variant::Empty))
        .map_err(|e| WriteError::new(WriteFailure::Encode, e))?;
    let wv = WriteValue {
        node_id: node.clone(),
        attribute_id: AttributeId::Value as u32,
        index_range: NumericRange::None,
        value: DataValue::value_only(variant),
    };
    let t0 = tokio::time::Instant::now();
    let status = match tokio::time::timeout(timeout, session.write(&[wv])).await {
        Ok(Ok(s)) => s.first().copied().unwrap_or(StatusCode::BadUnexpectedError),
        Ok(Err(e)) => {
            sh.stats.error();
            return Err(WriteError::new(
                WriteFailure::Communication,
                format!("write: {e}"),
            ));
        }
        Err(_) => {
            sh.stats.timeout();
            return Err(WriteError::new(
                WriteFailure::Communication,
                "no answer to the write",
            ));
        }
    };
    sh.stats.success(t0.elapsed());
    if !status.is_good() {
        sh.stats.exception();
        return Err(refused(status, "write"));
    }
    if !req.verify {
        return Ok(WriteDone { read_back: None });
    }
    let back = read(session, &node, timeout)
        .await
        .map_err(|e| WriteError::new(WriteFailure::Verify, format!("written, but {e}")))?;
    let got = back
        .value
        .as_ref()
        .and_then(convert::number)
        .map(|v| v.as_f64());
    match got {
        Some(b) if (b - req.value).abs() <= 1e-6 * req.value.abs().max(1.0) => {
            Ok(WriteDone { read_back: Some(b) })
        }
        other => Err(WriteError::new(
            WriteFailure::Verify,
            format!("written, but the node reads back {other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_take_the_nodes_own_type_and_must_fit_it() {
        assert_eq!(
            encode(21.5, &Variant::Double(0.0)),
            Ok(Variant::Double(21.5))
        );
        assert_eq!(encode(21.5, &Variant::Float(0.0)), Ok(Variant::Float(21.5)));
        assert_eq!(encode(-3.0, &Variant::Int16(0)), Ok(Variant::Int16(-3)));
        assert_eq!(
            encode(1.0, &Variant::Boolean(false)),
            Ok(Variant::Boolean(true))
        );
        assert!(encode(70000.0, &Variant::Int16(0)).is_err());
        assert!(encode(-1.0, &Variant::UInt32(0)).is_err());
        assert!(encode(2.5, &Variant::Int32(0)).is_err());
        assert!(encode(2.0, &Variant::Boolean(false)).is_err());
        assert!(encode(1.0, &Variant::from("text")).is_err());
    }
}
