//! The store-and-forward journal: where an alert is *accepted*, and from where the
//! uplink takes it and *releases* it only after the broker acknowledged it.
//!
//! # Layout
//!
//! ```text
//! <dir>/alert/<first seq:020>.seg    segments of the alert lane (highest priority)
//! <dir>/event/...                    events
//! <dir>/telemetry/...                telemetry (lowest priority, evicted first)
//! <dir>/<lane>/ACK                   ack cursor (a cell): every seq <= cursor is released
//! <dir>/COUNTERS                     evictions and corruption counts (a cell)
//! ```
//!
//! Segment format: see [`format`]. Each lane has its own sequence numbers, strictly
//! increasing and never reused (a lane with no segments continues after its cursor).
//!
//! # Invariants
//!
//! * A record is *accepted* once [`Journal::append`] returned `Ok` **and** the data
//!   was synced: with `fsync = always` the owner calls [`Journal::sync`] before telling
//!   anyone (group commit: many appends, one `fdatasync`); with `fsync = <interval>`
//!   [`Journal::maybe_sync`] runs at least every interval. Loss windows: `always` —
//!   nothing; interval — at most the last interval of records on power loss, nothing
//!   if only the process crashes (written data is in the page cache).
//! * [`Journal::ack`] may come out of order; the durable cursor only moves over a
//!   contiguous run of acked sequence numbers. A segment is deleted only when all its
//!   records are at or below the cursor *and the cursor file is durably written first*:
//!   a crash in between re-delivers (at least once), never loses.
//! * The journal is bounded in bytes (`max_disk`). When an append would exceed it, whole
//!   segments are evicted, oldest first, lowest-priority lane first
//!   (telemetry → event → alert). Evicted unacked records are counted per lane; the
//!   cursor moves past them; the counters are persisted. The budget bounds what is
//!   not yet released, so a drain that keeps ahead of new input evicts nothing. A
//!   filesystem that fills up
//!   before the budget does (a small data partition) is treated the same way: an
//!   append that fails with "no space left" evicts by that order and tries again.
//! * Cursors and counters are [`cell`]s, updated in place in space allocated when
//!   they were created, so acknowledging, evicting and counting never need free
//!   space: on a full disk, delivery goes on and frees space as it goes. A cursor
//!   update is written at once (a killed process loses none) and made durable
//!   before a segment it releases is deleted and at every [`Journal::sync`].
//!
//! # Recovery (at open)
//!
//! Every segment is scanned. A torn tail (a frame cut short, an impossible length) is
//! truncated away and counted; a frame with a bad CRC is skipped and counted; a file
//! that is not a segment of ours (foreign, future version, wrong lane) is renamed to
//! `*.quarantine` and reported; a segment file that went missing (a gap in the
//! sequence above the cursor) is reported and counted with the corrupt records.
//! Nothing in the directory can make `open` fail except
//! the directory itself being unusable, so the agent never crash-loops on its files.

pub mod cell;
pub mod format;
pub mod fs;
pub mod sink;

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use self::cell::{Cell, Found};
use self::format::{HEADER_LEN, HeaderError};
use self::fs::{AppendFile, Fs};

/// Priority lanes, highest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Lane {
    Alert = 0,
    Event = 1,
    Telemetry = 2,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::Alert, Lane::Event, Lane::Telemetry];

    pub fn name(self) -> &'static str {
        match self {
            Lane::Alert => "alert",
            Lane::Event => "event",
            Lane::Telemetry => "telemetry",
        }
    }
}

/// When appended data is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// The owner syncs before acknowledging appends (group commit).
    Always,
    /// At most this long between syncs.
    Interval(Duration),
}

/// Journal settings.
#[derive(Clone, Debug, PartialEq)]
pub struct JournalConfig {
    pub dir: PathBuf,
    /// A segment is closed once it reaches this size.
    pub segment_bytes: u64,
    /// Total bytes of all segments.
    pub max_disk: u64,
    pub fsync: FsyncPolicy,
}

/// A record read back for delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub lane: Lane,
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("record of {size} bytes is larger than the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("record of {size} bytes cannot fit the journal's {max_disk}-byte budget")]
    NoRoom { size: u64, max_disk: u64 },
}

impl JournalError {
    fn io(path: &Path, source: io::Error) -> Self {
        JournalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the disk is full (ENOSPC / EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, JournalError::Io { source, .. } if matches!(source.raw_os_error(), Some(28) | Some(122)))
    }
}

/// Persistent counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Unacknowledged records evicted to stay within `max_disk`, per lane.
    pub evicted: [u64; 3],
    /// Frames skipped for a bad CRC or sequence.
    pub corrupt: u64,
    /// Torn tails truncated at recovery.
    pub torn: u64,
    /// Files moved aside as not ours.
    pub quarantined: u64,
}

/// A point-in-time view for metrics and status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    pub bytes: u64,
    pub segments: usize,
    /// Records appended and not yet released, per lane.
    pub pending: [u64; 3],
    pub counters: Counters,
}

/// What `open` found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    /// Unreleased records whose segment is gone (sequence gaps above the cursor).
    pub missing: u64,
    pub corrupt: u64,
    pub torn: u64,
    pub quarantined: Vec<PathBuf>,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    /// Highest seq written (None if empty).
    last_seq: Option<u64>,
    records: u64,
    path: PathBuf,
    bytes: u64,
}

/// Evictions remembered per lane, and acknowledgements of evicted records
/// remembered per eviction (more than a window can have in flight).
const EVICTIONS_KEPT: usize = 4;
const LATE_ACKS_KEPT: usize = 4096;

/// Records `from..=to` were evicted unacknowledged; `late` were acknowledged since
/// (they had been delivered after all).
#[derive(Debug)]
struct Evicted {
    from: u64,
    to: u64,
    late: BTreeSet<u64>,
}

/// The unreleased priority records of `seg` (a segment of `st` being evicted), to
/// be appended again.
fn rescue(fs: &dyn Fs, st: &LaneState, seg: &Segment, lane: Lane) -> Vec<(Lane, Vec<u8>)> {
    let Some(last) = seg.last_seq else {
        return Vec::new();
    };
    let wanted: BTreeSet<u64> = st
        .priority
        .range(seg.first_seq.max(st.acked + 1)..=last)
        .filter(|s| !st.pending_acks.contains(s))
        .copied()
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let Ok(buf) = fs.read(&seg.path) else {
        return Vec::new();
    };
    format::scan(&buf, seg.first_seq)
        .records
        .into_iter()
        .filter(|r| wanted.contains(&r.seq))
        .map(|r| (lane, buf[r.payload].to_vec()))
        .collect()
}

/// A segment's first seq and its (seq, payload) records.
type DecodedSegment = (u64, Vec<(u64, Vec<u8>)>);

struct LaneState {
    lane: Lane,
    dir: PathBuf,
    segments: VecDeque<Segment>,
    next_seq: u64,
    /// Durable cursor: every seq <= acked is released.
    acked: u64,
    /// Acks above the cursor, waiting for the gap below them to close.
    pending_acks: BTreeSet<u64>,
    /// Unreleased records to send before the rest of the backlog (system alerts
    /// about the agent itself). In memory: after a restart they go in order.
    priority: BTreeSet<u64>,
    /// The latest evictions of unacknowledged records: an acknowledgement that
    /// arrives for one of them later (it was in flight) takes it off the count.
    evicted: VecDeque<Evicted>,
    /// Where `acked` is kept on disk.
    cursor: Cell,
    /// The cursor could not be written (logged once until it can again).
    cursor_failing: bool,
    writer: Option<Box<dyn AppendFile>>,
    /// Appended since the last sync.
    dirty: bool,
    /// Last segment read, decoded.
    cache: Option<DecodedSegment>,
}

impl std::fmt::Debug for LaneState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneState")
            .field("lane", &self.lane)
            .field("segments", &self.segments.len())
            .field("next_seq", &self.next_seq)
            .field("acked", &self.acked)
            .finish_non_exhaustive()
    }
}

/// The journal. Single owner; wrap it in a mutex to share between the writer (alert
/// sinks) and the reader (uplink).
#[derive(Debug)]
pub struct Journal {
    fs: Arc<dyn Fs>,
    cfg: JournalConfig,
    lanes: Vec<LaneState>,
    counters: Counters,
    counters_dirty: bool,
    counters_cell: Cell,
    /// Priority records of evicted segments, appended again after the append that
    /// evicted them: a system alert is never what eviction removes.
    rescued: Vec<(Lane, Vec<u8>)>,
    last_sync: Instant,
    /// Appends since the last sync.
    unsynced: u64,
}

impl std::fmt::Debug for dyn Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fs")
    }
}

/// The magic of a cursor cell's slots.
const CURSOR_MAGIC: [u8; 4] = *b"ECUR";
/// The magic of the counters cell's slots.
const COUNTERS_MAGIC: [u8; 4] = *b"ECNT";
/// The cursor file of journals before cells (16 bytes, replaced atomically).
const ACK_MAGIC: &[u8; 4] = b"EACK";

fn decode_cursor(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// A cursor file written by a journal before cells.
fn decode_ack(b: &[u8]) -> Option<u64> {
    if b.len() != 16 || &b[..4] != ACK_MAGIC {
        return None;
    }
    let c = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    if crc32c::crc32c(&b[..12]) != c {
        return None;
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&b[4..12]);
    Some(u64::from_le_bytes(s))
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

impl Journal {
    /// Opens (creating if needed) and recovers the journal in `cfg.dir`.
    pub fn open(
        cfg: JournalConfig,
        fs: Arc<dyn Fs>,
    ) -> Result<(Journal, RecoveryReport), JournalError> {
        fs.create_dir_all(&cfg.dir)
            .map_err(|e| JournalError::io(&cfg.dir, e))?;
        let mut report = RecoveryReport::default();
        let counters_path = cfg.dir.join("COUNTERS");
        let (counters_cell, found) = Cell::open(&*fs, &counters_path, COUNTERS_MAGIC);
        let (read, upgraded) = match found {
            Found::Nothing => (Some(Counters::default()), false),
            Found::Value(b) => (postcard::from_bytes(&b).ok(), false),
            Found::Unreadable(b) => (decode_counters(&b), true),
        };
        let mut counters = read.unwrap_or_else(|| {
            tracing::warn!(path = %counters_path.display(), "journal counters unreadable; starting from zero");
            Counters::default()
        });
        let mut lanes = Vec::with_capacity(3);
        for lane in Lane::ALL {
            let dir = cfg.dir.join(lane.name());
            fs.create_dir_all(&dir)
                .map_err(|e| JournalError::io(&dir, e))?;
            let state = recover_lane(&*fs, lane, dir, &mut report)?;
            lanes.push(state);
        }
        counters.corrupt += report.corrupt + report.missing;
        counters.torn += report.torn;
        counters.quarantined += report.quarantined.len() as u64;
        let mut j = Journal {
            fs,
            cfg,
            lanes,
            counters,
            counters_dirty: upgraded
                || report.corrupt + report.torn + report.missing > 0
                || !report.quarantined.is_empty(),
            counters_cell,
            rescued: Vec::new(),
            last_sync: Instant::now(),
            unsynced: 0,
        };
        j.persist_counters();
        Ok((j, report))
    }

    pub fn config(&self) -> &JournalConfig {
        &self.cfg
    }

    fn total_bytes(&self) -> u64 {
        self.lanes
            .iter()
            .flat_map(|l| l.segments.iter())
            .map(|s| s.bytes)
            .sum()
    }

    /// Appends a record; returns its sequence number. Durable only after a sync (see
    /// the module docs). On error nothing was appended; the caller keeps the record.
    pub fn append(&mut self, lane: Lane, payload: &[u8]) -> Result<u64, JournalError> {
        self.append_flagged(lane, payload, false)
    }

    /// [`Journal::append`] with the frame's priority flag.
    fn append_flagged(
        &mut self,
        lane: Lane,
        payload: &[u8],
        priority: bool,
    ) -> Result<u64, JournalError> {
        if payload.len() > format::MAX_RECORD {
            return Err(JournalError::TooLarge {
                size: payload.len(),
                limit: format::MAX_RECORD,
            });
        }
        let need = format::frame_len(payload.len());
        if need + HEADER_LEN as u64 > self.cfg.max_disk {
            return Err(JournalError::NoRoom {
                size: need,
                max_disk: self.cfg.max_disk,
            });
        }
        loop {
            match self.try_append(lane, payload, need, priority) {
                // The filesystem filled up before the budget did: free space the
                // documented way (telemetry, events, then the oldest alerts) and retry.
                Err(e) if e.is_disk_full() => match self.victim(lane) {
                    Some(victim) if self.oldest_holds_records(victim) => {
                        self.evict_oldest(victim)?
                    }
                    _ => return Err(e),
                },
                Ok(seq) => {
                    self.append_rescued();
                    return Ok(seq);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends again the priority records that the last evictions removed (a few
    /// rounds at most: a budget too small for them counts them as evicted).
    fn append_rescued(&mut self) {
        for _ in 0..4 {
            if self.rescued.is_empty() {
                return;
            }
            for (lane, payload) in std::mem::take(&mut self.rescued) {
                if let Err(e) = self
                    .try_append(lane, &payload, format::frame_len(payload.len()), true)
                    .map(|seq| self.lanes[lane as usize].priority.insert(seq))
                {
                    tracing::warn!(lane = lane.name(), error = %e, "a priority record could not be kept");
                    self.counters.evicted[lane as usize] += 1;
                    self.counters_dirty = true;
                }
            }
        }
        for (lane, _) in std::mem::take(&mut self.rescued) {
            self.counters.evicted[lane as usize] += 1;
            self.counters_dirty = true;
        }
    }

    /// Appends a record that the uplink sends before the rest of the backlog after
    /// an outage (a `system` alert: the disk is full, records were evicted). The
    /// frame carries the priority flag, so a restart keeps the order.
    pub fn append_priority(&mut self, lane: Lane, payload: &[u8]) -> Result<u64, JournalError> {
        let seq = self.append_flagged(lane, payload, true)?;
        self.lanes[lane as usize].priority.insert(seq);
        Ok(seq)
    }

    /// Unreleased priority records of `lane` below `before`, oldest first.
    pub fn priority_pending(&self, lane: Lane, before: u64) -> Vec<u64> {
        let st = &self.lanes[lane as usize];
        st.priority
            .range(st.acked + 1..before)
            .filter(|s| !st.pending_acks.contains(s))
            .copied()
            .collect()
    }

    /// One attempt of [`Journal::append`] (a record of `need` bytes framed).
    fn try_append(
        &mut self,
        lane: Lane,
        payload: &[u8],
        need: u64,
        priority: bool,
    ) -> Result<u64, JournalError> {
        let seg_overhead = HEADER_LEN as u64;
        // Roll the segment if this record would overflow it.
        let li = lane as usize;
        let roll = match self.lanes[li].segments.back() {
            Some(s) => s.bytes + need > self.cfg.segment_bytes && s.records > 0,
            None => true,
        };
        let extra = need + if roll { seg_overhead } else { 0 };
        self.make_room(extra, lane)?;
        if roll || self.lanes[li].writer.is_none() {
            self.open_segment(lane, roll)?;
        }
        let seq = self.lanes[li].next_seq;
        let mut frame = Vec::with_capacity(need as usize);
        format::encode_frame(seq, payload, priority, &mut frame);
        let st = &mut self.lanes[li];
        let seg = st
            .segments
            .back_mut()
            .expect("open_segment leaves an open segment");
        let writer = st.writer.as_mut().expect("open_segment leaves a writer");
        if let Err(e) = writer.append(&frame) {
            // Part of the frame may be on disk: cut it off, or abandon this segment.
            let path = seg.path.clone();
            let good = seg.bytes;
            st.writer = None;
            if self.fs.truncate(&path, good).is_err() {
                tracing::warn!(path = %path.display(), "could not truncate a failed append; a new segment will be used");
            }
            return Err(JournalError::io(&path, e));
        }
        seg.bytes += need;
        seg.records += 1;
        seg.last_seq = Some(seq);
        st.next_seq += 1;
        st.dirty = true;
        self.unsynced += 1;
        if st.cache.as_ref().is_some_and(|(f, _)| *f == seg.first_seq) {
            st.cache = None;
        }
        Ok(seq)
    }

    fn open_segment(&mut self, lane: Lane, new: bool) -> Result<(), JournalError> {
        let li = lane as usize;
        // Sync the segment being closed so it is complete on disk.
        let st = &mut self.lanes[li];
        if st.dirty
            && let Some(w) = st.writer.as_mut()
        {
            let path = st
                .segments
                .back()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            w.sync().map_err(|e| JournalError::io(&path, e))?;
            st.dirty = false;
        }
        if new || st.segments.is_empty() {
            let first = st.next_seq;
            let path = st.dir.join(segment_name(first));
            let mut w = self
                .fs
                .open_append(&path)
                .map_err(|e| JournalError::io(&path, e))?;
            let header = format::header(lane as u8);
            if let Err(e) = w.append(&header) {
                let _ = self.fs.remove(&path);
                return Err(JournalError::io(&path, e));
            }
            self.fs
                .sync_dir(&st.dir)
                .map_err(|e| JournalError::io(&st.dir, e))?;
            st.segments.push_back(Segment {
                first_seq: first,
                last_seq: None,
                records: 0,
                path,
                bytes: HEADER_LEN as u64,
            });
            st.writer = Some(w);
        } else {
            let path = st
                .segments
                .back()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            st.writer = Some(
                self.fs
                    .open_append(&path)
                    .map_err(|e| JournalError::io(&path, e))?,
            );
        }
        Ok(())
    }

    /// Bytes of records not yet acknowledged: what `max_disk` bounds. A lane counts
    /// its segments' bytes in proportion to its records still waiting for an
    /// acknowledgement, so records already delivered (below the cursor in a segment
    /// being drained, or live records acknowledged above a backlog that is still
    /// replaying) never cause an eviction, and a drain that keeps ahead of new input
    /// evicts nothing. The files may exceed the budget by what is delivered but not
    /// yet deletable (a segment is deleted once all of it is released).
    fn unreleased_bytes(&self) -> u64 {
        self.lanes
            .iter()
            .map(|st| {
                let (bytes, stored) = st
                    .segments
                    .iter()
                    .fold((0u64, 0u64), |(b, r), s| (b + s.bytes, r + s.records));
                let waiting = (st.next_seq - 1)
                    .saturating_sub(st.acked)
                    .saturating_sub(st.pending_acks.len() as u64)
                    .min(stored);
                match stored {
                    0 => bytes,
                    _ => bytes * waiting / stored,
                }
            })
            .sum()
    }

    /// Evicts whole segments, lowest priority and oldest first, until `extra` bytes fit.
    fn make_room(&mut self, extra: u64, appending: Lane) -> Result<(), JournalError> {
        while self.unreleased_bytes() + extra > self.cfg.max_disk {
            let Some(lane) = self.victim(appending) else {
                return Err(JournalError::NoRoom {
                    size: extra,
                    max_disk: self.cfg.max_disk,
                });
            };
            self.evict_oldest(lane)?;
        }
        Ok(())
    }

    /// Whether the oldest segment of `lane` holds records (evicting an empty one
    /// frees nothing a record could use).
    fn oldest_holds_records(&self, lane: Lane) -> bool {
        self.lanes[lane as usize]
            .segments
            .front()
            .is_some_and(|s| s.records > 0)
    }

    /// The lane whose oldest segment goes next to make room for an append to
    /// `appending`: the lowest-priority lane with a segment to spare, else the
    /// target's own open segment (evicted and rolled); `None` if nothing is stored.
    fn victim(&self, appending: Lane) -> Option<Lane> {
        Lane::ALL
            .iter()
            .rev()
            .copied()
            .find(|&l| {
                let st = &self.lanes[l as usize];
                // The segment being appended to may go only if it is not the target.
                st.segments.len() > 1 || (l != appending && !st.segments.is_empty())
            })
            .or_else(|| (!self.lanes[appending as usize].segments.is_empty()).then_some(appending))
    }

    fn evict_oldest(&mut self, lane: Lane) -> Result<(), JournalError> {
        let li = lane as usize;
        let st = &mut self.lanes[li];
        let Some(seg) = st.segments.pop_front() else {
            return Ok(());
        };
        if st.segments.is_empty() {
            st.writer = None;
        }
        let rescued = rescue(&*self.fs, st, &seg, lane);
        let kept = rescued.len() as u64;
        self.rescued.extend(rescued);
        let st = &mut self.lanes[li];
        let lost = match seg.last_seq {
            Some(last) if last > st.acked => {
                let from = seg.first_seq.max(st.acked + 1);
                // Records below the cursor are already released; count the rest.
                let acked_inside = st.pending_acks.range(from..=last).count() as u64;
                if st.evicted.len() == EVICTIONS_KEPT {
                    st.evicted.pop_front();
                }
                st.evicted.push_back(Evicted {
                    from,
                    to: last,
                    late: BTreeSet::new(),
                });
                (last - from + 1).saturating_sub(acked_inside + kept)
            }
            _ => 0,
        };
        if let Some(last) = seg.last_seq {
            if last > st.acked {
                st.acked = last;
                st.pending_acks = st.pending_acks.split_off(&(last + 1));
                st.priority = st.priority.split_off(&(last + 1));
            }
        } else if seg.first_seq > 0 && seg.first_seq - 1 > st.acked {
            st.acked = seg.first_seq - 1;
        }
        st.cache = None;
        let dir = st.dir.clone();
        self.counters.evicted[li] += lost;
        self.counters_dirty = true;
        if lost > 0 {
            tracing::warn!(lane = lane.name(), records = lost, segment = %seg.path.display(),
                "journal full: evicted unacknowledged records");
        }
        // Cursor first, then the file: a crash in between leaves a segment whose
        // records are all below the cursor, which recovery deletes.
        let acked = st.acked;
        let cursor = &mut st.cursor;
        cursor
            .write(&*self.fs, &acked.to_le_bytes())
            .and_then(|()| cursor.sync())
            .map_err(|e| JournalError::io(cursor.path(), e))?;
        self.fs
            .remove(&seg.path)
            .map_err(|e| JournalError::io(&seg.path, e))?;
        let _ = self.fs.sync_dir(&dir);
        self.persist_counters();
        Ok(())
    }

    /// Makes every append, acknowledgement and count so far durable (one
    /// `fdatasync` per file with new data).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.persist_counters();
        self.counters_cell
            .sync()
            .map_err(|e| JournalError::io(self.counters_cell.path(), e))?;
        for st in &mut self.lanes {
            st.cursor
                .sync()
                .map_err(|e| JournalError::io(st.cursor.path(), e))?;
            if !st.dirty {
                continue;
            }
            if let Some(w) = st.writer.as_mut() {
                let path = st
                    .segments
                    .back()
                    .map(|s| s.path.clone())
                    .unwrap_or_default();
                w.sync().map_err(|e| JournalError::io(&path, e))?;
            }
            st.dirty = false;
        }
        self.last_sync = Instant::now();
        self.unsynced = 0;
        Ok(())
    }

    /// Syncs if the policy says it is time. Called after appends under sustained
    /// load; owners also call [`Journal::sync`] whenever they go idle.
    /// * `always`: when 64 appends or 20 ms have accumulated (group commit bound);
    /// * interval `d`: when `d` has passed since the last sync.
    pub fn maybe_sync(&mut self) -> Result<(), JournalError> {
        if !self.lanes.iter().any(|l| l.dirty) {
            return Ok(());
        }
        let due = match self.cfg.fsync {
            FsyncPolicy::Always => {
                self.unsynced >= 64 || self.last_sync.elapsed() >= Duration::from_millis(20)
            }
            FsyncPolicy::Interval(d) => self.last_sync.elapsed() >= d,
        };
        if due { self.sync() } else { Ok(()) }
    }

    /// Unreleased records of `lane` with `seq >= from`, in order, at most `max`.
    pub fn read(&mut self, lane: Lane, from: u64, max: usize) -> Result<Vec<Record>, JournalError> {
        let fs = &self.fs;
        let st = &mut self.lanes[lane as usize];
        let from = from.max(st.acked + 1);
        let mut out = Vec::new();
        for seg in &st.segments {
            if out.len() >= max {
                break;
            }
            if seg.last_seq.is_none_or(|l| l < from) {
                continue;
            }
            if st.cache.as_ref().is_none_or(|(f, _)| *f != seg.first_seq) {
                let buf = fs
                    .read(&seg.path)
                    .map_err(|e| JournalError::io(&seg.path, e))?;
                let recs = format::scan(&buf, seg.first_seq)
                    .records
                    .into_iter()
                    .map(|r| (r.seq, buf[r.payload].to_vec()))
                    .collect();
                st.cache = Some((seg.first_seq, recs));
            }
            let Some((_, recs)) = st.cache.as_ref() else {
                continue;
            };
            for (seq, payload) in recs {
                if out.len() >= max {
                    break;
                }
                if *seq >= from && !st.pending_acks.contains(seq) {
                    out.push(Record {
                        lane,
                        seq: *seq,
                        payload: payload.clone(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Releases record `seq` of `lane` (the broker acknowledged it). Idempotent.
    ///
    /// Never fails: the cursor moves in memory at once and is written in place (a
    /// [`cell`], which needs no free space). Should even that fail, the error is
    /// logged once, the released segments stay on disk until a later write of the
    /// cursor succeeds, and the worst outcome of a crash meanwhile is records
    /// delivered twice.
    pub fn ack(&mut self, lane: Lane, seq: u64) {
        let li = lane as usize;
        let st = &mut self.lanes[li];
        if seq <= st.acked {
            // An evicted record that was in flight reached the broker after all.
            let late = st
                .evicted
                .iter_mut()
                .find(|e| (e.from..=e.to).contains(&seq))
                .is_some_and(|e| e.late.len() < LATE_ACKS_KEPT && e.late.insert(seq));
            if late {
                self.counters.evicted[li] = self.counters.evicted[li].saturating_sub(1);
                self.counters_dirty = true;
            }
            return;
        }
        if seq >= st.next_seq {
            return;
        }
        st.pending_acks.insert(seq);
        st.priority.remove(&seq);
        let before = st.acked;
        while st.pending_acks.remove(&(st.acked + 1)) {
            st.acked += 1;
        }
        if st.acked != before {
            self.release(lane);
        }
    }

    /// Writes the cursor of `lane` and deletes the segments it fully released (never
    /// the one being written) once the cursor is durable.
    fn release(&mut self, lane: Lane) {
        let fs = &*self.fs;
        let st = &mut self.lanes[lane as usize];
        let releasable = |st: &LaneState| {
            st.segments.len() > 1
                && st
                    .segments
                    .front()
                    .is_some_and(|s| s.last_seq.is_none_or(|l| l <= st.acked))
        };
        let written = st.cursor.write(fs, &st.acked.to_le_bytes()).and_then(|()| {
            if releasable(st) {
                st.cursor.sync()
            } else {
                Ok(())
            }
        });
        match written {
            Err(e) => {
                if !std::mem::replace(&mut st.cursor_failing, true) {
                    tracing::error!(lane = lane.name(), path = %st.cursor.path().display(), error = %e,
                        "cannot write the journal's ack cursor; released records stay on disk until it can (a restart may deliver them again)");
                }
                return;
            }
            Ok(()) if std::mem::take(&mut st.cursor_failing) => {
                tracing::info!(
                    lane = lane.name(),
                    "the journal's ack cursor is written again"
                );
            }
            Ok(()) => {}
        }
        while releasable(st) {
            let Some(seg) = st.segments.pop_front() else {
                break;
            };
            if st.cache.as_ref().is_some_and(|(f, _)| *f == seg.first_seq) {
                st.cache = None;
            }
            // A file that cannot be removed now is all below the cursor: the next
            // start deletes it.
            if let Err(e) = fs.remove(&seg.path) {
                tracing::warn!(path = %seg.path.display(), error = %e, "cannot delete a released journal segment");
            }
        }
    }

    /// The seq the next append to `lane` will get.
    pub fn next_seq(&self, lane: Lane) -> u64 {
        self.lanes[lane as usize].next_seq
    }

    /// Highest released seq of a lane.
    pub fn acked(&self, lane: Lane) -> u64 {
        self.lanes[lane as usize].acked
    }

    /// The persistent counters (cheap: no walk over the segments).
    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn stats(&self) -> JournalStats {
        let mut pending = [0u64; 3];
        for st in &self.lanes {
            let total: u64 = st
                .segments
                .iter()
                .filter_map(|s| s.last_seq.map(|l| (s.first_seq, l)))
                .map(|(f, l)| {
                    let from = f.max(st.acked + 1);
                    if l >= from { l - from + 1 } else { 0 }
                })
                .sum();
            pending[st.lane as usize] = total.saturating_sub(st.pending_acks.len() as u64);
        }
        JournalStats {
            bytes: self.total_bytes(),
            segments: self.lanes.iter().map(|l| l.segments.len()).sum(),
            pending,
            counters: self.counters,
        }
    }

    fn persist_counters(&mut self) {
        if !self.counters_dirty {
            return;
        }
        let body = postcard::to_stdvec(&self.counters).unwrap_or_default();
        match self.counters_cell.write(&*self.fs, &body) {
            Ok(()) => self.counters_dirty = false,
            Err(e) => {
                tracing::warn!(path = %self.counters_cell.path().display(), error = %e, "cannot persist journal counters; will retry")
            }
        }
    }
}

/// A counters file written by a journal before cells (postcard, then crc32c).
fn decode_counters(b: &[u8]) -> Option<Counters> {
    if b.len() < 4 {
        return None;
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return None;
    }
    postcard::from_bytes(body).ok()
}

/// The ack cursor of a lane and its value (0 for a new lane; 0, logged, for a
/// corrupt one: the lane is replayed, duplicates possible, nothing lost). An older
/// journal's cursor file is converted to a cell.
fn open_cursor(fs: &dyn Fs, lane: Lane, dir: &Path) -> (Cell, u64) {
    let (mut cursor, found) = Cell::open(fs, &dir.join("ACK"), CURSOR_MAGIC);
    let acked = match found {
        Found::Nothing => Some(0),
        Found::Value(b) => decode_cursor(&b),
        Found::Unreadable(b) => decode_ack(&b).inspect(|&seq| {
            // An older journal's cursor: keep it, as a cell from now on.
            if let Err(e) = cursor.write(fs, &seq.to_le_bytes()).and_then(|()| cursor.sync()) {
                tracing::warn!(lane = lane.name(), error = %e, "cannot convert the ack cursor yet; retrying on the next acknowledgement");
            }
        }),
    };
    let acked = acked.unwrap_or_else(|| {
        tracing::error!(
            lane = lane.name(),
            "journal ack cursor is corrupt; replaying the whole lane (duplicates possible, no loss)"
        );
        0
    });
    (cursor, acked)
}

fn recover_lane(
    fs: &dyn Fs,
    lane: Lane,
    dir: PathBuf,
    report: &mut RecoveryReport,
) -> Result<LaneState, JournalError> {
    let (mut cursor, acked) = open_cursor(fs, lane, &dir);
    let mut paths: Vec<(u64, PathBuf)> = Vec::new();
    for p in fs.list(&dir).map_err(|e| JournalError::io(&dir, e))? {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if name == "ACK" || name.ends_with(".tmp") || name.ends_with(".quarantine") {
            if name.ends_with(".tmp") {
                let _ = fs.remove(&p);
            }
            continue;
        }
        match name
            .strip_suffix(".seg")
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(first) => paths.push((first, p)),
            None => quarantine(fs, &p, "not a journal segment name", report),
        }
    }
    paths.sort();
    let mut segments = VecDeque::new();
    let mut priority = BTreeSet::new();
    let n = paths.len();
    for (i, (first, path)) in paths.into_iter().enumerate() {
        let buf = match fs.read(&path) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read journal segment; skipping it");
                continue;
            }
        };
        if let Err(h) = format::check_header(&buf, lane as u8) {
            let why = match h {
                HeaderError::Foreign => "not a journal segment".to_string(),
                HeaderError::Version(v) => format!("journal format version {v} is not supported"),
                HeaderError::WrongLane(l) => {
                    format!("segment of lane {l} in the {} lane", lane.name())
                }
            };
            // An empty or header-less last segment is a crash during creation.
            if buf.len() < HEADER_LEN && i + 1 == n {
                let _ = fs.remove(&path);
                continue;
            }
            quarantine(fs, &path, &why, report);
            continue;
        }
        let scan = format::scan(&buf, first);
        report.corrupt += scan.corrupt;
        if scan.corrupt > 0 {
            tracing::warn!(path = %path.display(), frames = scan.corrupt, "skipped corrupt journal records");
        }
        if scan.torn {
            report.torn += 1;
            tracing::warn!(path = %path.display(), keep = scan.valid_len, len = buf.len(), "truncating torn journal tail");
            fs.truncate(&path, scan.valid_len as u64)
                .map_err(|e| JournalError::io(&path, e))?;
        }
        let last_seq = scan.records.last().map(|r| r.seq);
        priority.extend(
            scan.records
                .iter()
                .filter(|r| r.priority && r.seq > acked)
                .map(|r| r.seq),
        );
        // A gap between segments above the cursor: a segment file went missing.
        let expected_first = segments
            .back()
            .and_then(|s: &Segment| s.last_seq.map(|l| l + 1))
            .unwrap_or(acked + 1);
        if let Some(first_found) = scan.records.first().map(|r| r.seq)
            && first_found > expected_first
            && first_found > acked + 1
        {
            let from = expected_first.max(acked + 1);
            let lost = first_found - from;
            report.missing += lost;
            tracing::error!(
                lane = lane.name(),
                from,
                to = first_found - 1,
                records = lost,
                "journal records are missing (a segment file was removed?)"
            );
        }
        report.records += scan.records.len() as u64;
        report.segments += 1;
        // Fully released segments left by a crash between cursor write and delete
        // (deleted once the cursor that releases them is durable).
        if last_seq.is_some_and(|l| l <= acked) && i + 1 < n && cursor.sync().is_ok() {
            let _ = fs.remove(&path);
            continue;
        }
        segments.push_back(Segment {
            first_seq: first,
            last_seq,
            records: scan.records.len() as u64,
            path,
            bytes: scan.valid_len as u64,
        });
    }
    // Data the previous process wrote but did not sync is in the page cache, not on
    // disk: make it durable now, so that what recovery shows is what survives a
    // power cut from here on. Earlier segments were synced when they were closed.
    let mut writer = None;
    if let Some(last) = segments.back() {
        let mut w = fs
            .open_append(&last.path)
            .map_err(|e| JournalError::io(&last.path, e))?;
        w.sync().map_err(|e| JournalError::io(&last.path, e))?;
        writer = Some(w);
    }
    let next_seq = segments
        .iter()
        .rev()
        .find_map(|s| s.last_seq.map(|l| l + 1).or(Some(s.first_seq)))
        .unwrap_or(acked + 1)
        .max(acked + 1);
    Ok(LaneState {
        lane,
        dir,
        segments,
        next_seq,
        acked,
        pending_acks: BTreeSet::new(),
        priority,
        evicted: VecDeque::new(),
        cursor,
        cursor_failing: false,
        writer,
        dirty: false,
        cache: None,
    })
}

fn quarantine(fs: &dyn Fs, p: &Path, why: &str, report: &mut RecoveryReport) {
    let to = p.with_extension(match p.extension().and_then(|e| e.to_str()) {
        Some(ext) => format!("{ext}.quarantine"),
        None => "quarantine".to_string(),
    });
    tracing::error!(path = %p.display(), reason = why, moved_to = %to.display(), "foreign file in the journal directory");
    if let Err(e) = fs.rename(p, &to) {
        tracing::error!(path = %p.display(), error = %e, "cannot move the foreign file aside; ignoring it");
    }
    report.quarantined.push(p.to_path_buf());
}

#[cfg(test)]
mod tests;
