//! The routing socket delivers every route, address and interface change on
//! the Mac, in batches. The helper's monitor and every read-back parse
//! these bytes: no input may panic the parser, and a route message it
//! accepts must survive re-encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztun_helper::platform::macos::rtmsg::{messages, RouteMessage, RoutingMessage};

fuzz_target!(|data: &[u8]| {
    for message in messages(data) {
        if let Ok(RoutingMessage::Route(route)) = message {
            if let Ok(bytes) = route.to_bytes() {
                let again = RouteMessage::parse(&bytes).expect("an encoded message parses");
                assert_eq!(again.to_bytes().expect("and encodes again"), bytes);
            }
            let _ = (route.prefix(), route.gateway_ip(), route.interface_name());
        }
    }
    let _ = RouteMessage::parse(data);
});
