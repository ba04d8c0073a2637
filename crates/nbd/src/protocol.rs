//! The NBD wire format: magics, option, reply, command and flag values, and
//! the fixed-size headers with their encoders and decoders. Values follow
//! `doc/proto.md` of github.com/NetworkBlockDevice/nbd; all integers are
//! big-endian. Decoders take byte slices and never panic, so a fuzz target can
//! drive them directly.

/// Server greeting, also the oldstyle `INIT_PASSWD` (ASCII "NBDMAGIC").
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// Newstyle greeting and option request magic (ASCII "IHAVEOPT").
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every fixed-newstyle option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Transmission flags.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
pub const FLAG_READ_ONLY: u16 = 1 << 1;
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const FLAG_SEND_FUA: u16 = 1 << 3;
pub const FLAG_ROTATIONAL: u16 = 1 << 4;
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const FLAG_SEND_DF: u16 = 1 << 7;
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;

// Option reply types; errors have bit 31 set.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REP_ERR_POLICY: u32 = (1 << 31) + 2;
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub const REP_ERR_TLS_REQD: u32 = (1 << 31) + 5;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
pub const REP_ERR_SHUTDOWN: u32 = (1 << 31) + 7;
pub const REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;

// Information types in `NBD_REP_INFO` (and requested in `NBD_OPT_INFO`/`GO`).
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

// Error values of a reply.
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const ENOMEM: u32 = 12;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

/// What this server announces in its greeting.
pub const HANDSHAKE_FLAGS: u16 = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES;
/// The client flags this server understands; any other bit closes the connection.
pub const CLIENT_FLAGS_KNOWN: u32 = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;
/// Writes are durable on a majority before they are answered, so FUA and
/// FLUSH cost nothing extra, and every connection sees every answered write:
/// multi-conn is honest.
pub const TRANSMISSION_FLAGS: u16 = FLAG_HAS_FLAGS
    | FLAG_SEND_FLUSH
    | FLAG_SEND_FUA
    | FLAG_SEND_TRIM
    | FLAG_SEND_WRITE_ZEROES
    | FLAG_CAN_MULTI_CONN;

/// Advertised block size constraints (`NBD_INFO_BLOCK_SIZE`).
pub const BLOCK_SIZE_MIN: u32 = 1;
pub const BLOCK_SIZE_PREFERRED: u32 = 4096;
/// The longest READ, WRITE or WRITE_ZEROES served (2^25, the spec's
/// interoperable maximum). TRIM is not bound by it.
pub const BLOCK_SIZE_MAX: u32 = 32 << 20;

pub const GREETING_LEN: usize = 18;
pub const OPTION_HEADER_LEN: usize = 16;
pub const REQUEST_HEADER_LEN: usize = 28;
pub const SIMPLE_REPLY_LEN: usize = 16;
/// The 124 reserved zero bytes after an `NBD_OPT_EXPORT_NAME` reply.
pub const EXPORT_NAME_PADDING: usize = 124;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("bad option magic {0:#018x}")]
    OptionMagic(u64),
    #[error("bad request magic {0:#010x}")]
    RequestMagic(u32),
}

/// The server's first 18 bytes.
pub fn encode_greeting() -> [u8; GREETING_LEN] {
    let mut out = [0; GREETING_LEN];
    out[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    out[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    out[16..].copy_from_slice(&HANDSHAKE_FLAGS.to_be_bytes());
    out
}

/// An option request header; `length` bytes of option data follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub length: u32,
}

impl OptionHeader {
    pub fn decode(raw: &[u8; OPTION_HEADER_LEN]) -> Result<OptionHeader, ProtocolError> {
        let magic = be_u64(&raw[..8]);
        if magic != IHAVEOPT {
            return Err(ProtocolError::OptionMagic(magic));
        }
        Ok(OptionHeader {
            option: be_u32(&raw[8..12]),
            length: be_u32(&raw[12..16]),
        })
    }

    pub fn encode(&self) -> [u8; OPTION_HEADER_LEN] {
        let mut out = [0; OPTION_HEADER_LEN];
        out[..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
        out[8..12].copy_from_slice(&self.option.to_be_bytes());
        out[12..].copy_from_slice(&self.length.to_be_bytes());
        out
    }
}

/// One fixed-newstyle option reply: header and data.
pub fn encode_option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply.to_be_bytes());
    // Option replies carry names, messages and fixed info records, all far
    // below 4 GiB; saturate rather than wrap if a caller ever breaks that.
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// The data of an `NBD_OPT_INFO` or `NBD_OPT_GO`: an export name and the
/// information types the client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: Vec<u8>,
    pub requests: Vec<u16>,
}

impl InfoRequest {
    /// None if the lengths inside do not add up to `data.len()`.
    pub fn decode(data: &[u8]) -> Option<InfoRequest> {
        let (name_len, rest) = data.split_first_chunk::<4>()?;
        let name_len = usize::try_from(u32::from_be_bytes(*name_len)).ok()?;
        if name_len > rest.len() {
            return None;
        }
        let (name, rest) = rest.split_at(name_len);
        let (count, rest) = rest.split_first_chunk::<2>()?;
        if rest.len() != usize::from(u16::from_be_bytes(*count)) * 2 {
            return None;
        }
        let requests = rest
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        Some(InfoRequest {
            name: name.to_vec(),
            requests,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(
            &u32::try_from(self.name.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(&self.name);
        out.extend_from_slice(
            &u16::try_from(self.requests.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        for request in &self.requests {
            out.extend_from_slice(&request.to_be_bytes());
        }
        out
    }
}

/// `NBD_INFO_EXPORT`: size and transmission flags.
pub fn encode_info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut out = INFO_EXPORT.to_be_bytes().to_vec();
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out
}

/// `NBD_INFO_BLOCK_SIZE` with this server's constraints.
pub fn encode_info_block_size() -> Vec<u8> {
    let mut out = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
    for value in [BLOCK_SIZE_MIN, BLOCK_SIZE_PREFERRED, BLOCK_SIZE_MAX] {
        out.extend_from_slice(&value.to_be_bytes());
    }
    out
}

/// `NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION`: a type and a string.
pub fn encode_info_string(info: u16, text: &str) -> Vec<u8> {
    let mut out = info.to_be_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

/// `NBD_REP_SERVER`: one export name.
pub fn encode_rep_server(name: &str) -> Vec<u8> {
    let mut out = u32::try_from(name.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(name.as_bytes());
    out
}

/// A transmission request header; a WRITE's `length` bytes follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub flags: u16,
    pub command: u16,
    pub handle: u64,
    pub offset: u64,
    pub length: u32,
}

impl RequestHeader {
    pub fn decode(raw: &[u8; REQUEST_HEADER_LEN]) -> Result<RequestHeader, ProtocolError> {
        let magic = be_u32(&raw[..4]);
        if magic != REQUEST_MAGIC {
            return Err(ProtocolError::RequestMagic(magic));
        }
        Ok(RequestHeader {
            flags: be_u16(&raw[4..6]),
            command: be_u16(&raw[6..8]),
            handle: be_u64(&raw[8..16]),
            offset: be_u64(&raw[16..24]),
            length: be_u32(&raw[24..28]),
        })
    }

    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut out = [0; REQUEST_HEADER_LEN];
        out[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        out[4..6].copy_from_slice(&self.flags.to_be_bytes());
        out[6..8].copy_from_slice(&self.command.to_be_bytes());
        out[8..16].copy_from_slice(&self.handle.to_be_bytes());
        out[16..24].copy_from_slice(&self.offset.to_be_bytes());
        out[24..].copy_from_slice(&self.length.to_be_bytes());
        out
    }
}

/// A simple reply header; a successful READ's data follows it.
pub fn encode_simple_reply(error: u32, handle: u64) -> [u8; SIMPLE_REPLY_LEN] {
    let mut out = [0; SIMPLE_REPLY_LEN];
    out[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.to_be_bytes());
    out[8..].copy_from_slice(&handle.to_be_bytes());
    out
}

// The callers pass slices of fixed-size arrays, so the lengths always match;
// a mismatch would read as zero rather than panic.
fn be_u16(b: &[u8]) -> u16 {
    b.try_into().map(u16::from_be_bytes).unwrap_or(0)
}

fn be_u32(b: &[u8]) -> u32 {
    b.try_into().map(u32::from_be_bytes).unwrap_or(0)
}

fn be_u64(b: &[u8]) -> u64 {
    b.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let request = RequestHeader {
            flags: CMD_FLAG_FUA,
            command: CMD_WRITE,
            handle: 7,
            offset: 1 << 40,
            length: 513,
        };
        assert_eq!(RequestHeader::decode(&request.encode()), Ok(request));
        let option = OptionHeader {
            option: OPT_GO,
            length: 12,
        };
        assert_eq!(OptionHeader::decode(&option.encode()), Ok(option));
    }

    #[test]
    fn bad_magics_are_errors() {
        assert_eq!(
            RequestHeader::decode(&[0xff; 28]),
            Err(ProtocolError::RequestMagic(u32::MAX))
        );
        assert_eq!(
            OptionHeader::decode(&[0; 16]),
            Err(ProtocolError::OptionMagic(0))
        );
    }

    #[test]
    fn info_request_checks_lengths() {
        let request = InfoRequest {
            name: b"disk0".to_vec(),
            requests: vec![INFO_NAME, INFO_BLOCK_SIZE],
        };
        let data = request.encode();
        assert_eq!(InfoRequest::decode(&data), Some(request));
        for cut in 0..data.len() {
            assert_eq!(InfoRequest::decode(&data[..cut]), None, "cut={cut}");
        }
        let mut long = data.clone();
        long.push(0);
        assert_eq!(InfoRequest::decode(&long), None);
        // A name length pointing past the end.
        assert_eq!(InfoRequest::decode(&[0xff, 0xff, 0xff, 0xff, 0, 0]), None);
    }
}
