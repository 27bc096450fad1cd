//! The XPC value bridge as a hostile peer meets it: an arbitrary libxpc
//! object tree (modelled by `StandIn`, built from the fuzzer's bytes, with
//! every type ztun refuses) goes to a plist and on to the request decoder.
//! Nothing may panic; what the bridge accepts must come back unchanged
//! through the reverse mapping (the one replies use).
#![no_main]

use std::collections::BTreeMap;
use std::ffi::CString;

use libfuzzer_sys::fuzz_target;
use ztun_proto::Request;
use ztun_xpc::value::XpcType;
use ztun_xpc::{from_plist, to_plist, StandIn};

/// Reads one object from the front of `bytes`; containers nest up to a
/// depth past the bridge's own limit of 16, so that limit is exercised.
fn object(bytes: &mut &[u8], depth: u32) -> StandIn {
    let tag = take(bytes, 1).first().copied().unwrap_or(0);
    let small = usize::from(tag >> 4);
    match tag & 0x0f {
        0 if depth < 20 => StandIn::Dictionary(
            (0..small)
                .map(|_| {
                    let len = take(bytes, 1).first().copied().unwrap_or(0) % 12;
                    let key = take(bytes, usize::from(len));
                    let key = CString::new(key.into_iter().filter(|b| *b != 0).collect::<Vec<_>>())
                        .unwrap_or_default();
                    (key, object(bytes, depth + 1))
                })
                .collect::<BTreeMap<_, _>>(),
        ),
        1 if depth < 20 => StandIn::Array((0..small).map(|_| object(bytes, depth + 1)).collect()),
        2 => StandIn::String(
            CString::new(take(bytes, small * 3).into_iter().filter(|b| *b != 0).collect::<Vec<_>>())
                .unwrap_or_default(),
        ),
        3 => StandIn::Int64(i64::from_le_bytes(pad(take(bytes, 8)))),
        4 => StandIn::Uint64(u64::from_le_bytes(pad(take(bytes, 8)))),
        5 => StandIn::Bool(small & 1 == 1),
        6 => StandIn::Double(f64::from_le_bytes(pad(take(bytes, 8)))),
        7 => StandIn::Data(take(bytes, small * 5)),
        _ => StandIn::Unsupported(XpcType::ALL[small % XpcType::ALL.len()]),
    }
}

fn take(bytes: &mut &[u8], n: usize) -> Vec<u8> {
    let (head, rest) = bytes.split_at(n.min(bytes.len()));
    *bytes = rest;
    head.to_vec()
}

fn pad(v: Vec<u8>) -> [u8; 8] {
    let mut out = [0; 8];
    out[..v.len()].copy_from_slice(&v);
    out
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = data;
    let tree = object(&mut bytes, 0);
    if let Ok(value) = to_plist(&tree) {
        let _ = Request::from_value(&value);
        // Replies travel plist -> XPC: whatever was accepted maps back.
        if let Ok(again) = from_plist::<StandIn>(&value) {
            // Compared as XML text: a NaN double is equal to itself there.
            let xml = |v: &ztun_proto::plist::Value| {
                let mut out = Vec::new();
                v.to_writer_xml(&mut out).map(|()| out).ok()
            };
            let back = to_plist(&again).expect("a tree the bridge built maps back");
            assert_eq!(xml(&back), xml(&value), "bridge round trip");
        }
    }
});
