//! The journal's filesystem seam.
//!
//! [`StdFs`] is the real thing. [`MemFs`] keeps files in memory and models what a
//! power cut does: each file remembers how much of it was `sync`ed, and
//! [`MemFs::power_loss`] throws away everything that was not. It can also inject
//! errors (a full disk, failing syncs) for fault tests.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An open, append-only file.
pub trait AppendFile: Send {
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
}

/// A small file overwritten in place and never grown after it is opened: a
/// journal [`cell`](super::cell).
pub trait CellFile: Send {
    /// Overwrites `data.len()` bytes at `offset` (within the file's length).
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes the writes so far durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
}

/// The operations the journal needs.
pub trait Fs: Send + Sync + 'static {
    fn create_dir_all(&self, p: &Path) -> io::Result<()>;
    /// Entries of a directory (full paths), in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    fn read(&self, p: &Path) -> io::Result<Vec<u8>>;
    /// Opens for appending, creating the file if needed.
    fn open_append(&self, p: &Path) -> io::Result<Box<dyn AppendFile>>;
    /// Opens `p` for in-place writes, creating it if needed and growing it to `len`
    /// bytes of allocated zeros (not a sparse hole, so later writes need no space);
    /// a new file and the growth are durable when this returns.
    fn open_cell(&self, p: &Path, len: u64) -> io::Result<Box<dyn CellFile>>;
    fn remove(&self, p: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn truncate(&self, p: &Path, len: u64) -> io::Result<()>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The operating system's filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

struct StdFile(std::fs::File);

impl AppendFile for StdFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl CellFile for StdFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, data, offset)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Fs for StdFs {
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        std::fs::create_dir_all(p)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect()
    }
    fn read(&self, p: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(p)
    }
    fn open_append(&self, p: &Path) -> io::Result<Box<dyn AppendFile>> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)?;
        Ok(Box::new(StdFile(f)))
    }
    fn open_cell(&self, p: &Path, len: u64) -> io::Result<Box<dyn CellFile>> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)?;
        let have = f.metadata()?.len();
        if have < len {
            // Real zeros: `set_len` would leave a hole that a full disk cannot fill.
            let zeros = vec![0u8; (len - have) as usize];
            std::os::unix::fs::FileExt::write_all_at(&f, &zeros, have)?;
            f.sync_all()?;
            if let Some(dir) = p.parent() {
                self.sync_dir(dir)?;
            }
        }
        Ok(Box::new(StdFile(f)))
    }
    fn remove(&self, p: &Path) -> io::Result<()> {
        std::fs::remove_file(p)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn truncate(&self, p: &Path, len: u64) -> io::Result<()> {
        let f = std::fs::OpenOptions::new().write(true).open(p)?;
        f.set_len(len)?;
        f.sync_all()
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

#[derive(Debug, Default, Clone)]
struct MemFile {
    data: Vec<u8>,
    synced: usize,
    /// For a cell written in place since its last sync: its content at that sync
    /// (what a power cut leaves).
    durable: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct MemState {
    files: BTreeMap<PathBuf, MemFile>,
    /// Remaining bytes before writes fail with "no space left on device".
    space: Option<u64>,
    fail_sync: bool,
}

/// An in-memory filesystem that models power loss and injects faults.
#[derive(Debug, Default, Clone)]
pub struct MemFs {
    state: Arc<Mutex<MemState>>,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

impl MemFs {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops every byte that was not synced, as a power cut would.
    pub fn power_loss(&self) {
        for f in self.lock().files.values_mut() {
            if let Some(d) = f.durable.take() {
                f.data = d;
            }
            f.data.truncate(f.synced);
        }
    }

    /// Limits the space left for appends (`None` = unlimited).
    pub fn set_space(&self, bytes: Option<u64>) {
        self.lock().space = bytes;
    }

    pub fn set_fail_sync(&self, fail: bool) {
        self.lock().fail_sync = fail;
    }

    /// Mutates a file in place (corruption tests).
    pub fn with_file<R>(&self, p: &Path, f: impl FnOnce(&mut Vec<u8>) -> R) -> Option<R> {
        let mut st = self.lock();
        let file = st.files.get_mut(p)?;
        let r = f(&mut file.data);
        file.synced = file.synced.min(file.data.len());
        Some(r)
    }

    /// Writes a file directly (foreign-file tests).
    pub fn put(&self, p: &Path, data: &[u8]) {
        self.lock().files.insert(
            p.to_path_buf(),
            MemFile {
                data: data.to_vec(),
                synced: data.len(),
                durable: None,
            },
        );
    }

    /// `fdatasync` of one file: all of it survives a power cut from now on.
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        if st.fail_sync {
            return Err(io::Error::other("injected sync failure"));
        }
        if let Some(f) = st.files.get_mut(path) {
            f.durable = None;
            f.synced = f.data.len();
        }
        Ok(())
    }

    pub fn total_bytes(&self) -> u64 {
        self.lock()
            .files
            .values()
            .map(|f| f.data.len() as u64)
            .sum()
    }
}

struct MemAppend {
    fs: MemFs,
    path: PathBuf,
}

impl AppendFile for MemAppend {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let mut st = self.fs.lock();
        if let Some(space) = st.space {
            if space < data.len() as u64 {
                // A real disk may accept part of the write before failing.
                let part = space as usize;
                st.space = Some(0);
                if let Some(f) = st.files.get_mut(&self.path) {
                    f.data.extend_from_slice(&data[..part]);
                }
                return Err(enospc());
            }
            st.space = Some(space - data.len() as u64);
        }
        let f = st
            .files
            .get_mut(&self.path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "file removed while open"))?;
        f.data.extend_from_slice(data);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.fs.sync_file(&self.path)
    }
}

struct MemCell {
    fs: MemFs,
    path: PathBuf,
}

impl CellFile for MemCell {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut st = self.fs.lock();
        let f = st
            .files
            .get_mut(&self.path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "file removed while open"))?;
        let (from, to) = (offset as usize, offset as usize + data.len());
        if to > f.data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a cell write past the end of its file",
            ));
        }
        if f.durable.is_none() {
            f.durable = Some(f.data.clone());
        }
        f.data[from..to].copy_from_slice(data);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.fs.sync_file(&self.path)
    }
}

impl Fs for MemFs {
    fn create_dir_all(&self, _p: &Path) -> io::Result<()> {
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(self
            .lock()
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect())
    }
    fn read(&self, p: &Path) -> io::Result<Vec<u8>> {
        self.lock()
            .files
            .get(p)
            .map(|f| f.data.clone())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, p.display().to_string()))
    }
    fn open_append(&self, p: &Path) -> io::Result<Box<dyn AppendFile>> {
        self.lock().files.entry(p.to_path_buf()).or_default();
        Ok(Box::new(MemAppend {
            fs: self.clone(),
            path: p.to_path_buf(),
        }))
    }
    fn open_cell(&self, p: &Path, len: u64) -> io::Result<Box<dyn CellFile>> {
        let mut st = self.lock();
        let have = st.files.get(p).map_or(0, |f| f.data.len() as u64);
        if have < len {
            let grow = len - have;
            if let Some(space) = st.space.as_mut() {
                if *space < grow {
                    return Err(enospc());
                }
                *space -= grow;
            }
            let f = st.files.entry(p.to_path_buf()).or_default();
            f.data.resize(len as usize, 0);
            f.synced = f.data.len();
        }
        Ok(Box::new(MemCell {
            fs: self.clone(),
            path: p.to_path_buf(),
        }))
    }
    fn remove(&self, p: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let f = st
            .files
            .remove(p)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, p.display().to_string()))?;
        if let Some(space) = st.space.as_mut() {
            *space += f.data.len() as u64;
        }
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let f = st
            .files
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, from.display().to_string()))?;
        st.files.insert(to.to_path_buf(), f);
        Ok(())
    }
    fn truncate(&self, p: &Path, len: u64) -> io::Result<()> {
        let mut st = self.lock();
        let f = st
            .files
            .get_mut(p)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, p.display().to_string()))?;
        let len = len as usize;
        let freed = f.data.len().saturating_sub(len) as u64;
        f.data.truncate(len);
        f.synced = f.synced.min(len);
        if let Some(space) = st.space.as_mut() {
            *space += freed;
        }
        Ok(())
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
}
