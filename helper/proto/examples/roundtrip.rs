//! Reads a request as an XML plist on stdin (what `ztunctl --dry-run` prints,
//! or what a menu-bar app would send), decodes it the way the helper does,
//! frames it for the Unix socket and decodes the frame again.
//!
//!     ztunctl --dry-run up --route 203.0.113.0/24 | cargo run -p ztun-proto --example roundtrip

use std::io::Read;
use std::process::ExitCode;

use ztun_proto::plist::Value;
use ztun_proto::{frame, ErrorReply, Request};

fn main() -> ExitCode {
    let mut xml = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut xml) {
        eprintln!("roundtrip: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let value = match Value::from_reader_xml(xml.as_slice()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("roundtrip: stdin is not an XML plist: {e}");
            return ExitCode::FAILURE;
        }
    };
    let request = match Request::from_value(&value) {
        Ok(r) => r,
        Err(e) => {
            let reply = ErrorReply::from(e);
            eprintln!("helper would reply: {} ({})", reply.message, reply.code);
            return ExitCode::FAILURE;
        }
    };
    println!("helper decodes: {request:#?}");
    let mut bytes = Vec::new();
    if let Err(e) = frame::encode(&request.to_value(), &mut bytes) {
        eprintln!("roundtrip: cannot frame the request: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "unix-socket frame: {} bytes (header {:02x?})",
        bytes.len(),
        &bytes[..frame::HEADER_LEN]
    );
    match frame::decode(&bytes) {
        Ok(Some((back, used)))
            if used == bytes.len() && Request::from_value(&back).ok() == Some(request) =>
        {
            println!("frame decodes to the same request: ok");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("roundtrip: frame did not decode to the same request: {other:?}");
            ExitCode::FAILURE
        }
    }
}
