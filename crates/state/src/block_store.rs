//! The bytes of block volumes: one sparse file per volume, named by the
//! volume's id, changed only by replaying `VolumeEvent`s in log order.
//! Never-written ranges are holes and read as zeros; trim and write-zeroes
//! punch holes. An unaligned write is a `pwrite` of exactly its bytes: the
//! read-modify-write of the 4 KiB block around it happens in the page cache.
//!
//! Durability comes from the Raft log, not from these files: they are
//! written without `fdatasync` and may lose recent writes in a crash. What
//! makes that safe is one property of volume events (see `VolumeEvent`):
//! replaying them in order, from files that hold — byte by byte — any state
//! at or after index `i`, ends in exactly the state after the last one. So
//! the store only needs a "valid from" mark: the index `i` such that every
//! file holds, per byte, a state at or after `i`. It is raised when a
//! snapshot syncs the files (`sync`), and cleared while files are being
//! replaced by a copy from a peer (`begin_install`). A node whose mark is
//! below its snapshot's index must copy the volumes from a peer before it
//! applies anything.
//!
//! The same property lets a peer serve a copy of its files while they
//! change: a "fuzzy" copy taken from a node that has applied at least `i`
//! holds per byte a state at or after `i`, and the receiver replays the log
//! from `i` on.
//!
//! Every byte written here was already written once, to the WAL: each
//! member writes a volume's bytes twice. `docs/block-write-path.md` gives
//! the design that writes large writes once (extent maps that reference the
//! log's copy, segments kept while referenced, a cleaner) and why it stays
//! correct.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::event::VolumeEvent;

/// Open files kept at once; more volumes than this reopen on use.
const OPEN_FILES_MAX: usize = 256;
const VALID_FILE: &str = "valid-from";
/// Zeroes are written in pieces of this size where holes cannot be punched.
const ZERO_CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("volume store {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
}

pub struct BlockStore {
    dir: PathBuf,
    /// Held while files are synced and the mark written, and while an
    /// install clears the mark: a sync finishing on another thread must not
    /// mark a half-copied store valid.
    mark_lock: Arc<Mutex<()>>,
    open: BTreeMap<u64, File>,
    /// Volumes written since the last `sync`.
    dirty: BTreeSet<u64>,

    valid_from: Option<u64>,
}

impl BlockStore {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &Path) -> Result<BlockStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(io(dir, "create directory"))?;
        let mark = dir.join(VALID_FILE);
        let valid_from = match std::fs::read_to_string(&mark) {
            Ok(text) => match text.trim().parse::<u64>() {
                Ok(i) => Some(i),
                Err(_) => {
                    // Written by rename, so damage is not a torn write; a
                    // mark we cannot read is no mark: the volumes are copied
                    // from a peer again, which is safe.
                    tracing::warn!(path = %mark.display(), "unreadable mark; volumes will be copied from a peer");
                    None
                }
            },
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(io(&mark, "read")(e)),
        };
        Ok(BlockStore {
            dir: dir.to_path_buf(),
            mark_lock: Arc::new(Mutex::new(())),
            open: BTreeMap::new(),
            dirty: BTreeSet::new(),
            valid_from,
        })
    }

    /// The index from which the files are valid (see the module comment);
    /// `None` while a copy from a peer is incomplete or none was ever made.
    pub fn valid_from(&self) -> Option<u64> {
        self.valid_from
    }

    pub fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}.vol"))
    }

    /// Replays one event.
    pub fn apply(&mut self, event: &VolumeEvent) -> Result<(), StoreError> {
        match event {
            VolumeEvent::Created { id, size } => {
                self.open.remove(id);
                let path = self.path(*id);
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .map_err(io(&path, "create"))?;
                f.set_len(*size).map_err(io(&path, "set length"))?;
                self.keep(*id, f);
            }
            VolumeEvent::Resized { id, old, new } => {
                let path = self.path(*id);
                let f = self.file(*id)?;
                // Truncating to the smaller size first makes every byte past
                // it zero, whatever a fuzzy copy left there.
                f.set_len(*old.min(new)).map_err(io(&path, "set length"))?;
                f.set_len(*new).map_err(io(&path, "set length"))?;
            }
            VolumeEvent::Deleted { id } => {
                self.open.remove(id);
                self.dirty.remove(id);
                let path = self.path(*id);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&path, "remove")(e)),
                }
            }
            VolumeEvent::Written { id, offset, data } => {
                let path = self.path(*id);
                write_in_blocks(self.file(*id)?, data, *offset).map_err(io(&path, "write"))?;
            }
            VolumeEvent::Zeroed { id, offset, len } => {
                let path = self.path(*id);
                zero(self.file(*id)?, *offset, *len).map_err(io(&path, "zero"))?;
            }
        }
        if let VolumeEvent::Created { id, .. }
        | VolumeEvent::Resized { id, .. }
        | VolumeEvent::Written { id, .. }
        | VolumeEvent::Zeroed { id, .. } = event
        {
            self.dirty.insert(*id);
        }
        Ok(())
    }

    /// `len` bytes at `offset`; past the end of the file (or of a missing
    /// file) they read as zeros.
    pub fn read(&mut self, id: u64, offset: u64, len: usize) -> Result<Bytes, StoreError> {
        let mut buf = vec![0u8; len];
        let path = self.path(id);
        let f = self.file(id)?;
        let mut done = 0;
        while done < len {
            match f.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io(&path, "read")(e)),
            }
        }
        Ok(Bytes::from(buf))
    }

    /// Makes every file durable as of now, then marks the store valid from
    /// `index` (the index of the last event replayed).
    pub fn sync(&mut self, index: u64) -> Result<(), StoreError> {
        self.sync_later(index)()?;
        self.valid_from = Some(index);
        Ok(())
    }

    /// `sync`, as a job for another thread: the files written since the last
    /// sync are flushed (through their own handles, while this store goes
    /// on writing: whatever lands meanwhile is at or after `index` too), then
    /// the store is marked valid from `index`.
    pub fn sync_later(
        &mut self,
        index: u64,
    ) -> impl FnOnce() -> Result<(), StoreError> + Send + 'static {
        let paths: Vec<PathBuf> = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|id| self.path(id))
            .collect();
        let dir = self.dir.clone();
        let lock = self.mark_lock.clone();
        move || {
            let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
            for path in &paths {
                match File::open(path) {
                    Ok(f) => f.sync_data().map_err(io(path, "fdatasync"))?,
                    // Deleted since: its delete is in the log after `index`.
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io(path, "open")(e)),
                }
            }
            sync_dir(&dir)?;
            write_mark(&dir, Some(index))
        }
    }

    /// Starts replacing every file by a copy from a peer: clears the mark
    /// first, so that a crash in the middle is followed by a new copy.
    pub fn begin_install(&mut self) -> Result<(), StoreError> {
        {
            let _held = self.mark_lock.lock().unwrap_or_else(|e| e.into_inner());
            write_mark(&self.dir, None)?;
        }
        self.valid_from = None;
        self.open.clear();
        self.dirty.clear();
        let entries = std::fs::read_dir(&self.dir).map_err(io(&self.dir, "list"))?;
        for entry in entries {
            let path = entry.map_err(io(&self.dir, "list"))?.path();
            if path.extension().is_some_and(|e| e == "vol") {
                std::fs::remove_file(&path).map_err(io(&path, "remove"))?;
            }
        }
        Ok(())
    }

    /// Writes copied bytes during an install.
    pub fn install_chunk(&mut self, id: u64, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        let path = self.path(id);
        write_in_blocks(self.file(id)?, data, offset).map_err(io(&path, "write"))?;
        self.dirty.insert(id);
        Ok(())
    }

    /// Sets a volume's length during an install (holes where nothing came).
    pub fn install_volume(&mut self, id: u64, size: u64) -> Result<(), StoreError> {
        self.apply(&VolumeEvent::Created { id, size })
    }

    /// A handle for serving a copy to a peer, `None` if the file is gone (the
    /// volume was deleted since).
    pub fn open_for_copy(&self, id: u64) -> Result<Option<File>, StoreError> {
        let path = self.path(id);
        match File::open(&path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, "open")(e)),
        }
    }

    /// The open file of a volume, opening (creating: a replay may write to
    /// a volume whose file a later delete already removed) if needed.
    fn file(&mut self, id: u64) -> Result<&File, StoreError> {
        if !self.open.contains_key(&id) {
            let path = self.path(id);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io(&path, "open"))?;
            self.keep(id, f);
        }
        let path = self.path(id);
        self.open.get(&id).ok_or_else(|| StoreError::Io {
            path,
            what: "open",
            source: std::io::Error::other("file handle vanished"),
        })
    }

    fn keep(&mut self, id: u64, f: File) {
        // Volume IO is random: no readahead, whose large page-cache folios
        // make every later 4 KiB write into them several times dearer.
        // SAFETY: an advisory call on a file descriptor we own.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
        if self.open.len() >= OPEN_FILES_MAX {
            self.open.pop_first();
        }
        self.open.insert(id, f);
    }
}

/// Writes `data` at `offset` in pieces that do not cross a 4 KiB block.
/// One large write makes the page cache (Linux 6.x, ext4) hold the range in
/// large folios, and each later 4 KiB write into such a folio costs several
/// times a write into a 4 KiB page (measured: 5-7 µs against 2 µs); volumes
/// take mostly small random writes, so they are kept in small pages.
fn write_in_blocks(f: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    const BLOCK: u64 = 4096;
    let mut at = 0usize;
    while at < data.len() {
        let pos = offset + at as u64;
        let room = (BLOCK - pos % BLOCK) as usize;
        let n = room.min(data.len() - at);
        f.write_all_at(&data[at..at + n], pos)?;
        at += n;
    }
    Ok(())
}

/// Writes (or with `None` removes) the "valid from" mark, durably.
fn write_mark(dir: &Path, index: Option<u64>) -> Result<(), StoreError> {
    let mark = dir.join(VALID_FILE);
    match index {
        Some(i) => {
            let tmp = dir.join(format!("{VALID_FILE}.tmp"));
            let mut f = File::create(&tmp).map_err(io(&tmp, "create"))?;
            f.write_all(format!("{i}\n").as_bytes())
                .map_err(io(&tmp, "write"))?;
            f.sync_all().map_err(io(&tmp, "fsync"))?;
            std::fs::rename(&tmp, &mark).map_err(io(&mark, "rename"))?;
        }
        None => match std::fs::remove_file(&mark) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(&mark, "remove")(e)),
        },
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "fsync directory"))
}

/// Where data starts at or after `from`, and where the hole after it
/// starts: `None` past the last data. For copying sparse files sparsely.
pub fn next_data(f: &File, from: u64) -> std::io::Result<Option<(u64, u64)>> {
    let fd = f.as_raw_fd();
    let Ok(from) = libc::off_t::try_from(from) else {
        return Ok(None);
    };
    // SAFETY: lseek on a file descriptor we own; no memory is involved.
    let start = unsafe { libc::lseek(fd, from, libc::SEEK_DATA) };
    if start < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: as above.
    let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
    if end < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Some((start as u64, end as u64)))
}

/// Zeroes a range: punches a hole (partial blocks at the edges are zeroed
/// by the file system), or writes zeros where holes are not supported.
fn zero(f: &File, offset: u64, len: u64) -> std::io::Result<()> {
    if let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) {
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate on a file descriptor we own; no memory involved.
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, off, n) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(e);
        }
    }
    let zeros = vec![0u8; ZERO_CHUNK.min(usize::try_from(len).unwrap_or(ZERO_CHUNK))];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { path, what, source }
}

#[cfg(test)]
mod tests;
