//! Start-up code out of the resident set.
//!
//! Most of the binary is code that runs once: the configuration parser, the ONNX
//! graph loader and optimiser (tract), the command line. The kernel maps text in
//! 64 KiB "fault-around" chunks, so after start-up most of the file is resident
//! although a running agent executes a few hundred KiB of it (measured: 4.7 MB of
//! text resident, 0.5 MB referenced over 20 s of the demo). Those pages are clean
//! and the kernel would reclaim them under pressure, but until then they count in
//! the agent's RSS and in its systemd cgroup's memory. [`trim_own_text`] asks the
//! kernel to page them out now (`MADV_PAGEOUT`, Linux ≥ 5.4); what the agent still
//! runs faults straight back in from the page cache.
//!
//! Only the executable's own read-only, private mappings are advised: nothing
//! writable, no heap, no shared library. On glibc the same call also gives back the
//! heap pages that loading freed (`malloc_trim`).
//!
//! Measured with `cross/footprint.sh` (x86_64, glibc, same process at 25 s and
//! 60 s): the 1,000-tag / 4-driver / 2-model scenario from 31–33 MB RSS to
//! 15.2–15.5 MB (heap 12.3 -> 6.9 MB, text 20 -> 5.6 MB), the demo from 12–15 MB to
//! 7.7–8.9 MB.

/// What [`trim_own_text`] advised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub mappings: usize,
    pub bytes: u64,
}

/// A read-only private mapping of `exe` in a `/proc/<pid>/maps` text: (start, end).
fn own_read_only_mappings(maps: &str, exe: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let path = f.nth(3)?;
            // The rest of the line is the path (it may hold spaces, e.g. " (deleted)").
            let rest = line[line.find(path)?..].trim_end();
            if rest != exe || perms.contains('w') || !perms.ends_with('p') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect()
}

/// Pages out the executable's read-only mappings (see the module docs). A kernel
/// without `MADV_PAGEOUT` answers `EINVAL`: an error, and nothing changes.
#[allow(unsafe_code)]
pub fn trim_own_text() -> std::io::Result<Trimmed> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let exe = std::fs::read_link("/proc/self/exe")?;
    let mut done = Trimmed::default();
    for (start, end) in own_read_only_mappings(&maps, &exe.to_string_lossy()) {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: the range is one whole mapping of this process, read from
            // /proc/self/maps; it is read-only and file-backed, so paging it out
            // changes no content: the next access faults the same bytes back in
            // from the file. madvise does not unmap anything.
            let rc = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT)
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        done.mappings += 1;
        done.bytes += (end - start) as u64;
    }
    // glibc keeps the heap pages that start-up freed (model graphs built and
    // dropped while loading) mapped inside its arenas; malloc_trim returns them.
    // musl's allocator returns freed groups by itself.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free memory of the allocator; it is
        // thread-safe (it locks each arena) and has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fe:01 123 /usr/bin/edge-agent
55d0c0100000-55d0c0500000 r-xp 00100000 fe:01 123 /usr/bin/edge-agent
55d0c0500000-55d0c0600000 r--p 00500000 fe:01 123 /usr/bin/edge-agent
55d0c0600000-55d0c0610000 rw-p 00600000 fe:01 123 /usr/bin/edge-agent
55d0c1000000-55d0c2000000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 r-xp 00000000 fe:01 77 /usr/lib/libc.so.6
7f0000200000-7f0000300000 r-xp 00000000 fe:01 124 /usr/bin/edge-agent-old (deleted)
";

    #[test]
    fn only_the_executables_read_only_private_mappings_are_picked() {
        let got = own_read_only_mappings(MAPS, "/usr/bin/edge-agent");
        assert_eq!(
            got,
            [
                (0x55d0c0000000, 0x55d0c0100000),
                (0x55d0c0100000, 0x55d0c0500000),
                (0x55d0c0500000, 0x55d0c0600000),
            ]
        );
        // A binary replaced on disk (a package upgrade) still matches by its name.
        let deleted = own_read_only_mappings(MAPS, "/usr/bin/edge-agent-old (deleted)");
        assert_eq!(deleted, [(0x7f0000200000, 0x7f0000300000)]);
    }

    fn own_text_rss_kib() -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut ours = false;
        let mut total = 0;
        for line in smaps.lines() {
            if line
                .split_whitespace()
                .next()
                .is_some_and(|r| r.contains('-'))
                && line.split_whitespace().count() >= 5
            {
                ours = line.ends_with(&*exe.to_string_lossy()) && line.contains(" r-xp ");
            } else if ours && let Some(v) = line.strip_prefix("Rss:") {
                total += v.trim().trim_end_matches(" kB").parse::<u64>().unwrap_or(0);
            }
        }
        total
    }

    #[test]
    fn trimming_pages_out_the_test_binarys_text() {
        let before = own_text_rss_kib();
        match trim_own_text() {
            Ok(t) => {
                assert!(t.mappings >= 1 && t.bytes > 0, "{t:?}");
                let after = own_text_rss_kib();
                assert!(
                    after < before,
                    "text RSS {before} KiB before, {after} KiB after"
                );
            }
            // Kernels before 5.4 have no MADV_PAGEOUT.
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}"),
        }
    }
}
