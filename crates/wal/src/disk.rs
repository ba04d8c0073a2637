//! The narrow interface through which the WAL touches storage. Everything is
//! addressed by path so that an in-memory disk can model crashes exactly:
//! file data becomes durable on `sync_data`, and names (create, rename,
//! remove) become durable only on `sync_dir` of their directory, which is
//! what POSIX promises and what careless storage code forgets.

use std::io;

/// Path-based storage operations. Paths use `/` as separator; a file's
/// directory is everything before the last `/`.
///
/// Contract for implementations:
/// - `create`, `rename` and `remove` change the namespace at once, but a
///   crash may undo them until `sync_dir` of the parent directory returns.
/// - `append` and `truncate` change a file at once, but a crash may undo them
///   (partly: an append may survive as any prefix) until `sync_data` returns.
/// - `lock_dir` fails with `io::ErrorKind::WouldBlock` while someone else
///   holds the lock.
pub trait Disk {
    /// Creates an empty file, replacing any file of that name.
    fn create(&mut self, path: &str) -> io::Result<()>;
    /// Prepares an existing file for appends; fails if it does not exist.
    fn open(&mut self, path: &str) -> io::Result<()>;
    fn append(&mut self, path: &str, data: &[u8]) -> io::Result<()>;
    /// Writes `data` at `offset`, overwriting and/or extending the file.
    fn write_at(&mut self, path: &str, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Fills `buf` from `offset`; reading past the end is an error.
    fn read_at(&self, path: &str, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn len(&self, path: &str) -> io::Result<u64>;
    fn truncate(&mut self, path: &str, len: u64) -> io::Result<()>;
    /// `fdatasync`: the file's data (and size) are durable once this returns.
    fn sync_data(&mut self, path: &str) -> io::Result<()>;
    /// Replaces `to` atomically if it exists.
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    fn remove(&mut self, path: &str) -> io::Result<()>;
    /// The names (not paths) in `dir`, sorted.
    fn list_dir(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Creates `dir` and its parents; succeeds if it exists.
    fn create_dir(&mut self, dir: &str) -> io::Result<()>;
    /// Makes the directory's entries durable.
    fn sync_dir(&mut self, dir: &str) -> io::Result<()>;
    /// Takes the exclusive lock on `dir`, held until `unlock_dir` (or until
    /// the process, or the simulated node, dies).
    fn lock_dir(&mut self, dir: &str) -> io::Result<()>;
    fn unlock_dir(&mut self, dir: &str);

    /// Starts making `path` a durable file of `len` zero bytes, possibly in
    /// the background. Later writes into it are overwrites of allocated
    /// blocks, and an `fdatasync` after an overwrite needs no journal commit
    /// for block allocation, which on common file systems costs more than
    /// the data itself. Disks where that does not matter do nothing.
    fn preallocate(&mut self, path: &str, len: u64) -> io::Result<()> {
        let _ = (path, len);
        Ok(())
    }

    /// Waits for `preallocate(path)` to finish: `true` if `path` is now a
    /// durable, zero-filled file (its name still needs a `sync_dir`),
    /// `false` if nothing was preallocated.
    fn preallocated(&mut self, path: &str) -> io::Result<bool> {
        let _ = path;
        Ok(false)
    }

    /// The whole file as `Bytes`, for files that never change once
    /// written (snapshot files): on real files a read-only memory map, so
    /// that holding a snapshot costs page cache the kernel may reclaim,
    /// not heap. Other disks read it into memory.
    fn map(&self, path: &str) -> io::Result<bytes::Bytes> {
        let len = usize::try_from(self.len(path)?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large to map"))?;
        let mut buf = vec![0u8; len];
        self.read_at(path, 0, &mut buf)?;
        Ok(bytes::Bytes::from(buf))
    }
}

/// Tells the kernel that `data`'s pages will not be needed soon: pages of a
/// file mapping (see `Disk::map`) leave this process's resident set, to be
/// read again from the page cache or the file when touched. Harmless on any
/// other memory (anonymous pages are only swapped, if there is swap).
pub fn page_out(data: &[u8]) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf reads a constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let start = data.as_ptr() as usize;
        let first = start & !(page - 1);
        let end = start + data.len();
        // Whole pages inside `data` only, so that no neighbouring memory is
        // advised.
        let first_whole = if first == start { first } else { first + page };
        let last_whole = end & !(page - 1);
        if last_whole > first_whole {
            // SAFETY: MADV_PAGEOUT is a hint that never changes the
            // contents of memory: file pages are re-read, anonymous pages
            // swapped back in. The range lies within `data`.
            unsafe {
                libc::madvise(
                    first_whole as *mut libc::c_void,
                    last_whole - first_whole,
                    libc::MADV_PAGEOUT,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = data;
}

/// Lets a caller keep ownership of its disk and lend it to a `Wal`: the
/// simulator keeps one `MemDisk` per node across crashes.
impl<D: Disk + ?Sized> Disk for &mut D {
    fn create(&mut self, path: &str) -> io::Result<()> {
        (**self).create(path)
    }
    fn open(&mut self, path: &str) -> io::Result<()> {
        (**self).open(path)
    }
    fn append(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        (**self).append(path, data)
    }
    fn write_at(&mut self, path: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        (**self).write_at(path, offset, data)
    }
    fn read_at(&self, path: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(path, offset, buf)
    }
    fn len(&self, path: &str) -> io::Result<u64> {
        (**self).len(path)
    }
    fn truncate(&mut self, path: &str, len: u64) -> io::Result<()> {
        (**self).truncate(path, len)
    }
    fn sync_data(&mut self, path: &str) -> io::Result<()> {
        (**self).sync_data(path)
    }
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        (**self).rename(from, to)
    }
    fn remove(&mut self, path: &str) -> io::Result<()> {
        (**self).remove(path)
    }
    fn list_dir(&self, dir: &str) -> io::Result<Vec<String>> {
        (**self).list_dir(dir)
    }
    fn create_dir(&mut self, dir: &str) -> io::Result<()> {
        (**self).create_dir(dir)
    }
    fn sync_dir(&mut self, dir: &str) -> io::Result<()> {
        (**self).sync_dir(dir)
    }
    fn lock_dir(&mut self, dir: &str) -> io::Result<()> {
        (**self).lock_dir(dir)
    }
    fn unlock_dir(&mut self, dir: &str) {
        (**self).unlock_dir(dir)
    }
    fn preallocate(&mut self, path: &str, len: u64) -> io::Result<()> {
        (**self).preallocate(path, len)
    }
    fn preallocated(&mut self, path: &str) -> io::Result<bool> {
        (**self).preallocated(path)
    }
    fn map(&self, path: &str) -> io::Result<bytes::Bytes> {
        (**self).map(path)
    }
}

/// `dir/name`, without doubling a trailing separator.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        return name.to_string();
    }
    format!("{}/{}", dir.trim_end_matches('/'), name)
}

/// The directory part of `path` (empty for a bare name).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// Normalizes a directory name so that paths built from it compare equal.
pub(crate) fn normalize_dir(dir: &str) -> String {
    let trimmed = dir.trim_end_matches('/');
    if trimmed.is_empty() && dir.starts_with('/') {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(join("a/b", "c"), "a/b/c");
        assert_eq!(join("a/b/", "c"), "a/b/c");
        assert_eq!(parent("a/b/c"), "a/b");
        assert_eq!(parent("c"), "");
        assert_eq!(normalize_dir("x/y//"), "x/y");
    }
}
