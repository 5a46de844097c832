//! Writes: a value for a writable `number` resource is sent as its text
//! (`text/plain`) in a confirmable PUT (or POST, `write_method`), answered 2.04
//! Changed or 2.01 Created; an error code refuses it. With `verify`, the
//! resource is read back with a GET and must hold the value.

use coap_lite::{Packet, RequestType};
use edge_driver_api::{WriteDone, WriteError, WriteFailure, WriteRequest};

use crate::describe_exception;
use crate::driver::Shared;
use crate::exchange::{Conn, Failure};

/// The resource that carries `signal` (a writable `number` resource).
fn resource_of(sh: &Shared, req: &WriteRequest) -> Option<usize> {
    sh.cfg.resources.iter().position(|r| {
        r.write.is_some()
            && r.templates
                .first()
                .and_then(|t| sh.known.get(t))
                .is_some_and(|(id, _)| *id == req.signal)
    })
}

/// The value as the text of its number: integers without a fraction.
pub(crate) fn text_of(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn failed(f: Failure, what: &str) -> WriteError {
    match f {
        Failure::Code(c) => WriteError::new(
            WriteFailure::Device,
            format!(
                "the server answered {what} with {}",
                describe_exception(c.into())
            ),
        ),
        Failure::Timeout => {
            WriteError::new(WriteFailure::Communication, format!("no answer to {what}"))
        }
        Failure::Io(e) => WriteError::new(WriteFailure::Communication, format!("{what}: {e}")),
        Failure::TooLarge => WriteError::new(WriteFailure::Encode, format!("{what}: too large")),
    }
}

/// Performs `req` and answers it. Packets that arrive meanwhile (notifications)
/// go to `other`.
pub(crate) async fn perform(
    sh: &Shared,
    conn: &mut Conn,
    req: WriteRequest,
    other: &mut Vec<Packet>,
) {
    let Some(i) = resource_of(sh, &req) else {
        req.answer(Err(WriteError::new(
            WriteFailure::Encode,
            "no writable resource carries this signal",
        )));
        return;
    };
    let res = &sh.cfg.resources[i];
    let method = if res.write_post {
        RequestType::Post
    } else {
        RequestType::Put
    };
    let what = format!(
        "{} {}",
        if res.write_post { "POST" } else { "PUT" },
        res.path
    );
    let t0 = tokio::time::Instant::now();
    let sent = conn
        .send_value(sh, res, method, text_of(req.value).as_bytes(), other)
        .await;
    if let Err(f) = sent {
        if matches!(f, Failure::Timeout) {
            sh.stats.timeout();
        } else {
            sh.stats.exception();
        }
        req.answer(Err(failed(f, &what)));
        return;
    }
    sh.stats.success(t0.elapsed());
    if !req.verify {
        req.answer(Ok(WriteDone { read_back: None }));
        return;
    }
    let token = conn.next_token();
    let got = match conn.get(sh, res, &token, false, None, other).await {
        Ok(p) => p,
        Err(f) => {
            let e = failed(f, &format!("the read back of {}", res.path));
            req.answer(Err(WriteError::new(
                WriteFailure::Verify,
                format!("written, but {}", e.message),
            )));
            return;
        }
    };
    let back = std::str::from_utf8(&got.payload)
        .ok()
        .and_then(|t| t.trim().parse::<f64>().ok());
    let same = back.is_some_and(|b| (b - req.value).abs() <= 1e-9 * req.value.abs().max(1.0));
    req.answer(if same {
        Ok(WriteDone { read_back: back })
    } else {
        let shown = back.map_or_else(
            || String::from_utf8_lossy(&got.payload).into_owned(),
            |b| b.to_string(),
        );
        Err(WriteError::new(
            WriteFailure::Verify,
            format!("written, but {} reads back {shown}", res.path),
        ))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_sent_as_the_shortest_text_of_their_number() {
        assert_eq!(text_of(42.0), "42");
        assert_eq!(text_of(-3.0), "-3");
        assert_eq!(text_of(21.5), "21.5");
        assert_eq!(text_of(0.1), "0.1");
    }
}
