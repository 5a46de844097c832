//! Entry point of the fuzz target in `fuzz/` (`cargo fuzz`), also run on the
//! kept corpus by the unit test below: CoAP messages as they arrive from the
//! network — parsing, acknowledgement, Observe ordering, response codes and the
//! Block2 assembly of a body — on arbitrary datagrams. Never a panic, never a
//! body over the limit.

use coap_lite::{MessageClass, Packet};

use crate::driver::{MAX_BODY, append_block, is_newer};
use crate::exchange::{ack_for, code_byte};

/// `bytes` is a sequence of datagrams, each preceded by its length (one byte):
/// the replies of one exchange, block by block, with notifications between.
pub fn datagrams(bytes: &[u8]) {
    let mut rest = bytes;
    let mut body = Vec::new();
    let mut last_seq: Option<u32> = None;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (dgram, tail) = tail.split_at(len);
        rest = tail;
        let Ok(p) = Packet::from_bytes(dgram) else {
            continue;
        };
        let _ = ack_for(&p);
        if let Some(Ok(seq)) = p.get_observe_value() {
            if last_seq.is_none_or(|last| is_newer(seq, last)) {
                last_seq = Some(seq);
            }
        }
        if let MessageClass::Response(_) = p.header.code {
            let _ = crate::describe_exception(code_byte(p.header.code).into());
            match append_block(&mut body, &p) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    edge_driver_api::fuzzing::payload(&body);
                    body.clear();
                }
                Err(_) => {
                    assert!(body.len() > MAX_BODY);
                    body.clear();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_datagram_corpus_parses_without_panic() {
        edge_driver_api::testing::replay_corpus(
            env!("CARGO_MANIFEST_DIR"),
            "datagrams",
            super::datagrams,
        );
    }
}
