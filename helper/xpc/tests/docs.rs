//! docs/xpc.md is the contract menu-bar apps code against. Its message
//! tables are generated from the golden fixtures, through the bridge (so
//! each key's XPC type is the one ztun really sends), and its type table
//! from the bridge's own mapping; this test fails when the page and the
//! code drift apart, and prints the text that belongs in the page.
#![allow(clippy::unwrap_used)] // test inputs are read here, not received

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use ztun_proto::plist::Value;
use ztun_proto::{ErrorCode, Op};
use ztun_xpc::value::markdown_table;
use ztun_xpc::{from_plist, StandIn};

const MESSAGES_BEGIN: &str =
    "<!-- messages: generated from tests/fixtures/xpc by helper/xpc/tests/docs.rs -->\n";
const MESSAGES_END: &str = "<!-- messages: end -->";
const TYPES_BEGIN: &str =
    "<!-- types: generated from ztun_xpc::value::XpcType by helper/xpc/tests/docs.rs -->\n";
const TYPES_END: &str = "<!-- types: end -->";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn page() -> String {
    std::fs::read_to_string(root().join("docs/xpc.md")).unwrap()
}

/// The text between `begin` and `end` in the page.
fn section<'a>(page: &'a str, begin: &str, end: &str) -> &'a str {
    let start = page.find(begin).map_or_else(
        || panic!("docs/xpc.md lacks the marker {begin:?}"),
        |i| i + begin.len(),
    );
    let stop = page[start..].find(end).map_or_else(
        || panic!("docs/xpc.md lacks the marker {end:?}"),
        |i| start + i,
    );
    &page[start..stop]
}

fn fixtures() -> Vec<(String, StandIn)> {
    let dir = root().join("tests/fixtures/xpc");
    let mut all: Vec<(String, StandIn)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let value = Value::from_file(&path).unwrap();
            (name, from_plist(&value).unwrap())
        })
        .collect();
    // Requests, then replies, then events, each by name.
    let rank = |n: &str| {
        ["request", "reply", "event"]
            .iter()
            .position(|p| n.starts_with(p))
    };
    all.sort_by(|a, b| (rank(&a.0), &a.0).cmp(&(rank(&b.0), &b.0)));
    all
}

/// Dictionaries documented once, by name, wherever they appear.
fn shape(fixture: &str, path: &str) -> Option<&'static str> {
    match path {
        "tunnel" if fixture.starts_with("request") => Some("TunnelSpec"),
        "tunnel" | "tunnels[]" => Some("TunnelStatus"),
        "route" | "stale_routes[]" | "installed[]" => Some("InstalledRoute"),
        _ => None,
    }
}

fn anchor(shape: &str) -> String {
    format!("[{shape}](#{})", shape.to_lowercase())
}

/// Keys whose value names the message; the table shows it.
const NAMING_KEYS: [&str; 3] = ["op", "event", "ok"];

/// Keys the protocol leaves out when they have no value (docs/protocol.md),
/// which the fixtures happen to carry everywhere they appear.
const ALSO_OPTIONAL: [(&str, &str); 5] = [
    ("TunnelStatus", "ipv6"),
    ("TunnelStatus", "addresses[].peer"),
    ("event-error", "name"),
    ("reply-doctor", "checks[].tunnel"),
    ("reply-doctor", "checks[].fix"),
];

fn optional(fixture: &str, path: &str, ty: String) -> String {
    if ALSO_OPTIONAL.contains(&(fixture, path)) {
        format!("{ty}, optional")
    } else {
        ty
    }
}

/// One table row per key path: the XPC type, a named shape, or the value
/// of a naming key. Shapes met on the way are collected with their bodies.
fn rows(
    fixture: &str,
    node: &StandIn,
    path: &str,
    out: &mut Vec<(String, String)>,
    shapes: &mut BTreeMap<&'static str, Vec<StandIn>>,
) {
    let described = match node {
        // Keys are drop reasons, which are data, not schema.
        StandIn::Dictionary(_) if path == "counters.drops" => {
            out.push((path.to_owned(), "dictionary: drop reason → int64".into()));
            return;
        }
        StandIn::Dictionary(_) | StandIn::Array(_) if !path.is_empty() => {
            if let Some(name) = shape(fixture, path) {
                shapes.entry(name).or_default().push(node.clone());
                out.push((path.to_owned(), format!("dictionary: {}", anchor(name))));
                return;
            }
            None
        }
        StandIn::String(s) if NAMING_KEYS.contains(&path) => {
            Some(format!("string `\"{}\"`", s.to_string_lossy()))
        }
        StandIn::Int64(n) if NAMING_KEYS.contains(&path) => Some(format!("int64 `{n}`")),
        _ => None,
    };
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match node {
        StandIn::Dictionary(d) => {
            if !path.is_empty() {
                out.push((path.to_owned(), "dictionary".into()));
            }
            // The keys that name a message first, then the rest by name.
            let mut entries: Vec<(String, &StandIn)> = d
                .iter()
                .map(|(k, v)| (k.to_string_lossy().into_owned(), v))
                .collect();
            entries.sort_by_key(|(k, _)| {
                let first = ["v", "op", "event", "ok"].iter().position(|n| n == k);
                (first.unwrap_or(usize::MAX), k.clone())
            });
            for (k, v) in entries {
                rows(fixture, v, &join(&k), out, shapes);
            }
        }
        StandIn::Array(items) => {
            out.push((path.to_owned(), "array".into()));
            // Items share one row; the first of each type stands for all.
            let item_path = format!("{path}[]");
            let mut item_rows = Vec::new();
            for item in items {
                rows(fixture, item, &item_path, &mut item_rows, shapes);
            }
            for row in item_rows {
                if !out.contains(&row) {
                    out.push(row);
                }
            }
        }
        other => out.push((
            path.to_owned(),
            optional(
                fixture,
                path,
                described.unwrap_or_else(|| type_name(other).to_owned()),
            ),
        )),
    }
}

fn type_name(node: &StandIn) -> &'static str {
    match node {
        StandIn::Dictionary(_) => "dictionary",
        StandIn::Array(_) => "array",
        StandIn::String(_) => "string",
        StandIn::Int64(_) => "int64",
        StandIn::Uint64(_) => "uint64",
        StandIn::Bool(_) => "bool",
        StandIn::Double(_) => "double",
        StandIn::Data(_) => "data",
        StandIn::Unsupported(t) => t.name(),
    }
}

fn table(rows: &[(String, String)]) -> String {
    let mut out = String::from("| key | XPC type |\n|---|---|\n");
    for (key, ty) in rows {
        let _ = writeln!(out, "| `{key}` | {ty} |");
    }
    out
}

/// The rows of a shape: the union of every occurrence, keys missing from
/// some occurrence marked optional.
fn shape_rows(name: &str, bodies: &[StandIn]) -> Vec<(String, String)> {
    let mut all: Vec<Vec<(String, String)>> = Vec::new();
    let mut nested = BTreeMap::new();
    for body in bodies {
        let mut r = Vec::new();
        rows(name, body, "", &mut r, &mut nested);
        all.push(r);
    }
    let mut union: Vec<(String, String)> = Vec::new();
    for r in &all {
        for row in r {
            if !union.iter().any(|(k, _)| k == &row.0) {
                union.push(row.clone());
            }
        }
    }
    union.sort();
    union
        .into_iter()
        .map(|(key, ty)| {
            let everywhere = all.iter().all(|r| r.iter().any(|(k, _)| k == &key));
            // A key inside an optional parent is optional only through it.
            let parent_optional = key
                .rsplit_once('.')
                .is_some_and(|(parent, _)| !all.iter().all(|r| r.iter().any(|(k, _)| k == parent)));
            // Array items are as many as there are; never "optional".
            let item = key.contains("[]");
            if everywhere || parent_optional || item || ty.ends_with(", optional") {
                (key, ty)
            } else {
                (key, format!("{ty}, optional"))
            }
        })
        .collect()
}

/// The generated part of docs/xpc.md §3.
fn messages() -> String {
    let mut out = String::new();
    let mut shapes: BTreeMap<&'static str, Vec<StandIn>> = BTreeMap::new();
    for (name, tree) in fixtures() {
        let mut r = Vec::new();
        rows(&name, &tree, "", &mut r, &mut shapes);
        let _ = write!(out, "\n#### `{name}`\n\n{}", table(&r));
    }
    // Shapes inside shapes (InstalledRoute inside TunnelStatus).
    let mut done: BTreeMap<&'static str, Vec<StandIn>> = BTreeMap::new();
    while let Some((name, bodies)) = shapes.pop_first() {
        for body in &bodies {
            let mut ignored = Vec::new();
            rows(name, body, "", &mut ignored, &mut shapes);
        }
        done.entry(name).or_default().extend(bodies);
    }
    for name in ["TunnelSpec", "TunnelStatus", "InstalledRoute"] {
        let bodies = done.get(name).map_or(&[][..], Vec::as_slice);
        let _ = write!(out, "\n#### {name}\n\n{}", table(&shape_rows(name, bodies)));
    }
    out.push('\n');
    out
}

#[test]
fn the_message_tables_are_the_fixtures_as_xpc_types() {
    let expected = messages();
    let page = page();
    let found = section(&page, MESSAGES_BEGIN, MESSAGES_END);
    if found != expected && std::env::var_os("ZTUN_BLESS").is_some() {
        // Regenerate after a fixture change, as the golden tests do.
        let blessed = page.replacen(found, &expected, 1);
        std::fs::write(root().join("docs/xpc.md"), blessed).unwrap();
        return;
    }
    assert!(
        found == expected,
        "docs/xpc.md's message tables differ from the fixtures (ZTUN_BLESS=1 rewrites them); put this between the markers:\n{expected}"
    );
}

#[test]
fn the_type_table_is_the_bridges_mapping() {
    let page = page();
    let found = section(&page, TYPES_BEGIN, TYPES_END);
    assert_eq!(found, markdown_table());
}

#[test]
fn the_page_names_every_fixture_op_error_code_and_the_service() {
    let page = page();
    for (name, _) in fixtures() {
        assert!(page.contains(&format!("`{name}`")), "{name}");
    }
    for op in Op::ALL {
        assert!(page.contains(&format!("`{op}`")), "{op}");
    }
    for code in ErrorCode::ALL {
        assert!(page.contains(&format!("`{code}`")), "{code}");
    }
    assert!(page.contains(&format!("`{}`", ztun_proto::service::MACH_SERVICE)));
}

#[test]
fn keys_documented_as_optional_exist_in_the_fixtures() {
    let messages = messages();
    for (_, key) in ALSO_OPTIONAL {
        assert!(
            messages.contains(&format!("| `{key}` | string, optional |")),
            "{key}"
        );
    }
}
