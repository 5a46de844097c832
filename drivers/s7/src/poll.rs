//! One read cycle over a connected client: the plan's requests, block images,
//! item errors, decoding into samples. Allocation-free in steady state.

use std::time::Duration;

use edge_driver_api::health::CommStats;
use edge_driver_api::{BadReason, Clock, Quality, Sample, SignalId, TextChanges, Value};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::S7Config;
use crate::addr::{self, DataType, S7Value};
use crate::client::{ClientError, S7Client};
use crate::codec::{ItemSpec, ReadItem};
use crate::plan::{self, Plan};

/// Marks a block whose reply was shorter than requested (0x00 is no S7 return code).
const SHORT_REPLY: u8 = 0x00;

/// Reads a configuration's tags, cycle after cycle, on one connection.
#[derive(Debug)]
pub struct Poller {
    cfg: S7Config,
    ids: Vec<SignalId>,
    pdu_size: u16,
    isolated: Vec<bool>,
    plan: Plan,
    images: Vec<Vec<u8>>,
    block_err: Vec<Option<u8>>,
    items: Vec<ItemSpec>,
    results: Vec<ReadItem>,
    /// Per tag: its slot in `texts` (STRING tags only).
    text_slot: Vec<Option<usize>>,
    texts: TextChanges,
    /// Tags whose text changed in the last cycle.
    changed: Vec<usize>,
    scratch: String,
}

impl Poller {
    /// `ids[i]` is the signal of `cfg.tags[i]`; `pdu_size` the negotiated one.
    pub fn new(cfg: &S7Config, ids: Vec<SignalId>, pdu_size: u16) -> Poller {
        let mut p = Poller {
            cfg: cfg.clone(),
            ids,
            pdu_size,
            isolated: vec![false; cfg.tags.len()],
            plan: Plan::default(),
            images: Vec::new(),
            block_err: Vec::new(),
            items: Vec::with_capacity(cfg.max_items),
            results: Vec::with_capacity(cfg.max_items),
            text_slot: Vec::with_capacity(cfg.tags.len()),
            texts: TextChanges::default(),
            changed: Vec::new(),
            scratch: String::new(),
        };
        let mut n = 0;
        for t in &cfg.tags {
            if let DataType::String(_) = t.ty {
                p.text_slot.push(Some(n));
                n += 1;
            } else {
                p.text_slot.push(None);
            }
        }
        p.texts = TextChanges::new(n);
        p.replan();
        p
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Text tags whose value changed in the last cycle (the first reading counts).
    pub fn text_changes(&self) -> impl Iterator<Item = (SignalId, &str)> + '_ {
        self.changed.iter().filter_map(|&ti| {
            let slot = self.text_slot[ti]?;
            Some((self.ids[ti], self.texts.get(slot)?))
        })
    }

    fn replan(&mut self) {
        self.plan = plan::plan(
            &self.cfg.ranges(&self.isolated),
            self.cfg.limits(self.pdu_size),
        );
        self.images.resize_with(self.plan.blocks.len(), Vec::new);
        for (img, b) in self.images.iter_mut().zip(&self.plan.blocks) {
            img.resize(b.len as usize, 0);
        }
    }

    /// Reads every tag once and appends one sample per tag to `out`. Returns the
    /// round-trip time of the last request. A failed request fails the cycle (the
    /// connection is then in an unknown state); item errors do not.
    pub async fn cycle<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        client: &mut S7Client<S>,
        stats: Option<&CommStats>,
        clock: &Clock,
        out: &mut Vec<Sample>,
    ) -> Result<Option<Duration>, ClientError> {
        loop {
            let rtt = self.read_all(client, stats).await?;
            // A refused merged read: isolate its tags and re-read them separately.
            let mut replan = false;
            for (bi, b) in self.plan.blocks.iter().enumerate() {
                if self.block_err[bi].is_some() && b.tags.len() > 1 {
                    for &(ti, _) in &b.tags {
                        self.isolated[ti] = true;
                    }
                    replan = true;
                }
            }
            if replan {
                self.replan();
                tracing::info!(
                    requests = self.plan.requests.len(),
                    "s7 item error in a merged read; reading those tags one by one"
                );
                continue;
            }
            self.decode(clock.now(), out);
            return Ok(rtt);
        }
    }

    async fn read_all<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        client: &mut S7Client<S>,
        stats: Option<&CommStats>,
    ) -> Result<Option<Duration>, ClientError> {
        self.block_err.clear();
        self.block_err.resize(self.plan.blocks.len(), None);
        let mut last = None;
        for req in &self.plan.requests {
            self.items.clear();
            self.items.extend(req.chunks.iter().map(|c| {
                let b = &self.plan.blocks[c.block];
                ItemSpec::bytes(b.area, b.start + c.offset, c.len)
            }));
            let t0 = tokio::time::Instant::now();
            let data = match client.read(&self.items, &mut self.results).await {
                Ok(d) => d,
                Err(e) => {
                    if let Some(s) = stats {
                        if e.is_timeout() {
                            s.timeout();
                        } else {
                            s.error();
                        }
                    }
                    return Err(e);
                }
            };
            let rtt = t0.elapsed();
            last = Some(rtt);
            if let Some(s) = stats {
                s.success(rtt);
            }
            for (c, r) in req.chunks.iter().zip(&self.results) {
                match r {
                    Ok(range) => {
                        let at = c.offset as usize;
                        let dst = &mut self.images[c.block][at..at + usize::from(c.len)];
                        // A PLC may answer with fewer bytes than asked for.
                        match data.get(range.clone()) {
                            Some(src) if src.len() == dst.len() => dst.copy_from_slice(src),
                            _ => self.block_err[c.block] = Some(SHORT_REPLY),
                        }
                    }
                    Err(e) => {
                        if let Some(s) = stats {
                            s.exception();
                        }
                        self.block_err[c.block] = Some(e.0);
                    }
                }
            }
        }
        Ok(last)
    }

    fn decode(&mut self, ts: edge_driver_api::Timestamp, out: &mut Vec<Sample>) {
        self.changed.clear();
        for (bi, b) in self.plan.blocks.iter().enumerate() {
            for &(ti, off) in &b.tags {
                let tag = &self.cfg.tags[ti];
                let id = self.ids[ti];
                if let (DataType::String(declared), Some(slot)) = (tag.ty, self.text_slot[ti]) {
                    let bytes = &self.images[bi][off as usize..];
                    let ok = self.block_err[bi].is_none()
                        && addr::decode_string_into(declared, bytes, &mut self.scratch).is_ok();
                    if !ok {
                        // Report the next good value again, whatever it is.
                        self.texts.forget(slot);
                    } else if self.texts.update(slot, &self.scratch).is_some() {
                        self.changed.push(ti);
                    }
                    continue;
                }
                match self.block_err[bi] {
                    Some(SHORT_REPLY) => {
                        out.push(Sample::bad(ts, id, BadReason::Decode));
                        continue;
                    }
                    Some(code) => {
                        out.push(Sample::bad(ts, id, BadReason::DeviceException(code.into())));
                        continue;
                    }
                    None => {}
                }
                let bytes = &self.images[bi][off as usize..];
                match addr::decode_value(tag.ty, tag.address.bit, bytes) {
                    Ok(S7Value::Bool(v)) if tag.scale == 1.0 && tag.offset == 0.0 => {
                        out.push(Sample {
                            ts,
                            signal: id,
                            value: Value::Bool(v),
                            quality: Quality::Good,
                        })
                    }
                    Ok(v) => match v.as_f64() {
                        Some(x) if x.is_finite() => {
                            out.push(Sample::new_f64(ts, id, x * tag.scale + tag.offset))
                        }
                        Some(_) => out.push(Sample::bad(ts, id, BadReason::NotFinite)),
                        None => out.push(Sample::bad(ts, id, BadReason::Decode)),
                    },
                    Err(_) => out.push(Sample::bad(ts, id, BadReason::Decode)),
                }
            }
        }
    }
}
