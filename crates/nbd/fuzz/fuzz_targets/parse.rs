//! Coverage-guided fuzzing of everything the server parses from a client: the raw message
//! parsers, and a whole client byte stream replayed through the handshake state machine and
//! request validation (`nbd::handshake::replay`). Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nbd::ExportInfo;
use nbd::protocol::{self as p, ClientOption, OptionHeader, Request};

fuzz_target!(|data: &[u8]| {
    let _ = Request::parse(data);
    let _ = OptionHeader::parse(data);
    let _ = p::parse_client_flags(data);
    if let Some((&code, rest)) = data.split_first() {
        let _ = ClientOption::parse(u32::from(code % 16), rest);
    }
    let export = ExportInfo {
        name: "disk".into(),
        description: String::new(),
        size: 1 << 24,
        read_only: data.first().is_some_and(|b| b & 1 == 1),
        flush: true,
        fua: true,
        trim: true,
        write_zeroes: true,
        multi_conn: true,
        block_status: true,
        min_block: 512,
        preferred_block: 4096,
        max_block: p::MAX_REQUEST_SIZE,
    };
    let _ = nbd::handshake::replay(export, data);
});
