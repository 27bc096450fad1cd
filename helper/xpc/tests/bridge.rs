//! The plist ⇄ XPC mapping, run against the stand-in tree: every type both
//! ways, nesting, the types ztun refuses (named by key path, never a crash)
//! and the same bounds as a Unix-socket frame.
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::collections::BTreeMap;
use std::ffi::CString;

use ztun_proto::frame::{MAX_DEPTH, MAX_EXPANDED_BYTES, MAX_VALUES};
use ztun_proto::plist::{Date, Dictionary, Integer, Value};
use ztun_proto::{ErrorCode, ErrorReply, Request};
use ztun_xpc::value::{fill, markdown_table, Mapping};
use ztun_xpc::{from_plist, to_plist, BridgeError, StandIn, View, XpcRead, XpcType};

fn dict(entries: &[(&str, Value)]) -> Value {
    Value::Dictionary(
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<Dictionary>(),
    )
}

fn err(path: &str, reason: &str) -> BridgeError {
    BridgeError {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The supported types, each way: (what a peer sends, what ztun reads).
fn supported_rows() -> Vec<(StandIn, Value)> {
    vec![
        (
            StandIn::dict([("op", StandIn::string("status"))]),
            dict(&[("op", Value::from("status"))]),
        ),
        (
            StandIn::Array(vec![StandIn::string("203.0.113.0/24")]),
            Value::Array(vec![Value::from("203.0.113.0/24")]),
        ),
        (StandIn::string("utun4"), Value::from("utun4")),
        (StandIn::string(""), Value::from("")),
        (StandIn::Int64(-7), Value::Integer((-7_i64).into())),
        (StandIn::Int64(i64::MAX), Value::Integer(i64::MAX.into())),
        (StandIn::Uint64(u64::MAX), Value::Integer(u64::MAX.into())),
        (StandIn::Bool(true), Value::Boolean(true)),
        (StandIn::Bool(false), Value::Boolean(false)),
        (StandIn::Double(1.5), Value::Real(1.5)),
        (
            StandIn::Data(vec![0, 0xff, 7]),
            Value::Data(vec![0, 0xff, 7]),
        ),
        (StandIn::Data(vec![]), Value::Data(vec![])),
    ]
}

#[test]
fn every_supported_xpc_type_becomes_its_plist_value() {
    for (xpc, plist) in supported_rows() {
        assert_eq!(to_plist(&xpc), Ok(plist), "{xpc:?}");
    }
}

#[test]
fn every_plist_value_becomes_the_xpc_type_the_table_gives() {
    let rows = [
        (Value::from("utun4"), StandIn::string("utun4")),
        (Value::Integer(9000.into()), StandIn::Int64(9000)),
        (Value::Integer((-1_i64).into()), StandIn::Int64(-1)),
        (Value::Integer(i64::MAX.into()), StandIn::Int64(i64::MAX)),
        // Only an integer int64 cannot hold goes out as uint64.
        (
            Value::Integer((i64::MAX as u64 + 1).into()),
            StandIn::Uint64(i64::MAX as u64 + 1),
        ),
        (Value::Boolean(true), StandIn::Bool(true)),
        (Value::Real(0.25), StandIn::Double(0.25)),
        (Value::Data(vec![1, 2]), StandIn::Data(vec![1, 2])),
        (
            Value::Array(vec![Value::Integer(1.into()), Value::from("x")]),
            StandIn::Array(vec![StandIn::Int64(1), StandIn::string("x")]),
        ),
        (
            dict(&[("ok", Value::Integer(1.into()))]),
            StandIn::dict([("ok", StandIn::Int64(1))]),
        ),
    ];
    for (plist, xpc) in rows {
        assert_eq!(from_plist::<StandIn>(&plist), Ok(xpc), "{plist:?}");
    }
}

#[test]
fn a_small_uint64_comes_back_as_int64_with_the_same_value() {
    let read = to_plist(&StandIn::Uint64(1500)).unwrap();
    assert_eq!(read, Value::Integer(1500.into()));
    assert_eq!(from_plist::<StandIn>(&read), Ok(StandIn::Int64(1500)));
}

#[test]
fn swift_apps_may_send_uint64_and_bool_where_ztun_sends_int64() {
    // xpc_dictionary_set_uint64 for the MTU, xpc_dictionary_set_bool for a flag.
    let request = StandIn::dict([
        ("v", StandIn::Uint64(1)),
        ("op", StandIn::string("down")),
        ("all", StandIn::Bool(true)),
    ]);
    let value = to_plist(&request).unwrap();
    assert_eq!(
        Request::from_value(&value),
        Ok(Request::Down(ztun_proto::DownTarget::All))
    );
}

#[test]
fn nesting_is_kept_key_for_key_and_item_for_item() {
    let xpc = StandIn::dict([
        (
            "tunnel",
            StandIn::dict([
                ("name", StandIn::string("work")),
                (
                    "routes",
                    StandIn::Array(vec![
                        StandIn::string("203.0.113.0/24"),
                        StandIn::string("2001:db8:1::/48"),
                    ]),
                ),
                (
                    "counters",
                    StandIn::dict([("drops", StandIn::dict([("not_routed", StandIn::Int64(5))]))]),
                ),
            ]),
        ),
        ("v", StandIn::Int64(1)),
    ]);
    let plist = dict(&[
        (
            "tunnel",
            dict(&[
                ("name", Value::from("work")),
                (
                    "routes",
                    Value::Array(vec![
                        Value::from("203.0.113.0/24"),
                        Value::from("2001:db8:1::/48"),
                    ]),
                ),
                (
                    "counters",
                    dict(&[("drops", dict(&[("not_routed", Value::Integer(5.into()))]))]),
                ),
            ]),
        ),
        ("v", Value::Integer(1.into())),
    ]);
    assert_eq!(to_plist(&xpc), Ok(plist.clone()));
    assert_eq!(from_plist::<StandIn>(&plist), Ok(xpc));
}

#[test]
fn every_refused_xpc_type_is_invalid_argument_naming_the_key() {
    let refused: Vec<XpcType> = XpcType::ALL
        .into_iter()
        .filter(|t| !t.is_supported())
        .collect();
    assert_eq!(
        refused,
        [
            XpcType::Date,
            XpcType::Uuid,
            XpcType::Fd,
            XpcType::Shmem,
            XpcType::Null,
            XpcType::Endpoint,
            XpcType::Connection,
            XpcType::Error,
            XpcType::Other,
        ]
    );
    for t in refused {
        let request = StandIn::dict([
            ("v", StandIn::Int64(1)),
            ("op", StandIn::string("up")),
            (
                "tunnel",
                StandIn::dict([
                    ("name", StandIn::string("work")),
                    ("mtu", StandIn::Unsupported(t)),
                ]),
            ),
        ]);
        let reason = format!(
            "XPC type {} cannot carry a ztun value; use one of dictionary, array, string, int64, uint64, bool, data, double",
            t.name()
        );
        let e = to_plist(&request).unwrap_err();
        assert_eq!(e, err("tunnel.mtu", &reason));
        assert_eq!(
            ErrorReply::from(e),
            ErrorReply::new(ErrorCode::InvalidArgument, format!("tunnel.mtu: {reason}"))
        );
    }
}

#[test]
fn a_refused_type_inside_an_array_is_named_by_its_index() {
    let request = StandIn::dict([(
        "routes",
        StandIn::Array(vec![
            StandIn::string("203.0.113.0/24"),
            StandIn::Unsupported(XpcType::Fd),
        ]),
    )]);
    assert_eq!(to_plist(&request).unwrap_err().path, "routes[1]");
}

#[test]
fn a_refused_message_itself_is_named_message() {
    let e = to_plist(&StandIn::Unsupported(XpcType::Null)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("(message): XPC type null cannot carry a ztun value"),
        "{e}"
    );
}

#[test]
fn strings_and_keys_that_are_not_utf8_are_refused_by_path() {
    let bad = CString::new(vec![b'w', 0xff]).unwrap();
    let value = StandIn::dict([("name", StandIn::String(bad.clone()))]);
    assert_eq!(to_plist(&value), Err(err("name", "string is not UTF-8")));
    let key = StandIn::Dictionary(BTreeMap::from([(bad, StandIn::Int64(1))]));
    assert_eq!(to_plist(&key), Err(err("w\u{fffd}", "key is not UTF-8")));
}

#[test]
fn strings_and_keys_with_a_nul_cannot_be_sent() {
    let value = dict(&[("name", Value::from("wo\0rk"))]);
    assert_eq!(
        from_plist::<StandIn>(&value),
        Err(err(
            "name",
            "string has a NUL byte at 2; XPC keys and strings are C strings"
        ))
    );
    let key = dict(&[("na\0me", Value::from("work"))]);
    assert_eq!(
        from_plist::<StandIn>(&key),
        Err(err(
            "na\0me",
            "key has a NUL byte at 2; XPC keys and strings are C strings"
        ))
    );
}

#[test]
fn plist_types_with_no_xpc_form_cannot_be_sent() {
    let date = Date::from(std::time::SystemTime::UNIX_EPOCH);
    let value = dict(&[("since", Value::Date(date))]);
    assert_eq!(
        from_plist::<StandIn>(&value),
        Err(err("since", "plist date has no XPC form in a ztun message"))
    );
}

#[test]
fn a_reply_dictionary_is_filled_with_exactly_the_messages_keys() {
    let reply = dict(&[
        ("ok", Value::Integer(0.into())),
        (
            "error",
            dict(&[
                ("code", Value::from("not_found")),
                ("message", Value::from("no tunnel work")),
            ]),
        ),
    ]);
    let Value::Dictionary(entries) = &reply else {
        unreachable!()
    };
    let mut target = StandIn::dict([]);
    fill(&mut target, entries).unwrap();
    assert_eq!(Ok(target), from_plist::<StandIn>(&reply));
}

/// `depth` arrays, each holding the next; the innermost is empty.
fn nested(depth: usize) -> StandIn {
    (1..depth).fold(StandIn::Array(vec![]), |inner, _| {
        StandIn::Array(vec![inner])
    })
}

#[test]
fn nesting_at_the_frame_limit_is_accepted() {
    assert!(to_plist(&nested(MAX_DEPTH)).is_ok());
}

#[test]
fn nesting_one_deeper_than_a_frame_allows_is_refused_where_it_happens() {
    let path = format!("(message){}", "[0]".repeat(MAX_DEPTH));
    assert_eq!(
        to_plist(&nested(MAX_DEPTH + 1)),
        Err(err(
            &path,
            "message is too complex: nested deeper than 16 levels"
        ))
    );
}

fn ints(n: usize) -> StandIn {
    StandIn::Array(vec![StandIn::Int64(0); n])
}

#[test]
fn values_up_to_the_frame_limit_are_accepted_and_one_more_is_refused() {
    // The array itself is one value.
    assert!(to_plist(&ints(MAX_VALUES - 1)).is_ok());
    assert_eq!(
        to_plist(&ints(MAX_VALUES)),
        Err(err("", "message is too complex: more than 65536 values"))
    );
}

#[test]
fn dictionary_keys_count_as_values_as_in_a_frame() {
    let entries = |n: usize| {
        StandIn::Dictionary(
            (0..n)
                .map(|i| (CString::new(format!("k{i}")).unwrap(), StandIn::Int64(0)))
                .collect(),
        )
    };
    // 1 + 2 × 32,767 = 65,535 values; 32,768 entries would need 65,537.
    assert!(to_plist(&entries(32_767)).is_ok());
    assert_eq!(
        to_plist(&entries(32_768)).unwrap_err().reason,
        "message is too complex: more than 65536 values"
    );
}

#[test]
fn strings_and_data_up_to_4_mib_are_accepted_and_one_byte_more_is_refused() {
    let quarter = MAX_EXPANDED_BYTES / 4;
    let at_limit = StandIn::Array(vec![
        StandIn::string(&"x".repeat(quarter)),
        StandIn::Data(vec![0; quarter]),
        StandIn::string(&"y".repeat(quarter)),
        StandIn::Data(vec![0; quarter]),
    ]);
    assert!(to_plist(&at_limit).is_ok());
    let over = StandIn::Array(vec![
        StandIn::Data(vec![0; MAX_EXPANDED_BYTES]),
        StandIn::string("z"),
    ]);
    assert_eq!(
        to_plist(&over),
        Err(err(
            "(message)[1]",
            "message is too complex: more than 4 MiB of strings and data"
        ))
    );
}

#[test]
fn key_bytes_count_towards_the_byte_limit() {
    let key = CString::new("k".repeat(MAX_EXPANDED_BYTES + 1)).unwrap();
    let value = StandIn::Dictionary(BTreeMap::from([(key, StandIn::Int64(0))]));
    assert_eq!(
        to_plist(&value).unwrap_err().reason,
        "message is too complex: more than 4 MiB of strings and data"
    );
}

/// A node that claims to be a huge dictionary and fails the test if its
/// entries are ever listed: what a hostile peer's message looks like to the
/// bridge before any child is read.
#[derive(Debug, Clone, Copy)]
struct Huge;

impl<'a> XpcRead<'a> for Huge {
    fn view(self) -> View<'a> {
        View::Dictionary { len: usize::MAX }
    }

    fn entries(self) -> Vec<(&'a [u8], Self)> {
        panic!("entries of an oversized dictionary were listed")
    }

    fn items(self) -> Vec<Self> {
        panic!("items of a dictionary were listed")
    }
}

#[test]
fn a_collection_too_large_to_fit_is_refused_before_its_entries_are_listed() {
    assert_eq!(
        to_plist(Huge),
        Err(err("", "message is too complex: more than 65536 values"))
    );
}

#[test]
fn the_table_names_every_xpc_type_once_and_maps_the_supported_ones() {
    let rows: Vec<Mapping> = XpcType::ALL.map(XpcType::mapping).to_vec();
    let mut names: Vec<&str> = rows.iter().map(|m| m.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), XpcType::ALL.len());
    let supported: Vec<(&str, &str)> = rows
        .iter()
        .filter_map(|m| m.plist.map(|p| (m.name, p)))
        .collect();
    assert_eq!(
        supported,
        [
            ("dictionary", "Dictionary"),
            ("array", "Array"),
            ("string", "String"),
            ("int64", "Integer"),
            ("uint64", "Integer"),
            ("bool", "Boolean"),
            ("data", "Data"),
            ("double", "Real"),
        ]
    );
    assert!(markdown_table().starts_with(
        "| XPC type | plist value | note |\n|---|---|---|\n| `dictionary` | `Dictionary` |"
    ));
}

#[test]
fn integers_keep_their_value_across_the_bridge() {
    for n in [i64::MIN, -1, 0, 1, 65_535, i64::MAX] {
        let plist = Value::Integer(Integer::from(n));
        let xpc: StandIn = from_plist(&plist).unwrap();
        assert_eq!(to_plist(&xpc), Ok(plist));
    }
}
