//! Every golden fixture (`tests/fixtures/xpc/`, the dictionaries a menu-bar
//! app sends and receives) crosses the bridge unchanged: plist → XPC tree →
//! plist, with only the XPC types the wire schema promises.
#![allow(clippy::unwrap_used)] // test inputs are read here, not received

use std::path::PathBuf;

use ztun_proto::plist::Value;
use ztun_xpc::{from_plist, to_plist, StandIn};

fn fixtures() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/xpc");
    let mut all: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, Value::from_file(&path).unwrap())
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[test]
fn the_golden_fixtures_are_all_here_and_each_is_a_dictionary() {
    let all = fixtures();
    // helper/proto/tests/golden.rs pins one per message kind (and fails on
    // a missing one); this floor keeps the round trip below from passing
    // over an empty or misplaced directory.
    assert!(all.len() >= 22, "only {} fixtures", all.len());
    for (name, value) in &all {
        assert!(matches!(value, Value::Dictionary(_)), "{name}");
    }
}

#[test]
fn every_fixture_crosses_the_bridge_and_back_unchanged() {
    for (name, value) in fixtures() {
        let xpc: StandIn = from_plist(&value).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(to_plist(&xpc), Ok(value), "{name}");
    }
}

/// The XPC types a tree uses, by name.
fn types(node: &StandIn, out: &mut Vec<&'static str>) {
    let name = match node {
        StandIn::Dictionary(d) => {
            for v in d.values() {
                types(v, out);
            }
            "dictionary"
        }
        StandIn::Array(a) => {
            for v in a {
                types(v, out);
            }
            "array"
        }
        StandIn::String(_) => "string",
        StandIn::Int64(_) => "int64",
        StandIn::Uint64(_) => "uint64",
        StandIn::Bool(_) => "bool",
        StandIn::Double(_) => "double",
        StandIn::Data(_) => "data",
        StandIn::Unsupported(t) => t.name(),
    };
    if !out.contains(&name) {
        out.push(name);
    }
}

#[test]
fn every_fixture_goes_out_as_dictionaries_arrays_strings_and_int64_only() {
    let mut used = Vec::new();
    for (_, value) in fixtures() {
        types(&from_plist::<StandIn>(&value).unwrap(), &mut used);
    }
    used.sort_unstable();
    assert_eq!(used, ["array", "dictionary", "int64", "string"]);
}
