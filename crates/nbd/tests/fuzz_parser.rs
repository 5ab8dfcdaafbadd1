//! Property-based fuzzing of the message parsers: arbitrary bytes never panic, and valid
//! messages round-trip. (A coverage-guided cargo-fuzz target over the same entry points lives
//! in crates/nbd/fuzz; see its README.)

use nbd::ExportInfo;
use nbd::handshake::{Handshake, replay};
use nbd::protocol::{
    self as p, ClientOption, InfoRequest, MetaContextRequest, OptionHeader, ReplyHeader, Request,
    TransmissionParams,
};
use proptest::prelude::*;

fn export() -> ExportInfo {
    ExportInfo {
        name: "disk".into(),
        description: "d".into(),
        size: 1 << 24,
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

fn name() -> impl Strategy<Value = String> + Clone {
    "[a-z0-9:_-]{0,24}"
}

fn info() -> impl Strategy<Value = InfoRequest> {
    (name(), prop::collection::vec(any::<u16>(), 0..6))
        .prop_map(|(export, requests)| InfoRequest { export, requests })
}

fn meta() -> impl Strategy<Value = MetaContextRequest> {
    (name(), prop::collection::vec(name(), 0..4))
        .prop_map(|(export, queries)| MetaContextRequest { export, queries })
}

fn option() -> impl Strategy<Value = ClientOption> {
    prop_oneof![
        name().prop_map(ClientOption::ExportName),
        Just(ClientOption::Abort),
        Just(ClientOption::List),
        Just(ClientOption::StartTls),
        info().prop_map(ClientOption::Info),
        info().prop_map(ClientOption::Go),
        Just(ClientOption::StructuredReply),
        meta().prop_map(ClientOption::ListMetaContext),
        meta().prop_map(ClientOption::SetMetaContext),
        (12u32..).prop_map(ClientOption::Unknown),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (
        any::<u16>(),
        0u16..10,
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(flags, command, cookie, offset, length)| Request {
            flags,
            command,
            cookie,
            offset,
            length,
        })
}

/// A plausible client: flags, some options (well-formed or not), GO, then requests.
fn session_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(option(), 0..6),
        prop::collection::vec(request(), 0..8),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(opts, reqs, tail)| {
            let mut b = 3u32.to_be_bytes().to_vec();
            for o in opts.iter().filter(|o| !matches!(o, ClientOption::Abort)) {
                b.extend(o.to_bytes());
            }
            b.extend(
                ClientOption::Go(InfoRequest {
                    export: String::new(),
                    requests: vec![],
                })
                .to_bytes(),
            );
            for r in reqs {
                let mut r = r;
                if r.command == p::CMD_WRITE {
                    r.length %= 8192;
                }
                b.extend(r.to_bytes());
                b.extend(std::iter::repeat_n(0u8, r.payload_len() as usize));
            }
            b.extend(tail);
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), code in any::<u32>()) {
        let _ = Request::parse(&bytes);
        let _ = OptionHeader::parse(&bytes);
        let _ = p::parse_client_flags(&bytes);
        let _ = p::parse_greeting(&bytes);
        let _ = ReplyHeader::parse(&bytes);
        let _ = p::OptionReply::parse_header(&bytes);
        let _ = ClientOption::parse(code, &bytes);
        for known in 0..12 {
            let _ = ClientOption::parse(known, &bytes);
        }
    }

    #[test]
    fn random_streams_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = replay(export(), &bytes);
        // Past the client flags, so the option parser sees the bytes too.
        let mut b = 1u32.to_be_bytes().to_vec();
        b.extend(&bytes);
        let _ = replay(export(), &b);
    }

    #[test]
    fn plausible_sessions_never_panic(bytes in session_bytes()) {
        let r = replay(export(), &bytes);
        // The GO at the end of the options always gets the client into transmission unless an
        // earlier option ended the session.
        if r.error.is_none() && r.negotiated.is_none() {
            prop_assert!(r.options <= 7);
        }
    }

    #[test]
    fn options_round_trip(o in option()) {
        prop_assert_eq!(ClientOption::parse(o.code(), &o.to_data()), Ok(o.clone()));
        let bytes = o.to_bytes();
        let h = OptionHeader::parse(&bytes[..16]).unwrap();
        prop_assert_eq!(h.option, o.code());
        prop_assert_eq!(h.length as usize, bytes.len() - 16);
    }

    #[test]
    fn every_option_gets_an_answer_or_ends_the_session(o in option()) {
        let mut hs = Handshake::new(export());
        hs.client_flags(&3u32.to_be_bytes()).unwrap();
        let bytes = o.to_bytes();
        let h = hs.option_header(&bytes[..16]).unwrap();
        let mut out = Vec::new();
        match hs.option(h, &bytes[16..], &mut out) {
            Ok(_) => prop_assert!(!out.is_empty()),
            Err(_) => prop_assert!(matches!(o, ClientOption::ExportName(_))),
        }
    }

    #[test]
    fn requests_round_trip(r in request()) {
        prop_assert_eq!(Request::parse(&r.to_bytes()), Ok(r));
    }

    #[test]
    fn validation_only_passes_requests_inside_the_export(r in request(), structured in any::<bool>()) {
        let e = export();
        let params = TransmissionParams {
            size: e.size,
            flags: e.transmission_flags(structured),
            structured,
            block_status: structured,
            min_block: 512,
            max_payload: p::MAX_REQUEST_SIZE,
        };
        if let Ok(cmd) = r.validate(&params) {
            use nbd::protocol::Command::*;
            let (off, len) = match cmd {
                Read { offset, length } | Write { offset, length, .. } => {
                    prop_assert!(length <= p::MAX_REQUEST_SIZE);
                    prop_assert_eq!(offset % 512, 0);
                    prop_assert_eq!(length % 512, 0);
                    (offset, length)
                }
                Trim { offset, length, .. } | WriteZeroes { offset, length, .. } => (offset, length),
                BlockStatus { offset, length, .. } => (offset, length),
                Flush | Disconnect => (0, 0),
            };
            prop_assert!(off.checked_add(u64::from(len)).is_some_and(|end| end <= e.size));
        }
    }
}
