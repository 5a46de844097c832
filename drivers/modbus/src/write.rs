//! Writes: a value in engineering units becomes the coil or registers of its
//! tag (`raw = (value − offset) / scale`, integers rounded to the nearest and
//! checked against the type's range), written with FC5/FC6 or FC15/FC16
//! (`write_multiple`), then optionally read back and compared register for
//! register (`verify`).

use edge_driver_api::{WriteDone, WriteError, WriteFailure, WriteRequest};

use crate::client::{Outcome, Payload, read, write};
use crate::config::Tag;
use crate::describe_exception;
use crate::driver::Shared;
use crate::plan::{Area, DataType, Request, decode_registers, encode_registers};

/// What a write did to the link.
pub(crate) enum LinkAfter {
    /// The link is fine.
    Fine,
    /// No answer: re-open it (a late reply would be taken for the next one).
    Reopen,
    /// It broke.
    Broken(tokio_modbus::Error),
}

/// The raw payload of `value` for `tag`.
pub(crate) fn encode(tag: &Tag, value: f64) -> Result<Payload, WriteError> {
    if tag.area == Area::Coil {
        return Ok(Payload::Coil(value != 0.0));
    }
    let raw = (value - tag.offset) / tag.scale;
    let range = |lo: f64, hi: f64| -> Result<f64, WriteError> {
        let r = raw.round();
        if r.is_finite() && r >= lo && r <= hi {
            Ok(r)
        } else {
            Err(WriteError::new(
                WriteFailure::Encode,
                format!(
                    "{value} is raw {raw} for {}, outside its range {lo}..={hi}",
                    tag.describe()
                ),
            ))
        }
    };
    let raw = match tag.ty {
        DataType::Bool => f64::from(u8::from(value != 0.0)),
        DataType::U16 => range(0.0, f64::from(u16::MAX))?,
        DataType::I16 => range(f64::from(i16::MIN), f64::from(i16::MAX))?,
        DataType::U32 => range(0.0, f64::from(u32::MAX))?,
        DataType::I32 => range(f64::from(i32::MIN), f64::from(i32::MAX))?,
        DataType::U64 => range(0.0, u64::MAX as f64)?,
        DataType::I64 => range(i64::MIN as f64, i64::MAX as f64)?,
        DataType::F32 if raw.is_finite() && raw.abs() <= f64::from(f32::MAX) => raw,
        DataType::F64 if raw.is_finite() => raw,
        DataType::F32 | DataType::F64 | DataType::String(_) => {
            return Err(WriteError::new(
                WriteFailure::Encode,
                format!("{value} cannot be written to {}", tag.describe()),
            ));
        }
    };
    Ok(Payload::Registers(encode_registers(raw, tag.ty, tag.order)))
}

/// Performs `req` on `link` and answers it; says what became of the link.
pub(crate) async fn perform(
    sh: &Shared,
    link: &mut tokio_modbus::client::Context,
    req: WriteRequest,
) -> LinkAfter {
    let Some(ti) = sh.tag_ids.iter().position(|id| *id == req.signal) else {
        let e = WriteError::new(WriteFailure::Encode, "the tag is not read by this driver");
        req.answer(Err(e));
        return LinkAfter::Fine;
    };
    let tag = &sh.tags[ti];
    let payload = match encode(tag, req.value) {
        Ok(p) => p,
        Err(e) => {
            req.answer(Err(e));
            return LinkAfter::Fine;
        }
    };
    let t0 = tokio::time::Instant::now();
    let sent = tokio::time::timeout(
        sh.timeout,
        write(link, tag.unit_id, tag.address, &payload, sh.write_multiple),
    )
    .await;
    let (result, after) = match sent {
        Ok(Ok(Ok(()))) => {
            sh.stats.success(t0.elapsed());
            match req.verify {
                true => verify(sh, link, tag, &payload).await,
                false => (Ok(WriteDone { read_back: None }), LinkAfter::Fine),
            }
        }
        Ok(Ok(Err(code))) => {
            sh.stats.exception();
            let why = format!(
                "{} refused the write: {}",
                tag.describe(),
                describe_exception(code.into())
            );
            (
                Err(WriteError::new(WriteFailure::Device, why)),
                LinkAfter::Fine,
            )
        }
        Ok(Err(e)) => (
            Err(comm(format!("write to {}: {e}", sh.link))),
            after_error(e),
        ),
        Err(_) => {
            sh.stats.timeout();
            let why = format!("no answer from {} within {:?}", sh.link, sh.timeout);
            (Err(comm(why)), LinkAfter::Reopen)
        }
    };
    req.answer(result);
    after
}

fn comm(why: String) -> WriteError {
    WriteError::new(WriteFailure::Communication, why)
}

fn after_error(e: tokio_modbus::Error) -> LinkAfter {
    match e {
        tokio_modbus::Error::Protocol(_) => LinkAfter::Reopen,
        e @ tokio_modbus::Error::Transport(_) => LinkAfter::Broken(e),
    }
}

/// Reads the tag back and compares what the device holds with what was written.
async fn verify(
    sh: &Shared,
    link: &mut tokio_modbus::client::Context,
    tag: &Tag,
    wrote: &Payload,
) -> (Result<WriteDone, WriteError>, LinkAfter) {
    let width = if tag.area.is_bit() { 1 } else { tag.ty.width() };
    let r = Request {
        unit: tag.unit_id,
        area: tag.area,
        start: tag.address,
        count: width,
        poll_ms: 0,
        tags: Vec::new(),
    };
    let got = match tokio::time::timeout(sh.timeout, read(link, &r)).await {
        Ok(Ok(Ok(o))) => o,
        Ok(Ok(Err(code))) => {
            let why = format!(
                "written, but reading back failed: {}",
                describe_exception(code.into())
            );
            return (
                Err(WriteError::new(WriteFailure::Verify, why)),
                LinkAfter::Fine,
            );
        }
        Ok(Err(e)) => {
            return (
                Err(comm(format!("read back from {}: {e}", sh.link))),
                after_error(e),
            );
        }
        Err(_) => {
            return (
                Err(comm(format!(
                    "written, but no answer to the read back within {:?}",
                    sh.timeout
                ))),
                LinkAfter::Reopen,
            );
        }
    };
    let (held, value) = match &got {
        Outcome::Bits(b) => (
            b.first().map(|b| Payload::Coil(*b)),
            b.first().map(|b| f64::from(u8::from(*b))),
        ),
        Outcome::Registers(w) => (
            Some(Payload::Registers(w.clone())),
            decode_registers(w, tag.ty, tag.order).map(|raw| raw * tag.scale + tag.offset),
        ),
        Outcome::Exception(_) => (None, None),
    };
    if held.as_ref() == Some(wrote) {
        (Ok(WriteDone { read_back: value }), LinkAfter::Fine)
    } else {
        let why = format!(
            "written, but {} reads back {}",
            tag.describe(),
            value.map_or("nothing decodable".to_string(), |v| v.to_string())
        );
        (
            Err(WriteError::new(WriteFailure::Verify, why)),
            LinkAfter::Fine,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::WordOrder;
    use std::time::Duration;

    fn tag(area: Area, ty: DataType, scale: f64, offset: f64) -> Tag {
        Tag {
            name: "t".into(),
            unit_id: 1,
            area,
            address: 10,
            ty,
            order: WordOrder::Cdab,
            scale,
            offset,
            eng_unit: None,
            poll: Duration::from_secs(1),
            span: Default::default(),
            write: None,
        }
    }

    #[test]
    fn values_become_raw_registers_through_scale_offset_and_word_order() {
        let t = tag(Area::HoldingRegister, DataType::U16, 0.1, 0.0);
        assert_eq!(encode(&t, 42.35).ok(), Some(Payload::Registers(vec![424])));
        let t = tag(Area::HoldingRegister, DataType::F32, 1.0, 0.0);
        assert_eq!(
            encode(&t, 1.5).ok(),
            Some(Payload::Registers(encode_registers(
                1.5,
                DataType::F32,
                WordOrder::Cdab
            )))
        );
        let t = tag(Area::HoldingRegister, DataType::I16, 1.0, -100.0);
        assert_eq!(
            encode(&t, -200.0).ok(),
            Some(Payload::Registers(vec![(-100i16) as u16]))
        );
        let t = tag(Area::Coil, DataType::Bool, 1.0, 0.0);
        assert_eq!(encode(&t, 1.0).ok(), Some(Payload::Coil(true)));
    }

    #[test]
    fn a_value_outside_the_types_range_is_refused_before_the_wire() {
        let t = tag(Area::HoldingRegister, DataType::U16, 1.0, 0.0);
        let e = encode(&t, 70000.0).expect_err("too big");
        assert_eq!(e.kind, WriteFailure::Encode);
        assert!(
            e.message.contains("outside its range 0..=65535"),
            "{}",
            e.message
        );
        assert!(encode(&t, -1.0).is_err());
        let t = tag(Area::HoldingRegister, DataType::F32, 1.0, 0.0);
        assert!(encode(&t, 1e300).is_err());
    }
}
