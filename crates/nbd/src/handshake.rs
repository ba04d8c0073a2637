//! Fixed-newstyle negotiation: the greeting, the client's flags, then option
//! haggling until the client picks an export (`NBD_OPT_GO` or
//! `NBD_OPT_EXPORT_NAME`) or leaves (`NBD_OPT_ABORT`).
//!
//! Options are answered one at a time; an option this server does not know is
//! refused with `NBD_REP_ERR_UNSUP` and haggling goes on, as fixed newstyle
//! requires. Only what leaves the stream untrustworthy (a bad magic, unknown
//! client flags) or what the protocol gives no way to refuse (an unknown
//! `NBD_OPT_EXPORT_NAME`) closes the connection.
//!
//! With TLS configured the server requires it, as `qemu-nbd --tls-creds` and
//! `nbdkit --tls=require` do: before `NBD_OPT_STARTTLS` every option but
//! STARTTLS and ABORT is refused with `NBD_REP_ERR_TLS_REQD` (and
//! `NBD_OPT_EXPORT_NAME`, which cannot be refused, closes the connection);
//! after it, the rest of the negotiation and transmission run over TLS.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::protocol::*;
use super::{Client, ExportAccess, ExportError, Exports, NbdError, OPTION_DATA_MAX};

/// The export a client chose; transmission serves it.
#[derive(Debug, Clone)]
pub(crate) struct Export {
    pub name: String,
    pub size: u64,
    /// Who connected: every request is made as this client.
    pub client: Client,
    /// What `Exports::authorize` granted.
    pub access: ExportAccess,
}

impl Export {
    pub fn read_only(&self) -> bool {
        self.access == ExportAccess::ReadOnly
    }
}

/// The transmission flags of an export: a read-only one says so and does
/// not offer trim or write-zeroes (as `qemu-nbd -r` and nbdkit do).
pub(crate) fn transmission_flags(access: ExportAccess) -> u16 {
    match access {
        ExportAccess::ReadWrite => TRANSMISSION_FLAGS,
        ExportAccess::ReadOnly => {
            (TRANSMISSION_FLAGS | FLAG_READ_ONLY) & !(FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES)
        }
    }
}

/// Shown to clients that ask for `NBD_INFO_DESCRIPTION`.
const DESCRIPTION: &str = "Ferrite replicated volume";

/// Runs the whole handshake in the clear. Ok(None) if the client aborted.
pub(crate) async fn negotiate<S, E>(io: &mut S, exports: &E) -> Result<Option<Export>, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    E: Exports,
{
    let no_zeroes = greet(io).await?;
    haggle(io, exports, no_zeroes, &Client::default()).await
}

/// The greeting and the client's flags; returns whether the client asked
/// for no zeroes.
pub(crate) async fn greet<S>(io: &mut S) -> Result<bool, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    io.write_all(&encode_greeting()).await?;
    let client_flags = io.read_u32().await?;
    if client_flags & !CLIENT_FLAGS_KNOWN != 0 {
        return Err(NbdError::ClientFlags(client_flags));
    }
    Ok(client_flags & FLAG_C_NO_ZEROES != 0)
}

/// Reads one option header and its data; None if the data was too long (it
/// has been skipped and refused).
async fn next_option<S>(io: &mut S) -> Result<Option<(u32, Vec<u8>)>, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut raw = [0; OPTION_HEADER_LEN];
    io.read_exact(&mut raw).await?;
    let header = OptionHeader::decode(&raw)?;
    if header.length > OPTION_DATA_MAX {
        if header.option == OPT_EXPORT_NAME {
            return Err(NbdError::OptionTooBig(header.length));
        }
        discard(io, header.length).await?;
        let message = format!("option data is limited to {OPTION_DATA_MAX} bytes");
        reply(io, header.option, REP_ERR_TOO_BIG, message.as_bytes()).await?;
        return Ok(None);
    }
    let mut data = vec![0; header.length as usize];
    io.read_exact(&mut data).await?;
    Ok(Some((header.option, data)))
}

/// Option haggling before TLS, on a server that requires it: true once the
/// client sent NBD_OPT_STARTTLS (acknowledged; the caller runs the TLS
/// handshake next), false if it aborted.
pub(crate) async fn until_starttls<S>(io: &mut S) -> Result<bool, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let Some((option, data)) = next_option(io).await? else {
            continue;
        };
        match option {
            OPT_STARTTLS if data.is_empty() => {
                reply(io, OPT_STARTTLS, REP_ACK, &[]).await?;
                return Ok(true);
            }
            OPT_STARTTLS => {
                reply(
                    io,
                    option,
                    REP_ERR_INVALID,
                    b"NBD_OPT_STARTTLS takes no data",
                )
                .await?;
            }
            OPT_ABORT => {
                let _ = reply(io, OPT_ABORT, REP_ACK, &[]).await;
                return Ok(false);
            }
            OPT_EXPORT_NAME => return Err(NbdError::TlsRequired),
            other => {
                reply(
                    io,
                    other,
                    REP_ERR_TLS_REQD,
                    b"TLS is required (NBD_OPT_STARTTLS)",
                )
                .await?
            }
        }
    }
}

/// Option haggling until the client picks an export. Ok(None) if the client
/// aborted.
pub(crate) async fn haggle<S, E>(
    io: &mut S,
    exports: &E,
    no_zeroes: bool,
    client: &Client,
) -> Result<Option<Export>, NbdError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    E: Exports,
{
    loop {
        let Some((option, data)) = next_option(io).await? else {
            continue;
        };
        match option {
            OPT_EXPORT_NAME => {
                return export_name(io, exports, data, no_zeroes, client)
                    .await
                    .map(Some)
            }
            OPT_ABORT => {
                // The client may close without waiting for the ACK.
                let _ = reply(io, OPT_ABORT, REP_ACK, &[]).await;
                return Ok(None);
            }
            OPT_LIST => list(io, exports, &data, client).await?,
            OPT_INFO => {
                info(io, exports, OPT_INFO, &data, client).await?;
            }
            OPT_GO => {
                if let Some(export) = info(io, exports, OPT_GO, &data, client).await? {
                    return Ok(Some(export));
                }
            }
            OPT_STARTTLS if client.tls => {
                reply(io, option, REP_ERR_INVALID, b"TLS is already negotiated").await?
            }
            other => reply(io, other, REP_ERR_UNSUP, &[]).await?,
        }
    }
}

/// The old way to end negotiation: no error can be returned, so an unknown
/// export closes the connection.
async fn export_name<S, E>(
    io: &mut S,
    exports: &E,
    name: Vec<u8>,
    no_zeroes: bool,
    client: &Client,
) -> Result<Export, NbdError>
where
    S: AsyncWrite + Unpin,
    E: Exports,
{
    let name = String::from_utf8(name).map_err(|e| NbdError::UnknownExport(lossy(e.as_bytes())))?;
    if name.is_empty() {
        return Err(NbdError::UnknownExport(name));
    }
    let access = exports.authorize(client, &name).await?;
    let size = match lookup(exports, client, &name).await? {
        Some(size) => size,
        None => return Err(NbdError::UnknownExport(name)),
    };
    let mut out = Vec::with_capacity(10 + EXPORT_NAME_PADDING);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&transmission_flags(access).to_be_bytes());
    if !no_zeroes {
        out.resize(out.len() + EXPORT_NAME_PADDING, 0);
    }
    io.write_all(&out).await?;
    Ok(Export {
        name,
        size,
        client: client.clone(),
        access,
    })
}

async fn list<S, E>(io: &mut S, exports: &E, data: &[u8], client: &Client) -> Result<(), NbdError>
where
    S: AsyncWrite + Unpin,
    E: Exports,
{
    if !data.is_empty() {
        return reply(io, OPT_LIST, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data").await;
    }
    match exports.list(client).await {
        Ok(names) => {
            for name in names {
                reply(io, OPT_LIST, REP_SERVER, &encode_rep_server(&name)).await?;
            }
            reply(io, OPT_LIST, REP_ACK, &[]).await
        }
        Err(e) => reply(io, OPT_LIST, backend_error(&e), e.to_string().as_bytes()).await,
    }
}

/// `NBD_OPT_INFO` and `NBD_OPT_GO` share their format; on success the export
/// is returned, and for GO the caller enters transmission.
async fn info<S, E>(
    io: &mut S,
    exports: &E,
    option: u32,
    data: &[u8],
    client: &Client,
) -> Result<Option<Export>, NbdError>
where
    S: AsyncWrite + Unpin,
    E: Exports,
{
    let Some(request) = InfoRequest::decode(data) else {
        reply(io, option, REP_ERR_INVALID, b"malformed info request").await?;
        return Ok(None);
    };
    let Ok(name) = String::from_utf8(request.name) else {
        reply(io, option, REP_ERR_INVALID, b"export name is not UTF-8").await?;
        return Ok(None);
    };
    if name.is_empty() {
        reply(io, option, REP_ERR_UNKNOWN, b"there is no default export").await?;
        return Ok(None);
    }
    // Permission first: a refused client learns nothing of the export.
    let access = match exports.authorize(client, &name).await {
        Ok(access) => access,
        Err(e) => {
            reply(io, option, backend_error(&e), e.to_string().as_bytes()).await?;
            return Ok(None);
        }
    };
    let size = match lookup(exports, client, &name).await {
        Ok(Some(size)) => size,
        Ok(None) => {
            let message = format!("no export named {name:?}");
            reply(io, option, REP_ERR_UNKNOWN, message.as_bytes()).await?;
            return Ok(None);
        }
        Err(e) => {
            reply(io, option, backend_error(&e), e.to_string().as_bytes()).await?;
            return Ok(None);
        }
    };
    reply(
        io,
        option,
        REP_INFO,
        &encode_info_export(size, transmission_flags(access)),
    )
    .await?;
    // Sent unasked too: the limits hold either way, and a client that did not
    // ask is free to ignore them.
    reply(io, option, REP_INFO, &encode_info_block_size()).await?;
    if request.requests.contains(&INFO_NAME) {
        reply(io, option, REP_INFO, &encode_info_string(INFO_NAME, &name)).await?;
    }
    if request.requests.contains(&INFO_DESCRIPTION) {
        reply(
            io,
            option,
            REP_INFO,
            &encode_info_string(INFO_DESCRIPTION, DESCRIPTION),
        )
        .await?;
    }
    reply(io, option, REP_ACK, &[]).await?;
    Ok(Some(Export {
        name,
        size,
        client: client.clone(),
        access,
    }))
}

/// There is no default export: the empty name is unknown, as is any name the
/// store does not have.
async fn lookup<E: Exports>(
    exports: &E,
    client: &Client,
    name: &str,
) -> Result<Option<u64>, ExportError> {
    if name.is_empty() {
        return Ok(None);
    }
    exports.size(client, name).await
}

/// Option errors have no "I/O error"; a store that cannot answer is reported
/// as the export (or list) being unavailable for now, with the reason as the
/// message. The client may retry.
fn backend_error(error: &ExportError) -> u32 {
    match error {
        ExportError::NotFound | ExportError::OutOfRange => REP_ERR_UNKNOWN,
        ExportError::Denied(_) => REP_ERR_POLICY,
        ExportError::Unavailable(_) | ExportError::Io(_) => REP_ERR_SHUTDOWN,
    }
}

async fn reply<S: AsyncWrite + Unpin>(
    io: &mut S,
    option: u32,
    reply: u32,
    data: &[u8],
) -> Result<(), NbdError> {
    io.write_all(&encode_option_reply(option, reply, data))
        .await?;
    Ok(())
}

/// Reads and drops `len` bytes, keeping the stream in step without holding them.
pub(crate) async fn discard<S: AsyncRead + Unpin>(io: &mut S, len: u32) -> Result<(), NbdError> {
    let copied = tokio::io::copy(&mut io.take(u64::from(len)), &mut tokio::io::sink()).await?;
    if copied < u64::from(len) {
        return Err(NbdError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
