//! Option haggling: the fixed newstyle handshake as a state machine with no I/O.
//!
//! The server sends [`Handshake::greeting`], reads the client's 4 flag bytes
//! ([`Handshake::client_flags`]), then loops: read a 16-byte option header
//! ([`Handshake::option_header`]), read its data, and call [`Handshake::option`], which appends
//! the reply bytes to a buffer and says what happens next ([`Step`]). An `Err` means the
//! session must end with a hard disconnect (the spec allows nothing else: unknown client flags,
//! a bad magic, an `NBD_OPT_EXPORT_NAME` for an export that does not exist, a flood of options).
//! Every other problem is answered with an error reply and the haggling goes on.
//!
//! | Option | Answer |
//! |---|---|
//! | `NBD_OPT_EXPORT_NAME` | size, flags (and 124 zeros unless `NO_ZEROES`), then transmission; an unknown name closes the connection |
//! | `NBD_OPT_GO` / `NBD_OPT_INFO` | `NBD_REP_INFO` export (size, flags), block sizes, name and description when asked; `NBD_REP_ACK`; GO then enters transmission. Unknown export: `NBD_REP_ERR_UNKNOWN` |
//! | `NBD_OPT_LIST` | one `NBD_REP_SERVER`, `NBD_REP_ACK` |
//! | `NBD_OPT_ABORT` | `NBD_REP_ACK`, then close |
//! | `NBD_OPT_STRUCTURED_REPLY` | `NBD_REP_ACK` |
//! | `NBD_OPT_LIST_META_CONTEXT` / `SET_META_CONTEXT` | `base:allocation` (when the device answers range queries) as `NBD_REP_META_CONTEXT`, then `NBD_REP_ACK`; before structured replies: `NBD_REP_ERR_INVALID` |
//! | `NBD_OPT_STARTTLS`, `NBD_OPT_EXTENDED_HEADERS`, anything else | `NBD_REP_ERR_UNSUP` |
//! | malformed data | `NBD_REP_ERR_INVALID` (`NBD_REP_ERR_TOO_BIG` for over-long strings) |

use thiserror::Error;

use crate::protocol::{self as p, ClientOption, OptionHeader, OptionReply, ProtocolError};

/// At most this many options per connection; more is treated as abuse (hard disconnect).
pub const MAX_OPTIONS: u32 = 1024;

/// What the server exports: the device's size and abilities, as probed, plus naming.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportInfo {
    /// The export's name (the empty name also selects it: it is the default export).
    pub name: String,
    /// A description for `NBD_INFO_DESCRIPTION` (not sent when empty).
    pub description: String,
    /// Size in bytes.
    pub size: u64,
    /// Whether writes are refused (`NBD_FLAG_READ_ONLY`).
    pub read_only: bool,
    /// Whether flush is advertised (`NBD_FLAG_SEND_FLUSH`).
    pub flush: bool,
    /// Whether FUA is advertised (`NBD_FLAG_SEND_FUA`).
    pub fua: bool,
    /// Whether trim is advertised (`NBD_FLAG_SEND_TRIM`).
    pub trim: bool,
    /// Whether write-zeroes is advertised (`NBD_FLAG_SEND_WRITE_ZEROES`).
    pub write_zeroes: bool,
    /// Whether several connections see one consistent device (`NBD_FLAG_CAN_MULTI_CONN`).
    pub multi_conn: bool,
    /// Whether `base:allocation` can be offered.
    pub block_status: bool,
    /// Smallest block: offsets and lengths must be multiples of it.
    pub min_block: u32,
    /// Preferred block size.
    pub preferred_block: u32,
    /// Largest read or write.
    pub max_block: u32,
}

impl ExportInfo {
    /// Whether a client asking for `name` gets this export: its own name, or the empty
    /// (default) name.
    pub fn matches(&self, name: &str) -> bool {
        name.is_empty() || name == self.name
    }

    /// The transmission flags for a client that did (or did not) negotiate structured replies.
    pub fn transmission_flags(&self, structured: bool) -> u16 {
        let mut f = p::FLAG_HAS_FLAGS;
        let mut set = |on: bool, flag: u16| {
            if on {
                f |= flag;
            }
        };
        set(self.read_only, p::FLAG_READ_ONLY);
        set(self.flush, p::FLAG_SEND_FLUSH);
        set(self.fua, p::FLAG_SEND_FUA);
        set(self.trim && !self.read_only, p::FLAG_SEND_TRIM);
        set(
            self.write_zeroes && !self.read_only,
            p::FLAG_SEND_WRITE_ZEROES,
        );
        // Reads are always answered with a single data chunk, so "don't fragment" is free.
        set(structured, p::FLAG_SEND_DF);
        set(self.multi_conn, p::FLAG_CAN_MULTI_CONN);
        f
    }
}

/// What was agreed when transmission starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Negotiated {
    /// Structured replies are in use.
    pub structured: bool,
    /// `base:allocation` was selected (so `NBD_CMD_BLOCK_STATUS` is allowed).
    pub block_status: bool,
    /// The transmission flags sent.
    pub flags: u16,
}

/// What to do after an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Send the reply and read the next option.
    Continue,
    /// Send the reply (the `NBD_REP_ACK` to `NBD_OPT_ABORT`) and close.
    Abort,
    /// Send the reply and enter the transmission phase.
    Transmission(Negotiated),
}

/// Why the handshake ends with a hard disconnect.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// A message that breaks the protocol (bad magic, unknown client flags, huge option).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// `NBD_OPT_EXPORT_NAME` named an export that does not exist (it has no error reply).
    #[error("NBD_OPT_EXPORT_NAME for unknown export {0:?}")]
    UnknownExport(String),
    /// `NBD_OPT_EXPORT_NAME` whose data could not be parsed.
    #[error("malformed NBD_OPT_EXPORT_NAME: {0}")]
    BadExportName(ProtocolError),
    /// More than [`MAX_OPTIONS`] options.
    #[error("more than {MAX_OPTIONS} options")]
    TooManyOptions,
}

/// The server's side of option haggling for one connection.
#[derive(Clone, Debug)]
pub struct Handshake {
    export: ExportInfo,
    client_flags: u32,
    structured: bool,
    meta_selected: bool,
    options: u32,
}

impl Handshake {
    /// A handshake offering `export`.
    pub fn new(export: ExportInfo) -> Self {
        Handshake {
            export,
            client_flags: 0,
            structured: false,
            meta_selected: false,
            options: 0,
        }
    }

    /// The export offered.
    pub fn export(&self) -> &ExportInfo {
        &self.export
    }

    /// The greeting: fixed newstyle, and the 124 zeros may be skipped.
    pub fn greeting(&self) -> [u8; p::GREETING_SIZE] {
        p::greeting(p::FLAG_FIXED_NEWSTYLE | p::FLAG_NO_ZEROES)
    }

    /// Takes the client's 4 flag bytes. Unknown flags end the session.
    pub fn client_flags(&mut self, b: &[u8]) -> Result<(), HandshakeError> {
        self.client_flags = p::parse_client_flags(b)?;
        Ok(())
    }

    /// Parses an option header (16 bytes) and counts the option.
    pub fn option_header(&mut self, b: &[u8]) -> Result<OptionHeader, HandshakeError> {
        self.options += 1;
        if self.options > MAX_OPTIONS {
            return Err(HandshakeError::TooManyOptions);
        }
        Ok(OptionHeader::parse(b)?)
    }

    /// Handles one option with its data, appending the reply to `out`.
    pub fn option(
        &mut self,
        header: OptionHeader,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Step, HandshakeError> {
        let code = header.option;
        let option = match ClientOption::parse(code, data) {
            Ok(o) => o,
            Err(e) if code == p::OPT_EXPORT_NAME => return Err(HandshakeError::BadExportName(e)),
            Err(e) => {
                OptionReply::write_error(out, code, e.option_reply_type(), &e.to_string());
                return Ok(Step::Continue);
            }
        };
        match option {
            ClientOption::ExportName(name) => {
                if !self.export.matches(&name) {
                    return Err(HandshakeError::UnknownExport(name));
                }
                let n = self.negotiated();
                let no_zeroes = self.client_flags & p::FLAG_C_NO_ZEROES != 0;
                out.extend_from_slice(&p::export_name_reply(self.export.size, n.flags, no_zeroes));
                Ok(Step::Transmission(n))
            }
            ClientOption::Abort => {
                OptionReply::write(out, code, p::REP_ACK, &[]);
                Ok(Step::Abort)
            }
            ClientOption::List => {
                OptionReply::write(out, code, p::REP_SERVER, &p::rep_server(&self.export.name));
                OptionReply::write(out, code, p::REP_ACK, &[]);
                Ok(Step::Continue)
            }
            ClientOption::StartTls => {
                OptionReply::write_error(out, code, p::REP_ERR_UNSUP, "TLS is not supported");
                Ok(Step::Continue)
            }
            ClientOption::Info(req) | ClientOption::Go(req) => {
                if !self.export.matches(&req.export) {
                    let msg = format!("no export named {:?}", req.export);
                    OptionReply::write_error(out, code, p::REP_ERR_UNKNOWN, &msg);
                    return Ok(Step::Continue);
                }
                let n = self.negotiated();
                let e = &self.export;
                OptionReply::write(out, code, p::REP_INFO, &p::info_export(e.size, n.flags));
                let sizes = p::info_block_size(e.min_block, e.preferred_block, e.max_block);
                OptionReply::write(out, code, p::REP_INFO, &sizes);
                if req.requests.contains(&p::INFO_NAME) {
                    let name = p::info_string(p::INFO_NAME, &e.name);
                    OptionReply::write(out, code, p::REP_INFO, &name);
                }
                if req.requests.contains(&p::INFO_DESCRIPTION) && !e.description.is_empty() {
                    let d = p::info_string(p::INFO_DESCRIPTION, &e.description);
                    OptionReply::write(out, code, p::REP_INFO, &d);
                }
                OptionReply::write(out, code, p::REP_ACK, &[]);
                if code == p::OPT_GO {
                    Ok(Step::Transmission(n))
                } else {
                    Ok(Step::Continue)
                }
            }
            ClientOption::StructuredReply => {
                self.structured = true;
                OptionReply::write(out, code, p::REP_ACK, &[]);
                Ok(Step::Continue)
            }
            ClientOption::ListMetaContext(req) | ClientOption::SetMetaContext(req) => {
                let set = code == p::OPT_SET_META_CONTEXT;
                if !self.structured {
                    let msg = "negotiate structured replies before metadata contexts";
                    OptionReply::write_error(out, code, p::REP_ERR_INVALID, msg);
                    return Ok(Step::Continue);
                }
                if !self.export.matches(&req.export) {
                    let msg = format!("no export named {:?}", req.export);
                    OptionReply::write_error(out, code, p::REP_ERR_UNKNOWN, &msg);
                    return Ok(Step::Continue);
                }
                let wanted = self.export.block_status
                    && if set {
                        req.queries.iter().any(|q| q == p::BASE_ALLOCATION)
                    } else {
                        req.queries.is_empty()
                            || req
                                .queries
                                .iter()
                                .any(|q| q == "base:" || q == p::BASE_ALLOCATION)
                    };
                if set {
                    self.meta_selected = wanted;
                }
                if wanted {
                    // A list reports id 0, as the spec asks; a selection reports the real id.
                    let id = if set { p::BASE_ALLOCATION_ID } else { 0 };
                    let data = p::rep_meta_context(id, p::BASE_ALLOCATION);
                    OptionReply::write(out, code, p::REP_META_CONTEXT, &data);
                }
                OptionReply::write(out, code, p::REP_ACK, &[]);
                Ok(Step::Continue)
            }
            ClientOption::Unknown(other) => {
                let msg = format!("option {other} is not supported");
                OptionReply::write_error(out, code, p::REP_ERR_UNSUP, &msg);
                Ok(Step::Continue)
            }
        }
    }

    fn negotiated(&self) -> Negotiated {
        Negotiated {
            structured: self.structured,
            block_status: self.structured && self.meta_selected,
            flags: self.export.transmission_flags(self.structured),
        }
    }
}

/// What [`replay`] saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// Options handled.
    pub options: usize,
    /// What was negotiated, if transmission was reached.
    pub negotiated: Option<Negotiated>,
    /// Requests parsed in transmission.
    pub requests: usize,
    /// Requests refused by validation.
    pub refused: usize,
    /// Bytes of replies produced during the handshake.
    pub reply_bytes: usize,
    /// Why the stream ended early, if it did.
    pub error: Option<String>,
}

/// Feeds a whole client byte stream through the server's parsing, as a connection would,
/// without I/O or a device: client flags, options through [`Handshake`], then request headers
/// through [`Request::validate`](crate::protocol::Request::validate) (write payloads skipped).
/// For fuzzing and property tests: it must never panic, whatever `input` is.
pub fn replay(export: ExportInfo, input: &[u8]) -> Replay {
    use crate::protocol::{Request, TransmissionParams};
    let mut r = Replay::default();
    let mut hs = Handshake::new(export);
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let end = at.checked_add(n).filter(|&e| e <= input.len())?;
        let b = &input[at..end];
        at = end;
        Some(b)
    };
    let Some(flags) = take(4) else {
        return r;
    };
    if let Err(e) = hs.client_flags(flags) {
        r.error = Some(e.to_string());
        return r;
    }
    let mut out = Vec::new();
    let negotiated = loop {
        let Some(hdr) = take(p::OPTION_HEADER_SIZE) else {
            return r;
        };
        let header = match hs.option_header(hdr) {
            Ok(h) => h,
            Err(e) => {
                r.error = Some(e.to_string());
                return r;
            }
        };
        let Some(data) = take(header.length as usize) else {
            return r;
        };
        out.clear();
        r.options += 1;
        match hs.option(header, data, &mut out) {
            Ok(Step::Continue) => r.reply_bytes += out.len(),
            Ok(Step::Abort) => {
                r.reply_bytes += out.len();
                return r;
            }
            Ok(Step::Transmission(n)) => {
                r.reply_bytes += out.len();
                break n;
            }
            Err(e) => {
                r.error = Some(e.to_string());
                return r;
            }
        }
    };
    r.negotiated = Some(negotiated);
    let e = hs.export();
    let params = TransmissionParams {
        size: e.size,
        flags: negotiated.flags,
        structured: negotiated.structured,
        block_status: negotiated.block_status,
        min_block: e.min_block,
        max_payload: e.max_block.min(p::MAX_REQUEST_SIZE),
    };
    while let Some(hdr) = take(p::REQUEST_SIZE) {
        let req = match Request::parse(hdr) {
            Ok(req) => req,
            Err(e) => {
                r.error = Some(e.to_string());
                return r;
            }
        };
        r.requests += 1;
        if req.validate(&params).is_err() {
            r.refused += 1;
        }
        if req.payload_len() > params.max_payload {
            r.error = Some("oversized write".into());
            return r;
        }
        if take(req.payload_len() as usize).is_none() {
            return r;
        }
        if req.command == p::CMD_DISC {
            return r;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Cursor, InfoRequest, MetaContextRequest};

    fn export() -> ExportInfo {
        ExportInfo {
            name: "disk".into(),
            description: "a RAM disk".into(),
            size: 1 << 30,
            read_only: false,
            flush: true,
            fua: true,
            trim: true,
            write_zeroes: true,
            multi_conn: true,
            block_status: true,
            min_block: 512,
            preferred_block: 4096,
            max_block: p::MAX_REQUEST_SIZE,
        }
    }

    /// Sends `opt` and returns the step and the option replies (option, type, data).
    fn send(hs: &mut Handshake, opt: &ClientOption) -> (Step, Vec<(u32, u32, Vec<u8>)>) {
        let bytes = opt.to_bytes();
        let header = hs.option_header(&bytes[..16]).unwrap();
        let mut out = Vec::new();
        let step = hs.option(header, &bytes[16..], &mut out).unwrap();
        (step, parse_replies(&out))
    }

    fn parse_replies(mut b: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        let mut v = Vec::new();
        while !b.is_empty() {
            let (opt, ty, len) = OptionReply::parse_header(&b[..20]).unwrap();
            v.push((opt, ty, b[20..20 + len as usize].to_vec()));
            b = &b[20 + len as usize..];
        }
        v
    }

    fn go(name: &str, requests: Vec<u16>) -> ClientOption {
        ClientOption::Go(InfoRequest {
            export: name.into(),
            requests,
        })
    }

    fn started() -> Handshake {
        let mut hs = Handshake::new(export());
        hs.client_flags(&(p::FLAG_C_FIXED_NEWSTYLE | p::FLAG_C_NO_ZEROES).to_be_bytes())
            .unwrap();
        hs
    }

    #[test]
    fn greeting_is_fixed_newstyle_with_no_zeroes() {
        let hs = Handshake::new(export());
        assert_eq!(
            p::parse_greeting(&hs.greeting()),
            Ok(p::FLAG_FIXED_NEWSTYLE | p::FLAG_NO_ZEROES)
        );
    }

    #[test]
    fn unknown_client_flags_end_the_session() {
        let mut hs = Handshake::new(export());
        assert!(matches!(
            hs.client_flags(&0x8000_0000u32.to_be_bytes()),
            Err(HandshakeError::Protocol(ProtocolError::UnknownClientFlags(
                _
            )))
        ));
    }

    #[test]
    fn bad_option_magic_ends_the_session() {
        let mut hs = started();
        let mut b = ClientOption::List.to_bytes();
        b[0] = b'X';
        assert!(matches!(
            hs.option_header(&b[..16]),
            Err(HandshakeError::Protocol(ProtocolError::BadMagic { .. }))
        ));
    }

    #[test]
    fn too_many_options_end_the_session() {
        let mut hs = started();
        let b = ClientOption::List.to_bytes();
        for _ in 0..MAX_OPTIONS {
            hs.option_header(&b[..16]).unwrap();
        }
        assert_eq!(
            hs.option_header(&b[..16]),
            Err(HandshakeError::TooManyOptions)
        );
    }

    #[test]
    fn go_sends_export_info_and_enters_transmission() {
        let mut hs = started();
        let (step, replies) = send(&mut hs, &go("", vec![p::INFO_NAME, p::INFO_DESCRIPTION]));
        let flags = export().transmission_flags(false);
        assert_eq!(
            step,
            Step::Transmission(Negotiated {
                structured: false,
                block_status: false,
                flags
            })
        );
        let types: Vec<u32> = replies.iter().map(|r| r.1).collect();
        assert_eq!(
            types,
            [
                p::REP_INFO,
                p::REP_INFO,
                p::REP_INFO,
                p::REP_INFO,
                p::REP_ACK
            ]
        );
        assert_eq!(replies[0].2, p::info_export(1 << 30, flags));
        assert_eq!(
            replies[1].2,
            p::info_block_size(512, 4096, p::MAX_REQUEST_SIZE)
        );
        assert_eq!(replies[2].2, p::info_string(p::INFO_NAME, "disk"));
        assert!(replies.iter().all(|r| r.0 == p::OPT_GO));
    }

    #[test]
    fn info_does_not_enter_transmission() {
        let mut hs = started();
        let (step, replies) = send(
            &mut hs,
            &ClientOption::Info(InfoRequest {
                export: "disk".into(),
                requests: vec![],
            }),
        );
        assert_eq!(step, Step::Continue);
        assert_eq!(replies.last().unwrap().1, p::REP_ACK);
    }

    #[test]
    fn go_for_an_unknown_export_is_err_unknown() {
        let mut hs = started();
        let (step, replies) = send(&mut hs, &go("nope", vec![]));
        assert_eq!(step, Step::Continue);
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].1, p::REP_ERR_UNKNOWN);
    }

    #[test]
    fn export_name_for_an_unknown_export_ends_the_session() {
        let mut hs = started();
        let b = ClientOption::ExportName("nope".into()).to_bytes();
        let h = hs.option_header(&b[..16]).unwrap();
        assert_eq!(
            hs.option(h, &b[16..], &mut Vec::new()),
            Err(HandshakeError::UnknownExport("nope".into()))
        );
        let b = [0xffu8; 3];
        let h = OptionHeader {
            option: p::OPT_EXPORT_NAME,
            length: 3,
        };
        assert!(matches!(
            hs.option(h, &b, &mut Vec::new()),
            Err(HandshakeError::BadExportName(_))
        ));
    }

    #[test]
    fn export_name_replies_with_or_without_zeroes() {
        let mut hs = started();
        let b = ClientOption::ExportName("disk".into()).to_bytes();
        let h = hs.option_header(&b[..16]).unwrap();
        let mut out = Vec::new();
        let step = hs.option(h, &b[16..], &mut out).unwrap();
        assert!(matches!(step, Step::Transmission(_)));
        assert_eq!(out.len(), 10);
        let mut hs = Handshake::new(export());
        hs.client_flags(&1u32.to_be_bytes()).unwrap();
        let mut out = Vec::new();
        hs.option(h, &b[16..], &mut out).unwrap();
        assert_eq!(out.len(), 134);
        let mut c = Cursor::new(&out, "t");
        assert_eq!(c.u64(), Ok(1 << 30));
    }

    #[test]
    fn list_names_the_export() {
        let mut hs = started();
        let (step, replies) = send(&mut hs, &ClientOption::List);
        assert_eq!(step, Step::Continue);
        assert_eq!(replies[0].1, p::REP_SERVER);
        assert_eq!(replies[0].2, p::rep_server("disk"));
        assert_eq!(replies[1].1, p::REP_ACK);
    }

    #[test]
    fn abort_is_acknowledged() {
        let mut hs = started();
        let (step, replies) = send(&mut hs, &ClientOption::Abort);
        assert_eq!(step, Step::Abort);
        assert_eq!(replies, [(p::OPT_ABORT, p::REP_ACK, vec![])]);
    }

    #[test]
    fn unknown_options_and_tls_are_unsupported() {
        let mut hs = started();
        for o in [
            ClientOption::Unknown(4242),
            ClientOption::Unknown(p::OPT_EXTENDED_HEADERS),
            ClientOption::StartTls,
        ] {
            let (step, replies) = send(&mut hs, &o);
            assert_eq!(step, Step::Continue);
            assert_eq!(replies[0].1, p::REP_ERR_UNSUP);
        }
    }

    #[test]
    fn malformed_options_are_invalid_and_haggling_goes_on() {
        let mut hs = started();
        let h = OptionHeader {
            option: p::OPT_LIST,
            length: 1,
        };
        let mut out = Vec::new();
        assert_eq!(hs.option(h, &[0], &mut out), Ok(Step::Continue));
        assert_eq!(parse_replies(&out)[0].1, p::REP_ERR_INVALID);
        let h = OptionHeader {
            option: p::OPT_GO,
            length: 2,
        };
        let mut out = Vec::new();
        assert_eq!(hs.option(h, &[0, 0], &mut out), Ok(Step::Continue));
        assert_eq!(parse_replies(&out)[0].1, p::REP_ERR_INVALID);
        // Still usable afterwards.
        let (step, _) = send(&mut hs, &go("", vec![]));
        assert!(matches!(step, Step::Transmission(_)));
    }

    #[test]
    fn meta_context_needs_structured_replies() {
        let mut hs = started();
        let set = ClientOption::SetMetaContext(MetaContextRequest {
            export: "".into(),
            queries: vec![p::BASE_ALLOCATION.into()],
        });
        let (_, replies) = send(&mut hs, &set);
        assert_eq!(replies[0].1, p::REP_ERR_INVALID);
        let (_, replies) = send(&mut hs, &ClientOption::StructuredReply);
        assert_eq!(replies[0].1, p::REP_ACK);
        let (_, replies) = send(&mut hs, &set);
        assert_eq!(replies[0].1, p::REP_META_CONTEXT);
        assert_eq!(
            replies[0].2,
            p::rep_meta_context(p::BASE_ALLOCATION_ID, p::BASE_ALLOCATION)
        );
        assert_eq!(replies[1].1, p::REP_ACK);
        let (step, _) = send(&mut hs, &go("", vec![]));
        let Step::Transmission(n) = step else {
            panic!("no transmission: {step:?}")
        };
        assert!(n.structured && n.block_status);
        assert_ne!(n.flags & p::FLAG_SEND_DF, 0);
    }

    #[test]
    fn list_meta_context_lists_base_allocation_for_empty_or_namespace_queries() {
        let mut hs = started();
        send(&mut hs, &ClientOption::StructuredReply);
        for queries in [vec![], vec!["base:".to_string()]] {
            let (_, replies) = send(
                &mut hs,
                &ClientOption::ListMetaContext(MetaContextRequest {
                    export: "disk".into(),
                    queries,
                }),
            );
            assert_eq!(replies[0].1, p::REP_META_CONTEXT);
            assert_eq!(replies[0].2, p::rep_meta_context(0, p::BASE_ALLOCATION));
        }
        let (_, replies) = send(
            &mut hs,
            &ClientOption::ListMetaContext(MetaContextRequest {
                export: "disk".into(),
                queries: vec!["qemu:dirty-bitmap:x".into()],
            }),
        );
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].1, p::REP_ACK);
        let (_, replies) = send(
            &mut hs,
            &ClientOption::SetMetaContext(MetaContextRequest {
                export: "other".into(),
                queries: vec![p::BASE_ALLOCATION.into()],
            }),
        );
        assert_eq!(replies[0].1, p::REP_ERR_UNKNOWN);
    }

    #[test]
    fn no_block_status_without_a_range_query() {
        let mut e = export();
        e.block_status = false;
        let mut hs = Handshake::new(e);
        send(&mut hs, &ClientOption::StructuredReply);
        let (_, replies) = send(
            &mut hs,
            &ClientOption::SetMetaContext(MetaContextRequest {
                export: "".into(),
                queries: vec![p::BASE_ALLOCATION.into()],
            }),
        );
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].1, p::REP_ACK);
        let (step, _) = send(&mut hs, &go("", vec![]));
        assert!(matches!(
            step,
            Step::Transmission(Negotiated {
                block_status: false,
                ..
            })
        ));
    }

    #[test]
    fn read_only_flags() {
        let mut e = export();
        e.read_only = true;
        let f = e.transmission_flags(false);
        assert_ne!(f & p::FLAG_READ_ONLY, 0);
        assert_eq!(f & (p::FLAG_SEND_TRIM | p::FLAG_SEND_WRITE_ZEROES), 0);
        let f = export().transmission_flags(false);
        assert_eq!(
            f,
            p::FLAG_HAS_FLAGS
                | p::FLAG_SEND_FLUSH
                | p::FLAG_SEND_FUA
                | p::FLAG_SEND_TRIM
                | p::FLAG_SEND_WRITE_ZEROES
                | p::FLAG_CAN_MULTI_CONN
        );
    }
}
