use super::*;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

/// S7ANY items for any area, either kind.
fn item() -> impl Strategy<Value = ItemSpec> {
    (
        0u8..4,
        1u16..2000,
        any::<bool>(),
        0u32..(1 << 21),
        0u8..8,
        1u16..500,
    )
        .prop_map(|(a, db, bit, start, b, len)| ItemSpec {
            area: match a {
                0 => Area::Inputs,
                1 => Area::Outputs,
                2 => Area::Flags,
                _ => Area::Db(db),
            },
            kind: if bit { ItemKind::Bit } else { ItemKind::Byte },
            start,
            bit: if bit { b } else { 0 },
            len: if bit { 1 } else { len },
        })
}

fn s7_of(frame: &[u8]) -> S7Pdu<'_> {
    match parse_cotp(frame).expect("cotp") {
        Cotp::Data {
            last: true,
            payload,
        } => parse_s7(payload).expect("s7"),
        other => panic!("not a data TPDU: {other:?}"),
    }
}

#[test]
fn connect_request_matches_a_captured_frame() {
    // Rack 0, slot 2, PG connection: as sent by STEP 7 / Snap7 (Wireshark capture).
    let mut out = Vec::new();
    encode_connect_request(&mut out, 0x0100, 0x0102);
    assert_eq!(
        out,
        hex("03 00 00 16 11 e0 00 00 00 01 00 c0 01 0a c1 02 01 00 c2 02 01 02")
    );
    assert_eq!(
        parse_cotp(&out).expect("parses"),
        Cotp::ConnectRequest { src_ref: 1 }
    );
}

#[test]
fn setup_communication_matches_a_captured_frame() {
    let mut out = Vec::new();
    encode_setup(&mut out, 0, 1, 480);
    assert_eq!(
        out,
        hex("03 00 00 19 02 f0 80 32 01 00 00 00 00 00 08 00 00 f0 00 00 01 00 01 01 e0")
    );
    // The ack an S7-300 sends back, granting 240 bytes.
    let ack =
        hex("03 00 00 1b 02 f0 80 32 03 00 00 00 00 00 08 00 00 00 00 f0 00 00 01 00 01 00 f0");
    let n = decode_setup(&s7_of(&ack)).expect("setup ack");
    assert_eq!(
        n,
        Negotiated {
            max_amq_calling: 1,
            max_amq_called: 1,
            pdu_size: 240
        }
    );
}

#[test]
fn read_request_matches_a_captured_frame() {
    // Read DB1.DBD4, 4 bytes.
    let mut out = Vec::new();
    encode_read(&mut out, 0x0500, &[ItemSpec::bytes(Area::Db(1), 4, 4)]);
    assert_eq!(
        out,
        hex(
            "03 00 00 1f 02 f0 80 32 01 00 00 05 00 00 0e 00 00 04 01 12 0a 10 02 00 04 00 01 84 00 00 20"
        )
    );
    // A bit item: M3.5.
    out.clear();
    encode_read(
        &mut out,
        1,
        &[ItemSpec {
            area: Area::Flags,
            kind: ItemKind::Bit,
            start: 3,
            bit: 5,
            len: 1,
        }],
    );
    assert_eq!(
        &out[out.len() - 12..],
        &hex("12 0a 10 01 00 01 00 00 83 00 00 1d")[..]
    );
}

#[test]
fn read_response_with_odd_items_fill_bytes_and_item_errors_decodes() {
    // Three items: 3 bytes (odd: a fill byte follows), object does not exist, 2 bytes.
    let ack = hex(
        "03 00 00 27 02 f0 80 32 03 00 00 00 07 00 02 00 12 00 00 04 03 \
         ff 04 00 18 01 02 03 00 \
         0a 00 00 00 \
         ff 04 00 10 aa bb",
    );
    let pdu = s7_of(&ack);
    let mut items = Vec::new();
    decode_read(&pdu, 3, &mut items).expect("decodes");
    assert_eq!(&pdu.data[items[0].clone().expect("ok")], &[1, 2, 3]);
    assert_eq!(items[1], Err(ItemError(0x0A)));
    assert_eq!(ItemError(0x0A).describe(), "object does not exist");
    assert_eq!(&pdu.data[items[2].clone().expect("ok")], &[0xAA, 0xBB]);
    assert_eq!(
        decode_read(&pdu, 2, &mut items),
        Err(CodecError::ItemCount {
            expected: 2,
            got: 3
        })
    );
}

#[test]
fn a_reply_captured_from_snap7_decodes_item_by_item() {
    // Five items: DB1.DBD0 (21.5), DB1 bytes 4..17 (past the end: 0x05), M0.1 as a
    // bit, DB99 (missing: 0x0A), DB1 bytes 14..18 (0x05). Snap7 gives error items a
    // length of 4 with no data: the length of an error item must be ignored.
    let frame = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus/decode_reply/snap7_read_mixed"),
    )
    .expect("captured frame");
    let pdu = s7_of(&frame);
    let mut items = Vec::new();
    decode_read(&pdu, 5, &mut items).expect("decodes");
    assert_eq!(
        &pdu.data[items[0].clone().expect("ok")],
        &21.5f32.to_be_bytes()
    );
    assert_eq!(items[1], Err(ItemError(0x05)));
    assert_eq!(&pdu.data[items[2].clone().expect("ok")], &[1]);
    assert_eq!(items[3], Err(ItemError(0x0A)));
    assert_eq!(items[4], Err(ItemError(0x05)));
}

#[test]
fn header_errors_are_decoded_with_the_fix() {
    let mut out = Vec::new();
    encode_error_ack(
        &mut out,
        9,
        S7Error {
            class: 0x81,
            code: 0x04,
        },
    );
    let pdu = s7_of(&out);
    let e = decode_read(&pdu, 1, &mut Vec::new()).expect_err("class 0x81");
    let msg = e.to_string();
    assert!(msg.contains("PUT/GET"), "{msg}");
    let dr = hex("03 00 00 0b 06 80 00 01 00 01 03");
    let e = CodecError::Refused {
        reason: match parse_cotp(&dr).expect("dr") {
            Cotp::Disconnect { reason } => reason,
            other => panic!("{other:?}"),
        },
    };
    assert!(e.to_string().contains("rack/slot"), "{e}");
}

#[test]
fn tpkt_rejects_foreign_protocols() {
    assert_eq!(tpkt_frame_len(*b"HTTP"), Err(CodecError::TpktVersion(b'H')));
    assert_eq!(tpkt_frame_len([3, 0, 0, 2]), Err(CodecError::TpktLength(2)));
    assert_eq!(
        tpkt_frame_len([3, 0, 0xFF, 0xFF]),
        Err(CodecError::TpktLength(65535))
    );
}

#[test]
fn seed_corpus_decodes_without_panic() {
    // The fuzz target's seed corpus: real frames (see fuzz/corpus/decode_reply).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_reply");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("corpus dir") {
        let bytes = std::fs::read(e.expect("entry").path()).expect("read");
        crate::fuzzing::decode_reply(&bytes);
        n += 1;
    }
    assert!(n >= 5, "seed corpus has {n} files");
}

proptest! {
    #[test]
    fn read_requests_round_trip(items in prop::collection::vec(item(), 1..20), pdu_ref: u16) {
        let mut out = Vec::new();
        encode_read(&mut out, pdu_ref, &items);
        prop_assert_eq!(tpkt_frame_len([out[0], out[1], out[2], out[3]]).expect("len"), out.len());
        let pdu = s7_of(&out);
        prop_assert_eq!(pdu.pdu_ref, pdu_ref);
        prop_assert_eq!(pdu.params.len() + S7_JOB_HEADER, read_request_size(items.len()));
        prop_assert_eq!(decode_job(&pdu).expect("job"), Job::Read(items));
    }

    #[test]
    fn read_replies_round_trip(
        items in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64).prop_map(Ok),
                prop_oneof![Just(1u8), Just(3), Just(5), Just(6), Just(7), Just(0x0A)].prop_map(|c| Err(ItemError(c))),
            ], 1..20),
        pdu_ref: u16,
    ) {
        let borrowed: Vec<Result<&[u8], ItemError>> =
            items.iter().map(|r| r.as_ref().map(|v| v.as_slice()).map_err(|e| *e)).collect();
        let mut out = Vec::new();
        encode_read_ack(&mut out, pdu_ref, &borrowed);
        let pdu = s7_of(&out);
        let mut got = Vec::new();
        decode_read(&pdu, items.len(), &mut got).expect("decodes");
        for (want, got) in items.iter().zip(&got) {
            match (want, got) {
                (Ok(w), Ok(r)) => prop_assert_eq!(&pdu.data[r.clone()], w.as_slice()),
                (Err(w), Err(g)) => prop_assert_eq!(w, g),
                _ => prop_assert!(false, "{want:?} vs {got:?}"),
            }
        }
        // The size model the planner relies on is exact.
        let n = items.len();
        let model: usize = S7_ACK_HEADER + 2 + items.iter().enumerate().map(|(i, it)| match it {
            Ok(v) => response_item_size(v.len(), i + 1 == n),
            Err(_) => ITEM_HEADER,
        }).sum::<usize>();
        prop_assert_eq!(out.len() - TPKT_HEADER - COTP_DT_HEADER, model);
    }

    #[test]
    fn write_requests_round_trip(
        items in prop::collection::vec((item(), prop::collection::vec(any::<u8>(), 1..40)), 1..10),
    ) {
        let items: Vec<(ItemSpec, Vec<u8>)> = items.into_iter().map(|(mut it, data)| {
            if it.kind == ItemKind::Bit { (it, vec![data[0] & 1]) } else { it.len = data.len() as u16; (it, data) }
        }).collect();
        let borrowed: Vec<(ItemSpec, &[u8])> = items.iter().map(|(i, d)| (*i, d.as_slice())).collect();
        let mut out = Vec::new();
        encode_write(&mut out, 7, &borrowed);
        let pdu = s7_of(&out);
        prop_assert_eq!(decode_job(&pdu).expect("job"), Job::Write(borrowed));
    }

    #[test]
    fn no_input_panics_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        crate::fuzzing::decode_reply(&bytes);
    }

    #[test]
    fn mutated_real_replies_never_panic(
        idx in 0usize..41, val: u8, cut in 0usize..42,
    ) {
        let mut ack = hex(
            "03 00 00 27 02 f0 80 32 03 00 00 00 07 00 02 00 12 00 00 04 03 \
             ff 04 00 18 01 02 03 00 0a 00 00 00 ff 04 00 10 aa bb",
        );
        let n = ack.len();
        ack[idx % n] = val;
        ack.truncate(cut.max(1));
        crate::fuzzing::decode_reply(&ack);
    }
}
