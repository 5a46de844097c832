//! On-disk format of journal segments.
//!
//! ```text
//! segment  = header frame*
//! header   = "EDGEJRNL" (8) | format version u16 LE | lane u8 | 5 reserved zero bytes
//! frame    = length word u32 LE | CRC32C u32 LE | sequence u64 LE | payload
//! length   = payload length (bits 0..30) | priority flag (bit 31)
//! CRC32C   = crc32c(sequence bytes ‖ payload)
//! ```
//!
//! The priority flag (version 2) marks a record the uplink sends before the rest of
//! a backlog (a system alert); recovery rebuilds the priority index from it. Version
//! 1 segments (no flag) are read as they are; a version-1 agent refuses version-2
//! segments by their header (it quarantines them rather than misreading a flag as a
//! huge length). The flag is outside the CRC: a flipped flag bit changes only the
//! order a record is sent in.
//!
//! Scanning never trusts a frame it has not checked. A frame that is not whole and
//! valid (a length above [`MAX_RECORD`] or past the end of the file, a CRC that does
//! not match, a sequence number that does not increase) is damage: the scan
//! resynchronises on the next offset where a valid frame with a plausible next
//! sequence number starts, and counts the records in between (by the sequence gap)
//! as corrupt, so one flipped byte costs one record, not the rest of the segment.
//! If no valid frame follows, the damage is a torn or garbage tail.

/// File magic.
pub const MAGIC: &[u8; 8] = b"EDGEJRNL";
/// Current format version (written in new segments).
pub const FORMAT_VERSION: u16 = 2;
/// Oldest format version still read.
pub const OLDEST_VERSION: u16 = 1;
/// The priority flag in a frame's length word.
const PRIORITY: u32 = 1 << 31;
/// Bytes of the segment header.
pub const HEADER_LEN: usize = 16;
/// Bytes of a frame header.
pub const FRAME_HEADER: usize = 16;
/// Largest payload accepted.
pub const MAX_RECORD: usize = 1 << 20;

/// The header of a segment of `lane`.
pub fn header(lane: u8) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[10] = lane;
    h
}

/// Why a file is not a segment we can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Too short or wrong magic: not ours.
    Foreign,
    /// Ours, from a newer (or unknown) format version.
    Version(u16),
    /// A segment of another lane in this lane's directory.
    WrongLane(u8),
}

/// Checks a segment header.
pub fn check_header(buf: &[u8], lane: u8) -> Result<(), HeaderError> {
    if buf.len() < HEADER_LEN || &buf[..8] != MAGIC {
        return Err(HeaderError::Foreign);
    }
    let version = u16::from_le_bytes([buf[8], buf[9]]);
    if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(HeaderError::Version(version));
    }
    if buf[10] != lane {
        return Err(HeaderError::WrongLane(buf[10]));
    }
    Ok(())
}

fn crc(seq: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&seq.to_le_bytes()), payload)
}

/// Appends one frame to `out` (`priority`: see the module docs). `payload` is at
/// most [`MAX_RECORD`] bytes (the caller checks).
pub fn encode_frame(seq: u64, payload: &[u8], priority: bool, out: &mut Vec<u8>) {
    let flag = if priority { PRIORITY } else { 0 };
    out.extend_from_slice(&(payload.len() as u32 | flag).to_le_bytes());
    out.extend_from_slice(&crc(seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Bytes a payload takes on disk.
pub fn frame_len(payload_len: usize) -> u64 {
    (FRAME_HEADER + payload_len) as u64
}

/// A record found by [`scan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub seq: u64,
    pub payload: std::ops::Range<usize>,
    /// Written with the priority flag.
    pub priority: bool,
}

/// What a scan of a segment found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub records: Vec<Found>,
    /// Offset just past the last frame that can be kept.
    pub valid_len: usize,
    /// Frames skipped: CRC mismatch or non-increasing sequence.
    pub corrupt: u64,
    /// The file ends inside a frame, or with an implausible length (a torn write).
    pub torn: bool,
}

/// A frame that [`frame_at`] found whole and valid.
struct Frame {
    seq: u64,
    len: usize,
    priority: bool,
}

/// The frame at `pos` if it is whole and its CRC holds.
fn frame_at(buf: &[u8], pos: usize) -> Option<Frame> {
    let head = buf.get(pos..pos + FRAME_HEADER)?;
    let word = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let len = (word & !PRIORITY) as usize;
    let stored_crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let seq = u64::from_le_bytes(head[8..16].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let payload = buf.get(pos + FRAME_HEADER..pos + FRAME_HEADER + len)?;
    (crc(seq, payload) == stored_crc).then_some(Frame {
        seq,
        len,
        priority: word & PRIORITY != 0,
    })
}

/// The first offset after `from` where a valid frame starts whose sequence number
/// follows `after` closely enough for the bytes left to have held the records in
/// between (which keeps the search cheap: most offsets fail that test before any
/// CRC is computed).
fn resync(buf: &[u8], from: usize, after: u64) -> Option<usize> {
    let max_gap = (buf.len().saturating_sub(from) / FRAME_HEADER) as u64 + 1;
    (from + 1..buf.len().saturating_sub(FRAME_HEADER - 1)).find(|&p| {
        let seq = u64::from_le_bytes(buf[p + 8..p + 16].try_into().unwrap_or([0; 8]));
        seq > after && seq - after <= max_gap && frame_at(buf, p).is_some_and(|f| f.seq == seq)
    })
}

/// Scans a whole segment (header included; call [`check_header`] first) whose first
/// record has sequence number `first_seq`.
pub fn scan(buf: &[u8], first_seq: u64) -> Scan {
    let mut s = Scan {
        valid_len: HEADER_LEN.min(buf.len()),
        ..Scan::default()
    };
    let mut pos = HEADER_LEN;
    // The sequence number before the next expected record.
    let mut last = first_seq.saturating_sub(1);
    while pos < buf.len() {
        let f = match frame_at(buf, pos) {
            Some(f) if f.seq > last => f,
            _ => match resync(buf, pos, last) {
                Some(next) => {
                    let f = frame_at(buf, next).expect("resync returns a valid frame");
                    s.corrupt += (f.seq - last - 1).max(1);
                    pos = next;
                    f
                }
                None => {
                    s.torn = true;
                    break;
                }
            },
        };
        let start = pos + FRAME_HEADER;
        s.records.push(Found {
            seq: f.seq,
            payload: start..start + f.len,
            priority: f.priority,
        });
        last = f.seq;
        pos = start + f.len;
        s.valid_len = pos;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn segment(records: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut buf = header(0).to_vec();
        for (seq, p) in records {
            encode_frame(*seq, p, false, &mut buf);
        }
        buf
    }

    #[test]
    fn round_trip() {
        let buf = segment(&[(1, b"a".to_vec()), (2, vec![]), (5, vec![7; 300])]);
        assert_eq!(check_header(&buf, 0), Ok(()));
        let s = scan(&buf, 1);
        assert_eq!(
            s.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2, 5]
        );
        assert_eq!(&buf[s.records[2].payload.clone()], &[7; 300][..]);
        assert_eq!((s.valid_len, s.corrupt, s.torn), (buf.len(), 0, false));
    }

    #[test]
    fn torn_tail_is_detected_at_every_cut() {
        let full = segment(&[(1, b"hello".to_vec()), (2, b"world!".to_vec())]);
        let first_end = HEADER_LEN + FRAME_HEADER + 5;
        for cut in first_end + 1..full.len() {
            let s = scan(&full[..cut], 1);
            assert_eq!(s.records.len(), 1, "cut {cut}");
            assert!(s.torn);
            assert_eq!(s.valid_len, first_end);
        }
    }

    #[test]
    fn a_flipped_bit_skips_only_that_record() {
        let mut buf = segment(&[
            (1, b"aaaa".to_vec()),
            (2, b"bbbb".to_vec()),
            (3, b"cccc".to_vec()),
        ]);
        let second_payload = HEADER_LEN + 2 * FRAME_HEADER + 4;
        buf[second_payload] ^= 0x01;
        let s = scan(&buf, 1);
        assert_eq!(
            s.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(s.corrupt, 1);
        assert!(!s.torn);
    }

    #[test]
    fn an_absurd_length_ends_the_scan_as_a_torn_tail() {
        let mut buf = segment(&[(1, b"x".to_vec()), (2, b"y".to_vec())]);
        let second = HEADER_LEN + FRAME_HEADER + 1;
        buf[second..second + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let s = scan(&buf, 1);
        assert_eq!(s.records.len(), 1);
        assert!(s.torn);
    }

    #[test]
    fn a_damaged_length_in_the_middle_costs_one_record_not_the_rest_of_the_segment() {
        let records: Vec<(u64, Vec<u8>)> = (1..=200).map(|i| (i, vec![i as u8; 40])).collect();
        let clean = segment(&records);
        let tenth = HEADER_LEN + 9 * (FRAME_HEADER + 40);
        for (byte, value) in [(0, 0xff), (1, 0x01), (2, 0x7f), (3, 0x01), (0, 0x00)] {
            let mut buf = clean.clone();
            buf[tenth + byte] = value;
            let s = scan(&buf, 1);
            let seqs: Vec<u64> = s.records.iter().map(|r| r.seq).collect();
            let want: Vec<u64> = (1..=200).filter(|&i| i != 10).collect();
            assert_eq!(seqs, want, "byte {byte} = {value:#x}");
            assert_eq!((s.corrupt, s.torn, s.valid_len), (1, false, buf.len()));
        }
    }

    #[test]
    fn a_damaged_sequence_number_or_crc_costs_only_its_record() {
        let records: Vec<(u64, Vec<u8>)> = (1..=50).map(|i| (i, vec![7; 10])).collect();
        let clean = segment(&records);
        let fifth = HEADER_LEN + 4 * (FRAME_HEADER + 10);
        for offset in [4, 8, 12, FRAME_HEADER + 3] {
            let mut buf = clean.clone();
            buf[fifth + offset] ^= 0x40;
            let s = scan(&buf, 1);
            assert_eq!(s.records.len(), 49, "offset {offset}");
            assert_eq!((s.corrupt, s.torn), (1, false), "offset {offset}");
        }
    }

    #[test]
    fn the_priority_flag_round_trips_and_leaves_the_length_intact() {
        let mut buf = header(0).to_vec();
        encode_frame(1, b"plain", false, &mut buf);
        encode_frame(2, b"the disk is full", true, &mut buf);
        let s = scan(&buf, 1);
        let got: Vec<(u64, bool, &[u8])> = s
            .records
            .iter()
            .map(|r| (r.seq, r.priority, &buf[r.payload.clone()]))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, false, &b"plain"[..]),
                (2, true, &b"the disk is full"[..])
            ]
        );
        assert_eq!((s.valid_len, s.corrupt, s.torn), (buf.len(), 0, false));
    }

    #[test]
    fn version_1_segments_are_still_read() {
        let mut buf = segment(&[(1, b"old".to_vec())]);
        buf[8..10].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(check_header(&buf, 0), Ok(()));
        assert_eq!(scan(&buf, 1).records.len(), 1);
    }

    #[test]
    fn headers_identify_foreign_future_and_misplaced_files() {
        assert_eq!(
            check_header(b"hello world, not a journal", 0),
            Err(HeaderError::Foreign)
        );
        let mut h = header(2);
        assert_eq!(check_header(&h, 1), Err(HeaderError::WrongLane(2)));
        h[8] = 9;
        assert_eq!(check_header(&h, 2), Err(HeaderError::Version(9)));
    }

    proptest! {
        /// Decoding arbitrary bytes never panics and never returns a record whose CRC
        /// does not hold.
        #[test]
        fn scanning_garbage_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut buf = header(0).to_vec();
            buf.extend_from_slice(&tail);
            let s = scan(&buf, 1);
            for r in &s.records {
                prop_assert!(r.payload.end <= buf.len());
            }
            prop_assert!(s.valid_len <= buf.len());
        }
    }
}
