//! Entry points of the fuzz targets in `agent/fuzz/` (`cargo fuzz`), also run
//! on the kept corpora by the unit tests below: what the agent reads from disk
//! and from its control socket must never panic, whatever the bytes.

use crate::delivery::journal::format::{check_header, header, scan};
use crate::delivery::wire::Envelope;
use crate::ingest::latest::name_matches;
use crate::ops::control::{Request, parse_request};

/// Reads `bytes` as a journal segment — raw, and behind a valid header — and
/// every record it finds as an envelope, as recovery and the uplink do. Found
/// records lie inside the buffer; a segment's valid length never exceeds it.
pub fn journal(bytes: &[u8]) {
    for lane in 0..3 {
        let _ = check_header(bytes, lane);
    }
    let _ = Envelope::decode(bytes);
    let mut segment = header(0).to_vec();
    segment.extend_from_slice(bytes);
    for buf in [bytes, segment.as_slice()] {
        let s = scan(buf, 1);
        assert!(s.valid_len <= buf.len());
        let mut last = 0;
        for r in &s.records {
            assert!(r.payload.end <= buf.len() && r.payload.start <= r.payload.end);
            assert!(r.seq > last, "sequence numbers increase");
            last = r.seq;
            let _ = Envelope::decode(&buf[r.payload.clone()]);
        }
    }
}

/// Parses `bytes` as a control-socket command line (cut at 256 bytes like the
/// socket does) and matches a `tags` filter against a few names.
pub fn control_request(bytes: &[u8]) {
    let line = &bytes[..bytes.len().min(256)];
    match parse_request(line) {
        Request::Tags(filter) => {
            for name in ["pump1.temperature", "", "a.b.c", "ÄÖ.ü", "*?"] {
                let _ = name_matches(&filter, name);
            }
        }
        Request::Unknown(text) => assert!(text.chars().count() <= 64),
        Request::Label { id, verdict, note } => {
            assert!(!id.is_empty() && id.len() + verdict.len() + note.len() <= 256);
            let _ = crate::delivery::labels::Verdict::parse(&verdict);
        }
        Request::Write { signal, value } => {
            assert!(!signal.is_empty() && !value.is_empty() && signal.len() + value.len() <= 256);
            let _ = crate::inbound::write::parse_value(&value);
        }
        Request::Status | Request::Ack => {}
    }
}

#[cfg(test)]
mod tests {
    fn replay(target: &str, f: fn(&[u8])) {
        edge_driver_api::testing::replay_corpus(env!("CARGO_MANIFEST_DIR"), target, f);
    }

    /// Writes the journal seeds (`cargo test -p edge-agent --lib write_journal_seeds
    /// -- --ignored`): whole segments with real envelopes, a flipped payload byte,
    /// a torn tail, a priority record, a version-1 header.
    #[test]
    #[ignore]
    fn write_journal_seeds() {
        use crate::delivery::journal::format::{encode_frame, header};
        use crate::delivery::wire::Envelope;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/journal");
        let segment = |n: u64, priority: bool| {
            let mut out = header(0).to_vec();
            for seq in 1..=n {
                let body = format!("{{\"alert\":{seq},\"severity\":\"warning\"}}");
                let env = Envelope::new(
                    u128::from(seq) << 64,
                    "pump1",
                    1_700_000_000,
                    body.into_bytes(),
                );
                encode_frame(seq, &env.encode(), priority && seq == 2, &mut out);
            }
            out
        };
        let whole = segment(3, false);
        let mut flipped = whole.clone();
        let at = flipped.len() - 10;
        flipped[at] ^= 0x40;
        let torn = whole[..whole.len() - 7].to_vec();
        let mut v1 = segment(2, false);
        v1[8] = 1;
        for (name, bytes) in [
            ("segment_3", whole),
            ("flipped_byte", flipped),
            ("torn_tail", torn),
            ("priority", segment(3, true)),
            ("version_1", v1),
        ] {
            std::fs::write(dir.join(name), bytes).expect("write seed");
        }
    }

    #[test]
    fn the_journal_corpus_decodes_without_panic() {
        replay("journal", super::journal);
    }

    #[test]
    fn the_control_request_corpus_parses_without_panic() {
        replay("control_request", super::control_request);
    }

    #[test]
    fn control_requests_parse_into_commands() {
        use super::{Request, parse_request};
        assert_eq!(parse_request(b"status\n"), Request::Status);
        assert_eq!(
            parse_request(b" tags  pump*  \n"),
            Request::Tags("pump*".into())
        );
        assert_eq!(parse_request(b"tags"), Request::Tags(String::new()));
        assert_eq!(parse_request(b"ack"), Request::Ack);
        assert_eq!(
            parse_request(b"status now"),
            Request::Unknown("status now".into())
        );
        assert_eq!(
            parse_request(&[0xff, b'x']),
            Request::Unknown("\u{fffd}x".into())
        );
    }
}
