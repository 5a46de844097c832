//! Read planning: tags → byte blocks → chunks → requests packed to the PDU size.
//!
//! 1. Tags of one area (I, Q, M or one DB) whose byte ranges lie within `max_gap`
//!    bytes of each other merge into a **block** (one contiguous image of PLC memory).
//! 2. A block longer than one item can carry is cut into **chunks** of at most
//!    `pdu_size − 18` bytes (12 header + 2 parameter + 4 item header bytes of the
//!    response), so a long STRING or a large array reads across requests.
//! 3. Chunks are packed into **requests** first-fit-decreasing under every limit at
//!    once: the request (`10 + 2 + 12·items`) and the response
//!    (`12 + 2 + Σ(4 + len + fill)`) must each fit the negotiated PDU size, and a
//!    request has at most `max_items` items (Snap7-based devices refuse more than 20).
//!
//! The plan is computed once per connection (the PDU size is negotiated), and the
//! poll loop then only copies chunk bytes into block images and decodes tags.

use crate::addr::Area;
use crate::codec::{ITEM_HEADER, ITEM_SPEC, S7_ACK_HEADER, S7_JOB_HEADER, response_item_size};

/// What the planner needs of a tag: where its bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagRange {
    pub area: Area,
    pub start: u32,
    pub len: u32,
    /// Read on its own, never merged with neighbours (set after the PLC refused a
    /// merged read, so one bad address cannot spoil its neighbours' values).
    pub isolated: bool,
}

/// Planning limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Negotiated PDU size.
    pub pdu_size: u16,
    /// Most items per request.
    pub max_items: usize,
    /// Unused bytes allowed between two tags of one block.
    pub max_gap: u32,
}

/// A contiguous byte range of one area and the tags decoded from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub area: Area,
    pub start: u32,
    pub len: u32,
    /// (tag index, byte offset of the tag in the block).
    pub tags: Vec<(usize, u32)>,
}

/// A piece of a block read as one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub block: usize,
    /// Offset in the block.
    pub offset: u32,
    pub len: u16,
}

/// The items of one Read Var request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub chunks: Vec<Chunk>,
}

/// A complete read plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub blocks: Vec<Block>,
    pub requests: Vec<Request>,
}

/// Largest data one response item can carry with this PDU size.
pub fn max_item_payload(pdu_size: u16) -> u32 {
    u32::from(pdu_size).saturating_sub((S7_ACK_HEADER + 2 + ITEM_HEADER) as u32)
}

/// Plans the reads of `tags`. `pdu_size` must leave room for at least one byte.
pub fn plan(tags: &[TagRange], limits: Limits) -> Plan {
    let max_payload = max_item_payload(limits.pdu_size).max(1);
    let max_items = limits.max_items.max(1);
    // 1. Blocks.
    let mut order: Vec<usize> = (0..tags.len()).collect();
    order.sort_by_key(|&i| (tags[i].area, tags[i].start, tags[i].len));
    let mut blocks: Vec<Block> = Vec::new();
    let mut last_isolated = false;
    for i in order {
        let t = tags[i];
        let end = t.start + t.len;
        let mergeable = !t.isolated && !last_isolated;
        last_isolated = t.isolated;
        match blocks.last_mut() {
            Some(b)
                if mergeable && b.area == t.area && t.start <= b.start + b.len + limits.max_gap =>
            {
                b.len = b.len.max(end - b.start);
                b.tags.push((i, t.start - b.start));
            }
            _ => blocks.push(Block {
                area: t.area,
                start: t.start,
                len: t.len,
                tags: vec![(i, 0)],
            }),
        }
    }
    // 2. Chunks. A block that needs several chunks anyway is cut at item-size
    // boundaries; the cut never splits a value's decoding (blocks are reassembled).
    let mut chunks: Vec<Chunk> = Vec::new();
    for (bi, b) in blocks.iter().enumerate() {
        let mut off = 0;
        while off < b.len {
            let len = (b.len - off).min(max_payload);
            chunks.push(Chunk {
                block: bi,
                offset: off,
                len: len as u16,
            });
            off += len;
        }
    }
    // 3. First-fit decreasing into requests.
    chunks.sort_by(|a, b| {
        b.len
            .cmp(&a.len)
            .then(a.block.cmp(&b.block))
            .then(a.offset.cmp(&b.offset))
    });
    let pdu = usize::from(limits.pdu_size);
    let max_by_request = (pdu.saturating_sub(S7_JOB_HEADER + 2) / ITEM_SPEC).max(1);
    let item_cap = max_items.min(max_by_request);
    // Response bytes so far per request (fill bytes counted for every odd item,
    // which over-estimates by at most one byte: always safe).
    let mut used: Vec<usize> = Vec::new();
    let mut requests: Vec<Request> = Vec::new();
    for c in chunks {
        let size = response_item_size(usize::from(c.len), false);
        let slot = (0..requests.len())
            .find(|&r| requests[r].chunks.len() < item_cap && used[r] + size <= pdu);
        match slot {
            Some(r) => {
                requests[r].chunks.push(c);
                used[r] += size;
            }
            None => {
                requests.push(Request { chunks: vec![c] });
                used.push(S7_ACK_HEADER + 2 + size);
            }
        }
    }
    // Deterministic, address-ordered items inside each request (nicer captures).
    for r in &mut requests {
        r.chunks.sort_by_key(|c| (c.block, c.offset));
    }
    requests.sort_by_key(|r| r.chunks.first().map(|c| (c.block, c.offset)));
    Plan { blocks, requests }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{read_request_size, response_item_size};
    use proptest::prelude::*;

    fn reals(n: u32, stride: u32) -> Vec<TagRange> {
        (0..n)
            .map(|i| TagRange {
                area: Area::Db(1),
                start: i * stride,
                len: 4,
                isolated: false,
            })
            .collect()
    }

    const L480: Limits = Limits {
        pdu_size: 480,
        max_items: 20,
        max_gap: 16,
    };

    #[test]
    fn contiguous_reals_coalesce_into_pdu_sized_chunks() {
        let p = plan(&reals(1000, 4), L480);
        assert_eq!(p.blocks.len(), 1);
        assert_eq!(p.blocks[0].len, 4000);
        // 462 bytes per item, one item per 480-byte response.
        assert_eq!(p.requests.len(), 9);
    }

    #[test]
    fn scattered_tags_pack_many_items_per_request() {
        let tags = reals(100, 100);
        let p = plan(&tags, L480);
        assert_eq!(p.blocks.len(), 100);
        assert_eq!(p.requests.len(), 5);
        let p = plan(
            &tags,
            Limits {
                max_items: 100,
                ..L480
            },
        );
        // (480 − 12) / 12 = 39 items fit the request.
        assert_eq!(p.requests.len(), 3);
    }

    #[test]
    fn areas_and_dbs_never_merge() {
        let tags = [
            TagRange {
                area: Area::Db(1),
                start: 0,
                len: 2,
                isolated: false,
            },
            TagRange {
                area: Area::Db(2),
                start: 2,
                len: 2,
                isolated: false,
            },
            TagRange {
                area: Area::Flags,
                start: 4,
                len: 2,
                isolated: false,
            },
        ];
        let p = plan(&tags, L480);
        assert_eq!(p.blocks.len(), 3);
        assert_eq!(p.requests.len(), 1);
    }

    #[test]
    fn isolated_tags_get_blocks_of_their_own() {
        let mut tags = reals(4, 4);
        tags[1].isolated = true;
        let p = plan(&tags, L480);
        let lens: Vec<u32> = p.blocks.iter().map(|b| b.len).collect();
        assert_eq!(lens, [4, 4, 8]);
    }

    #[test]
    fn a_value_longer_than_a_pdu_spans_requests() {
        let tags = [TagRange {
            area: Area::Db(1),
            start: 10,
            len: 1000,
            isolated: false,
        }];
        let p = plan(
            &tags,
            Limits {
                pdu_size: 240,
                ..L480
            },
        );
        let total: u32 = p
            .requests
            .iter()
            .flat_map(|r| &r.chunks)
            .map(|c| u32::from(c.len))
            .sum();
        assert_eq!(total, 1000);
        assert!(p.requests.len() >= 5);
    }

    proptest! {
        #[test]
        fn every_tag_byte_is_read_and_every_request_fits(
            raw in prop::collection::vec((0u8..4, 0u32..3000, 1u32..300), 1..200),
            pdu in 64u16..=960,
            max_items in 1usize..40,
            max_gap in 0u32..64,
        ) {
            let tags: Vec<TagRange> = raw.iter().map(|&(a, start, len)| TagRange {
                area: match a { 0 => Area::Inputs, 1 => Area::Flags, 2 => Area::Db(1), _ => Area::Db(7) },
                start, len, isolated: start % 7 == 0,
            }).collect();
            let limits = Limits { pdu_size: pdu, max_items, max_gap };
            let p = plan(&tags, limits);
            for r in &p.requests {
                prop_assert!(!r.chunks.is_empty());
                prop_assert!(r.chunks.len() <= max_items);
                prop_assert!(read_request_size(r.chunks.len()) <= usize::from(pdu));
                let n = r.chunks.len();
                let resp: usize = S7_ACK_HEADER + 2 + r.chunks.iter().enumerate()
                    .map(|(i, c)| response_item_size(usize::from(c.len), i + 1 == n)).sum::<usize>();
                prop_assert!(resp <= usize::from(pdu), "response {resp} > pdu {pdu}");
            }
            // Every block is covered exactly once by its chunks.
            for (bi, b) in p.blocks.iter().enumerate() {
                let mut cs: Vec<&Chunk> = p.requests.iter().flat_map(|r| &r.chunks).filter(|c| c.block == bi).collect();
                cs.sort_by_key(|c| c.offset);
                let mut at = 0;
                for c in cs { prop_assert_eq!(c.offset, at); at += u32::from(c.len); }
                prop_assert_eq!(at, b.len);
            }
            // Every tag lies inside its block.
            let mut seen = vec![false; tags.len()];
            for b in &p.blocks {
                for &(ti, off) in &b.tags {
                    let t = tags[ti];
                    prop_assert_eq!(t.area, b.area);
                    prop_assert_eq!(b.start + off, t.start);
                    prop_assert!(off + t.len <= b.len);
                    seen[ti] = true;
                }
            }
            prop_assert!(seen.iter().all(|s| *s));
        }
    }
}
