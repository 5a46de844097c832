//! Tag decoding and request coalescing (pure, no I/O).

/// Modbus data areas (the spec's "tables").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Area {
    Coil,
    DiscreteInput,
    InputRegister,
    HoldingRegister,
}

impl Area {
    pub fn is_bit(self) -> bool {
        matches!(self, Area::Coil | Area::DiscreteInput)
    }
    /// Protocol limit of one read (bits or registers).
    pub fn protocol_max(self) -> u16 {
        if self.is_bit() { 2000 } else { 125 }
    }
}

/// Value type of a tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// Text in `n` registers, two characters per register (a text signal).
    String(u16),
}

impl DataType {
    /// Registers (or bits, for Bool on a bit area) one value occupies.
    pub fn width(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String(n) => n,
        }
    }
}

/// Byte/word order of multi-register values, named by where the bytes of the
/// big-endian value `A B C D` end up in the registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WordOrder {
    /// Big-endian (Modbus standard).
    Abcd,
    /// Word swap (common on PLCs with little-endian word order).
    Cdab,
    /// Byte swap within each word.
    Badc,
    /// Little-endian.
    Dcba,
}

/// Converts between register bytes in `order` and big-endian bytes. Every order is
/// its own inverse, so the same function decodes and encodes.
fn reorder(b: &mut [u8], order: WordOrder) {
    match order {
        WordOrder::Abcd => {}
        WordOrder::Dcba => b.reverse(),
        WordOrder::Badc => b.chunks_exact_mut(2).for_each(|w| w.swap(0, 1)),
        WordOrder::Cdab => {
            // Reverse the order of the words, keep the bytes within each word.
            let words = b.len() / 2;
            for i in 0..words / 2 {
                let j = words - 1 - i;
                b.swap(2 * i, 2 * j);
                b.swap(2 * i + 1, 2 * j + 1);
            }
        }
    }
}

/// Decodes `regs` (exactly `ty.width()` registers) into a float.
pub fn decode_registers(regs: &[u16], ty: DataType, order: WordOrder) -> Option<f64> {
    let n = usize::from(ty.width());
    if regs.len() < n || n > 4 {
        return None;
    }
    let mut bytes = [0u8; 8];
    for (i, r) in regs[..n].iter().enumerate() {
        let [hi, lo] = r.to_be_bytes();
        bytes[2 * i] = hi;
        bytes[2 * i + 1] = lo;
    }
    let b = &mut bytes[..2 * n];
    reorder(b, order);
    let be2 = |b: &[u8]| [b[0], b[1]];
    let be4 = |b: &[u8]| [b[0], b[1], b[2], b[3]];
    let be8 = |b: &[u8]| [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
    Some(match ty {
        DataType::Bool => f64::from(u8::from(u16::from_be_bytes(be2(b)) != 0)),
        DataType::U16 => f64::from(u16::from_be_bytes(be2(b))),
        DataType::I16 => f64::from(i16::from_be_bytes(be2(b))),
        DataType::U32 => f64::from(u32::from_be_bytes(be4(b))),
        DataType::I32 => f64::from(i32::from_be_bytes(be4(b))),
        DataType::F32 => f64::from(f32::from_be_bytes(be4(b))),
        DataType::U64 => u64::from_be_bytes(be8(b)) as f64,
        DataType::I64 => i64::from_be_bytes(be8(b)) as f64,
        DataType::F64 => f64::from_be_bytes(be8(b)),
        DataType::String(_) => return None,
    })
}

/// Decodes a string tag into `out` (cleared first): two characters per register,
/// high byte first (`ABCD`) or swapped (`BADC`); read up to the first NUL, trailing
/// spaces trimmed (devices pad with either). Bytes are Latin-1.
pub fn decode_string(regs: &[u16], order: WordOrder, out: &mut String) {
    out.clear();
    for r in regs {
        let [hi, lo] = r.to_be_bytes();
        let pair = if order == WordOrder::Badc {
            [lo, hi]
        } else {
            [hi, lo]
        };
        for c in pair {
            if c == 0 {
                let trimmed = out.trim_end_matches(' ').len();
                out.truncate(trimmed);
                return;
            }
            out.push(char::from(c));
        }
    }
    let trimmed = out.trim_end_matches(' ').len();
    out.truncate(trimmed);
}

/// Encodes a value into registers in `order` (the inverse of [`decode_registers`];
/// used by tests and to document the layouts).
pub fn encode_registers(v: f64, ty: DataType, order: WordOrder) -> Vec<u16> {
    let be: Vec<u8> = match ty {
        DataType::Bool => u16::from(v != 0.0).to_be_bytes().to_vec(),
        DataType::U16 => (v as u16).to_be_bytes().to_vec(),
        DataType::I16 => (v as i16).to_be_bytes().to_vec(),
        DataType::U32 => (v as u32).to_be_bytes().to_vec(),
        DataType::I32 => (v as i32).to_be_bytes().to_vec(),
        DataType::F32 => (v as f32).to_be_bytes().to_vec(),
        DataType::U64 => (v as u64).to_be_bytes().to_vec(),
        DataType::I64 => (v as i64).to_be_bytes().to_vec(),
        DataType::F64 => v.to_be_bytes().to_vec(),
        DataType::String(_) => Vec::new(),
    };
    let mut b = be;
    reorder(&mut b, order);
    b.chunks_exact(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]))
        .collect()
}

/// What the planner needs of a tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagSpan {
    pub unit: u8,
    pub area: Area,
    pub address: u16,
    pub width: u16,
    /// Poll period in milliseconds (tags with different periods are never merged).
    pub poll_ms: u64,
}

/// One read request covering several tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub unit: u8,
    pub area: Area,
    pub start: u16,
    pub count: u16,
    pub poll_ms: u64,
    /// (tag index, offset of the tag within the response)
    pub tags: Vec<(usize, u16)>,
}

/// Limits of coalescing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Unused registers/bits allowed between two tags of one request.
    pub max_gap: u16,
    /// Registers per request (≤ 125).
    pub max_registers: u16,
    /// Bits per request (≤ 2000).
    pub max_bits: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_gap: 8,
            max_registers: 125,
            max_bits: 2000,
        }
    }
}

/// Merges tags into the fewest requests within the protocol and configured limits:
/// same unit, area and poll period; sorted by address; a tag joins the current
/// request if the gap before it is ≤ `max_gap` and the request stays within its size.
pub fn coalesce(tags: &[TagSpan], limits: Limits) -> Vec<Request> {
    let mut order: Vec<usize> = (0..tags.len()).collect();
    order.sort_by_key(|&i| (tags[i].unit, tags[i].area, tags[i].poll_ms, tags[i].address));
    let mut out: Vec<Request> = Vec::new();
    for i in order {
        let t = tags[i];
        let max = if t.area.is_bit() {
            limits.max_bits.min(2000)
        } else {
            limits.max_registers.min(125)
        }
        .max(t.width);
        let t_end = u32::from(t.address) + u32::from(t.width);
        if let Some(r) = out.last_mut()
            && r.unit == t.unit
            && r.area == t.area
            && r.poll_ms == t.poll_ms
        {
            let r_end = u32::from(r.start) + u32::from(r.count);
            let gap = i64::from(t.address) - i64::from(r_end);
            let new_end = r_end.max(t_end);
            if gap <= i64::from(limits.max_gap) && new_end - u32::from(r.start) <= u32::from(max) {
                r.count = (new_end - u32::from(r.start)) as u16;
                r.tags.push((i, t.address - r.start));
                continue;
            }
        }
        out.push(Request {
            unit: t.unit,
            area: t.area,
            start: t.address,
            count: t.width,
            poll_ms: t.poll_ms,
            tags: vec![(i, 0)],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn word_orders_decode_the_documented_layouts() {
        // 0x41200000 = 10.0f32
        assert_eq!(
            decode_registers(&[0x4120, 0x0000], DataType::F32, WordOrder::Abcd),
            Some(10.0)
        );
        assert_eq!(
            decode_registers(&[0x0000, 0x4120], DataType::F32, WordOrder::Cdab),
            Some(10.0)
        );
        assert_eq!(
            decode_registers(&[0x2041, 0x0000], DataType::F32, WordOrder::Badc),
            Some(10.0)
        );
        assert_eq!(
            decode_registers(&[0x0000, 0x2041], DataType::F32, WordOrder::Dcba),
            Some(10.0)
        );
        assert_eq!(
            decode_registers(&[0xFFFF], DataType::I16, WordOrder::Abcd),
            Some(-1.0)
        );
        assert_eq!(
            decode_registers(&[0xFFFF], DataType::U16, WordOrder::Abcd),
            Some(65535.0)
        );
        assert_eq!(decode_registers(&[1], DataType::F32, WordOrder::Abcd), None);
    }

    #[test]
    fn strings_decode_in_both_byte_orders_up_to_the_first_nul() {
        let mut s = String::new();
        decode_string(&[0x4142, 0x4300, 0x4444], WordOrder::Abcd, &mut s);
        assert_eq!(s, "ABC");
        decode_string(&[0x4241, 0x4320], WordOrder::Badc, &mut s);
        assert_eq!(s, "AB C");
        decode_string(&[0x4142, 0x2020], WordOrder::Abcd, &mut s);
        assert_eq!(s, "AB");
        decode_string(&[0x00FC], WordOrder::Badc, &mut s);
        assert_eq!(s, "ü");
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(v in -1e9f64..1e9, ty in 0usize..9, order in 0usize..4) {
            let ty = [DataType::U16, DataType::I16, DataType::U32, DataType::I32, DataType::U64,
                      DataType::I64, DataType::F32, DataType::F64, DataType::Bool][ty];
            let order = [WordOrder::Abcd, WordOrder::Cdab, WordOrder::Badc, WordOrder::Dcba][order];
            let want = match ty {
                DataType::U16 => (v as u16) as f64,
                DataType::I16 => (v as i16) as f64,
                DataType::U32 => (v as u32) as f64,
                DataType::I32 => (v as i32) as f64,
                DataType::U64 => (v as u64) as f64,
                DataType::I64 => (v as i64) as f64,
                DataType::F32 => (v as f32) as f64,
                DataType::F64 => v,
                DataType::Bool => f64::from(u8::from(v != 0.0)),
                DataType::String(_) => unreachable!("not generated"),
            };
            let regs = encode_registers(v, ty, order);
            prop_assert_eq!(regs.len(), usize::from(ty.width()));
            prop_assert_eq!(decode_registers(&regs, ty, order), Some(want));
        }

        /// Every tag is covered by exactly one request at its offset, requests stay
        /// within the limits, and a merged request never spans different units/areas.
        #[test]
        fn coalescing_covers_every_tag_within_limits(
            raw in proptest::collection::vec((1u8..3, 0usize..4, 0u16..600, 0usize..3, 0u64..2), 1..80),
            gap in 0u16..20, maxr in 4u16..126,
        ) {
            let tags: Vec<TagSpan> = raw.iter().map(|&(unit, area, address, w, p)| {
                let area = [Area::Coil, Area::DiscreteInput, Area::InputRegister, Area::HoldingRegister][area];
                let width = if area.is_bit() { 1 } else { [1u16, 2, 4][w] };
                TagSpan { unit, area, address, width, poll_ms: 1000 * (p + 1) }
            }).collect();
            let limits = Limits { max_gap: gap, max_registers: maxr, max_bits: 2000 };
            let reqs = coalesce(&tags, limits);
            let mut seen = vec![0; tags.len()];
            for r in &reqs {
                let max = if r.area.is_bit() { 2000 } else { maxr.max(4) };
                prop_assert!(r.count <= max);
                for &(i, off) in &r.tags {
                    seen[i] += 1;
                    let t = tags[i];
                    prop_assert_eq!((t.unit, t.area, t.poll_ms), (r.unit, r.area, r.poll_ms));
                    prop_assert_eq!(r.start + off, t.address);
                    prop_assert!(off + t.width <= r.count);
                }
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
        }
    }

    #[test]
    fn a_realistic_tag_map_needs_far_fewer_requests() {
        // A pump skid: 40 holding-register floats in two blocks, 12 status words,
        // 16 alarm coils, 6 input-register counters, one slow block.
        let mut tags = Vec::new();
        for i in 0..24u16 {
            tags.push(TagSpan {
                unit: 1,
                area: Area::HoldingRegister,
                address: 100 + 2 * i,
                width: 2,
                poll_ms: 1000,
            });
        }
        for i in 0..16u16 {
            tags.push(TagSpan {
                unit: 1,
                area: Area::HoldingRegister,
                address: 300 + 2 * i,
                width: 2,
                poll_ms: 1000,
            });
        }
        for i in 0..12u16 {
            tags.push(TagSpan {
                unit: 1,
                area: Area::HoldingRegister,
                address: 10 + i + i / 4,
                width: 1,
                poll_ms: 1000,
            });
        }
        for i in 0..16u16 {
            tags.push(TagSpan {
                unit: 1,
                area: Area::Coil,
                address: i * 3,
                width: 1,
                poll_ms: 1000,
            });
        }
        for i in 0..6u16 {
            tags.push(TagSpan {
                unit: 1,
                area: Area::InputRegister,
                address: 30_000 + 4 * i,
                width: 4,
                poll_ms: 1000,
            });
        }
        for i in 0..8u16 {
            tags.push(TagSpan {
                unit: 1,
                area: Area::HoldingRegister,
                address: 500 + 2 * i,
                width: 2,
                poll_ms: 60_000,
            });
        }
        let reqs = coalesce(&tags, Limits::default());
        // Before: one request per tag. After: 12 status words + 2 float blocks + coils
        // + counters + slow block.
        assert_eq!(tags.len(), 82);
        assert_eq!(reqs.len(), 6, "{reqs:#?}");
        let small = coalesce(
            &tags,
            Limits {
                max_gap: 0,
                max_registers: 16,
                max_bits: 8,
            },
        );
        assert!(small.len() > reqs.len());
        assert!(small.iter().all(|r| r.count <= 16));
    }
}
