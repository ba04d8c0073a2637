//! An in-memory `Disk` for the simulator and for tests, which models what a
//! crash does to real storage: file data survives only up to the last
//! `sync_data` plus an arbitrary prefix of what was appended since (a torn
//! write can stop at any byte), and names survive only as they were at the
//! last `sync_dir` of their directory. Deterministic: every random choice
//! comes from the generator handed to `crash`.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use crate::disk::{parent, Disk};

#[derive(Clone, Debug, Default)]
struct MemFile {
    data: Vec<u8>,
    /// Invariant: `durable_len <= data.len()` unless `durable_before` is set.
    durable_len: usize,
    /// The durable bytes, kept only when an unsynced truncate cut into them
    /// (a crash may then bring them back).
    durable_before: Option<Vec<u8>>,
}

/// A simulated disk: files are byte vectors with a durable part.
///
/// Directories are durable as soon as they are created (the WAL creates its
/// directory once, before anything else); their entries are not. It does not
/// preallocate: in memory an overwrite costs what an append costs. An
/// unsynced overwrite of durable bytes is modelled like an unsynced
/// truncate: after a crash, either all of it or none of it.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    /// The namespace as the running process sees it: path -> inode.
    names: BTreeMap<String, u64>,
    /// The namespace a crash returns to.
    durable_names: BTreeMap<String, u64>,
    inodes: BTreeMap<u64, MemFile>,
    dirs: BTreeSet<String>,
    locks: BTreeSet<String>,
    inode_next: u64,
    fail_next_sync: bool,
    data_syncs: u64,
    dir_syncs: u64,
}

fn not_found(path: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{path}: no such file"))
}

impl MemDisk {
    pub fn new() -> MemDisk {
        MemDisk::default()
    }

    /// A crash (power loss or kill -9): every directory returns to its
    /// durable entries, every file to its durable bytes plus a random prefix
    /// of its unsynced bytes, and every lock is released.
    pub fn crash(&mut self, rng_u64: &mut dyn FnMut() -> u64) {
        self.names = self.durable_names.clone();
        self.collect_garbage();
        for file in self.inodes.values_mut() {
            if let Some(before) = file.durable_before.take() {
                // An unsynced truncate either reached the disk or did not.
                if rng_u64().is_multiple_of(2) {
                    file.data = before;
                }
            } else {
                let unsynced = (file.data.len() - file.durable_len) as u64;
                let kept = rng_u64() % (unsynced + 1);
                file.data.truncate(file.durable_len + kept as usize);
            }
            file.durable_len = file.data.len();
        }
        self.locks.clear();
        self.fail_next_sync = false;
    }

    /// Makes the next `sync_data` or `sync_dir` fail, as a dying disk would.
    pub fn fail_next_sync(&mut self) {
        self.fail_next_sync = true;
    }

    /// How many `sync_data` calls succeeded: lets tests check group commit.
    pub fn data_syncs(&self) -> u64 {
        self.data_syncs
    }

    /// How many `sync_dir` calls succeeded.
    pub fn dir_syncs(&self) -> u64 {
        self.dir_syncs
    }

    /// The current bytes of a file, for tests and tools.
    pub fn file_bytes(&self, path: &str) -> Option<&[u8]> {
        let inode = self.names.get(path)?;
        self.inodes.get(inode).map(|f| f.data.as_slice())
    }

    /// Overwrites one byte in place (and in the durable copy): simulated
    /// media corruption for tests.
    pub fn corrupt_byte(&mut self, path: &str, offset: usize, xor: u8) -> bool {
        let Some(file) = self.names.get(path).and_then(|i| self.inodes.get_mut(i)) else {
            return false;
        };
        match file.data.get_mut(offset) {
            Some(byte) => {
                *byte ^= xor;
                true
            }
            None => false,
        }
    }

    fn file(&self, path: &str) -> io::Result<&MemFile> {
        self.names
            .get(path)
            .and_then(|i| self.inodes.get(i))
            .ok_or_else(|| not_found(path))
    }

    fn file_mut(&mut self, path: &str) -> io::Result<&mut MemFile> {
        self.names
            .get(path)
            .and_then(|i| self.inodes.get_mut(i))
            .ok_or_else(|| not_found(path))
    }

    fn check_dir(&self, dir: &str) -> io::Result<()> {
        if dir.is_empty() || self.dirs.contains(dir) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{dir}: no such directory"),
            ))
        }
    }

    fn take_injected_failure(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.fail_next_sync) {
            return Err(io::Error::other("injected sync failure"));
        }
        Ok(())
    }

    /// Drops inodes that no namespace refers to any more.
    fn collect_garbage(&mut self) {
        let live: BTreeSet<u64> = self
            .names
            .values()
            .chain(self.durable_names.values())
            .copied()
            .collect();
        self.inodes.retain(|i, _| live.contains(i));
    }
}

impl Disk for MemDisk {
    fn create(&mut self, path: &str) -> io::Result<()> {
        self.check_dir(parent(path))?;
        let inode = self.inode_next;
        self.inode_next += 1;
        self.inodes.insert(inode, MemFile::default());
        self.names.insert(path.to_string(), inode);
        self.collect_garbage();
        Ok(())
    }

    fn open(&mut self, path: &str) -> io::Result<()> {
        self.file(path).map(|_| ())
    }

    fn append(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        self.file_mut(path)?.data.extend_from_slice(data);
        Ok(())
    }

    fn write_at(&mut self, path: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let file = self.file_mut(path)?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start + data.len();
        if start < file.durable_len && file.durable_before.is_none() {
            file.durable_before = Some(file.data[..file.durable_len].to_vec());
        }
        if file.data.len() < end {
            file.data.resize(end, 0);
        }
        file.data[start..end].copy_from_slice(data);
        Ok(())
    }

    fn read_at(&self, path: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let data = &self.file(path)?.data;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start
            .checked_add(buf.len())
            .and_then(|end| data.get(start..end))
        {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{path}: read past the end"),
            )),
        }
    }

    fn len(&self, path: &str) -> io::Result<u64> {
        Ok(self.file(path)?.data.len() as u64)
    }

    fn truncate(&mut self, path: &str, len: u64) -> io::Result<()> {
        let file = self.file_mut(path)?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        if len < file.durable_len && file.durable_before.is_none() {
            file.durable_before = Some(file.data[..file.durable_len].to_vec());
        }
        file.data.resize(len, 0);
        Ok(())
    }

    fn sync_data(&mut self, path: &str) -> io::Result<()> {
        self.take_injected_failure()?;
        let file = self.file_mut(path)?;
        file.durable_len = file.data.len();
        file.durable_before = None;
        self.data_syncs += 1;
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.check_dir(parent(to))?;
        let inode = self.names.remove(from).ok_or_else(|| not_found(from))?;
        self.names.insert(to.to_string(), inode);
        self.collect_garbage();
        Ok(())
    }

    fn remove(&mut self, path: &str) -> io::Result<()> {
        self.names.remove(path).ok_or_else(|| not_found(path))?;
        self.collect_garbage();
        Ok(())
    }

    fn list_dir(&self, dir: &str) -> io::Result<Vec<String>> {
        self.check_dir(dir)?;
        let files = self.names.keys().map(String::as_str);
        let subdirs = self.dirs.iter().map(String::as_str);
        let mut names: Vec<String> = files
            .chain(subdirs)
            .filter(|p| parent(p) == dir)
            .map(|p| p[p.rfind('/').map_or(0, |i| i + 1)..].to_string())
            .collect();
        names.sort();
        Ok(names)
    }

    fn create_dir(&mut self, dir: &str) -> io::Result<()> {
        let mut path = dir;
        while !path.is_empty() && !self.dirs.contains(path) {
            if self.names.contains_key(path) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{path}: is a file"),
                ));
            }
            self.dirs.insert(path.to_string());
            path = parent(path);
        }
        Ok(())
    }

    fn sync_dir(&mut self, dir: &str) -> io::Result<()> {
        self.check_dir(dir)?;
        self.take_injected_failure()?;
        self.durable_names.retain(|p, _| parent(p) != dir);
        let current = self.names.iter().filter(|(p, _)| parent(p) == dir);
        let current: Vec<(String, u64)> = current.map(|(p, i)| (p.clone(), *i)).collect();
        self.durable_names.extend(current);
        self.collect_garbage();
        self.dir_syncs += 1;
        Ok(())
    }

    fn lock_dir(&mut self, dir: &str) -> io::Result<()> {
        self.check_dir(dir)?;
        if !self.locks.insert(dir.to_string()) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{dir}: already locked"),
            ));
        }
        Ok(())
    }

    fn unlock_dir(&mut self, dir: &str) {
        self.locks.remove(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(seq: &[u64]) -> impl FnMut() -> u64 + '_ {
        let mut i = 0;
        move || {
            i += 1;
            seq[(i - 1) % seq.len()]
        }
    }

    #[test]
    fn unsynced_name_is_lost() {
        let mut d = MemDisk::new();
        d.create_dir("w").unwrap();
        d.create("w/a").unwrap();
        d.append("w/a", b"xyz").unwrap();
        d.sync_data("w/a").unwrap();
        d.crash(&mut counter(&[0]));
        assert!(d.list_dir("w").unwrap().is_empty());
    }

    #[test]
    fn synced_data_survives_and_tail_tears() {
        let mut d = MemDisk::new();
        d.create_dir("w").unwrap();
        d.create("w/a").unwrap();
        d.sync_dir("w").unwrap();
        d.append("w/a", b"abc").unwrap();
        d.sync_data("w/a").unwrap();
        d.append("w/a", b"defg").unwrap();
        // Keeps 2 of the 4 unsynced bytes.
        d.crash(&mut counter(&[2]));
        assert_eq!(d.file_bytes("w/a").unwrap(), b"abcde");
    }

    #[test]
    fn rename_durable_only_after_sync_dir() {
        let mut d = MemDisk::new();
        d.create_dir("w").unwrap();
        d.create("w/t").unwrap();
        d.append("w/t", b"1").unwrap();
        d.sync_data("w/t").unwrap();
        d.sync_dir("w").unwrap();
        d.rename("w/t", "w/f").unwrap();
        let mut keep = d.clone();
        d.crash(&mut counter(&[0]));
        assert_eq!(d.list_dir("w").unwrap(), vec!["t".to_string()]);
        keep.sync_dir("w").unwrap();
        keep.crash(&mut counter(&[0]));
        assert_eq!(keep.list_dir("w").unwrap(), vec!["f".to_string()]);
        assert_eq!(keep.file_bytes("w/f").unwrap(), b"1");
    }

    #[test]
    fn unsynced_truncate_may_come_back() {
        let mut d = MemDisk::new();
        d.create_dir("w").unwrap();
        d.create("w/a").unwrap();
        d.sync_dir("w").unwrap();
        d.append("w/a", b"abcdef").unwrap();
        d.sync_data("w/a").unwrap();
        d.truncate("w/a", 2).unwrap();
        let mut other = d.clone();
        d.crash(&mut counter(&[0]));
        assert_eq!(d.file_bytes("w/a").unwrap(), b"abcdef");
        other.crash(&mut counter(&[1]));
        assert_eq!(other.file_bytes("w/a").unwrap(), b"ab");
    }

    #[test]
    fn injected_sync_failure_and_locks() {
        let mut d = MemDisk::new();
        d.create_dir("w").unwrap();
        d.create("w/a").unwrap();
        d.fail_next_sync();
        assert!(d.sync_data("w/a").is_err());
        assert!(d.sync_data("w/a").is_ok());
        d.lock_dir("w").unwrap();
        let e = d.lock_dir("w").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        d.crash(&mut counter(&[0]));
        d.lock_dir("w").unwrap();
    }
}
