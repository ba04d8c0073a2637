//! The smallest NBD client the block clients need: fixed newstyle
//! negotiation with NBD_OPT_GO, then one READ or WRITE at a time with simple
//! replies. Built on the server's protocol constants and encoders, so what
//! it speaks is what the server parses.

use std::io;
use std::net::SocketAddr;

use ferrite_nbd::protocol::{
    encode_greeting, InfoRequest, OptionHeader, RequestHeader, CMD_READ, CMD_WRITE,
    FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, GREETING_LEN, OPTION_REPLY_MAGIC, OPT_GO, REP_ACK,
    SIMPLE_REPLY_MAGIC,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Option replies longer than this are refused (ours are a few bytes).
const OPTION_REPLY_BYTES_MAX: u32 = 64 << 10;

pub struct NbdClient {
    stream: TcpStream,
    next_handle: u64,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl NbdClient {
    pub async fn connect(addr: SocketAddr, export: &str) -> io::Result<NbdClient> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut greeting = [0; GREETING_LEN];
        stream.read_exact(&mut greeting).await?;
        // Our server's greeting, flags included: what this client expects.
        if greeting != encode_greeting() {
            return Err(invalid(format!("unexpected greeting {greeting:02x?}")));
        }
        stream
            .write_u32(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)
            .await?;
        let go = InfoRequest {
            name: export.as_bytes().to_vec(),
            requests: Vec::new(),
        }
        .encode();
        let header = OptionHeader {
            option: OPT_GO,
            length: go.len() as u32,
        };
        stream.write_all(&header.encode()).await?;
        stream.write_all(&go).await?;
        loop {
            let magic = stream.read_u64().await?;
            if magic != OPTION_REPLY_MAGIC {
                return Err(invalid(format!("option reply magic {magic:#x}")));
            }
            let _option = stream.read_u32().await?;
            let reply = stream.read_u32().await?;
            let len = stream.read_u32().await?;
            if len > OPTION_REPLY_BYTES_MAX {
                return Err(invalid(format!("option reply of {len} bytes")));
            }
            let mut data = vec![0; len as usize];
            stream.read_exact(&mut data).await?;
            if reply == REP_ACK {
                break;
            }
            if reply & 0x8000_0000 != 0 {
                return Err(invalid(format!(
                    "export {export:?} refused: error reply {reply:#x} {}",
                    String::from_utf8_lossy(&data)
                )));
            }
        }
        Ok(NbdClient {
            stream,
            next_handle: 1,
        })
    }

    async fn request(
        &mut self,
        command: u16,
        offset: u64,
        length: u32,
        data: &[u8],
    ) -> io::Result<Vec<u8>> {
        let handle = self.next_handle;
        self.next_handle += 1;
        let header = RequestHeader {
            flags: 0,
            command,
            handle,
            offset,
            length,
        };
        self.stream.write_all(&header.encode()).await?;
        self.stream.write_all(data).await?;
        let magic = self.stream.read_u32().await?;
        if magic != SIMPLE_REPLY_MAGIC {
            return Err(invalid(format!("reply magic {magic:#x}")));
        }
        let error = self.stream.read_u32().await?;
        let got = self.stream.read_u64().await?;
        if got != handle {
            return Err(invalid(format!("reply to handle {got}, expected {handle}")));
        }
        if error != 0 {
            return Err(io::Error::other(format!("NBD error {error}")));
        }
        let mut out = Vec::new();
        if command == CMD_READ {
            out.resize(length as usize, 0);
            self.stream.read_exact(&mut out).await?;
        }
        Ok(out)
    }

    pub async fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| invalid("write too large".into()))?;
        self.request(CMD_WRITE, offset, len, data).await.map(|_| ())
    }

    pub async fn read(&mut self, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        self.request(CMD_READ, offset, len, &[]).await
    }
}
