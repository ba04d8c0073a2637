//! `ferrite-wal bench`: how close group commit gets to the disk's limit.
//!
//! The cost a WAL cannot avoid is one `fdatasync` per batch, so the figure
//! that matters is batches per second as a fraction of the raw rate of small
//! synced writes on the same disk, measured in the same run (machines here
//! are shared and noisy, so absolute numbers mean little; ratios travel).
//! Two raw rates are measured: 100-byte appends that grow a plain file (what
//! a naive log does, and what most people call "small fdatasync'ed writes")
//! and 100-byte overwrites of a preallocated file (no allocation, no size
//! change: the cheapest durable write the file system offers). The WAL
//! preallocates its segments, so it is compared against both.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrite_raft::{
    Entry, HardState, Index, Membership, NodeId, Payload, Persist, Snapshot, SnapshotMeta, Term,
};

use crate::disk::join;
use crate::error::WalError;
use crate::file_disk::FileDisk;
use crate::wal::{Wal, WalOptions};

pub const ENTRY_SIZES: [usize; 3] = [100, 1024, 4096];
pub const BATCH_SIZES: [usize; 3] = [1, 16, 256];
/// Compact (snapshot and drop old segments) after this much log, so a long
/// run does not fill the disk.
const COMPACT_EVERY_BYTES: u64 = 64 << 20;

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub entry_bytes: usize,
    pub batch: usize,
    pub batches: u64,
    pub busy: Duration,
    pub latency_mean: Duration,
    pub latency_p99: Duration,
    /// The raw rate of synced 100 B appends, measured alongside this row.
    pub raw_append_per_second: f64,
    /// The raw rate of synced 100 B overwrites of preallocated space.
    pub raw_overwrite_per_second: f64,
}

impl Row {
    pub fn batches_per_second(&self) -> f64 {
        self.batches as f64 / self.busy.as_secs_f64().max(1e-9)
    }
    pub fn entries_per_second(&self) -> f64 {
        self.batches_per_second() * self.batch as f64
    }
    pub fn megabytes_per_second(&self) -> f64 {
        self.entries_per_second() * self.entry_bytes as f64 / 1e6
    }
    /// Batches per second as a fraction of the raw appending rate.
    pub fn ratio_append(&self) -> f64 {
        self.batches_per_second() / self.raw_append_per_second.max(1e-9)
    }
    /// Batches per second as a fraction of the raw overwriting rate.
    pub fn ratio_overwrite(&self) -> f64 {
        self.batches_per_second() / self.raw_overwrite_per_second.max(1e-9)
    }
}

/// Writes of 100 bytes, each followed by `fdatasync`, into a file that was
/// filled with zeros and synced beforehand: the physical limit for batches
/// per second. Overwriting allocated blocks is the cheapest durable write a
/// file system offers (no block allocation, no size change to journal), so
/// the ratio against it is an honest one.
struct RawProbe {
    file: std::fs::File,
    path: String,
    /// Overwrite preallocated space (true) or append (false).
    overwrite: bool,
    offset: u64,
    count: u64,
    busy: Duration,
}

/// Size of the probe's preallocated file; writes wrap around inside it.
const RAW_FILE_BYTES: u64 = 16 << 20;

impl RawProbe {
    fn new(dir: &str, overwrite: bool) -> Result<RawProbe, WalError> {
        let name = if overwrite {
            "raw-overwrite.bench"
        } else {
            "raw-append.bench"
        };
        let path = join(dir, name);
        let _ = std::fs::remove_file(&path);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(WalError::io(&path, "create"))?;
        if overwrite {
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..RAW_FILE_BYTES / zeros.len() as u64 {
                file.write_all(&zeros)
                    .map_err(WalError::io(&path, "fill"))?;
            }
        }
        file.sync_all().map_err(WalError::io(&path, "fsync"))?;
        Ok(RawProbe {
            file,
            path,
            overwrite,
            offset: 0,
            count: 0,
            busy: Duration::ZERO,
        })
    }

    /// Runs for `slice`, adding to the totals.
    fn run(&mut self, slice: Duration) -> Result<(), WalError> {
        use std::os::unix::fs::FileExt;
        let data = [0x5au8; 100];
        let start = Instant::now();
        while start.elapsed() < slice {
            let path = &self.path;
            self.file
                .write_all_at(&data, self.offset)
                .map_err(WalError::io(path, "write"))?;
            self.file
                .sync_data()
                .map_err(WalError::io(path, "fdatasync"))?;
            self.offset += data.len() as u64;
            if self.overwrite {
                self.offset %= RAW_FILE_BYTES - 128;
            }
            self.count += 1;
        }
        self.busy += start.elapsed();
        Ok(())
    }

    fn rate(&self) -> f64 {
        self.count as f64 / self.busy.as_secs_f64().max(1e-9)
    }
}

impl Drop for RawProbe {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Appends batches of `batch` entries of `entry_bytes` bytes (plus a hard
/// state, as a leader's persist carries) with one sync each, for about
/// `seconds` of write+sync time, in a fresh directory under `dir`.
///
/// The raw rate is measured in slices interleaved with the WAL's (50 ms
/// each), so that both see the same neighbours on a shared machine.
pub fn run_row(dir: &str, entry_bytes: usize, batch: usize, seconds: f64) -> Result<Row, WalError> {
    const SLICE: Duration = Duration::from_millis(50);
    let sub = join(dir, &format!("bench-{entry_bytes}-{batch}"));
    let _ = std::fs::remove_dir_all(&sub);
    let (mut wal, _) = Wal::open(FileDisk::new(), &sub, WalOptions::default())?;
    let mut raw_append = RawProbe::new(dir, false)?;
    let mut raw_overwrite = RawProbe::new(dir, true)?;
    let payload = Bytes::from(vec![0xa5u8; entry_bytes]);
    let term = Term(1);
    let mut next = Index(1);
    let mut latencies = Vec::new();
    let mut busy = Duration::ZERO;
    let mut since_compaction = 0u64;
    let mut slice_end = busy + SLICE;
    while busy.as_secs_f64() < seconds {
        if busy >= slice_end {
            raw_append.run(SLICE)?;
            raw_overwrite.run(SLICE)?;
            slice_end = busy + SLICE;
        }
        let entries: Vec<Entry> = (0..batch as u64)
            .map(|i| Entry {
                index: next + i,
                term,
                payload: Payload::Normal(payload.clone()),
            })
            .collect();
        let last = next + (batch as u64 - 1);
        let persist = Persist {
            hard_state: Some(HardState {
                term,
                vote: Some(NodeId(1)),
                commit: last,
            }),
            snapshot: None,
            entries,
        };
        let t = Instant::now();
        wal.write(&persist)?;
        wal.sync()?;
        let elapsed = t.elapsed();
        busy += elapsed;
        latencies.push(elapsed);
        next = last.next();
        since_compaction += (batch * entry_bytes) as u64;
        if since_compaction >= COMPACT_EVERY_BYTES {
            since_compaction = 0;
            wal.save_snapshot(&Snapshot {
                meta: SnapshotMeta {
                    index: last,
                    term,
                    membership: Membership::new([NodeId(1)]),
                },
                data: Bytes::new(),
            })?;
        }
    }
    raw_append.run(SLICE)?;
    raw_overwrite.run(SLICE)?;
    drop(wal);
    let _ = std::fs::remove_dir_all(&sub);
    latencies.sort_unstable();
    let n = latencies.len();
    let p99 = latencies[(n * 99).div_ceil(100).saturating_sub(1).min(n - 1)];
    Ok(Row {
        entry_bytes,
        batch,
        batches: n as u64,
        busy,
        latency_mean: busy / n as u32,
        latency_p99: p99,
        raw_append_per_second: raw_append.rate(),
        raw_overwrite_per_second: raw_overwrite.rate(),
    })
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Runs the whole table and prints it to `out` as rows complete.
pub fn run(dir: &str, seconds: f64, out: &mut dyn Write) -> Result<(), WalError> {
    let io_err = |e: io::Error| WalError::io("stdout", "write")(e);
    std::fs::create_dir_all(dir).map_err(WalError::io(dir, "create directory"))?;
    writeln!(
        out,
        "ferrite-wal bench in {dir}: {seconds} s of write+sync per row; raw rates of 100 B writes + fdatasync \
         (append: growing a plain file; overwrite: preallocated space), measured in slices interleaved with each row"
    )
    .map_err(io_err)?;
    writeln!(
        out,
        "{:>6} {:>6} {:>11} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "entry",
        "batch",
        "entries/s",
        "MB/s",
        "batches/s",
        "mean us",
        "p99 us",
        "append/s",
        "overw/s",
        "b/append",
        "b/overw"
    )
    .map_err(io_err)?;
    for entry_bytes in ENTRY_SIZES {
        for batch in BATCH_SIZES {
            let r = run_row(dir, entry_bytes, batch, seconds)?;
            writeln!(
                out,
                "{:>6} {:>6} {:>11.0} {:>9.2} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>8.0}% {:>8.0}%",
                r.entry_bytes,
                r.batch,
                r.entries_per_second(),
                r.megabytes_per_second(),
                r.batches_per_second(),
                micros(r.latency_mean),
                micros(r.latency_p99),
                r.raw_append_per_second,
                r.raw_overwrite_per_second,
                100.0 * r.ratio_append(),
                100.0 * r.ratio_overwrite(),
            )
            .map_err(io_err)?;
        }
    }
    Ok(())
}
