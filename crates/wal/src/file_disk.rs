//! `Disk` on real files. Handles of files the WAL writes are kept open (one
//! `open` per segment, not one per write), and reads of files without a
//! handle open them for the one read. Preallocation (zero-filling the next
//! segment) runs on a background thread so that it never sits between a
//! batch and its `fdatasync`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::thread::JoinHandle;

use crate::disk::Disk;
use crate::lock::DirLock;

#[derive(Debug, Default)]
pub struct FileDisk {
    files: HashMap<String, File>,
    locks: HashMap<String, DirLock>,
    preallocating: HashMap<String, JoinHandle<io::Result<()>>>,
}

impl FileDisk {
    pub fn new() -> FileDisk {
        FileDisk::default()
    }

    fn handle(&mut self, path: &str) -> io::Result<&mut File> {
        if !self.files.contains_key(path) {
            // Not O_APPEND: on Linux that would make `write_at` append.
            let file = OpenOptions::new().read(true).write(true).open(path)?;
            self.files.insert(path.to_string(), file);
        }
        self.files
            .get_mut(path)
            .ok_or_else(|| io::Error::other("file handle vanished"))
    }
}

/// Writes `len` zero bytes to a new file at `path` and syncs it.
fn zero_fill(path: &str, len: u64) -> io::Result<()> {
    let mut file = File::create(path)?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    file.sync_all()
}

impl Drop for FileDisk {
    /// Background preallocation ends with the disk, so that it never races
    /// a later user of the same directory.
    fn drop(&mut self) {
        for (_, handle) in self.preallocating.drain() {
            let _ = handle.join();
        }
    }
}

impl Disk for FileDisk {
    fn create(&mut self, path: &str) -> io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        self.files.insert(path.to_string(), file);
        Ok(())
    }

    fn open(&mut self, path: &str) -> io::Result<()> {
        self.handle(path).map(|_| ())
    }

    fn append(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let file = self.handle(path)?;
        let end = file.metadata()?.len();
        file.write_all_at(data, end)
    }

    fn write_at(&mut self, path: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.handle(path)?.write_all_at(data, offset)
    }

    fn read_at(&self, path: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self.files.get(path) {
            Some(file) => file.read_exact_at(buf, offset),
            None => File::open(path)?.read_exact_at(buf, offset),
        }
    }

    /// A read-only shared mapping. Snapshot files are written once under a
    /// temporary name and renamed; they are never written or truncated
    /// after, only removed, which leaves an existing mapping valid.
    fn map(&self, path: &str) -> io::Result<bytes::Bytes> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(bytes::Bytes::new());
        }
        // SAFETY: the file is never modified in place once written (see
        // above), so the mapped bytes cannot change under the `Bytes`.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(bytes::Bytes::from_owner(map))
    }

    fn len(&self, path: &str) -> io::Result<u64> {
        match self.files.get(path) {
            Some(file) => Ok(file.metadata()?.len()),
            None => Ok(fs::metadata(path)?.len()),
        }
    }

    fn truncate(&mut self, path: &str, len: u64) -> io::Result<()> {
        self.handle(path)?.set_len(len)
    }

    fn sync_data(&mut self, path: &str) -> io::Result<()> {
        self.handle(path)?.sync_data()
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(from, to)?;
        self.files.remove(to);
        if let Some(file) = self.files.remove(from) {
            self.files.insert(to.to_string(), file);
        }
        Ok(())
    }

    fn remove(&mut self, path: &str) -> io::Result<()> {
        self.files.remove(path);
        fs::remove_file(path)
    }

    fn list_dir(&self, dir: &str) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            // Names that are not UTF-8 cannot be ours; skip them.
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn create_dir(&mut self, dir: &str) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn sync_dir(&mut self, dir: &str) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock_dir(&mut self, dir: &str) -> io::Result<()> {
        let lock = DirLock::acquire(Path::new(dir))?;
        self.locks.insert(dir.to_string(), lock);
        Ok(())
    }

    fn unlock_dir(&mut self, dir: &str) {
        self.locks.remove(dir);
    }

    fn preallocate(&mut self, path: &str, len: u64) -> io::Result<()> {
        self.files.remove(path);
        if let Some(previous) = self.preallocating.remove(path) {
            let _ = previous.join();
        }
        let owned = path.to_string();
        let handle = std::thread::Builder::new()
            .name("wal-prealloc".into())
            .spawn(move || zero_fill(&owned, len))?;
        self.preallocating.insert(path.to_string(), handle);
        Ok(())
    }

    fn preallocated(&mut self, path: &str) -> io::Result<bool> {
        let Some(handle) = self.preallocating.remove(path) else {
            return Ok(false);
        };
        match handle.join() {
            Ok(result) => result.map(|()| true),
            Err(_) => Err(io::Error::other("preallocation thread panicked")),
        }
    }
}
