//! Sans-IO S7comm codec: TPKT (RFC 1006) / COTP (ISO 8073 class 0) / S7comm.
//!
//! Encoders append to a caller's `Vec<u8>` (reused across polls, so steady-state
//! encoding allocates nothing); decoders borrow from the received bytes and return
//! [`CodecError`] for anything malformed — no input panics (fuzzed in `fuzz/`).
//!
//! Frame layout on the wire:
//!
//! ```text
//! TPKT  03 00 LEN(2)                          — LEN counts the whole frame
//! COTP  LI CODE ...                           — CR E0 / CC D0 / DT F0 / DR 80 / ER 70
//! S7    32 ROSCTR 0000 PDUREF(2) PLEN(2) DLEN(2) [ERRCLASS ERRCODE]  — job 01 / ack_data 03
//!       params (PLEN bytes), data (DLEN bytes)
//! ```
//!
//! The PDU size negotiated by Setup Communication bounds the S7 part (header, params
//! and data) of every request and every response.

use std::fmt;
use std::ops::Range;

use crate::addr::Area;

pub const TPKT_HEADER: usize = 4;
/// COTP DT header: LI=2, code F0, TPDU-NR/EOT.
pub const COTP_DT_HEADER: usize = 3;
pub const S7_JOB_HEADER: usize = 10;
pub const S7_ACK_HEADER: usize = 12;
/// Bytes of one S7ANY request item.
pub const ITEM_SPEC: usize = 12;
/// Bytes of a response item header (return code, transport size, length).
pub const ITEM_HEADER: usize = 4;
/// Largest TPKT frame we accept (the largest negotiable TPDU is 8192 bytes).
pub const MAX_FRAME: usize = 8192 + TPKT_HEADER;

const PROTOCOL_ID: u8 = 0x32;
const ROSCTR_JOB: u8 = 0x01;
const ROSCTR_ACK: u8 = 0x02;
const ROSCTR_ACK_DATA: u8 = 0x03;
const FN_SETUP: u8 = 0xF0;
const FN_READ: u8 = 0x04;
const FN_WRITE: u8 = 0x05;

/// A malformed or unexpected frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("TPKT version {0:#04x} (expected 0x03): this is not an ISO-on-TCP peer")]
    TpktVersion(u8),
    #[error("TPKT length {0} is out of range (7..=8196)")]
    TpktLength(usize),
    #[error("{what}: truncated (need {need} bytes, have {have})")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{what}: unexpected value {got:#04x}")]
    Unexpected { what: &'static str, got: u8 },
    #[error("the PLC refused the connection (COTP disconnect, reason {reason:#04x}: {})", dr_reason(*reason))]
    Refused { reason: u8 },
    #[error("COTP error TPDU (cause {0:#04x})")]
    CotpError(u8),
    #[error("{0}")]
    Malformed(&'static str),
    #[error("reply to PDU {got} while waiting for PDU {expected}")]
    PduRef { expected: u16, got: u16 },
    #[error("reply carries {got} items, the request had {expected}")]
    ItemCount { expected: usize, got: usize },
    #[error("{0}")]
    S7(S7Error),
}

/// An error class/code from an S7 ack_data header: the whole request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct S7Error {
    pub class: u8,
    pub code: u8,
}

impl fmt::Display for S7Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = match self.class {
            0x81 => "application relationship error",
            0x82 => "object definition error",
            0x83 => "no resources available",
            0x84 => "error on service processing",
            0x85 => "error on supplies",
            0x87 => "access error",
            _ => "unknown error class",
        };
        let detail = match (self.class, self.code) {
            (0x81, 0x04) => {
                ": function not available — on S7-1200/1500 enable \"Permit access with PUT/GET\" in the CPU's protection settings"
            }
            (0x85, 0x00) => ": request does not fit the negotiated PDU size",
            (0x84, 0x04) => ": fatal protocol error",
            (0x83, 0x04) => ": too many parallel jobs",
            (0x87, 0x04) => ": access denied by the CPU's protection level",
            _ => "",
        };
        write!(
            f,
            "S7 {class} (class {:#04x}, code {:#04x}){detail}",
            self.class, self.code
        )
    }
}

fn dr_reason(r: u8) -> &'static str {
    match r {
        0x00 => "reason not specified",
        0x01 => "congestion at TSAP",
        0x02 => "session entity not attached to TSAP",
        0x03 => "address unknown — check rack/slot or the remote TSAP",
        0x80 => "normal disconnect",
        0x81 => "remote transport entity congestion",
        0x82 => "connection negotiation failed",
        0x83 => "duplicate source reference",
        0x84 => "mismatched references",
        0x85 => "protocol error",
        0x87 => "reference overflow",
        0x88 => "connection request refused",
        0x8A => "header or parameter length invalid",
        _ => "unknown reason",
    }
}

/// Item-level return code of a read or write: only that item failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ItemError(pub u8);

impl ItemError {
    pub fn describe(self) -> &'static str {
        match self.0 {
            0x01 => "hardware fault",
            0x03 => "accessing the object not allowed",
            0x05 => "address out of range",
            0x06 => "data type not supported",
            0x07 => "data type inconsistent",
            0x0A => "object does not exist",
            _ => "unknown item error",
        }
    }
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (return code {:#04x})", self.describe(), self.0)
    }
}

/// Success return code of an item.
pub const RC_OK: u8 = 0xFF;

/// Transport sizes of a request item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemKind {
    /// One bit (`length` must be 1).
    Bit,
    /// `length` bytes.
    Byte,
}

/// One S7ANY item: what to read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemSpec {
    pub area: Area,
    pub kind: ItemKind,
    /// Byte offset.
    pub start: u32,
    /// Bit number for [`ItemKind::Bit`].
    pub bit: u8,
    /// Number of bytes (1 for a bit).
    pub len: u16,
}

impl ItemSpec {
    pub fn bytes(area: Area, start: u32, len: u16) -> ItemSpec {
        ItemSpec {
            area,
            kind: ItemKind::Byte,
            start,
            bit: 0,
            len,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let (ts, bitaddr) = match self.kind {
            ItemKind::Bit => (0x01, (self.start << 3) | u32::from(self.bit & 7)),
            ItemKind::Byte => (0x02, self.start << 3),
        };
        out.extend_from_slice(&[0x12, 0x0A, 0x10, ts]);
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&self.area.db().to_be_bytes());
        out.push(self.area.code());
        out.extend_from_slice(&bitaddr.to_be_bytes()[1..]);
    }

    fn decode(b: &[u8]) -> Result<ItemSpec, CodecError> {
        need("request item", b, ITEM_SPEC)?;
        if b[0] != 0x12 || b[1] != 0x0A || b[2] != 0x10 {
            return Err(CodecError::Malformed(
                "request item is not an S7ANY address",
            ));
        }
        let kind = match b[3] {
            0x01 => ItemKind::Bit,
            0x02 => ItemKind::Byte,
            got => {
                return Err(CodecError::Unexpected {
                    what: "item transport size",
                    got,
                });
            }
        };
        let len = u16::from_be_bytes([b[4], b[5]]);
        let db = u16::from_be_bytes([b[6], b[7]]);
        let area = Area::from_code(b[8], db).ok_or(CodecError::Unexpected {
            what: "item area",
            got: b[8],
        })?;
        let bitaddr = u32::from_be_bytes([0, b[9], b[10], b[11]]);
        Ok(ItemSpec {
            area,
            kind,
            start: bitaddr >> 3,
            bit: (bitaddr & 7) as u8,
            len,
        })
    }
}

fn need(what: &'static str, b: &[u8], n: usize) -> Result<(), CodecError> {
    if b.len() < n {
        Err(CodecError::Truncated {
            what,
            need: n,
            have: b.len(),
        })
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// TPKT + COTP

/// Validates a TPKT header and returns the length of the whole frame.
pub fn tpkt_frame_len(header: [u8; 4]) -> Result<usize, CodecError> {
    if header[0] != 0x03 {
        return Err(CodecError::TpktVersion(header[0]));
    }
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if !(TPKT_HEADER + 3..=MAX_FRAME).contains(&len) {
        return Err(CodecError::TpktLength(len));
    }
    Ok(len)
}

fn begin_tpkt(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0x03, 0x00, 0, 0]);
    at
}

fn end_tpkt(out: &mut [u8], at: usize) {
    let len = (out.len() - at) as u16;
    out[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Encodes a COTP Connection Request (TPDU size 1024, class 0).
pub fn encode_connect_request(out: &mut Vec<u8>, local_tsap: u16, remote_tsap: u16) {
    let at = begin_tpkt(out);
    out.extend_from_slice(&[17, 0xE0, 0x00, 0x00, 0x00, 0x01, 0x00]);
    out.extend_from_slice(&[0xC0, 0x01, 0x0A]);
    out.extend_from_slice(&[0xC1, 0x02]);
    out.extend_from_slice(&local_tsap.to_be_bytes());
    out.extend_from_slice(&[0xC2, 0x02]);
    out.extend_from_slice(&remote_tsap.to_be_bytes());
    end_tpkt(out, at);
}

/// A COTP TPDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cotp<'a> {
    ConnectRequest {
        src_ref: u16,
    },
    ConnectConfirm,
    /// A data TPDU; `last` is the EOT flag (S7 PDUs may span several).
    Data {
        last: bool,
        payload: &'a [u8],
    },
    Disconnect {
        reason: u8,
    },
    Error {
        cause: u8,
    },
}

/// Parses the COTP part of a whole TPKT frame.
pub fn parse_cotp(frame: &[u8]) -> Result<Cotp<'_>, CodecError> {
    need("TPKT frame", frame, TPKT_HEADER + 2)?;
    let total = tpkt_frame_len([frame[0], frame[1], frame[2], frame[3]])?;
    need("TPKT frame", frame, total)?;
    let tpdu = &frame[TPKT_HEADER..total];
    let li = usize::from(tpdu[0]);
    if li + 1 > tpdu.len() || li < 1 {
        return Err(CodecError::Malformed(
            "COTP length indicator exceeds the frame",
        ));
    }
    match tpdu[1] & 0xF0 {
        0xF0 => {
            if li < 2 {
                return Err(CodecError::Malformed("COTP DT header too short"));
            }
            Ok(Cotp::Data {
                last: tpdu[2] & 0x80 != 0,
                payload: &tpdu[li + 1..],
            })
        }
        0xD0 => {
            if li < 6 {
                return Err(CodecError::Malformed("COTP CC header too short"));
            }
            Ok(Cotp::ConnectConfirm)
        }
        0xE0 => {
            if li < 6 {
                return Err(CodecError::Malformed("COTP CR header too short"));
            }
            Ok(Cotp::ConnectRequest {
                src_ref: u16::from_be_bytes([tpdu[4], tpdu[5]]),
            })
        }
        0x80 => Ok(Cotp::Disconnect {
            reason: if li >= 6 { tpdu[6] } else { 0 },
        }),
        0x70 => Ok(Cotp::Error {
            cause: if li >= 4 { tpdu[4] } else { 0 },
        }),
        _ => Err(CodecError::Unexpected {
            what: "COTP TPDU code",
            got: tpdu[1],
        }),
    }
}

/// Encodes a COTP Connection Confirm (server side; used by the test fake).
pub fn encode_connect_confirm(out: &mut Vec<u8>, dst_ref: u16) {
    let at = begin_tpkt(out);
    out.extend_from_slice(&[6, 0xD0]);
    out.extend_from_slice(&dst_ref.to_be_bytes());
    out.extend_from_slice(&[0x00, 0x01, 0x00]);
    end_tpkt(out, at);
}

// ---------------------------------------------------------------------------
// S7 PDUs

/// A parsed S7 PDU header with its parameter and data parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct S7Pdu<'a> {
    pub rosctr: u8,
    pub pdu_ref: u16,
    /// Error class/code of an ack or ack_data (0/0 = success).
    pub error: S7Error,
    pub params: &'a [u8],
    pub data: &'a [u8],
}

/// Parses an S7 PDU (the payload of one or more COTP DT TPDUs).
pub fn parse_s7(p: &[u8]) -> Result<S7Pdu<'_>, CodecError> {
    need("S7 header", p, S7_JOB_HEADER)?;
    if p[0] != PROTOCOL_ID {
        return Err(CodecError::Unexpected {
            what: "S7 protocol id",
            got: p[0],
        });
    }
    let rosctr = p[1];
    let hdr = match rosctr {
        ROSCTR_ACK | ROSCTR_ACK_DATA => S7_ACK_HEADER,
        ROSCTR_JOB | 0x07 => S7_JOB_HEADER,
        got => {
            return Err(CodecError::Unexpected {
                what: "S7 ROSCTR",
                got,
            });
        }
    };
    need("S7 header", p, hdr)?;
    let pdu_ref = u16::from_be_bytes([p[4], p[5]]);
    let plen = usize::from(u16::from_be_bytes([p[6], p[7]]));
    let dlen = usize::from(u16::from_be_bytes([p[8], p[9]]));
    let error = if hdr == S7_ACK_HEADER {
        S7Error {
            class: p[10],
            code: p[11],
        }
    } else {
        S7Error { class: 0, code: 0 }
    };
    need("S7 parameters and data", p, hdr + plen + dlen)?;
    Ok(S7Pdu {
        rosctr,
        pdu_ref,
        error,
        params: &p[hdr..hdr + plen],
        data: &p[hdr + plen..hdr + plen + dlen],
    })
}

fn begin_s7(out: &mut Vec<u8>, rosctr: u8, pdu_ref: u16) -> (usize, usize) {
    let tpkt = begin_tpkt(out);
    out.extend_from_slice(&[0x02, 0xF0, 0x80]);
    let s7 = out.len();
    out.extend_from_slice(&[PROTOCOL_ID, rosctr, 0, 0]);
    out.extend_from_slice(&pdu_ref.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    if rosctr == ROSCTR_ACK_DATA || rosctr == ROSCTR_ACK {
        out.extend_from_slice(&[0, 0]);
    }
    (tpkt, s7)
}

fn end_s7(out: &mut [u8], (tpkt, s7): (usize, usize), hdr: usize, plen: usize) {
    let dlen = out.len() - s7 - hdr - plen;
    out[s7 + 6..s7 + 8].copy_from_slice(&(plen as u16).to_be_bytes());
    out[s7 + 8..s7 + 10].copy_from_slice(&(dlen as u16).to_be_bytes());
    end_tpkt(out, tpkt);
}

/// Encodes Setup Communication (job).
pub fn encode_setup(out: &mut Vec<u8>, pdu_ref: u16, max_amq: u16, pdu_size: u16) {
    let h = begin_s7(out, ROSCTR_JOB, pdu_ref);
    out.extend_from_slice(&[FN_SETUP, 0x00]);
    out.extend_from_slice(&max_amq.to_be_bytes());
    out.extend_from_slice(&max_amq.to_be_bytes());
    out.extend_from_slice(&pdu_size.to_be_bytes());
    end_s7(out, h, S7_JOB_HEADER, 8);
}

/// What Setup Communication negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Parallel jobs the PLC accepts from us.
    pub max_amq_calling: u16,
    pub max_amq_called: u16,
    /// Bytes of S7 header + params + data allowed in one PDU, either way.
    pub pdu_size: u16,
}

/// Decodes Setup Communication parameters (from a job or an ack_data).
pub fn decode_setup(pdu: &S7Pdu<'_>) -> Result<Negotiated, CodecError> {
    check_ack(pdu)?;
    let p = pdu.params;
    need("setup communication parameters", p, 8)?;
    if p[0] != FN_SETUP {
        return Err(CodecError::Unexpected {
            what: "setup communication function",
            got: p[0],
        });
    }
    let n = Negotiated {
        max_amq_calling: u16::from_be_bytes([p[2], p[3]]),
        max_amq_called: u16::from_be_bytes([p[4], p[5]]),
        pdu_size: u16::from_be_bytes([p[6], p[7]]),
    };
    if n.pdu_size < 64 {
        return Err(CodecError::Malformed(
            "negotiated PDU size is below 64 bytes",
        ));
    }
    Ok(n)
}

fn check_ack(pdu: &S7Pdu<'_>) -> Result<(), CodecError> {
    if pdu.rosctr == ROSCTR_JOB {
        return Ok(());
    }
    if pdu.error.class != 0 || pdu.error.code != 0 {
        return Err(CodecError::S7(pdu.error));
    }
    if pdu.rosctr != ROSCTR_ACK_DATA {
        return Err(CodecError::Unexpected {
            what: "S7 ROSCTR of a reply",
            got: pdu.rosctr,
        });
    }
    Ok(())
}

/// Bytes an S7 read request with `items` items occupies in the PDU.
pub fn read_request_size(items: usize) -> usize {
    S7_JOB_HEADER + 2 + ITEM_SPEC * items
}

/// Bytes the data of one response item occupies, including the fill byte that
/// follows an odd-length item unless it is the last.
pub fn response_item_size(len: usize, last: bool) -> usize {
    ITEM_HEADER + len + usize::from(!last && len % 2 == 1)
}

/// Encodes Read Var (job) for `items`.
pub fn encode_read(out: &mut Vec<u8>, pdu_ref: u16, items: &[ItemSpec]) {
    let h = begin_s7(out, ROSCTR_JOB, pdu_ref);
    out.extend_from_slice(&[FN_READ, items.len() as u8]);
    for it in items {
        it.encode(out);
    }
    end_s7(out, h, S7_JOB_HEADER, 2 + ITEM_SPEC * items.len());
}

/// One item of a read response: its bytes (a range into the PDU's data) or an error.
pub type ReadItem = Result<Range<usize>, ItemError>;

/// Decodes a Read Var ack_data into `out` (cleared first): one entry per requested
/// item, each a byte range into `pdu.data`.
pub fn decode_read(
    pdu: &S7Pdu<'_>,
    expected_items: usize,
    out: &mut Vec<ReadItem>,
) -> Result<(), CodecError> {
    out.clear();
    check_ack(pdu)?;
    let p = pdu.params;
    need("read response parameters", p, 2)?;
    if p[0] != FN_READ {
        return Err(CodecError::Unexpected {
            what: "read response function",
            got: p[0],
        });
    }
    let n = usize::from(p[1]);
    if n != expected_items {
        return Err(CodecError::ItemCount {
            expected: expected_items,
            got: n,
        });
    }
    let d = pdu.data;
    let mut at = 0;
    for i in 0..n {
        need("read response item", &d[at.min(d.len())..], 1)?;
        let rc = d[at];
        if rc != RC_OK {
            out.push(Err(ItemError(rc)));
            // Error items carry a 4-byte header with length 0; tolerate PLCs that
            // send only the return code for the last one.
            at += ITEM_HEADER.min(d.len() - at);
            continue;
        }
        need("read response item header", &d[at..], ITEM_HEADER)?;
        let ts = d[at + 1];
        let raw = usize::from(u16::from_be_bytes([d[at + 2], d[at + 3]]));
        let len = match ts {
            // BIT, BYTE/WORD/DWORD and INTEGER count bits.
            0x03..=0x05 => raw.div_ceil(8),
            // REAL, OCTET STRING and DINT count bytes.
            0x06 | 0x07 | 0x09 => raw,
            got => {
                return Err(CodecError::Unexpected {
                    what: "response item transport size",
                    got,
                });
            }
        };
        let start = at + ITEM_HEADER;
        need("read response item data", &d[start..], len)?;
        out.push(Ok(start..start + len));
        at = start + len;
        if i + 1 < n && len % 2 == 1 {
            at += 1;
        }
    }
    Ok(())
}

/// Encodes Write Var (job): each item with the bytes to write (`data.len()` must
/// equal the item's `len`; bit items write one byte, 0 or 1).
pub fn encode_write(out: &mut Vec<u8>, pdu_ref: u16, items: &[(ItemSpec, &[u8])]) {
    let h = begin_s7(out, ROSCTR_JOB, pdu_ref);
    out.extend_from_slice(&[FN_WRITE, items.len() as u8]);
    for (it, _) in items {
        it.encode(out);
    }
    let plen = 2 + ITEM_SPEC * items.len();
    for (i, (it, data)) in items.iter().enumerate() {
        let (ts, bits) = match it.kind {
            ItemKind::Bit => (0x03u8, 1u16),
            ItemKind::Byte => (0x04u8, (data.len() as u16).saturating_mul(8)),
        };
        out.extend_from_slice(&[0x00, ts]);
        out.extend_from_slice(&bits.to_be_bytes());
        out.extend_from_slice(data);
        if i + 1 < items.len() && data.len() % 2 == 1 {
            out.push(0);
        }
    }
    end_s7(out, h, S7_JOB_HEADER, plen);
}

/// Decodes a Write Var ack_data: one return code per item.
pub fn decode_write(
    pdu: &S7Pdu<'_>,
    expected_items: usize,
    out: &mut Vec<Result<(), ItemError>>,
) -> Result<(), CodecError> {
    out.clear();
    check_ack(pdu)?;
    need("write response parameters", pdu.params, 2)?;
    if pdu.params[0] != FN_WRITE {
        return Err(CodecError::Unexpected {
            what: "write response function",
            got: pdu.params[0],
        });
    }
    let n = usize::from(pdu.params[1]);
    if n != expected_items {
        return Err(CodecError::ItemCount {
            expected: expected_items,
            got: n,
        });
    }
    need("write response data", pdu.data, n)?;
    out.extend(pdu.data[..n].iter().map(|&rc| {
        if rc == RC_OK {
            Ok(())
        } else {
            Err(ItemError(rc))
        }
    }));
    Ok(())
}

// ---------------------------------------------------------------------------
// Server side: used by the in-process fault-injection fake and round-trip tests.

/// A decoded job from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job<'a> {
    Setup { max_amq: u16, pdu_size: u16 },
    Read(Vec<ItemSpec>),
    Write(Vec<(ItemSpec, &'a [u8])>),
}

/// Decodes a job PDU (server side).
pub fn decode_job<'a>(pdu: &S7Pdu<'a>) -> Result<Job<'a>, CodecError> {
    if pdu.rosctr != ROSCTR_JOB {
        return Err(CodecError::Unexpected {
            what: "S7 ROSCTR of a job",
            got: pdu.rosctr,
        });
    }
    let p = pdu.params;
    need("job parameters", p, 2)?;
    match p[0] {
        FN_SETUP => {
            let n = decode_setup(pdu)?;
            Ok(Job::Setup {
                max_amq: n.max_amq_calling,
                pdu_size: n.pdu_size,
            })
        }
        FN_READ | FN_WRITE => {
            let n = usize::from(p[1]);
            need("job items", p, 2 + n * ITEM_SPEC)?;
            let items = (0..n)
                .map(|i| ItemSpec::decode(&p[2 + i * ITEM_SPEC..]))
                .collect::<Result<Vec<_>, _>>()?;
            if p[0] == FN_READ {
                return Ok(Job::Read(items));
            }
            let mut out = Vec::with_capacity(n);
            let d = pdu.data;
            let mut at = 0;
            for (i, it) in items.into_iter().enumerate() {
                need("write item header", &d[at.min(d.len())..], ITEM_HEADER)?;
                let bits = usize::from(u16::from_be_bytes([d[at + 2], d[at + 3]]));
                let len = if d[at + 1] == 0x09 || d[at + 1] == 0x07 {
                    bits
                } else {
                    bits.div_ceil(8)
                };
                let start = at + ITEM_HEADER;
                need("write item data", &d[start..], len)?;
                out.push((it, &d[start..start + len]));
                at = start + len;
                if i + 1 < n && len % 2 == 1 {
                    at += 1;
                }
            }
            Ok(Job::Write(out))
        }
        got => Err(CodecError::Unexpected {
            what: "job function",
            got,
        }),
    }
}

/// Encodes a Setup Communication ack_data (server side).
pub fn encode_setup_ack(out: &mut Vec<u8>, pdu_ref: u16, n: Negotiated) {
    let h = begin_s7(out, ROSCTR_ACK_DATA, pdu_ref);
    out.extend_from_slice(&[FN_SETUP, 0x00]);
    out.extend_from_slice(&n.max_amq_calling.to_be_bytes());
    out.extend_from_slice(&n.max_amq_called.to_be_bytes());
    out.extend_from_slice(&n.pdu_size.to_be_bytes());
    end_s7(out, h, S7_ACK_HEADER, 8);
}

/// Encodes a Read Var ack_data (server side): each item's bytes or its error.
pub fn encode_read_ack(out: &mut Vec<u8>, pdu_ref: u16, items: &[Result<&[u8], ItemError>]) {
    let h = begin_s7(out, ROSCTR_ACK_DATA, pdu_ref);
    out.extend_from_slice(&[FN_READ, items.len() as u8]);
    for (i, it) in items.iter().enumerate() {
        match it {
            Ok(data) => {
                out.extend_from_slice(&[RC_OK, 0x04]);
                out.extend_from_slice(&((data.len() as u16).saturating_mul(8)).to_be_bytes());
                out.extend_from_slice(data);
                if i + 1 < items.len() && data.len() % 2 == 1 {
                    out.push(0);
                }
            }
            Err(e) => out.extend_from_slice(&[e.0, 0x00, 0x00, 0x00]),
        }
    }
    end_s7(out, h, S7_ACK_HEADER, 2);
}

/// Encodes an ack_data that fails the whole job with an error class/code.
pub fn encode_error_ack(out: &mut Vec<u8>, pdu_ref: u16, err: S7Error) {
    let h = begin_s7(out, ROSCTR_ACK_DATA, pdu_ref);
    let s7 = h.1;
    out[s7 + 10] = err.class;
    out[s7 + 11] = err.code;
    end_s7(out, h, S7_ACK_HEADER, 0);
}

#[cfg(test)]
mod tests;
