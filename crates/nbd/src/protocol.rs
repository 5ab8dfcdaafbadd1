//! The NBD wire format: constants, message types, parsing and serialization.
//!
//! Nothing here does I/O. Every parser takes a byte slice and returns a value or a
//! [`ProtocolError`]; none of them panics, whatever the input (a property test and a fuzz
//! target check that). All integers on the wire are big-endian.
//!
//! | Message | Direction | Layout |
//! |---|---|---|
//! | greeting | S→C | `NBDMAGIC` u64, `IHAVEOPT` u64, handshake flags u16 |
//! | client flags | C→S | u32 |
//! | option | C→S | `IHAVEOPT` u64, option u32, length u32, data |
//! | option reply | S→C | [`OPTION_REPLY_MAGIC`] u64, option u32, reply type u32, length u32, data |
//! | `NBD_OPT_EXPORT_NAME` reply | S→C | size u64, transmission flags u16, 124 zero bytes unless `NO_ZEROES` |
//! | request | C→S | [`REQUEST_MAGIC`] u32, command flags u16, type u16, cookie u64, offset u64, length u32, then `length` bytes for a write |
//! | simple reply | S→C | [`SIMPLE_REPLY_MAGIC`] u32, error u32, cookie u64, then the data of a successful read |
//! | structured reply chunk | S→C | [`STRUCTURED_REPLY_MAGIC`] u32, flags u16, type u16, cookie u64, length u32, payload |

use std::fmt;

use thiserror::Error;

// ---------------------------------------------------------------------------------------------
// Magic numbers

/// `NBDMAGIC`: the first eight bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the second eight bytes of the greeting, and the start of every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
/// The start of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// The start of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// The start of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// The start of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// ---------------------------------------------------------------------------------------------
// Handshake flags

/// Server handshake flag: fixed newstyle negotiation.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Server handshake flag: may omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: do not send the 124 zero bytes.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;
/// Every client flag this server knows; any other bit closes the connection.
pub const KNOWN_CLIENT_FLAGS: u32 = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;

// ---------------------------------------------------------------------------------------------
// Transmission flags

/// Always set.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
/// The export is read-only: writes, trims and write-zeroes fail with `EPERM`.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// `NBD_CMD_FLUSH` is supported.
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
/// `NBD_CMD_FLAG_FUA` is supported.
pub const FLAG_SEND_FUA: u16 = 1 << 3;
/// The export behaves like a rotational medium.
pub const FLAG_ROTATIONAL: u16 = 1 << 4;
/// `NBD_CMD_TRIM` is supported.
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
/// `NBD_CMD_WRITE_ZEROES` is supported.
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// `NBD_CMD_FLAG_DF` is supported on reads (structured replies only).
pub const FLAG_SEND_DF: u16 = 1 << 7;
/// Flushes and FUA are visible across all connections: clients may use several.
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
/// `NBD_CMD_RESIZE` is supported (never set here).
pub const FLAG_SEND_RESIZE: u16 = 1 << 9;
/// `NBD_CMD_CACHE` is supported (never set here).
pub const FLAG_SEND_CACHE: u16 = 1 << 10;
/// `NBD_CMD_FLAG_FAST_ZERO` is supported (never set here).
pub const FLAG_SEND_FAST_ZERO: u16 = 1 << 11;

// ---------------------------------------------------------------------------------------------
// Options and option replies

/// `NBD_OPT_EXPORT_NAME`: pick an export and enter transmission (no error possible).
pub const OPT_EXPORT_NAME: u32 = 1;
/// `NBD_OPT_ABORT`: end the session.
pub const OPT_ABORT: u32 = 2;
/// `NBD_OPT_LIST`: list the exports.
pub const OPT_LIST: u32 = 3;
/// `NBD_OPT_STARTTLS`: not supported here (`NBD_REP_ERR_UNSUP`).
pub const OPT_STARTTLS: u32 = 5;
/// `NBD_OPT_INFO`: describe an export.
pub const OPT_INFO: u32 = 6;
/// `NBD_OPT_GO`: describe an export and enter transmission.
pub const OPT_GO: u32 = 7;
/// `NBD_OPT_STRUCTURED_REPLY`: use structured replies in transmission.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// `NBD_OPT_LIST_META_CONTEXT`: list metadata contexts.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// `NBD_OPT_SET_META_CONTEXT`: select metadata contexts for `NBD_CMD_BLOCK_STATUS`.
pub const OPT_SET_META_CONTEXT: u32 = 10;
/// `NBD_OPT_EXTENDED_HEADERS`: not supported here (`NBD_REP_ERR_UNSUP`).
pub const OPT_EXTENDED_HEADERS: u32 = 11;

/// `NBD_REP_ACK`: the option succeeded (or a list ended).
pub const REP_ACK: u32 = 1;
/// `NBD_REP_SERVER`: one export of a list.
pub const REP_SERVER: u32 = 2;
/// `NBD_REP_INFO`: one piece of export information.
pub const REP_INFO: u32 = 3;
/// `NBD_REP_META_CONTEXT`: one metadata context.
pub const REP_META_CONTEXT: u32 = 4;
/// Bit 31 marks error replies.
pub const REP_ERR_BIT: u32 = 1 << 31;
/// `NBD_REP_ERR_UNSUP`: unknown option.
pub const REP_ERR_UNSUP: u32 = REP_ERR_BIT | 1;
/// `NBD_REP_ERR_POLICY`: forbidden by policy.
pub const REP_ERR_POLICY: u32 = REP_ERR_BIT | 2;
/// `NBD_REP_ERR_INVALID`: syntactically invalid option.
pub const REP_ERR_INVALID: u32 = REP_ERR_BIT | 3;
/// `NBD_REP_ERR_PLATFORM`: not supported on this platform.
pub const REP_ERR_PLATFORM: u32 = REP_ERR_BIT | 4;
/// `NBD_REP_ERR_TLS_REQD`: TLS required.
pub const REP_ERR_TLS_REQD: u32 = REP_ERR_BIT | 5;
/// `NBD_REP_ERR_UNKNOWN`: no such export.
pub const REP_ERR_UNKNOWN: u32 = REP_ERR_BIT | 6;
/// `NBD_REP_ERR_SHUTDOWN`: the server is shutting down.
pub const REP_ERR_SHUTDOWN: u32 = REP_ERR_BIT | 7;
/// `NBD_REP_ERR_BLOCK_SIZE_REQD`: the client must ask for block sizes.
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_ERR_BIT | 8;
/// `NBD_REP_ERR_TOO_BIG`: a string or the option is too large.
pub const REP_ERR_TOO_BIG: u32 = REP_ERR_BIT | 9;

/// `NBD_INFO_EXPORT`: size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// `NBD_INFO_NAME`: the export's canonical name.
pub const INFO_NAME: u16 = 1;
/// `NBD_INFO_DESCRIPTION`: a human-readable description.
pub const INFO_DESCRIPTION: u16 = 2;
/// `NBD_INFO_BLOCK_SIZE`: minimum, preferred and maximum block sizes.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// The one metadata context served: allocation status from the device's range query.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// The context id given to `base:allocation`.
pub const BASE_ALLOCATION_ID: u32 = 1;

// ---------------------------------------------------------------------------------------------
// Transmission

/// `NBD_CMD_READ`.
pub const CMD_READ: u16 = 0;
/// `NBD_CMD_WRITE`.
pub const CMD_WRITE: u16 = 1;
/// `NBD_CMD_DISC`: orderly disconnect, no reply.
pub const CMD_DISC: u16 = 2;
/// `NBD_CMD_FLUSH`.
pub const CMD_FLUSH: u16 = 3;
/// `NBD_CMD_TRIM`.
pub const CMD_TRIM: u16 = 4;
/// `NBD_CMD_CACHE` (not advertised: refused with `EINVAL`).
pub const CMD_CACHE: u16 = 5;
/// `NBD_CMD_WRITE_ZEROES`.
pub const CMD_WRITE_ZEROES: u16 = 6;
/// `NBD_CMD_BLOCK_STATUS`.
pub const CMD_BLOCK_STATUS: u16 = 7;

/// Command flag: force unit access (persist before replying).
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag (write-zeroes): do not punch a hole.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// Command flag (read): reply in one content chunk.
pub const CMD_FLAG_DF: u16 = 1 << 2;
/// Command flag (block status): one extent is enough.
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
/// Command flag (write-zeroes): fail fast rather than write slowly (not advertised).
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

/// Structured reply flag: the last chunk of a reply.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
/// Chunk type: nothing more (success unless an error chunk came before).
pub const REPLY_TYPE_NONE: u16 = 0;
/// Chunk type: data at an offset.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Chunk type: a range that reads as zeros.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Chunk type: block status descriptors for one metadata context.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Chunk type: an error.
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;
/// Chunk type: an error at an offset.
pub const REPLY_TYPE_ERROR_OFFSET: u16 = (1 << 15) | 2;

/// `base:allocation` flag: the range is not allocated.
pub const STATE_HOLE: u32 = 1 << 0;
/// `base:allocation` flag: the range reads as zeros.
pub const STATE_ZERO: u32 = 1 << 1;

// ---------------------------------------------------------------------------------------------
// Sizes and limits

/// Bytes of the greeting.
pub const GREETING_SIZE: usize = 18;
/// Bytes of an option header (magic, option, length).
pub const OPTION_HEADER_SIZE: usize = 16;
/// Bytes of an option reply header.
pub const OPTION_REPLY_HEADER_SIZE: usize = 20;
/// Bytes of a request header.
pub const REQUEST_SIZE: usize = 28;
/// Bytes of a simple reply header.
pub const SIMPLE_REPLY_SIZE: usize = 16;
/// Bytes of a structured reply chunk header.
pub const STRUCTURED_HEADER_SIZE: usize = 20;
/// Largest read or write payload accepted (32 MiB); also the advertised maximum block size.
pub const MAX_REQUEST_SIZE: u32 = 32 << 20;
/// Longest string (export name, query, message) accepted, as the protocol requires.
pub const MAX_STRING: usize = 4096;
/// Longest option data read; a longer option closes the connection (it would otherwise have
/// to be read and skipped, byte by byte, on the client's say-so).
pub const MAX_OPTION_DATA: u32 = 64 << 10;

// ---------------------------------------------------------------------------------------------
// Errors

/// A message that cannot be parsed. The variant tells the caller what to answer.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// A magic number is wrong: the stream cannot be trusted any more (hard disconnect).
    #[error("bad magic 0x{got:x} (expected 0x{expected:x})")]
    BadMagic {
        /// The magic expected.
        expected: u64,
        /// The magic received.
        got: u64,
    },
    /// The client set flags this server does not know (hard disconnect, as the spec requires).
    #[error("unknown client flags 0x{0:x}")]
    UnknownClientFlags(u32),
    /// An option's data is longer than [`MAX_OPTION_DATA`] (hard disconnect).
    #[error("option data of {0} bytes is larger than the {MAX_OPTION_DATA}-byte limit")]
    OptionTooLarge(u32),
    /// A message ended early (`NBD_REP_ERR_INVALID` for an option).
    #[error("{what}: needs {need} bytes, got {got}")]
    Truncated {
        /// What was being parsed.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// A message had bytes left over (`NBD_REP_ERR_INVALID`).
    #[error("{what}: {extra} unexpected trailing bytes")]
    TrailingData {
        /// What was being parsed.
        what: &'static str,
        /// Bytes left over.
        extra: usize,
    },
    /// A string longer than [`MAX_STRING`] (`NBD_REP_ERR_TOO_BIG`).
    #[error("string of {0} bytes is longer than {MAX_STRING}")]
    StringTooLong(usize),
    /// A string that is not UTF-8 or contains NUL (`NBD_REP_ERR_INVALID`).
    #[error("string is not valid UTF-8 without NUL")]
    BadString,
    /// A count that cannot fit in the message (`NBD_REP_ERR_INVALID`).
    #[error("{what}: count {count} does not fit in the message")]
    BadCount {
        /// What was being counted.
        what: &'static str,
        /// The count received.
        count: u64,
    },
}

impl ProtocolError {
    /// The option reply type that answers an option with this error.
    pub fn option_reply_type(&self) -> u32 {
        match self {
            ProtocolError::StringTooLong(_) | ProtocolError::OptionTooLarge(_) => REP_ERR_TOO_BIG,
            _ => REP_ERR_INVALID,
        }
    }
}

/// The NBD error values a reply can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Errno {
    /// `EPERM`: writing to a read-only export.
    Perm = 1,
    /// `EIO`: the device failed.
    Io = 5,
    /// `ENOMEM`: out of memory.
    NoMem = 12,
    /// `EINVAL`: bad request (unknown command or flag, misaligned, read past the end, ...).
    Inval = 22,
    /// `ENOSPC`: a write past the end of the export.
    NoSpc = 28,
    /// `EOVERFLOW`: too large to answer unfragmented.
    Overflow = 75,
    /// `ENOTSUP`: operation not supported.
    NotSup = 95,
    /// `ESHUTDOWN`: the server (or the device) is going away.
    Shutdown = 108,
}

impl Errno {
    /// Every value, for tables and tests.
    pub const ALL: [Errno; 8] = [
        Errno::Perm,
        Errno::Io,
        Errno::NoMem,
        Errno::Inval,
        Errno::NoSpc,
        Errno::Overflow,
        Errno::NotSup,
        Errno::Shutdown,
    ];

    /// The value on the wire.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The value for a wire code, if it is one of the defined ones.
    pub fn from_code(code: u32) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.code() == code)
    }

    /// The C name (`"EINVAL"`).
    pub const fn name(self) -> &'static str {
        match self {
            Errno::Perm => "EPERM",
            Errno::Io => "EIO",
            Errno::NoMem => "ENOMEM",
            Errno::Inval => "EINVAL",
            Errno::NoSpc => "ENOSPC",
            Errno::Overflow => "EOVERFLOW",
            Errno::NotSup => "ENOTSUP",
            Errno::Shutdown => "ESHUTDOWN",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

// ---------------------------------------------------------------------------------------------
// A bounds-checked cursor

/// Reads big-endian fields from a slice; every read is bounds-checked.
#[derive(Debug)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    /// A cursor over `buf`, naming `what` in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Cursor { buf, pos: 0, what }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(ProtocolError::Truncated {
                what: self.what,
                need: self.pos.saturating_add(n),
                got: self.buf.len(),
            })?;
        let b = &self.buf[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let b = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A big-endian u64.
    pub fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A string of `len` bytes: at most [`MAX_STRING`], UTF-8, no NUL.
    pub fn string(&mut self, len: usize) -> Result<String, ProtocolError> {
        if len > MAX_STRING {
            return Err(ProtocolError::StringTooLong(len));
        }
        let b = self.bytes(len)?;
        let s = std::str::from_utf8(b).map_err(|_| ProtocolError::BadString)?;
        if s.contains('\0') {
            return Err(ProtocolError::BadString);
        }
        Ok(s.to_owned())
    }

    /// A string preceded by its u32 length.
    pub fn string32(&mut self) -> Result<String, ProtocolError> {
        let len = self.u32()?;
        let len = usize::try_from(len).map_err(|_| ProtocolError::StringTooLong(usize::MAX))?;
        self.string(len)
    }

    /// Fails if bytes are left.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(ProtocolError::TrailingData {
                what: self.what,
                extra,
            }),
        }
    }
}

fn put_string32(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

// ---------------------------------------------------------------------------------------------
// Handshake messages

/// The server's first message: `NBDMAGIC`, `IHAVEOPT`, handshake flags.
pub fn greeting(handshake_flags: u16) -> [u8; GREETING_SIZE] {
    let mut b = [0u8; GREETING_SIZE];
    b[0..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[16..18].copy_from_slice(&handshake_flags.to_be_bytes());
    b
}

/// Parses the greeting (client side, for tests): the handshake flags.
pub fn parse_greeting(b: &[u8]) -> Result<u16, ProtocolError> {
    let mut c = Cursor::new(b, "greeting");
    let magic = c.u64()?;
    if magic != NBDMAGIC {
        return Err(ProtocolError::BadMagic {
            expected: NBDMAGIC,
            got: magic,
        });
    }
    let opt = c.u64()?;
    if opt != IHAVEOPT {
        return Err(ProtocolError::BadMagic {
            expected: IHAVEOPT,
            got: opt,
        });
    }
    let flags = c.u16()?;
    c.finish()?;
    Ok(flags)
}

/// Parses the client flags; unknown bits are an error.
pub fn parse_client_flags(b: &[u8]) -> Result<u32, ProtocolError> {
    let mut c = Cursor::new(b, "client flags");
    let flags = c.u32()?;
    c.finish()?;
    if flags & !KNOWN_CLIENT_FLAGS != 0 {
        return Err(ProtocolError::UnknownClientFlags(flags));
    }
    Ok(flags)
}

/// The header of a client option.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OptionHeader {
    /// The option code (`NBD_OPT_*`).
    pub option: u32,
    /// The length of the data that follows.
    pub length: u32,
}

impl OptionHeader {
    /// Parses the 16-byte header: the magic must be `IHAVEOPT` and the length at most
    /// [`MAX_OPTION_DATA`].
    pub fn parse(b: &[u8]) -> Result<OptionHeader, ProtocolError> {
        let mut c = Cursor::new(b, "option header");
        let magic = c.u64()?;
        if magic != IHAVEOPT {
            return Err(ProtocolError::BadMagic {
                expected: IHAVEOPT,
                got: magic,
            });
        }
        let option = c.u32()?;
        let length = c.u32()?;
        c.finish()?;
        if length > MAX_OPTION_DATA {
            return Err(ProtocolError::OptionTooLarge(length));
        }
        Ok(OptionHeader { option, length })
    }

    /// The wire form.
    pub fn to_bytes(&self) -> [u8; OPTION_HEADER_SIZE] {
        let mut b = [0u8; OPTION_HEADER_SIZE];
        b[0..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
        b[8..12].copy_from_slice(&self.option.to_be_bytes());
        b[12..16].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

/// The data of `NBD_OPT_INFO` and `NBD_OPT_GO`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InfoRequest {
    /// The export asked about.
    pub export: String,
    /// The `NBD_INFO_*` items the client asks for.
    pub requests: Vec<u16>,
}

/// The data of `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MetaContextRequest {
    /// The export the contexts are for.
    pub export: String,
    /// The queries (empty: all contexts, for a list).
    pub queries: Vec<String>,
}

/// A parsed client option.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientOption {
    /// `NBD_OPT_EXPORT_NAME`.
    ExportName(String),
    /// `NBD_OPT_ABORT`.
    Abort,
    /// `NBD_OPT_LIST`.
    List,
    /// `NBD_OPT_STARTTLS`.
    StartTls,
    /// `NBD_OPT_INFO`.
    Info(InfoRequest),
    /// `NBD_OPT_GO`.
    Go(InfoRequest),
    /// `NBD_OPT_STRUCTURED_REPLY`.
    StructuredReply,
    /// `NBD_OPT_LIST_META_CONTEXT`.
    ListMetaContext(MetaContextRequest),
    /// `NBD_OPT_SET_META_CONTEXT`.
    SetMetaContext(MetaContextRequest),
    /// Any other option (its data is kept for echoing nothing back: `NBD_REP_ERR_UNSUP`).
    Unknown(u32),
}

fn parse_info(data: &[u8]) -> Result<InfoRequest, ProtocolError> {
    let mut c = Cursor::new(data, "NBD_OPT_INFO/GO");
    let export = c.string32()?;
    let n = c.u16()?;
    if usize::from(n) * 2 != c.remaining() {
        return Err(ProtocolError::BadCount {
            what: "information requests",
            count: u64::from(n),
        });
    }
    let mut requests = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        requests.push(c.u16()?);
    }
    c.finish()?;
    Ok(InfoRequest { export, requests })
}

fn parse_meta(data: &[u8]) -> Result<MetaContextRequest, ProtocolError> {
    let mut c = Cursor::new(data, "NBD_OPT_*_META_CONTEXT");
    let export = c.string32()?;
    let n = c.u32()?;
    // Each query takes at least its 4-byte length: a larger count cannot be honest.
    if u64::from(n) * 4 > c.remaining() as u64 {
        return Err(ProtocolError::BadCount {
            what: "queries",
            count: u64::from(n),
        });
    }
    let mut queries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        queries.push(c.string32()?);
    }
    c.finish()?;
    Ok(MetaContextRequest { export, queries })
}

fn no_data(data: &[u8], what: &'static str) -> Result<(), ProtocolError> {
    Cursor::new(data, what).finish()
}

impl ClientOption {
    /// Parses option `code` with its `data`.
    pub fn parse(code: u32, data: &[u8]) -> Result<ClientOption, ProtocolError> {
        Ok(match code {
            OPT_EXPORT_NAME => {
                // The name is the whole data, with no length prefix.
                ClientOption::ExportName(
                    Cursor::new(data, "NBD_OPT_EXPORT_NAME").string(data.len())?,
                )
            }
            OPT_ABORT => {
                no_data(data, "NBD_OPT_ABORT")?;
                ClientOption::Abort
            }
            OPT_LIST => {
                no_data(data, "NBD_OPT_LIST")?;
                ClientOption::List
            }
            OPT_STARTTLS => {
                no_data(data, "NBD_OPT_STARTTLS")?;
                ClientOption::StartTls
            }
            OPT_INFO => ClientOption::Info(parse_info(data)?),
            OPT_GO => ClientOption::Go(parse_info(data)?),
            OPT_STRUCTURED_REPLY => {
                no_data(data, "NBD_OPT_STRUCTURED_REPLY")?;
                ClientOption::StructuredReply
            }
            OPT_LIST_META_CONTEXT => ClientOption::ListMetaContext(parse_meta(data)?),
            OPT_SET_META_CONTEXT => ClientOption::SetMetaContext(parse_meta(data)?),
            other => ClientOption::Unknown(other),
        })
    }

    /// The option code.
    pub fn code(&self) -> u32 {
        match self {
            ClientOption::ExportName(_) => OPT_EXPORT_NAME,
            ClientOption::Abort => OPT_ABORT,
            ClientOption::List => OPT_LIST,
            ClientOption::StartTls => OPT_STARTTLS,
            ClientOption::Info(_) => OPT_INFO,
            ClientOption::Go(_) => OPT_GO,
            ClientOption::StructuredReply => OPT_STRUCTURED_REPLY,
            ClientOption::ListMetaContext(_) => OPT_LIST_META_CONTEXT,
            ClientOption::SetMetaContext(_) => OPT_SET_META_CONTEXT,
            ClientOption::Unknown(code) => *code,
        }
    }

    /// The option's data (what [`ClientOption::parse`] reads back).
    pub fn to_data(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            ClientOption::ExportName(name) => out.extend_from_slice(name.as_bytes()),
            ClientOption::Info(r) | ClientOption::Go(r) => {
                put_string32(&mut out, &r.export);
                out.extend_from_slice(&(r.requests.len() as u16).to_be_bytes());
                for q in &r.requests {
                    out.extend_from_slice(&q.to_be_bytes());
                }
            }
            ClientOption::ListMetaContext(r) | ClientOption::SetMetaContext(r) => {
                put_string32(&mut out, &r.export);
                out.extend_from_slice(&(r.queries.len() as u32).to_be_bytes());
                for q in &r.queries {
                    put_string32(&mut out, q);
                }
            }
            ClientOption::Abort
            | ClientOption::List
            | ClientOption::StartTls
            | ClientOption::StructuredReply
            | ClientOption::Unknown(_) => {}
        }
        out
    }

    /// The whole option as sent by a client: header and data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let data = self.to_data();
        let mut out = OptionHeader {
            option: self.code(),
            length: data.len() as u32,
        }
        .to_bytes()
        .to_vec();
        out.extend_from_slice(&data);
        out
    }
}

/// An option reply, as sent by the server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OptionReply {
    /// The option answered.
    pub option: u32,
    /// `NBD_REP_*`.
    pub reply_type: u32,
    /// The reply's data.
    pub data: Vec<u8>,
}

impl OptionReply {
    /// Appends the wire form of a reply to `out`.
    pub fn write(out: &mut Vec<u8>, option: u32, reply_type: u32, data: &[u8]) {
        out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
        out.extend_from_slice(&option.to_be_bytes());
        out.extend_from_slice(&reply_type.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
    }

    /// Appends an error reply with a message (truncated to [`MAX_STRING`] bytes at a char
    /// boundary).
    pub fn write_error(out: &mut Vec<u8>, option: u32, reply_type: u32, message: &str) {
        OptionReply::write(out, option, reply_type, truncate(message).as_bytes());
    }

    /// Parses the 20-byte header (client side): (option, reply type, data length).
    pub fn parse_header(b: &[u8]) -> Result<(u32, u32, u32), ProtocolError> {
        let mut c = Cursor::new(b, "option reply header");
        let magic = c.u64()?;
        if magic != OPTION_REPLY_MAGIC {
            return Err(ProtocolError::BadMagic {
                expected: OPTION_REPLY_MAGIC,
                got: magic,
            });
        }
        let r = (c.u32()?, c.u32()?, c.u32()?);
        c.finish()?;
        Ok(r)
    }
}

fn truncate(s: &str) -> &str {
    if s.len() <= MAX_STRING {
        return s;
    }
    let mut end = MAX_STRING;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The data of an `NBD_REP_INFO` reply carrying `NBD_INFO_EXPORT`.
pub fn info_export(size: u64, transmission_flags: u16) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0..2].copy_from_slice(&INFO_EXPORT.to_be_bytes());
    b[2..10].copy_from_slice(&size.to_be_bytes());
    b[10..12].copy_from_slice(&transmission_flags.to_be_bytes());
    b
}

/// The data of an `NBD_REP_INFO` reply carrying `NBD_INFO_BLOCK_SIZE`.
pub fn info_block_size(minimum: u32, preferred: u32, maximum: u32) -> [u8; 14] {
    let mut b = [0u8; 14];
    b[0..2].copy_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    b[2..6].copy_from_slice(&minimum.to_be_bytes());
    b[6..10].copy_from_slice(&preferred.to_be_bytes());
    b[10..14].copy_from_slice(&maximum.to_be_bytes());
    b
}

/// The data of an `NBD_REP_INFO` reply carrying a string item (`NBD_INFO_NAME`,
/// `NBD_INFO_DESCRIPTION`).
pub fn info_string(info: u16, s: &str) -> Vec<u8> {
    let mut b = info.to_be_bytes().to_vec();
    b.extend_from_slice(truncate(s).as_bytes());
    b
}

/// The data of an `NBD_REP_SERVER` reply.
pub fn rep_server(name: &str) -> Vec<u8> {
    let mut b = Vec::new();
    put_string32(&mut b, name);
    b
}

/// The data of an `NBD_REP_META_CONTEXT` reply.
pub fn rep_meta_context(id: u32, name: &str) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend_from_slice(name.as_bytes());
    b
}

/// The reply to `NBD_OPT_EXPORT_NAME`: size, flags, and 124 zeros unless `no_zeroes`.
pub fn export_name_reply(size: u64, transmission_flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(134);
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&transmission_flags.to_be_bytes());
    if !no_zeroes {
        b.extend_from_slice(&[0u8; 124]);
    }
    b
}

// ---------------------------------------------------------------------------------------------
// Transmission messages

/// A request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Request {
    /// Command flags (`NBD_CMD_FLAG_*`).
    pub flags: u16,
    /// Command type (`NBD_CMD_*`).
    pub command: u16,
    /// The client's cookie, echoed in the reply.
    pub cookie: u64,
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes (of the write payload that follows, for a write).
    pub length: u32,
}

impl Request {
    /// Parses a 28-byte request header; the magic must be [`REQUEST_MAGIC`].
    pub fn parse(b: &[u8]) -> Result<Request, ProtocolError> {
        let mut c = Cursor::new(b, "request");
        let magic = c.u32()?;
        if magic != REQUEST_MAGIC {
            return Err(ProtocolError::BadMagic {
                expected: u64::from(REQUEST_MAGIC),
                got: u64::from(magic),
            });
        }
        let r = Request {
            flags: c.u16()?,
            command: c.u16()?,
            cookie: c.u64()?,
            offset: c.u64()?,
            length: c.u32()?,
        };
        c.finish()?;
        Ok(r)
    }

    /// The wire form of the header.
    pub fn to_bytes(&self) -> [u8; REQUEST_SIZE] {
        let mut b = [0u8; REQUEST_SIZE];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.command.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    /// Bytes of payload that follow the header on the wire (the data of a write).
    pub fn payload_len(&self) -> u32 {
        if self.command == CMD_WRITE {
            self.length
        } else {
            0
        }
    }
}

/// What a validated request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Read `length` bytes at `offset`.
    Read {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        length: u32,
    },
    /// Write the payload at `offset`; with `fua`, flush before replying.
    Write {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        length: u32,
        /// Force unit access.
        fua: bool,
    },
    /// Flush.
    Flush,
    /// Discard a range (already shrunk to whole blocks; may be empty).
    Trim {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        length: u32,
        /// Force unit access.
        fua: bool,
    },
    /// Make a range read as zeros.
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        length: u32,
        /// Force unit access.
        fua: bool,
    },
    /// Report allocation of a range.
    BlockStatus {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        length: u32,
        /// One extent is enough.
        req_one: bool,
    },
    /// Orderly disconnect.
    Disconnect,
}

/// What the transmission phase checks requests against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransmissionParams {
    /// Export size in bytes.
    pub size: u64,
    /// The transmission flags sent to the client.
    pub flags: u16,
    /// Whether structured replies were negotiated.
    pub structured: bool,
    /// Whether `base:allocation` was selected.
    pub block_status: bool,
    /// Offsets and lengths of reads, writes and write-zeroes must be multiples of this.
    pub min_block: u32,
    /// Largest read or write.
    pub max_payload: u32,
}

/// Why a request was refused: the error to reply with and a message for humans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The NBD error.
    pub errno: Errno,
    /// A human-readable reason (sent in structured error chunks).
    pub message: String,
}

fn refuse(errno: Errno, message: impl Into<String>) -> Refusal {
    Refusal {
        errno,
        message: message.into(),
    }
}

impl Request {
    /// Checks the request against the negotiated parameters: command known and advertised,
    /// flags allowed, within the export, aligned, no larger than the limit. Errors follow the
    /// spec: `EINVAL` for unknown commands and flags, misaligned or oversized requests and
    /// reads past the end; `ENOSPC` for writes, trims and write-zeroes past the end; `EPERM`
    /// for writes, trims and write-zeroes on a read-only export.
    pub fn validate(&self, p: &TransmissionParams) -> Result<Command, Refusal> {
        let fua_ok = p.flags & FLAG_SEND_FUA != 0;
        let mut allowed = if fua_ok { CMD_FLAG_FUA } else { 0 };
        let read_only = p.flags & FLAG_READ_ONLY != 0;
        let advertised = |flag: u16| p.flags & flag != 0;
        let (name, writes, needs) = match self.command {
            CMD_READ => {
                if advertised(FLAG_SEND_DF) {
                    allowed |= CMD_FLAG_DF;
                }
                ("read", false, None)
            }
            CMD_WRITE => ("write", true, None),
            CMD_DISC => return Ok(Command::Disconnect),
            CMD_FLUSH => ("flush", false, Some(FLAG_SEND_FLUSH)),
            CMD_TRIM => ("trim", true, Some(FLAG_SEND_TRIM)),
            CMD_WRITE_ZEROES => {
                allowed |= CMD_FLAG_NO_HOLE;
                ("write-zeroes", true, Some(FLAG_SEND_WRITE_ZEROES))
            }
            CMD_BLOCK_STATUS => {
                allowed |= CMD_FLAG_REQ_ONE;
                ("block-status", false, None)
            }
            other => {
                return Err(refuse(Errno::Inval, format!("unknown command {other}")));
            }
        };
        if self.flags & !allowed != 0 {
            return Err(refuse(
                Errno::Inval,
                format!("{name}: unsupported command flags 0x{:x}", self.flags),
            ));
        }
        if writes && read_only {
            return Err(refuse(
                Errno::Perm,
                format!("{name}: the export is read-only"),
            ));
        }
        if let Some(flag) = needs
            && !advertised(flag)
        {
            return Err(refuse(Errno::Inval, format!("{name}: not supported")));
        }
        let fua = self.flags & CMD_FLAG_FUA != 0;
        if self.command == CMD_FLUSH {
            return Ok(Command::Flush);
        }
        if self.command == CMD_BLOCK_STATUS && !p.block_status {
            return Err(refuse(
                Errno::Inval,
                "block-status: no metadata context was selected",
            ));
        }
        let (offset, length) = (self.offset, self.length);
        if matches!(self.command, CMD_READ | CMD_WRITE) && length > p.max_payload {
            return Err(refuse(
                Errno::Inval,
                format!(
                    "{name}: {length} bytes is over the {}-byte request limit",
                    p.max_payload
                ),
            ));
        }
        let end = offset.checked_add(u64::from(length));
        if end.is_none_or(|e| e > p.size) {
            let errno = if writes { Errno::NoSpc } else { Errno::Inval };
            return Err(refuse(
                errno,
                format!(
                    "{name}: {length} bytes at {offset} is past the end of the export ({} bytes)",
                    p.size
                ),
            ));
        }
        let block = u64::from(p.min_block.max(1));
        let aligned = offset % block == 0 && u64::from(length) % block == 0;
        match self.command {
            CMD_READ | CMD_WRITE | CMD_WRITE_ZEROES if !aligned => Err(refuse(
                Errno::Inval,
                format!("{name}: offset and length must be multiples of {block}"),
            )),
            CMD_READ => Ok(Command::Read { offset, length }),
            CMD_WRITE => Ok(Command::Write {
                offset,
                length,
                fua,
            }),
            CMD_WRITE_ZEROES => {
                if length == 0 {
                    return Err(refuse(Errno::Inval, "write-zeroes: zero length"));
                }
                Ok(Command::WriteZeroes {
                    offset,
                    length,
                    fua,
                })
            }
            CMD_TRIM => {
                // Trim is a hint: shrink it to the whole blocks it covers.
                let start = offset.div_ceil(block) * block;
                let stop = (offset + u64::from(length)) / block * block;
                let length = stop.saturating_sub(start) as u32;
                Ok(Command::Trim {
                    offset: start,
                    length,
                    fua,
                })
            }
            _ => {
                if length == 0 {
                    return Err(refuse(Errno::Inval, "block-status: zero length"));
                }
                Ok(Command::BlockStatus {
                    offset,
                    length,
                    req_one: self.flags & CMD_FLAG_REQ_ONE != 0,
                })
            }
        }
    }
}

/// The 16-byte simple reply header.
pub fn simple_reply(cookie: u64, error: u32) -> [u8; SIMPLE_REPLY_SIZE] {
    let mut b = [0u8; SIMPLE_REPLY_SIZE];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// Appends a structured chunk header.
pub fn structured_header(out: &mut Vec<u8>, flags: u16, kind: u16, cookie: u64, length: u32) {
    out.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
}

/// Appends the final `NBD_REPLY_TYPE_OFFSET_DATA` chunk header for `data_len` bytes at
/// `offset` (the data itself follows).
pub fn offset_data_header(out: &mut Vec<u8>, cookie: u64, offset: u64, data_len: u32) {
    structured_header(
        out,
        REPLY_FLAG_DONE,
        REPLY_TYPE_OFFSET_DATA,
        cookie,
        data_len.saturating_add(8),
    );
    out.extend_from_slice(&offset.to_be_bytes());
}

/// Appends a final `NBD_REPLY_TYPE_NONE` chunk (success, no payload).
pub fn none_chunk(out: &mut Vec<u8>, cookie: u64) {
    structured_header(out, REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0);
}

/// Appends a final `NBD_REPLY_TYPE_ERROR` chunk.
pub fn error_chunk(out: &mut Vec<u8>, cookie: u64, errno: Errno, message: &str) {
    let message = truncate(message);
    // The message length is a u16: MAX_STRING fits.
    let len = message.len() as u16;
    structured_header(
        out,
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        cookie,
        6 + u32::from(len),
    );
    out.extend_from_slice(&errno.code().to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message.as_bytes());
}

/// Appends a final `NBD_REPLY_TYPE_BLOCK_STATUS` chunk: `(length, flags)` descriptors for
/// context `context_id`.
pub fn block_status_chunk(out: &mut Vec<u8>, cookie: u64, context_id: u32, extents: &[(u32, u32)]) {
    let len = 4 + 8 * extents.len() as u32;
    structured_header(out, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, cookie, len);
    out.extend_from_slice(&context_id.to_be_bytes());
    for (length, flags) in extents {
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
    }
}

/// Appends an error reply in the negotiated style: a structured error chunk, or a simple
/// reply carrying only the error.
pub fn error_reply(out: &mut Vec<u8>, structured: bool, cookie: u64, errno: Errno, message: &str) {
    if structured {
        error_chunk(out, cookie, errno, message);
    } else {
        out.extend_from_slice(&simple_reply(cookie, errno.code()));
    }
}

/// A reply header as a client sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyHeader {
    /// A simple reply.
    Simple {
        /// The error (0: success).
        error: u32,
        /// The request's cookie.
        cookie: u64,
    },
    /// A structured reply chunk, with `length` payload bytes following.
    Structured {
        /// `NBD_REPLY_FLAG_*`.
        flags: u16,
        /// `NBD_REPLY_TYPE_*`.
        kind: u16,
        /// The request's cookie.
        cookie: u64,
        /// Payload bytes that follow.
        length: u32,
    },
}

impl ReplyHeader {
    /// Parses a reply header from the start of `b` (client side, for tests). Returns the
    /// header and the bytes it took (16 or 20).
    pub fn parse(b: &[u8]) -> Result<(ReplyHeader, usize), ProtocolError> {
        let mut c = Cursor::new(b, "reply");
        match c.u32()? {
            SIMPLE_REPLY_MAGIC => Ok((
                ReplyHeader::Simple {
                    error: c.u32()?,
                    cookie: c.u64()?,
                },
                SIMPLE_REPLY_SIZE,
            )),
            STRUCTURED_REPLY_MAGIC => Ok((
                ReplyHeader::Structured {
                    flags: c.u16()?,
                    kind: c.u16()?,
                    cookie: c.u64()?,
                    length: c.u32()?,
                },
                STRUCTURED_HEADER_SIZE,
            )),
            other => Err(ProtocolError::BadMagic {
                expected: u64::from(SIMPLE_REPLY_MAGIC),
                got: u64::from(other),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> TransmissionParams {
        TransmissionParams {
            size: 1 << 20,
            flags: FLAG_HAS_FLAGS
                | FLAG_SEND_FLUSH
                | FLAG_SEND_FUA
                | FLAG_SEND_TRIM
                | FLAG_SEND_WRITE_ZEROES
                | FLAG_SEND_DF,
            structured: true,
            block_status: true,
            min_block: 512,
            max_payload: MAX_REQUEST_SIZE,
        }
    }

    fn req(command: u16, flags: u16, offset: u64, length: u32) -> Request {
        Request {
            flags,
            command,
            cookie: 7,
            offset,
            length,
        }
    }

    fn errno(r: Request, p: &TransmissionParams) -> Errno {
        r.validate(p).unwrap_err().errno
    }

    #[test]
    fn greeting_round_trips() {
        let g = greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(parse_greeting(&g), Ok(3));
    }

    #[test]
    fn greeting_with_bad_magic_is_refused() {
        let mut g = greeting(1);
        g[0] = b'X';
        assert!(matches!(
            parse_greeting(&g),
            Err(ProtocolError::BadMagic { .. })
        ));
        assert!(matches!(
            parse_greeting(&greeting(1)[..10]),
            Err(ProtocolError::Truncated { .. })
        ));
    }

    #[test]
    fn unknown_client_flags_are_refused() {
        assert_eq!(parse_client_flags(&3u32.to_be_bytes()), Ok(3));
        assert_eq!(
            parse_client_flags(&4u32.to_be_bytes()),
            Err(ProtocolError::UnknownClientFlags(4))
        );
        assert!(parse_client_flags(&[0, 0, 1]).is_err());
    }

    #[test]
    fn option_header_checks_magic_and_length() {
        let h = OptionHeader {
            option: OPT_GO,
            length: 10,
        };
        assert_eq!(OptionHeader::parse(&h.to_bytes()), Ok(h));
        let mut bad = h.to_bytes();
        bad[3] ^= 1;
        assert!(matches!(
            OptionHeader::parse(&bad),
            Err(ProtocolError::BadMagic { .. })
        ));
        let big = OptionHeader {
            option: OPT_GO,
            length: MAX_OPTION_DATA + 1,
        };
        assert_eq!(
            OptionHeader::parse(&big.to_bytes()),
            Err(ProtocolError::OptionTooLarge(MAX_OPTION_DATA + 1))
        );
    }

    #[test]
    fn options_round_trip() {
        let opts = [
            ClientOption::ExportName("disk".into()),
            ClientOption::Abort,
            ClientOption::List,
            ClientOption::StartTls,
            ClientOption::Info(InfoRequest {
                export: "".into(),
                requests: vec![INFO_BLOCK_SIZE],
            }),
            ClientOption::Go(InfoRequest {
                export: "x".into(),
                requests: vec![],
            }),
            ClientOption::StructuredReply,
            ClientOption::ListMetaContext(MetaContextRequest {
                export: "".into(),
                queries: vec![],
            }),
            ClientOption::SetMetaContext(MetaContextRequest {
                export: "d".into(),
                queries: vec![BASE_ALLOCATION.into(), "x-y:z".into()],
            }),
            ClientOption::Unknown(99),
        ];
        for o in opts {
            assert_eq!(ClientOption::parse(o.code(), &o.to_data()), Ok(o));
        }
    }

    #[test]
    fn options_with_unexpected_data_are_invalid() {
        for code in [OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_STRUCTURED_REPLY] {
            let e = ClientOption::parse(code, &[1]).unwrap_err();
            assert_eq!(e.option_reply_type(), REP_ERR_INVALID, "option {code}");
        }
    }

    #[test]
    fn info_with_a_wrong_count_is_invalid() {
        let mut d = ClientOption::Go(InfoRequest {
            export: "a".into(),
            requests: vec![1, 2],
        })
        .to_data();
        d.pop();
        assert!(matches!(
            ClientOption::parse(OPT_GO, &d),
            Err(ProtocolError::BadCount { .. })
        ));
        // Name length pointing past the end.
        let d = [0, 0, 0, 9, b'a'];
        assert!(matches!(
            ClientOption::parse(OPT_INFO, &d),
            Err(ProtocolError::Truncated { .. })
        ));
    }

    #[test]
    fn meta_context_with_a_huge_count_is_invalid() {
        let mut d = Vec::new();
        put_string32(&mut d, "");
        d.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            ClientOption::parse(OPT_SET_META_CONTEXT, &d),
            Err(ProtocolError::BadCount { .. })
        ));
    }

    #[test]
    fn bad_strings_are_refused() {
        assert_eq!(
            ClientOption::parse(OPT_EXPORT_NAME, &[0xff, 0xfe]),
            Err(ProtocolError::BadString)
        );
        assert_eq!(
            ClientOption::parse(OPT_EXPORT_NAME, b"a\0b"),
            Err(ProtocolError::BadString)
        );
        let long = vec![b'a'; MAX_STRING + 1];
        let e = ClientOption::parse(OPT_EXPORT_NAME, &long).unwrap_err();
        assert_eq!(e, ProtocolError::StringTooLong(MAX_STRING + 1));
        assert_eq!(e.option_reply_type(), REP_ERR_TOO_BIG);
    }

    #[test]
    fn request_round_trips_and_checks_magic() {
        let r = req(CMD_WRITE, CMD_FLAG_FUA, 4096, 512);
        assert_eq!(Request::parse(&r.to_bytes()), Ok(r));
        assert_eq!(r.payload_len(), 512);
        assert_eq!(req(CMD_READ, 0, 0, 512).payload_len(), 0);
        let mut b = r.to_bytes();
        b[0] = 0;
        assert!(matches!(
            Request::parse(&b),
            Err(ProtocolError::BadMagic { .. })
        ));
        assert!(matches!(
            Request::parse(&r.to_bytes()[..27]),
            Err(ProtocolError::Truncated { .. })
        ));
    }

    #[test]
    fn valid_requests_pass() {
        let p = params();
        assert_eq!(
            req(CMD_READ, 0, 512, 1024).validate(&p),
            Ok(Command::Read {
                offset: 512,
                length: 1024
            })
        );
        assert_eq!(
            req(CMD_WRITE, CMD_FLAG_FUA, 0, 512).validate(&p),
            Ok(Command::Write {
                offset: 0,
                length: 512,
                fua: true
            })
        );
        assert_eq!(req(CMD_FLUSH, 0, 0, 0).validate(&p), Ok(Command::Flush));
        assert_eq!(req(CMD_DISC, 0, 0, 0).validate(&p), Ok(Command::Disconnect));
        // The whole export, exactly.
        assert!(req(CMD_READ, CMD_FLAG_DF, 0, 1 << 20).validate(&p).is_ok());
        assert_eq!(
            req(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 0, 100).validate(&p),
            Ok(Command::BlockStatus {
                offset: 0,
                length: 100,
                req_one: true
            })
        );
    }

    #[test]
    fn unknown_commands_are_einval() {
        let p = params();
        assert_eq!(errno(req(CMD_CACHE, 0, 0, 512), &p), Errno::Inval);
        assert_eq!(errno(req(200, 0, 0, 512), &p), Errno::Inval);
    }

    #[test]
    fn unknown_or_misplaced_flags_are_einval() {
        let p = params();
        assert_eq!(errno(req(CMD_READ, 1 << 9, 0, 512), &p), Errno::Inval);
        assert_eq!(
            errno(req(CMD_WRITE, CMD_FLAG_REQ_ONE, 0, 512), &p),
            Errno::Inval
        );
        assert_eq!(
            errno(req(CMD_WRITE, CMD_FLAG_FAST_ZERO, 0, 512), &p),
            Errno::Inval
        );
        let mut no_fua = p;
        no_fua.flags &= !FLAG_SEND_FUA;
        assert_eq!(
            errno(req(CMD_WRITE, CMD_FLAG_FUA, 0, 512), &no_fua),
            Errno::Inval
        );
        let mut no_df = p;
        no_df.flags &= !FLAG_SEND_DF;
        assert_eq!(
            errno(req(CMD_READ, CMD_FLAG_DF, 0, 512), &no_df),
            Errno::Inval
        );
    }

    #[test]
    fn past_the_end_is_enospc_for_writes_and_einval_for_reads() {
        let p = params();
        let end = 1 << 20;
        assert_eq!(errno(req(CMD_WRITE, 0, end, 512), &p), Errno::NoSpc);
        assert_eq!(errno(req(CMD_TRIM, 0, end - 512, 1024), &p), Errno::NoSpc);
        assert_eq!(errno(req(CMD_WRITE_ZEROES, 0, end, 512), &p), Errno::NoSpc);
        assert_eq!(errno(req(CMD_READ, 0, end, 512), &p), Errno::Inval);
        assert_eq!(
            errno(req(CMD_BLOCK_STATUS, 0, end - 1, 2), &p),
            Errno::Inval
        );
        // Overflowing end.
        assert_eq!(errno(req(CMD_READ, 0, u64::MAX, 512), &p), Errno::Inval);
        assert_eq!(errno(req(CMD_WRITE, 0, u64::MAX, 512), &p), Errno::NoSpc);
    }

    #[test]
    fn oversized_requests_are_einval() {
        let mut p = params();
        p.size = u64::MAX;
        assert_eq!(
            errno(req(CMD_READ, 0, 0, MAX_REQUEST_SIZE + 512), &p),
            Errno::Inval
        );
        assert_eq!(
            errno(req(CMD_WRITE, 0, 0, MAX_REQUEST_SIZE + 512), &p),
            Errno::Inval
        );
        // Trim and write-zeroes carry no payload: large ones are fine.
        assert!(req(CMD_TRIM, 0, 0, u32::MAX - 511).validate(&p).is_ok());
    }

    #[test]
    fn read_only_refuses_writes_with_eperm() {
        let mut p = params();
        p.flags = FLAG_HAS_FLAGS | FLAG_READ_ONLY | FLAG_SEND_FLUSH;
        for c in [CMD_WRITE, CMD_TRIM, CMD_WRITE_ZEROES] {
            assert_eq!(errno(req(c, 0, 0, 512), &p), Errno::Perm, "command {c}");
        }
        assert!(req(CMD_READ, 0, 0, 512).validate(&p).is_ok());
    }

    #[test]
    fn unadvertised_commands_are_einval() {
        let mut p = params();
        p.flags = FLAG_HAS_FLAGS;
        for c in [CMD_FLUSH, CMD_TRIM, CMD_WRITE_ZEROES] {
            assert_eq!(errno(req(c, 0, 0, 512), &p), Errno::Inval, "command {c}");
        }
        p = params();
        p.block_status = false;
        assert_eq!(errno(req(CMD_BLOCK_STATUS, 0, 0, 512), &p), Errno::Inval);
    }

    #[test]
    fn misaligned_requests_are_einval_but_trim_shrinks() {
        let p = params();
        assert_eq!(errno(req(CMD_READ, 0, 1, 512), &p), Errno::Inval);
        assert_eq!(errno(req(CMD_WRITE, 0, 0, 100), &p), Errno::Inval);
        assert_eq!(errno(req(CMD_WRITE_ZEROES, 0, 0, 100), &p), Errno::Inval);
        assert_eq!(
            req(CMD_TRIM, 0, 100, 2000).validate(&p),
            Ok(Command::Trim {
                offset: 512,
                length: 1536,
                fua: false
            })
        );
        assert_eq!(
            req(CMD_TRIM, 0, 100, 10).validate(&p),
            Ok(Command::Trim {
                offset: 512,
                length: 0,
                fua: false
            })
        );
    }

    #[test]
    fn zero_length_block_status_and_write_zeroes_are_einval() {
        let p = params();
        assert_eq!(errno(req(CMD_BLOCK_STATUS, 0, 0, 0), &p), Errno::Inval);
        assert_eq!(errno(req(CMD_WRITE_ZEROES, 0, 0, 0), &p), Errno::Inval);
    }

    #[test]
    fn replies_parse_back() {
        let s = simple_reply(9, 22);
        assert_eq!(
            ReplyHeader::parse(&s),
            Ok((
                ReplyHeader::Simple {
                    error: 22,
                    cookie: 9
                },
                16
            ))
        );
        let mut out = Vec::new();
        error_chunk(&mut out, 3, Errno::NoSpc, "full");
        let (h, n) = ReplyHeader::parse(&out).unwrap();
        assert_eq!(
            h,
            ReplyHeader::Structured {
                flags: REPLY_FLAG_DONE,
                kind: REPLY_TYPE_ERROR,
                cookie: 3,
                length: 10
            }
        );
        assert_eq!(&out[n..n + 4], &28u32.to_be_bytes());
        assert_eq!(&out[n + 6..], b"full");
        let mut out = Vec::new();
        block_status_chunk(&mut out, 1, BASE_ALLOCATION_ID, &[(512, 3), (1024, 0)]);
        assert_eq!(out.len(), 20 + 4 + 16);
        assert!(ReplyHeader::parse(&[0; 16]).is_err());
    }

    #[test]
    fn long_messages_are_truncated_on_char_boundaries() {
        let s = "é".repeat(MAX_STRING);
        let t = truncate(&s);
        assert!(t.len() <= MAX_STRING && t.len() >= MAX_STRING - 1);
        let mut out = Vec::new();
        error_chunk(&mut out, 0, Errno::Io, &s);
        assert!(out.len() <= 20 + 6 + MAX_STRING);
    }

    #[test]
    fn errno_codes_match_the_spec() {
        let codes: Vec<u32> = Errno::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [1, 5, 12, 22, 28, 75, 95, 108]);
        assert_eq!(Errno::from_code(22), Some(Errno::Inval));
        assert_eq!(Errno::from_code(0), None);
    }
}
