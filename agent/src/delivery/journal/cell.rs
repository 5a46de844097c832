//! A small value the journal keeps up to date on disk without ever needing free
//! space to do it: the ack cursor of each lane and the persistent counters.
//!
//! A cell is a file of two fixed slots, allocated (with real zeros, not a sparse
//! hole) when the cell is created. An update overwrites the older slot in place, so
//! it needs no new blocks, no temporary file and no rename: on a full disk an
//! acknowledgement still moves the cursor and delivery still frees space. A slot is
//!
//! ```text
//! magic (4) | generation u64 LE | length u16 LE | payload (length) | crc32c (4) | zeros
//! ```
//!
//! and the valid slot with the highest generation is the value. A write torn by a
//! power cut spoils at most the slot being written; the other still holds the value
//! before it (for a cursor: a few records delivered again, never one lost).
//!
//! Updates are written without `fdatasync`; [`Cell::sync`] makes them durable and the
//! journal calls it before anything depends on the value being on disk (deleting a
//! released segment) and at every journal sync.

use std::io;
use std::path::{Path, PathBuf};

use super::fs::{CellFile, Fs};

/// Bytes of one slot; the file holds two.
pub const SLOT: usize = 128;
/// The largest payload a slot holds.
pub const MAX_PAYLOAD: usize = SLOT - 4 - 8 - 2 - 4;

/// An open cell.
pub struct Cell {
    path: PathBuf,
    magic: [u8; 4],
    file: Option<Box<dyn CellFile>>,
    generation: u64,
    /// Written since the last sync.
    dirty: bool,
}

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cell")
            .field("path", &self.path)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// What a cell file held when it was opened.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// No file: a new cell.
    Nothing,
    /// The newest valid slot's payload.
    Value(Vec<u8>),
    /// A file that is neither a cell nor empty (the caller may know an older format).
    Unreadable(Vec<u8>),
}

impl Cell {
    /// Opens the cell at `path`, creating and allocating its file if needed, and
    /// returns what it held. Creating needs a little free space; if that fails the
    /// cell stays closed and every write retries it (see [`Cell::write`]).
    pub fn open(fs: &dyn Fs, path: &Path, magic: [u8; 4]) -> (Cell, Found) {
        let (found, generation) = match fs.read(path) {
            Err(_) => (Found::Nothing, 0),
            Ok(bytes) => match newest_slot(&bytes, magic) {
                Some((g, payload)) => (Found::Value(payload), g),
                None if bytes.iter().all(|&b| b == 0) => (Found::Nothing, 0),
                None => (Found::Unreadable(bytes), 0),
            },
        };
        let mut cell = Cell {
            path: path.to_path_buf(),
            magic,
            file: None,
            generation,
            // What an earlier process wrote may still be only in the page cache: the
            // first sync makes it durable.
            dirty: matches!(found, Found::Value(_)),
        };
        if let Err(e) = cell.ensure_open(fs) {
            tracing::warn!(path = %path.display(), error = %e, "cannot create a journal cell yet; retrying on the next update");
        }
        (cell, found)
    }

    fn ensure_open(&mut self, fs: &dyn Fs) -> io::Result<&mut Box<dyn CellFile>> {
        if self.file.is_none() {
            self.file = Some(fs.open_cell(&self.path, 2 * SLOT as u64)?);
        }
        Ok(self.file.as_mut().expect("opened just above"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Overwrites the older slot with `payload` (at most [`MAX_PAYLOAD`] bytes). Not
    /// durable until [`Cell::sync`].
    pub fn write(&mut self, fs: &dyn Fs, payload: &[u8]) -> io::Result<()> {
        if payload.len() > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cell payload of {} bytes (at most {MAX_PAYLOAD})",
                    payload.len()
                ),
            ));
        }
        let generation = self.generation + 1;
        let slot = encode_slot(self.magic, generation, payload);
        let offset = (generation % 2) * SLOT as u64;
        self.ensure_open(fs)?.write_at(offset, &slot)?;
        self.generation = generation;
        self.dirty = true;
        Ok(())
    }

    /// Makes the last write durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(f) = self.file.as_mut() {
            f.sync()?;
        }
        self.dirty = false;
        Ok(())
    }
}

fn encode_slot(magic: [u8; 4], generation: u64, payload: &[u8]) -> [u8; SLOT] {
    let mut slot = [0u8; SLOT];
    let n = payload.len();
    slot[..4].copy_from_slice(&magic);
    slot[4..12].copy_from_slice(&generation.to_le_bytes());
    slot[12..14].copy_from_slice(&(n as u16).to_le_bytes());
    slot[14..14 + n].copy_from_slice(payload);
    let crc = crc32c::crc32c(&slot[..14 + n]);
    slot[14 + n..18 + n].copy_from_slice(&crc.to_le_bytes());
    slot
}

fn decode_slot(slot: &[u8], magic: [u8; 4]) -> Option<(u64, Vec<u8>)> {
    if slot.len() < SLOT || slot[..4] != magic {
        return None;
    }
    let generation = u64::from_le_bytes(slot[4..12].try_into().ok()?);
    let n = usize::from(u16::from_le_bytes([slot[12], slot[13]]));
    if n > MAX_PAYLOAD {
        return None;
    }
    let crc = u32::from_le_bytes(slot[14 + n..18 + n].try_into().ok()?);
    (crc32c::crc32c(&slot[..14 + n]) == crc).then(|| (generation, slot[14..14 + n].to_vec()))
}

/// The valid slot with the highest generation.
fn newest_slot(bytes: &[u8], magic: [u8; 4]) -> Option<(u64, Vec<u8>)> {
    bytes
        .chunks(SLOT)
        .take(2)
        .filter_map(|s| decode_slot(s, magic))
        .max_by_key(|(g, _)| *g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::journal::fs::MemFs;

    const MAGIC: [u8; 4] = *b"TEST";

    #[test]
    fn a_cell_keeps_its_newest_value_across_reopening() {
        let fs = MemFs::new();
        let p = Path::new("/c");
        let (mut c, found) = Cell::open(&fs, p, MAGIC);
        assert_eq!(found, Found::Nothing);
        for v in 1..=5u64 {
            c.write(&fs, &v.to_le_bytes()).expect("write");
        }
        c.sync().expect("sync");
        let (_, found) = Cell::open(&fs, p, MAGIC);
        assert_eq!(found, Found::Value(5u64.to_le_bytes().to_vec()));
        assert_eq!(fs.read(p).expect("file").len(), 2 * SLOT);
    }

    #[test]
    fn updates_need_no_free_space_once_the_cell_exists() {
        let fs = MemFs::new();
        let p = Path::new("/c");
        let (mut c, _) = Cell::open(&fs, p, MAGIC);
        fs.set_space(Some(0));
        for v in 1..=1000u64 {
            c.write(&fs, &v.to_le_bytes())
                .expect("in place on a full disk");
        }
        c.sync().expect("sync on a full disk");
        let (_, found) = Cell::open(&fs, p, MAGIC);
        assert_eq!(found, Found::Value(1000u64.to_le_bytes().to_vec()));
    }

    #[test]
    fn a_torn_slot_falls_back_to_the_previous_value() {
        let fs = MemFs::new();
        let p = Path::new("/c");
        let (mut c, _) = Cell::open(&fs, p, MAGIC);
        c.write(&fs, b"old").expect("write");
        c.write(&fs, b"new").expect("write");
        // Generation 2 lives in slot 0: spoil one byte of it.
        fs.with_file(p, |d| d[15] ^= 0xff);
        let (_, found) = Cell::open(&fs, p, MAGIC);
        assert_eq!(found, Found::Value(b"old".to_vec()));
    }

    #[test]
    fn unsynced_updates_may_vanish_on_power_loss_but_synced_ones_stay() {
        let fs = MemFs::new();
        let p = Path::new("/c");
        let (mut c, _) = Cell::open(&fs, p, MAGIC);
        c.write(&fs, b"kept").expect("write");
        c.sync().expect("sync");
        c.write(&fs, b"volatile").expect("write");
        fs.power_loss();
        let (_, found) = Cell::open(&fs, p, MAGIC);
        assert_eq!(found, Found::Value(b"kept".to_vec()));
    }

    #[test]
    fn a_file_of_another_format_is_reported_unreadable() {
        let fs = MemFs::new();
        let p = Path::new("/c");
        fs.put(p, b"EACK\x05\0\0\0\0\0\0\0crc!");
        let (_, found) = Cell::open(&fs, p, MAGIC);
        assert!(matches!(found, Found::Unreadable(b) if b.len() == 16));
    }
}
