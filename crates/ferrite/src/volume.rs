//! `ferrite volume ...`: manage block volumes and move bytes in and out of
//! them from scripts (`write` from a file or stdin, `read` to stdout). Bulk
//! IO is better done over NBD; this is for small edits and checks.

use std::io::{Read, Write};

use anyhow::Context as _;
use ferrite_client::{Client, VOLUME_IO_BYTES_MAX};

#[derive(clap::Subcommand)]
pub enum VolumeOp {
    /// Create a volume of the given size (e.g. 64MiB, 1GiB, 4096).
    Create {
        name: String,
        #[arg(long, value_parser = parse_size)]
        size: u64,
    },
    /// Every volume with its size.
    List,
    /// Grow or shrink a volume.
    Resize {
        name: String,
        #[arg(long, value_parser = parse_size)]
        size: u64,
    },
    Delete {
        name: String,
    },
    /// Write a file (or stdin with `-` or nothing) at an offset.
    Write {
        name: String,
        #[arg(long, value_parser = parse_size, default_value = "0")]
        offset: u64,
        file: Option<String>,
    },
    /// Read bytes to stdout.
    Read {
        name: String,
        #[arg(long, value_parser = parse_size, default_value = "0")]
        offset: u64,
        #[arg(long, value_parser = parse_size)]
        length: u64,
    },
}

pub async fn run(c: &mut Client, op: VolumeOp) -> anyhow::Result<()> {
    match op {
        VolumeOp::Create { name, size } => {
            let v = c.volume_create(&name, size).await?;
            println!("created {} ({} bytes)", v.name, v.size);
        }
        VolumeOp::List => {
            for v in c.volume_list().await? {
                println!("{}\t{}", v.name, v.size);
            }
        }
        VolumeOp::Resize { name, size } => {
            let v = c.volume_resize(&name, size).await?;
            println!("resized {} to {} bytes", v.name, v.size);
        }
        VolumeOp::Delete { name } => {
            c.volume_delete(&name).await?;
            println!("deleted {name}");
        }
        VolumeOp::Write { name, offset, file } => {
            let mut input: Box<dyn Read> = match file.as_deref() {
                None | Some("-") => Box::new(std::io::stdin()),
                Some(path) => {
                    Box::new(std::fs::File::open(path).with_context(|| format!("open {path}"))?)
                }
            };
            let mut at = offset;
            let mut buf = vec![0u8; VOLUME_IO_BYTES_MAX];
            loop {
                let n = read_full(&mut input, &mut buf)?;
                if n == 0 {
                    break;
                }
                c.volume_write(&name, at, buf[..n].to_vec()).await?;
                at += n as u64;
            }
            eprintln!("wrote {} bytes at offset {offset}", at - offset);
        }
        VolumeOp::Read {
            name,
            offset,
            length,
        } => {
            let mut out = std::io::stdout().lock();
            let mut done = 0u64;
            while done < length {
                let n = (length - done).min(VOLUME_IO_BYTES_MAX as u64);
                let data = c.volume_read(&name, offset + done, n).await?;
                out.write_all(&data).context("write to stdout")?;
                done += n;
            }
            out.flush().context("write to stdout")?;
        }
    }
    Ok(())
}

/// Fills `buf` as far as the input goes; 0 at the end.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> anyhow::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("read input"),
        }
    }
    Ok(n)
}

/// `4096`, `64KiB`, `64K`, `1MiB`, `1GiB`, `2TiB` (binary), or `1MB`,
/// `1GB` (decimal).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 4096, 64MiB, 1GiB)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}
