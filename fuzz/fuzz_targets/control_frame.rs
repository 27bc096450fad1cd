//! The helper's first contact with an untrusted local process: bytes from the
//! control socket go through the frame decoder and, when they form a plist,
//! through every message decoder. None of it may panic, hang or allocate
//! more than the frame cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztun_proto::{frame, Event, Op, Request, Response};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((value, used))) = frame::decode(rest) {
        if let Ok(request) = Request::from_value(&value) {
            // What the helper accepts must survive its own re-encoding.
            let again =
                Request::from_value(&request.to_value()).expect("re-encoded request decodes");
            assert_eq!(again, request);
        }
        let _ = Event::from_value(&value);
        for op in Op::ALL {
            let _ = Response::from_value(op, &value);
        }
        rest = &rest[used..];
    }
});
