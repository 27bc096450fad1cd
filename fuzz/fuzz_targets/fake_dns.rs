//! The fake DNS takes queries from any process the tunnel carries: every
//! message, over UDP or (framed) over TCP, goes through the query reader
//! and, when it reads, gets an answer. None of it may panic, and an answer
//! must be a well-formed message: the id echoed, QR set, one question at
//! most, and no more than one record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztun_helper::fakedns::{FakeDns, Handled, Pool};

fuzz_target!(|data: &[u8]| {
    let reserved = vec!["198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap()];
    let mut dns = FakeDns {
        pool: Pool::new("198.18.0.0/28".parse().unwrap(), reserved),
        pool6: Some(Pool::new("2001:db8:fa::/120".parse().unwrap(), vec![])),
        // Targeted mode (names outside the domains refused) or full.
        answer_at: data
            .first()
            .is_some_and(|b| b & 1 == 1)
            .then(|| "198.18.0.2".parse().unwrap()),
        domains: vec!["example.com".into()],
        file: None,
        file6: None,
        exhausted: 0,
    };
    let mut reply = Vec::new();
    // The same bytes twice: the second answer comes from the map.
    for now in [0, 1] {
        if dns.handle(data, now, &mut reply) == Handled::Answered {
            assert!(reply.len() >= 12, "an answer has a header");
            assert_eq!(reply[..2], data[..2], "the id is echoed");
            assert_eq!(reply[2] & 0x80, 0x80, "it is a response");
            assert!(u16::from_be_bytes([reply[4], reply[5]]) <= 1);
            assert!(u16::from_be_bytes([reply[6], reply[7]]) <= 1);
        }
    }
});
