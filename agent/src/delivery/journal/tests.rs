use super::fs::{MemFs, StdFs};
use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn cfg(dir: &str, segment_bytes: u64, max_disk: u64) -> JournalConfig {
    JournalConfig {
        dir: PathBuf::from(dir),
        segment_bytes,
        max_disk,
        fsync: FsyncPolicy::Always,
    }
}

fn open(fs: &MemFs, c: &JournalConfig) -> (Journal, RecoveryReport) {
    Journal::open(c.clone(), Arc::new(fs.clone())).expect("journal opens")
}

/// The ack cursor of `lane` as it is on disk.
fn cursor_on_disk(fs: &MemFs, lane: Lane) -> Option<u64> {
    let path = PathBuf::from(format!("/j/{}/ACK", lane.name()));
    match cell::Cell::open(fs, &path, CURSOR_MAGIC).1 {
        cell::Found::Value(b) => decode_cursor(&b),
        _ => None,
    }
}

fn seqs(recs: &[Record]) -> Vec<u64> {
    recs.iter().map(|r| r.seq).collect()
}

#[test]
fn records_survive_a_restart_until_acknowledged() {
    let fs = MemFs::new();
    let c = cfg("/j", 256, 1 << 20);
    let (mut j, _) = open(&fs, &c);
    for i in 0..20u8 {
        j.append(Lane::Alert, &[i; 40]).expect("append");
    }
    j.sync().expect("sync");
    j.ack(Lane::Alert, 1);
    j.ack(Lane::Alert, 2);
    drop(j);
    let (mut j, rep) = open(&fs, &c);
    assert_eq!((rep.corrupt, rep.torn), (0, 0));
    let recs = j.read(Lane::Alert, 0, 100).expect("read");
    assert_eq!(seqs(&recs), (3..=20).collect::<Vec<_>>());
    assert_eq!(recs[0].payload, vec![2u8; 40]);
    // New appends continue the sequence.
    assert_eq!(j.append(Lane::Alert, b"x").expect("append"), 21);
}

#[test]
fn fully_acknowledged_segments_are_deleted_after_the_cursor_is_durable() {
    let fs = MemFs::new();
    let c = cfg("/j", 100, 1 << 20);
    let (mut j, _) = open(&fs, &c);
    for _ in 0..10 {
        j.append(Lane::Alert, &[0; 30]).expect("append");
    }
    j.sync().expect("sync");
    let before = fs.list(Path::new("/j/alert")).expect("list").len();
    for s in 1..=6 {
        j.ack(Lane::Alert, s);
    }
    let after = fs.list(Path::new("/j/alert")).expect("list");
    assert!(after.len() < before, "{before} -> {}", after.len());
    assert_eq!(cursor_on_disk(&fs, Lane::Alert), Some(6));
    assert_eq!(
        seqs(&j.read(Lane::Alert, 0, 100).expect("read")),
        (7..=10).collect::<Vec<_>>()
    );
}

#[test]
fn out_of_order_acks_release_only_the_contiguous_prefix_durably() {
    let fs = MemFs::new();
    let c = cfg("/j", 1 << 16, 1 << 20);
    let (mut j, _) = open(&fs, &c);
    for _ in 0..5 {
        j.append(Lane::Event, b"e").expect("append");
    }
    j.sync().expect("sync");
    j.ack(Lane::Event, 3);
    j.ack(Lane::Event, 1);
    assert_eq!(j.acked(Lane::Event), 1);
    assert_eq!(
        seqs(&j.read(Lane::Event, 0, 10).expect("read")),
        vec![2, 4, 5]
    );
    drop(j);
    // Record 3's ack was above a gap: it is delivered again (at least once).
    let (mut j, _) = open(&fs, &c);
    assert_eq!(
        seqs(&j.read(Lane::Event, 0, 10).expect("read")),
        vec![2, 3, 4, 5]
    );
}

#[test]
fn full_journal_evicts_telemetry_before_alerts_and_counts_it_persistently() {
    let fs = MemFs::new();
    let c = cfg("/j", 200, 1200);
    let (mut j, _) = open(&fs, &c);
    for _ in 0..20 {
        j.append(Lane::Telemetry, &[1; 50])
            .expect("append telemetry");
    }
    for _ in 0..10 {
        j.append(Lane::Alert, &[2; 50]).expect("append alert");
    }
    j.sync().expect("sync");
    let st = j.stats();
    assert!(st.bytes <= 1200, "{st:?}");
    assert_eq!(
        st.pending[Lane::Alert as usize],
        10,
        "no alert evicted while telemetry remains"
    );
    assert!(
        st.counters.evicted[Lane::Telemetry as usize] >= 10,
        "{st:?}"
    );
    assert_eq!(st.counters.evicted[Lane::Alert as usize], 0);
    let evicted = st.counters.evicted;
    drop(j);
    let (j, _) = open(&fs, &c);
    assert_eq!(
        j.stats().counters.evicted,
        evicted,
        "counters persist across restarts"
    );
}

#[test]
fn alerts_alone_over_budget_evict_the_oldest_alerts() {
    let fs = MemFs::new();
    let c = cfg("/j", 200, 1000);
    let (mut j, _) = open(&fs, &c);
    for i in 0..40u64 {
        assert_eq!(j.append(Lane::Alert, &[3; 50]).expect("append"), i + 1);
    }
    j.sync().expect("sync");
    let st = j.stats();
    assert!(st.bytes <= 1000);
    let recs = j.read(Lane::Alert, 0, 100).expect("read");
    assert_eq!(
        recs.last().map(|r| r.seq),
        Some(40),
        "the newest alerts are kept"
    );
    assert_eq!(
        st.counters.evicted[0] + recs.len() as u64,
        40,
        "every record is kept or counted"
    );
}

#[test]
fn acknowledged_live_alerts_during_a_slow_replay_evict_nothing_at_a_full_budget() {
    let fs = MemFs::new();
    let c = cfg("/j", 1000, 5000);
    let (mut j, _) = open(&fs, &c);
    // The outage filled the budget (the oldest were evicted, counted).
    let mut next = 1u64;
    while j.stats().counters.evicted[0] == 0 {
        next = j.append(Lane::Alert, &[1; 50]).expect("append") + 1;
    }
    let evicted = j.stats().counters.evicted[0];
    // The broker is back: every new alert goes out at once (live first) and is
    // acknowledged above the cursor, while the backlog replays at half that rate.
    let mut backlog = j.acked(Lane::Alert) + 1;
    let live_from = next;
    for step in 0..400 {
        let seq = j.append(Lane::Alert, &[2; 50]).expect("append");
        j.ack(Lane::Alert, seq);
        if step % 2 == 0 && backlog < live_from {
            j.ack(Lane::Alert, backlog);
            backlog += 1;
        }
    }
    assert_eq!(
        j.stats().counters.evicted[0],
        evicted,
        "nothing evicted: what waits for an acknowledgement only shrank"
    );
    let st = j.stats();
    assert!(
        st.bytes <= 5000 + 400 * 66 + 1000,
        "delivered records are deleted with their segments: {} bytes",
        st.bytes
    );
}

#[test]
fn priority_records_are_listed_until_released() {
    let fs = MemFs::new();
    let (mut j, _) = open(&fs, &cfg("/j", 1 << 16, 1 << 20));
    for _ in 0..3 {
        j.append(Lane::Alert, b"a").expect("append");
    }
    let p = j
        .append_priority(Lane::Alert, b"disk full")
        .expect("append");
    j.append(Lane::Alert, b"b").expect("append");
    assert_eq!(j.priority_pending(Lane::Alert, 100), vec![p]);
    assert!(
        j.priority_pending(Lane::Alert, p).is_empty(),
        "bounded by `before`"
    );
    j.ack(Lane::Alert, p);
    assert!(j.priority_pending(Lane::Alert, 100).is_empty());
    assert_eq!(j.priority_pending(Lane::Event, 100), Vec::<u64>::new());
}

#[test]
fn priority_records_are_still_sent_first_after_a_restart() {
    let fs = MemFs::new();
    let c = cfg("/j", 400, 1 << 20);
    let (mut j, _) = open(&fs, &c);
    for _ in 0..20 {
        j.append(Lane::Alert, &[1; 50]).expect("append");
    }
    let early = j.append_priority(Lane::Alert, b"evicted").expect("append");
    let late = j
        .append_priority(Lane::Alert, b"disk full")
        .expect("append");
    j.append(Lane::Alert, b"after").expect("append");
    for seq in 1..=early {
        j.ack(Lane::Alert, seq);
    }
    j.sync().expect("sync");
    drop(j);
    let (j, _) = open(&fs, &c);
    assert_eq!(
        j.priority_pending(Lane::Alert, u64::MAX),
        vec![late],
        "the unreleased priority record, found again by its flag"
    );
}

#[test]
fn an_evicted_record_acknowledged_later_is_taken_off_the_eviction_count() {
    let fs = MemFs::new();
    let (mut j, _) = open(&fs, &cfg("/j", 400, 2000));
    // Records 1..=k are "in flight" when the budget evicts their segment.
    let mut last = 0;
    while j.stats().counters.evicted[0] == 0 {
        last = j.append(Lane::Alert, &[3; 50]).expect("append");
    }
    let evicted = j.stats().counters.evicted[0];
    assert!(evicted >= 3, "{evicted}");
    // Their PUBACKs arrive: two of them, one twice.
    j.ack(Lane::Alert, 1);
    j.ack(Lane::Alert, 2);
    j.ack(Lane::Alert, 2);
    assert_eq!(j.stats().counters.evicted[0], evicted - 2);
    // A record that was not evicted is acknowledged as usual.
    j.ack(Lane::Alert, last);
    assert_eq!(j.stats().counters.evicted[0], evicted - 2);
    j.sync().expect("sync");
    drop(j);
    let (j, _) = open(&fs, &cfg("/j", 400, 2000));
    assert_eq!(j.stats().counters.evicted[0], evicted - 2, "persisted");
}

#[test]
fn a_priority_record_survives_the_eviction_of_its_segment() {
    let fs = MemFs::new();
    let (mut j, _) = open(&fs, &cfg("/j", 400, 2000));
    j.append(Lane::Alert, &[1; 50]).expect("append");
    j.append_priority(Lane::Alert, b"the disk is full")
        .expect("append");
    for _ in 0..200 {
        j.append(Lane::Alert, &[3; 50]).expect("append");
    }
    let stored = j.read(Lane::Alert, 0, 1000).expect("read");
    let kept: Vec<&Record> = stored
        .iter()
        .filter(|r| r.payload == b"the disk is full")
        .collect();
    assert_eq!(kept.len(), 1, "kept once, appended again when evicted");
    assert_eq!(j.priority_pending(Lane::Alert, u64::MAX), vec![kept[0].seq]);
    let evicted = j.stats().counters.evicted[0];
    assert_eq!(
        evicted + stored.len() as u64,
        202,
        "everything else is stored or counted"
    );
}

#[test]
fn oversized_records_are_refused_and_handed_back() {
    let fs = MemFs::new();
    let (mut j, _) = open(&fs, &cfg("/j", 1 << 16, 1000));
    assert!(matches!(
        j.append(Lane::Alert, &[0; 2000]),
        Err(JournalError::NoRoom { .. })
    ));
    assert!(matches!(
        j.append(Lane::Alert, &vec![0; format::MAX_RECORD + 1]),
        Err(JournalError::TooLarge { .. })
    ));
}

#[test]
fn a_full_filesystem_with_nothing_to_evict_refuses_the_record_and_recovers_when_space_returns() {
    let fs = MemFs::new();
    let c = cfg("/j", 1 << 16, 1 << 20);
    let (mut j, _) = open(&fs, &c);
    fs.set_space(Some(10));
    let err = j.append(Lane::Alert, &[9; 100]).expect_err("disk is full");
    assert!(err.is_disk_full(), "{err}");
    fs.set_space(None);
    assert_eq!(j.append(Lane::Alert, b"second").expect("append"), 1);
    j.sync().expect("sync");
    drop(j);
    let (mut j, rep) = open(&fs, &c);
    assert_eq!(
        (rep.corrupt, rep.torn),
        (0, 0),
        "the partial write was cut off"
    );
    let recs = j.read(Lane::Alert, 0, 10).expect("read");
    assert_eq!(
        recs.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(),
        vec![b"second".to_vec()]
    );
}

#[test]
fn a_full_filesystem_evicts_telemetry_then_events_then_the_oldest_alerts_counting_each() {
    let fs = MemFs::new();
    // The budget is far above what the filesystem holds: the disk fills first.
    let c = cfg("/j", 200, 1 << 30);
    let (mut j, _) = open(&fs, &c);
    for _ in 0..6 {
        j.append(Lane::Telemetry, &[1; 50]).expect("append");
    }
    j.append(Lane::Event, &[2; 50]).expect("append");
    j.append(Lane::Event, &[2; 50]).expect("append");
    for _ in 0..4 {
        j.append(Lane::Alert, &[3; 50]).expect("append");
    }
    j.sync().expect("sync");
    fs.set_space(Some(0));
    let mut stored = Vec::new();
    for _ in 0..12 {
        stored.push(j.append(Lane::Alert, &[4; 50]).expect("room is made"));
    }
    assert_eq!(stored, (5..=16).collect::<Vec<_>>());
    let evicted = j.stats().counters.evicted;
    assert_eq!(evicted[Lane::Telemetry as usize], 6, "{evicted:?}");
    assert_eq!(evicted[Lane::Event as usize], 2, "{evicted:?}");
    let alerts = seqs(&j.read(Lane::Alert, 0, 100).expect("read"));
    assert_eq!(
        alerts.len() as u64 + evicted[Lane::Alert as usize],
        16,
        "every alert is stored or counted as evicted: {alerts:?} {evicted:?}"
    );
    assert_eq!(alerts.last(), Some(&16), "the newest alerts are kept");
    // Acknowledging still works on the full disk and frees space for new alerts.
    for s in alerts.clone() {
        j.ack(Lane::Alert, s);
    }
    assert_eq!(cursor_on_disk(&fs, Lane::Alert), Some(16));
    j.sync().expect("sync on a full disk");
    let before = j.stats().counters.evicted[Lane::Alert as usize];
    j.append(Lane::Alert, &[5; 50])
        .expect("room freed by delivery");
    assert_eq!(j.stats().counters.evicted[Lane::Alert as usize], before);
    drop(j);
    let (_, rep) = open(&fs, &c);
    assert_eq!((rep.corrupt, rep.torn), (0, 0));
}

#[test]
fn torn_tail_on_a_real_filesystem_is_truncated_and_counted() {
    let dir = std::env::temp_dir().join(format!("edge-journal-torn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let c = JournalConfig {
        dir: dir.clone(),
        segment_bytes: 1 << 16,
        max_disk: 1 << 20,
        fsync: FsyncPolicy::Always,
    };
    {
        let (mut j, _) = Journal::open(c.clone(), Arc::new(StdFs)).expect("open");
        for i in 0..3u8 {
            j.append(Lane::Alert, &[i; 10]).expect("append");
        }
        j.sync().expect("sync");
    }
    let seg = dir.join("alert").join(segment_name(1));
    let mut bytes = std::fs::read(&seg).expect("segment");
    let good_len = bytes.len();
    let mut frame = Vec::new();
    format::encode_frame(4, &[7; 50], false, &mut frame);
    bytes.extend_from_slice(&frame[..30]); // a write cut short by a crash
    std::fs::write(&seg, &bytes).expect("write");
    let (mut j, rep) = Journal::open(c.clone(), Arc::new(StdFs)).expect("open");
    assert_eq!(rep.torn, 1);
    assert_eq!(
        std::fs::metadata(&seg).expect("meta").len() as usize,
        good_len
    );
    assert_eq!(
        seqs(&j.read(Lane::Alert, 0, 10).expect("read")),
        vec![1, 2, 3]
    );
    assert_eq!(j.append(Lane::Alert, b"next").expect("append"), 4);
    assert_eq!(j.stats().counters.torn, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_record_is_skipped_and_counted_and_the_rest_delivered() {
    let fs = MemFs::new();
    let c = cfg("/j", 1 << 16, 1 << 20);
    let (mut j, _) = open(&fs, &c);
    for _ in 0..3 {
        j.append(Lane::Alert, b"abcdef").expect("append");
    }
    j.sync().expect("sync");
    drop(j);
    let seg = PathBuf::from("/j/alert").join(segment_name(1));
    let second_payload = HEADER_LEN + 2 * format::FRAME_HEADER + 6 + 2;
    fs.with_file(&seg, |d| d[second_payload] ^= 0xff)
        .expect("segment exists");
    let (mut j, rep) = open(&fs, &c);
    assert_eq!(rep.corrupt, 1);
    assert_eq!(seqs(&j.read(Lane::Alert, 0, 10).expect("read")), vec![1, 3]);
    assert_eq!(j.stats().counters.corrupt, 1);
}

#[test]
fn one_flipped_byte_in_a_length_field_loses_one_record_and_nothing_is_truncated() {
    let fs = MemFs::new();
    let c = cfg("/j", 1 << 20, 1 << 22);
    let (mut j, _) = open(&fs, &c);
    for i in 0..200u8 {
        j.append(Lane::Alert, &[i; 60]).expect("append");
    }
    j.sync().expect("sync");
    drop(j);
    let seg = PathBuf::from("/j/alert").join(segment_name(1));
    let len_before = fs.read(&seg).expect("segment").len();
    let fifty_third = HEADER_LEN + 52 * (format::FRAME_HEADER + 60);
    fs.with_file(&seg, |d| d[fifty_third + 2] ^= 0x10)
        .expect("segment exists");
    let (mut j, rep) = open(&fs, &c);
    assert_eq!((rep.corrupt, rep.torn), (1, 0), "{rep:?}");
    let got = seqs(&j.read(Lane::Alert, 0, 1000).expect("read"));
    assert_eq!(got, (1..=200).filter(|&s| s != 53).collect::<Vec<_>>());
    assert_eq!(fs.read(&seg).expect("segment").len(), len_before);
}

#[test]
fn foreign_and_future_files_are_quarantined_not_fatal() {
    let fs = MemFs::new();
    let c = cfg("/j", 1 << 16, 1 << 20);
    fs.put(Path::new("/j/alert/notes.txt"), b"someone's notes");
    let mut future = format::header(0).to_vec();
    future[8] = 99;
    fs.put(Path::new("/j/alert/00000000000000000001.seg"), &future);
    fs.put(Path::new("/j/alert/ACK"), b"garbage");
    let (mut j, rep) = open(&fs, &c);
    assert_eq!(rep.quarantined.len(), 2, "{rep:?}");
    assert!(fs.read(Path::new("/j/alert/notes.txt.quarantine")).is_ok());
    assert_eq!(j.append(Lane::Alert, b"ok").expect("append still works"), 1);
}

#[test]
fn interval_policy_syncs_only_when_due() {
    let fs = MemFs::new();
    let mut c = cfg("/j", 1 << 16, 1 << 20);
    c.fsync = FsyncPolicy::Interval(Duration::from_secs(3600));
    let (mut j, _) = open(&fs, &c);
    j.append(Lane::Alert, b"a").expect("append");
    j.maybe_sync().expect("no-op");
    fs.power_loss();
    drop(j);
    let (mut j, _) = open(&fs, &c);
    assert!(
        j.read(Lane::Alert, 0, 10).expect("read").is_empty(),
        "unsynced record lost on power loss"
    );
    j.append(Lane::Alert, b"b").expect("append");
    j.sync().expect("sync");
    fs.power_loss();
    drop(j);
    let (mut j, _) = open(&fs, &c);
    assert_eq!(
        j.read(Lane::Alert, 0, 10).expect("read").len(),
        1,
        "synced record kept"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Append(u8, u8),
    Ack(u8, u8),
    Sync,
    Restart,
    PowerLoss,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..3, 0u8..120).prop_map(|(l, n)| Op::Append(l, n)),
        3 => (0u8..3, any::<u8>()).prop_map(|(l, k)| Op::Ack(l, k)),
        2 => Just(Op::Sync),
        1 => Just(Op::Restart),
        1 => Just(Op::PowerLoss),
    ]
}

/// What the journal must hold for one lane.
#[derive(Debug, Default, Clone)]
struct ModelLane {
    /// Records not released by the durable cursor.
    records: BTreeMap<u64, Vec<u8>>,
    /// Acked above a gap (released in memory only).
    acked: BTreeSet<u64>,
    cursor: u64,
    /// Appended since the last sync (may vanish on power loss).
    unsynced: BTreeSet<u64>,
    /// Released since the cursor was last made durable (may come back after a
    /// power loss: delivered again, at least once).
    volatile: BTreeMap<u64, Vec<u8>>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Random appends, acks, syncs, restarts and power cuts against a model: synced
    /// records are never lost, released records never come back unless their ack was
    /// not yet durable, and the order within a lane is kept.
    #[test]
    fn journal_matches_its_model_across_restarts_and_power_loss(ops in proptest::collection::vec(op(), 1..80)) {
        let fs = MemFs::new();
        let c = cfg("/p", 300, 1 << 30);
        let (mut j, _) = open(&fs, &c);
        let mut model: Vec<ModelLane> = vec![ModelLane::default(); 3];
        let mut counter = 0u32;
        for op in ops {
            match op {
                Op::Append(l, n) => {
                    counter += 1;
                    let payload: Vec<u8> = counter.to_le_bytes().iter().copied().cycle().take(usize::from(n)).collect();
                    let seq = j.append(Lane::ALL[usize::from(l)], &payload).expect("append");
                    let m = &mut model[usize::from(l)];
                    prop_assert!(m.records.keys().next_back().is_none_or(|&last| seq > last));
                    m.records.insert(seq, payload);
                    m.unsynced.insert(seq);
                }
                Op::Ack(l, k) => {
                    let m = &mut model[usize::from(l)];
                    let live: Vec<u64> = m.records.keys().copied().filter(|s| !m.acked.contains(s)).collect();
                    if live.is_empty() { continue; }
                    let seq = live[usize::from(k) % live.len()];
                    j.ack(Lane::ALL[usize::from(l)], seq);
                    m.acked.insert(seq);
                    while m.acked.remove(&(m.cursor + 1)) {
                        m.cursor += 1;
                        if let Some(p) = m.records.remove(&m.cursor) {
                            m.volatile.insert(m.cursor, p);
                        }
                    }
                    // Seqs below the first live record may be gaps (lost to power cuts).
                    while let Some((&first, _)) = m.records.iter().next() {
                        if first <= m.cursor { m.records.remove(&first); } else { break; }
                    }
                }
                Op::Sync => {
                    j.sync().expect("sync");
                    for m in &mut model { m.unsynced.clear(); m.volatile.clear(); }
                }
                Op::Restart => {
                    drop(j);
                    j = open(&fs, &c).0;
                    // Recovery syncs what the previous process left in the page cache.
                    for m in &mut model { m.acked.clear(); m.unsynced.clear(); }
                }
                Op::PowerLoss => {
                    drop(j);
                    fs.power_loss();
                    j = open(&fs, &c).0;
                    for (li, m) in model.iter_mut().enumerate() {
                        m.acked.clear();
                        // Records released by a cursor update that had not reached the
                        // disk come back; nothing else does.
                        let cursor = j.acked(Lane::ALL[li]);
                        prop_assert!(cursor <= m.cursor, "lane {li}: the cursor moved ahead");
                        let back: Vec<(u64, Vec<u8>)> = m.volatile.range(cursor + 1..).map(|(s, p)| (*s, p.clone())).collect();
                        m.records.extend(back);
                        m.cursor = cursor;
                        m.volatile.clear();
                        // Some unsynced records may have reached the disk (a segment
                        // roll syncs); what survives must be a prefix of them.
                        let got: BTreeSet<u64> = seqs(&j.read(Lane::ALL[li], 0, usize::MAX).expect("read")).into_iter().collect();
                        let unsynced: Vec<u64> = m.unsynced.iter().copied().filter(|s| m.records.contains_key(s)).collect();
                        let kept = unsynced.iter().take_while(|s| got.contains(s)).count();
                        for s in &unsynced[kept..] {
                            prop_assert!(!got.contains(s), "lane {li}: unsynced records survived out of order");
                            m.records.remove(s);
                        }
                        m.unsynced.clear();
                    }
                }
            }
            for (li, m) in model.iter().enumerate() {
                let got = j.read(Lane::ALL[li], 0, usize::MAX).expect("read");
                let want: Vec<(u64, Vec<u8>)> = m.records.iter().filter(|(s, _)| !m.acked.contains(s)).map(|(s, p)| (*s, p.clone())).collect();
                let got: Vec<(u64, Vec<u8>)> = got.into_iter().map(|r| (r.seq, r.payload)).collect();
                prop_assert_eq!(got, want, "lane {}", li);
            }
        }
    }
}

#[test]
fn a_missing_segment_is_reported_and_the_rest_delivered() {
    let fs = MemFs::new();
    let c = cfg("/j", 100, 1 << 20);
    let (mut j, _) = open(&fs, &c);
    for _ in 0..12 {
        j.append(Lane::Alert, &[5; 30]).expect("append");
    }
    j.sync().expect("sync");
    drop(j);
    let mut segs = fs.list(Path::new("/j/alert")).expect("list");
    segs.retain(|p| p.extension().is_some_and(|e| e == "seg"));
    segs.sort();
    assert!(segs.len() >= 3);
    fs.remove(&segs[1]).expect("remove the middle segment");
    let (mut j, rep) = open(&fs, &c);
    assert!(rep.missing > 0, "{rep:?}");
    let got = seqs(&j.read(Lane::Alert, 0, 100).expect("read"));
    assert_eq!(got.first(), Some(&1));
    assert_eq!(got.last(), Some(&12));
    assert_eq!(got.len() as u64 + rep.missing, 12);
    assert!(j.stats().counters.corrupt >= rep.missing);
}
