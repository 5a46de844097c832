//! One confirmable exchange with the server: message ids and tokens, RFC 7252
//! retransmission, acknowledging confirmable notifications, Block2 options.

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use tokio::net::UdpSocket;

use crate::config::Resource;
use crate::driver::Shared;

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum Failure {
    Timeout,
    Io(std::io::Error),
    /// An error response code (class·32 + detail).
    Code(u8),
    TooLarge,
}

/// The socket with message-id / token bookkeeping.
pub(crate) struct Conn {
    pub(crate) sock: UdpSocket,
    pub(crate) mid: u16,
    pub(crate) token: u64,
    pub(crate) buf: Vec<u8>,
}

pub(crate) fn code_byte(c: MessageClass) -> u8 {
    u8::from(c)
}

pub(crate) fn ack_for(p: &Packet) -> Option<Vec<u8>> {
    let mut a = Packet::new();
    a.header.set_type(MessageType::Acknowledgement);
    a.header.message_id = p.header.message_id;
    a.header.code = MessageClass::Empty;
    a.to_bytes().ok()
}

impl Conn {
    /// Acknowledges a confirmable message (best effort: a lost ACK is retransmitted).
    pub(crate) async fn ack(&self, p: &Packet) {
        if p.header.get_type() == MessageType::Confirmable
            && let Some(a) = ack_for(p)
        {
            let _ = self.sock.send(&a).await;
        }
    }

    fn next_mid(&mut self) -> u16 {
        self.mid = self.mid.wrapping_add(1);
        self.mid
    }

    pub(crate) fn next_token(&mut self) -> Vec<u8> {
        self.token = self.token.wrapping_add(1);
        self.token.to_be_bytes()[4..].to_vec()
    }

    /// One confirmable GET (with optional Observe / Block2), retransmitted per RFC
    /// 7252 §4.2. Packets that are not the answer go to `other`.
    pub(crate) async fn get(
        &mut self,
        sh: &Shared,
        res: &Resource,
        token: &[u8],
        observe: bool,
        block: Option<u32>,
        other: &mut Vec<Packet>,
    ) -> Result<Packet, Failure> {
        let mut req = Packet::new();
        req.header.set_type(MessageType::Confirmable);
        req.header.code = MessageClass::Request(RequestType::Get);
        let mid = self.next_mid();
        req.header.message_id = mid;
        req.set_token(token.to_vec());
        if observe {
            req.set_observe_value(0);
        }
        for seg in res.path.split('/').filter(|s| !s.is_empty()) {
            req.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        if let Some(cf) = res.accept {
            // A uint option: big-endian without leading zero bytes (0 is empty).
            let b = cf.to_be_bytes();
            let first = b.iter().position(|&x| x != 0).unwrap_or(2);
            req.add_option(CoapOption::Accept, b[first..].to_vec());
        }
        if let Some(num) = block {
            // Block2: NUM, M=0, SZX=6 (1024 bytes).
            let v = (num << 4) | 6;
            let bytes = v.to_be_bytes();
            let first = bytes.iter().position(|&b| b != 0).unwrap_or(3);
            req.add_option(CoapOption::Block2, bytes[first..].to_vec());
        }
        self.confirm(sh, &req, token, other).await
    }

    /// One confirmable PUT or POST of `payload` (`text/plain`, Content-Format 0)
    /// to the resource's path: a write. Answered 2.01/2.04, or an error code.
    pub(crate) async fn send_value(
        &mut self,
        sh: &Shared,
        res: &Resource,
        method: RequestType,
        payload: &[u8],
        other: &mut Vec<Packet>,
    ) -> Result<Packet, Failure> {
        let token = self.next_token();
        let mut req = Packet::new();
        req.header.set_type(MessageType::Confirmable);
        req.header.code = MessageClass::Request(method);
        req.header.message_id = self.next_mid();
        req.set_token(token.clone());
        for seg in res.path.split('/').filter(|s| !s.is_empty()) {
            req.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        // Content-Format 0 (text/plain): an empty uint option.
        req.add_option(CoapOption::ContentFormat, Vec::new());
        req.payload = payload.to_vec();
        self.confirm(sh, &req, &token, other).await
    }

    /// Sends a confirmable request and waits for its answer, retransmitted per
    /// RFC 7252 §4.2 (piggybacked or separate). Packets that are not the answer
    /// go to `other`.
    async fn confirm(
        &mut self,
        sh: &Shared,
        req: &Packet,
        token: &[u8],
        other: &mut Vec<Packet>,
    ) -> Result<Packet, Failure> {
        let mid = req.header.message_id;
        let bytes = req.to_bytes().map_err(|_| Failure::TooLarge)?;
        let mut timeout = sh.cfg.ack_timeout.mul_f64(1.0 + 0.5 * jitter(mid));
        let mut acked = false;
        let mut sent = 0u32;
        loop {
            if !acked {
                self.sock.send(&bytes).await.map_err(Failure::Io)?;
                sent += 1;
            }
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                self.buf.resize(64 * 1024, 0);
                let n = match tokio::time::timeout_at(deadline, self.sock.recv(&mut self.buf)).await
                {
                    Err(_) => break,
                    Ok(Err(e)) => return Err(Failure::Io(e)),
                    Ok(Ok(n)) => n,
                };
                let Ok(p) = Packet::from_bytes(&self.buf[..n]) else {
                    continue; // garbage datagram: ignore
                };
                let is_ours = p.get_token() == token;
                match (p.header.get_type(), is_ours) {
                    (MessageType::Acknowledgement, _) if p.header.message_id == mid => {
                        if p.header.code == MessageClass::Empty {
                            // Separate response follows.
                            acked = true;
                            continue;
                        }
                        return finish(p);
                    }
                    (MessageType::Confirmable | MessageType::NonConfirmable, true)
                        if matches!(p.header.code, MessageClass::Response(_)) =>
                    {
                        self.ack(&p).await;
                        return finish(p);
                    }
                    _ => {
                        // Not the answer (a notification, most likely): acknowledge
                        // it here, handle it after the exchange.
                        self.ack(&p).await;
                        other.push(p);
                    }
                }
            }
            if acked {
                // Waited a whole (doubled) interval for the separate response.
                if sent > sh.cfg.max_retransmit + 1 {
                    return Err(Failure::Timeout);
                }
                sent += 1;
                timeout *= 2;
                continue;
            }
            if sent > sh.cfg.max_retransmit {
                return Err(Failure::Timeout);
            }
            timeout *= 2;
        }
    }
}

impl Conn {
    /// A CoAP ping (an empty confirmable message, RFC 7252 §4.3): whether the
    /// server answers (with a reset) within `wait`. No retransmission: a lost
    /// ping is only a missed beat. Other packets go to `other`.
    pub(crate) async fn ping(
        &mut self,
        wait: std::time::Duration,
        other: &mut Vec<Packet>,
    ) -> bool {
        let mut req = Packet::new();
        req.header.set_type(MessageType::Confirmable);
        req.header.code = MessageClass::Empty;
        let mid = self.next_mid();
        req.header.message_id = mid;
        let Ok(bytes) = req.to_bytes() else {
            return false;
        };
        if self.sock.send(&bytes).await.is_err() {
            return false;
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.buf.resize(64 * 1024, 0);
            let n = match tokio::time::timeout_at(deadline, self.sock.recv(&mut self.buf)).await {
                Ok(Ok(n)) => n,
                _ => return false,
            };
            let Ok(p) = Packet::from_bytes(&self.buf[..n]) else {
                continue;
            };
            let answer = matches!(
                p.header.get_type(),
                MessageType::Reset | MessageType::Acknowledgement
            );
            if answer && p.header.message_id == mid {
                return true;
            }
            self.ack(&p).await;
            other.push(p);
        }
    }
}

/// A success (2.xx: 2.05 Content and 2.03 Valid for a GET, 2.04 Changed and
/// 2.01 Created for a write), or the error code.
fn finish(p: Packet) -> Result<Packet, Failure> {
    match p.header.code {
        MessageClass::Response(_) if code_byte(p.header.code) >> 5 == 2 => Ok(p),
        MessageClass::Response(_) => Err(Failure::Code(code_byte(p.header.code))),
        _ => Err(Failure::Code(0)),
    }
}

/// A deterministic 0..1 factor from the message id (ACK_RANDOM_FACTOR spread).
fn jitter(mid: u16) -> f64 {
    f64::from(mid.wrapping_mul(40503) >> 4) / 4096.0
}

pub(crate) fn block2(p: &Packet) -> Option<(u32, bool)> {
    let v = p.get_first_option(CoapOption::Block2)?;
    if v.len() > 3 {
        return None;
    }
    let mut x = 0u32;
    for b in v {
        x = (x << 8) | u32::from(*b);
    }
    Some((x >> 4, x & 0x08 != 0))
}
