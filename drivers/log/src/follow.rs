//! Following a log file the way `tail -F` does: across rotation by rename (the old
//! file is read to its end first), truncation (copytruncate) and deletion.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Where to start reading a file found at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum From {
    Start,
    End,
}

/// A followed file.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<(File, u64 /* inode */)>,
    pos: u64,
    /// Bytes of an unfinished last line.
    partial: Vec<u8>,
    first_open: bool,
    from: From,
    max_line: usize,
    pub rotations: u64,
    pub truncations: u64,
}

impl Follower {
    pub fn new(path: PathBuf, from: From, max_line: usize) -> Follower {
        Follower {
            path,
            file: None,
            pos: 0,
            partial: Vec::new(),
            first_open: true,
            from,
            max_line,
            rotations: 0,
            truncations: 0,
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Reads what was appended since the last call (at most `budget` bytes) and
    /// calls `line` for every complete line. A missing file is not an error: it is
    /// picked up when it appears.
    pub fn poll(&mut self, budget: usize, line: &mut dyn FnMut(&str)) -> io::Result<()> {
        let mut budget = budget;
        // Drain the current file, then check whether the path now names another one.
        loop {
            if self.file.is_none() && !self.open()? {
                return Ok(());
            }
            let n = self.read_some(&mut budget, line)?;
            if budget == 0 {
                return Ok(());
            }
            // At the end of the current file: rotated or truncated?
            match std::fs::metadata(&self.path) {
                Ok(m) => {
                    let ino = self.file.as_ref().map(|(_, i)| *i);
                    if Some(m.ino()) != ino {
                        // Rotated: the old file is fully read; switch to the new one.
                        self.rotations += 1;
                        self.flush_partial(line);
                        self.file = None;
                        self.pos = 0;
                        continue;
                    }
                    if m.len() < self.pos {
                        self.truncations += 1;
                        self.partial.clear();
                        self.pos = 0;
                        if let Some((f, _)) = self.file.as_mut() {
                            f.seek(SeekFrom::Start(0))?;
                        }
                        continue;
                    }
                    if n == 0 {
                        return Ok(());
                    }
                }
                // Deleted: keep what we have; reopen when it is back.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn open(&mut self) -> io::Result<bool> {
        let f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let m = f.metadata()?;
        let mut f = f;
        self.pos = if self.first_open && self.from == From::End {
            m.len()
        } else {
            0
        };
        self.first_open = false;
        f.seek(SeekFrom::Start(self.pos))?;
        self.file = Some((f, m.ino()));
        Ok(true)
    }

    fn read_some(&mut self, budget: &mut usize, line: &mut dyn FnMut(&str)) -> io::Result<usize> {
        let Some((f, _)) = self.file.as_mut() else {
            return Ok(0);
        };
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0;
        while *budget > 0 {
            let want = buf.len().min(*budget);
            let n = f.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            total += n;
            *budget -= n;
            self.pos += n as u64;
            let mut rest = &buf[..n];
            while let Some(i) = rest.iter().position(|&b| b == b'\n') {
                self.partial.extend_from_slice(&rest[..i]);
                emit(&mut self.partial, self.max_line, line);
                rest = &rest[i + 1..];
            }
            self.partial.extend_from_slice(rest);
            // A line longer than the limit is cut (counted by the caller's view as
            // one line) so memory stays bounded.
            if self.partial.len() > self.max_line {
                emit(&mut self.partial, self.max_line, line);
            }
        }
        Ok(total)
    }

    fn flush_partial(&mut self, line: &mut dyn FnMut(&str)) {
        if !self.partial.is_empty() {
            emit(&mut self.partial, self.max_line, line);
        }
    }
}

fn emit(partial: &mut Vec<u8>, max: usize, line: &mut dyn FnMut(&str)) {
    let bytes = &partial[..partial.len().min(max)];
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    line(&String::from_utf8_lossy(bytes));
    partial.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(f: &mut Follower) -> Vec<String> {
        let mut out = Vec::new();
        f.poll(1 << 20, &mut |l| out.push(l.to_string()))
            .expect("poll");
        out
    }

    #[test]
    fn follows_appends_rotation_truncation_and_deletion() {
        let dir = std::env::temp_dir().join(format!("edge-follow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("app.log");
        let mut w = File::create(&p).expect("create");
        writeln!(w, "old line before start").expect("write");
        let mut f = Follower::new(p.clone(), From::End, 1024);
        assert!(lines(&mut f).is_empty(), "starts at the end");
        write!(w, "a\nb\npart").expect("write");
        assert_eq!(lines(&mut f), ["a", "b"]);
        writeln!(w, "ial").expect("write");
        assert_eq!(lines(&mut f), ["partial"]);
        // Rotation by rename: the rest of the old file, then the new one from its start.
        writeln!(w, "last of old").expect("write");
        std::fs::rename(&p, dir.join("app.log.1")).expect("rename");
        let mut w = File::create(&p).expect("create");
        writeln!(w, "first of new").expect("write");
        assert_eq!(lines(&mut f), ["last of old", "first of new"]);
        assert_eq!(f.rotations, 1);
        // copytruncate (noticed when the file is shorter than what was read, as
        // with tail -F; a truncated file that grew past the old size within one poll
        // interval is indistinguishable from an append).
        w.set_len(0).expect("truncate");
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .expect("open");
        writeln!(w, "trunc").expect("write");
        assert_eq!(lines(&mut f), ["trunc"]);
        assert_eq!(f.truncations, 1);
        // Deleted, then back.
        std::fs::remove_file(&p).expect("rm");
        assert!(lines(&mut f).is_empty());
        let mut w = File::create(&p).expect("create");
        writeln!(w, "reborn").expect("write");
        assert_eq!(lines(&mut f), ["reborn"]);
        // An endless line is cut, not buffered forever.
        let long = "x".repeat(5000);
        writeln!(w, "{long}").expect("write");
        let got = lines(&mut f);
        assert!(
            got.iter().all(|l| l.len() <= 1024),
            "{:?}",
            got.iter().map(String::len).collect::<Vec<_>>()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
