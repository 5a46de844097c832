//! Writes: a value in engineering units becomes the bytes of its tag
//! (`raw = (value − offset) / scale`, integers rounded to the nearest and checked
//! against the type's range, big-endian as S7 stores them), written with one
//! Write Var item (a BIT item for BOOL, so the other bits of the byte are left
//! alone), then optionally read back and compared byte for byte (`verify`).

use edge_driver_api::{WriteDone, WriteError, WriteFailure, WriteRequest};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::addr::{DataType, decode_value, encode_number};
use crate::client::{ClientError, S7Client};
use crate::codec::{ItemKind, ItemSpec};
use crate::{Shared, Tag};

/// The item and bytes that write `value` to `tag`.
pub(crate) fn encode(tag: &Tag, value: f64) -> Result<(ItemSpec, Vec<u8>), WriteError> {
    let a = tag.address;
    let mut data = Vec::with_capacity(8);
    if tag.ty == DataType::Bool {
        data.push(u8::from(value != 0.0));
        let item = ItemSpec {
            area: a.area,
            kind: ItemKind::Bit,
            start: a.byte,
            bit: a.bit,
            len: 1,
        };
        return Ok((item, data));
    }
    let raw = (value - tag.offset) / tag.scale;
    let raw = match tag.ty {
        DataType::Real | DataType::LReal => raw,
        _ => raw.round(),
    };
    let too_big = match tag.ty {
        DataType::Real => raw.abs() > f64::from(f32::MAX),
        _ => false,
    };
    if !raw.is_finite() || too_big {
        return Err(WriteError::new(
            WriteFailure::Encode,
            format!("{value} does not fit a {} at {a}", tag.ty.name()),
        ));
    }
    encode_number(tag.ty, raw, &mut data).map_err(|e| {
        WriteError::new(
            WriteFailure::Encode,
            format!(
                "{value} (raw {raw}) cannot be written to {} {}: {e}",
                a,
                tag.ty.name()
            ),
        )
    })?;
    Ok((ItemSpec::bytes(a.area, a.byte, data.len() as u16), data))
}

/// Performs `req` and answers it; an error is the link's (the driver reconnects).
pub(crate) async fn perform<S: AsyncRead + AsyncWrite + Unpin + Send>(
    sh: &Shared,
    client: &mut S7Client<S>,
    req: WriteRequest,
) -> Result<(), ClientError> {
    let Some(ti) = sh.tag_ids.iter().position(|id| *id == req.signal) else {
        req.answer(Err(WriteError::new(
            WriteFailure::Encode,
            "the tag is not read by this driver",
        )));
        return Ok(());
    };
    let tag = &sh.cfg.tags[ti];
    let (item, data) = match encode(tag, req.value) {
        Ok(x) => x,
        Err(e) => {
            req.answer(Err(e));
            return Ok(());
        }
    };
    let mut results = Vec::with_capacity(1);
    let t0 = tokio::time::Instant::now();
    if let Err(e) = client.write(&[(item, &data)], &mut results).await {
        let kind = match e {
            ClientError::Codec(_) => WriteFailure::Device,
            _ => WriteFailure::Communication,
        };
        req.answer(Err(WriteError::new(
            kind,
            format!("write to {}: {e}", tag.address),
        )));
        return Err(e);
    }
    sh.stats.success(t0.elapsed());
    if let Some(Err(rc)) = results.first() {
        sh.stats.exception();
        let why = format!("the PLC refused the write to {}: {rc}", tag.address);
        req.answer(Err(WriteError::new(WriteFailure::Device, why)));
        return Ok(());
    }
    let result = match req.verify {
        true => verify(client, tag, &data).await?,
        false => Ok(WriteDone { read_back: None }),
    };
    req.answer(result);
    Ok(())
}

/// Reads the tag's bytes back and compares them with what was written.
async fn verify<S: AsyncRead + AsyncWrite + Unpin + Send>(
    client: &mut S7Client<S>,
    tag: &Tag,
    wrote: &[u8],
) -> Result<Result<WriteDone, WriteError>, ClientError> {
    let a = tag.address;
    let item = ItemSpec::bytes(a.area, a.byte, tag.ty.size() as u16);
    let mut out = Vec::with_capacity(1);
    let data = client.read(&[item], &mut out).await?;
    let bytes = match out.first() {
        Some(Ok(r)) => data.get(r.clone()).unwrap_or(&[]),
        Some(Err(rc)) => {
            let why = format!("written, but reading {a} back failed: {rc}");
            return Ok(Err(WriteError::new(WriteFailure::Verify, why)));
        }
        None => &[],
    };
    let decoded = decode_value(tag.ty, a.bit, bytes).ok();
    let value = decoded.as_ref().and_then(|v| v.as_f64()).map(|raw| {
        if tag.ty == DataType::Bool {
            raw
        } else {
            raw * tag.scale + tag.offset
        }
    });
    let same = match tag.ty {
        DataType::Bool => decoded.and_then(|v| v.as_f64()) == Some(f64::from(wrote[0])),
        _ => bytes == wrote,
    };
    Ok(if same {
        Ok(WriteDone { read_back: value })
    } else {
        let shown = value.map_or("nothing decodable".to_string(), |v| v.to_string());
        Err(WriteError::new(
            WriteFailure::Verify,
            format!("written, but {a} reads back {shown}"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Address;

    fn tag(addr: &str, ty: DataType, scale: f64) -> Tag {
        Tag {
            name: "t".into(),
            address: Address::parse(addr).expect("test address"),
            ty,
            scale,
            offset: 0.0,
            eng_unit: None,
            span: Default::default(),
            write: None,
        }
    }

    #[test]
    fn a_bool_is_a_bit_item_and_numbers_are_big_endian_bytes() {
        let (item, data) = encode(&tag("DB1.DBX4.3", DataType::Bool, 1.0), 1.0).expect("bool");
        assert_eq!(
            (item.kind, item.start, item.bit, data),
            (ItemKind::Bit, 4, 3, vec![1])
        );
        let (item, data) = encode(&tag("DB1.DBW2", DataType::Int, 0.1), -1.26).expect("int");
        assert_eq!((item.kind, item.len), (ItemKind::Byte, 2));
        assert_eq!(data, (-13i16).to_be_bytes().to_vec());
        let (_, data) = encode(&tag("DB1.DBD8", DataType::Real, 1.0), 2.5).expect("real");
        assert_eq!(data, 2.5f32.to_be_bytes().to_vec());
    }

    #[test]
    fn a_value_outside_the_types_range_is_refused_before_the_wire() {
        let e = encode(&tag("DB1.DBW2", DataType::Int, 1.0), 40000.0).expect_err("range");
        assert_eq!(e.kind, WriteFailure::Encode);
        assert!(e.message.contains("does not fit"), "{}", e.message);
        assert!(encode(&tag("DB1.DBD8", DataType::Real, 1.0), 1e300).is_err());
    }
}
