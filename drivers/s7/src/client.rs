//! The S7 client: ISO-on-TCP connection set-up and request/reply exchange over any
//! byte stream (TCP in production, an in-memory pipe in fault-injection tests).
//!
//! One request is in flight at a time; every exchange runs under the configured
//! timeout. After a timeout or a protocol violation the stream's state is unknown,
//! so the caller drops the client and reconnects.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::{
    self, CodecError, Cotp, ItemError, ItemSpec, MAX_FRAME, Negotiated, ReadItem, TPKT_HEADER,
};

/// Connection parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectParams {
    pub local_tsap: u16,
    pub remote_tsap: u16,
    /// PDU size we ask for (the PLC may grant less).
    pub pdu_size: u16,
    pub timeout: Duration,
}

/// Connection types of the remote TSAP's high byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionType {
    Pg,
    Op,
    S7Basic,
}

impl ConnectionType {
    pub fn code(self) -> u8 {
        match self {
            ConnectionType::Pg => 0x01,
            ConnectionType::Op => 0x02,
            ConnectionType::S7Basic => 0x03,
        }
    }
}

/// The remote TSAP for a CPU at `rack`/`slot`.
pub fn rack_slot_tsap(kind: ConnectionType, rack: u8, slot: u8) -> u16 {
    u16::from_be_bytes([kind.code(), (rack << 5) | (slot & 0x1F)])
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("no reply to {0} within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("{0}")]
    Codec(#[from] CodecError),
}

impl ClientError {
    /// Whether the failure was a timeout (scored separately from other errors).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Timeout(..))
    }
}

/// A connected S7 client.
#[derive(Debug)]
pub struct S7Client<S> {
    stream: S,
    timeout: Duration,
    negotiated: Negotiated,
    pdu_ref: u16,
    wbuf: Vec<u8>,
    frame: Vec<u8>,
    /// The reassembled S7 PDU of the last reply.
    pdu: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> S7Client<S> {
    /// COTP connect and Setup Communication on an open stream.
    pub async fn connect(stream: S, p: ConnectParams) -> Result<S7Client<S>, ClientError> {
        let mut c = S7Client {
            stream,
            timeout: p.timeout,
            negotiated: Negotiated {
                max_amq_calling: 1,
                max_amq_called: 1,
                pdu_size: p.pdu_size,
            },
            pdu_ref: 0,
            wbuf: Vec::with_capacity(1024),
            frame: Vec::with_capacity(1024),
            pdu: Vec::with_capacity(1024),
        };
        codec::encode_connect_request(&mut c.wbuf, p.local_tsap, p.remote_tsap);
        let timeout = c.timeout;
        tokio::time::timeout(timeout, async {
            c.stream.write_all(&c.wbuf).await?;
            c.read_frame().await?;
            match codec::parse_cotp(&c.frame)? {
                Cotp::ConnectConfirm => Ok(()),
                Cotp::Disconnect { reason } => Err(CodecError::Refused { reason }.into()),
                Cotp::Error { cause } => Err(CodecError::CotpError(cause).into()),
                _ => Err(ClientError::Codec(CodecError::Malformed(
                    "expected a COTP connection confirm",
                ))),
            }
        })
        .await
        .map_err(|_| ClientError::Timeout("the COTP connection request", timeout))??;
        c.pdu_ref = c.pdu_ref.wrapping_add(1);
        c.wbuf.clear();
        codec::encode_setup(&mut c.wbuf, c.pdu_ref, 1, p.pdu_size);
        c.exchange("setup communication").await?;
        let pdu = codec::parse_s7(&c.pdu)?;
        c.check_ref(&pdu)?;
        let n = codec::decode_setup(&pdu)?;
        c.negotiated = Negotiated {
            pdu_size: n.pdu_size.min(p.pdu_size),
            ..n
        };
        Ok(c)
    }

    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    fn check_ref(&self, pdu: &codec::S7Pdu<'_>) -> Result<(), CodecError> {
        if pdu.pdu_ref != self.pdu_ref {
            return Err(CodecError::PduRef {
                expected: self.pdu_ref,
                got: pdu.pdu_ref,
            });
        }
        Ok(())
    }

    /// Reads one TPKT frame into `self.frame`.
    async fn read_frame(&mut self) -> Result<(), ClientError> {
        let mut hdr = [0u8; TPKT_HEADER];
        self.stream.read_exact(&mut hdr).await?;
        let len = codec::tpkt_frame_len(hdr)?;
        debug_assert!(len <= MAX_FRAME);
        self.frame.clear();
        self.frame.extend_from_slice(&hdr);
        self.frame.resize(len, 0);
        self.stream
            .read_exact(&mut self.frame[TPKT_HEADER..])
            .await?;
        Ok(())
    }

    /// Sends `wbuf` and reassembles the reply's S7 PDU into `self.pdu`.
    async fn exchange(&mut self, what: &'static str) -> Result<(), ClientError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, async {
            self.stream.write_all(&self.wbuf).await?;
            self.pdu.clear();
            loop {
                self.read_frame().await?;
                match codec::parse_cotp(&self.frame)? {
                    Cotp::Data { last, payload } => {
                        if self.pdu.len() + payload.len() > MAX_FRAME {
                            return Err(CodecError::Malformed("S7 PDU larger than 8 KiB").into());
                        }
                        self.pdu.extend_from_slice(payload);
                        if last {
                            return Ok(());
                        }
                    }
                    Cotp::Disconnect { reason } => {
                        return Err(CodecError::Refused { reason }.into());
                    }
                    Cotp::Error { cause } => return Err(CodecError::CotpError(cause).into()),
                    _ => {
                        return Err(CodecError::Malformed("expected a COTP data TPDU").into());
                    }
                }
            }
        })
        .await
        .map_err(|_| ClientError::Timeout(what, timeout))?
    }

    /// Reads `items` in one request. Per-item results go to `out` as ranges into
    /// the returned data.
    pub async fn read(
        &mut self,
        items: &[ItemSpec],
        out: &mut Vec<ReadItem>,
    ) -> Result<&[u8], ClientError> {
        self.pdu_ref = self.pdu_ref.wrapping_add(1);
        self.wbuf.clear();
        codec::encode_read(&mut self.wbuf, self.pdu_ref, items);
        self.exchange("a read request").await?;
        let pdu = codec::parse_s7(&self.pdu)?;
        self.check_ref(&pdu)?;
        codec::decode_read(&pdu, items.len(), out)?;
        Ok(pdu.data)
    }

    /// Writes items in one request; one result per item.
    pub async fn write(
        &mut self,
        items: &[(ItemSpec, &[u8])],
        out: &mut Vec<Result<(), ItemError>>,
    ) -> Result<(), ClientError> {
        self.pdu_ref = self.pdu_ref.wrapping_add(1);
        self.wbuf.clear();
        codec::encode_write(&mut self.wbuf, self.pdu_ref, items);
        self.exchange("a write request").await?;
        let pdu = codec::parse_s7(&self.pdu)?;
        self.check_ref(&pdu)?;
        codec::decode_write(&pdu, items.len(), out)?;
        Ok(())
    }

    /// Sends a COTP disconnect request and closes the stream (best effort).
    pub async fn close(mut self) {
        let dr = [
            0x03, 0x00, 0x00, 0x0B, 0x06, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00,
        ];
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            let _ = self.stream.write_all(&dr).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}
