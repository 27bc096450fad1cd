//! plist ⇄ XPC: the mapping table and the two conversions, written once over
//! [`XpcRead`] (walking a tree a peer sent) and [`XpcBuild`] (building a tree
//! to send), so libxpc on macOS and [`StandIn`](crate::StandIn) in Linux
//! tests run the same code.
//!
//! A received tree is bounded exactly as `frame::decode_body` bounds a
//! Unix-socket frame: at most [`MAX_DEPTH`] nested collections, at most
//! [`MAX_VALUES`] values (every dictionary key, scalar and collection counts
//! one) and at most [`MAX_EXPANDED_BYTES`] of keys, strings and data. XPC's
//! own message limits are far above these and undocumented, so they are not
//! relied on. Walking stops at the first value past a bound, and a
//! collection too large to fit is refused before its children are listed.

use std::ffi::{CStr, CString};
use std::fmt::Write as _;

use ztun_proto::frame::{
    MAX_DEPTH, MAX_EXPANDED_BYTES, MAX_VALUES, REFUSED_BYTES, REFUSED_DEPTH, REFUSED_VALUES,
};
use ztun_proto::plist::{Dictionary, Value};
use ztun_proto::{ErrorCode, ErrorReply};

/// Every kind of XPC object a peer can put in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XpcType {
    Dictionary,
    Array,
    String,
    Int64,
    Uint64,
    Bool,
    Data,
    Double,
    Date,
    Uuid,
    Fd,
    Shmem,
    Null,
    Endpoint,
    Connection,
    Error,
    /// Anything this table does not name (activities, sessions, types newer
    /// than this code).
    Other,
}

/// One row of the mapping table: an XPC type and what ztun makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub xpc: XpcType,
    /// libxpc's name for the type: `XPC_TYPE_INT64` is `int64`.
    pub name: &'static str,
    /// The `plist::Value` variant it becomes; `None` when ztun refuses it.
    pub plist: Option<&'static str>,
    /// What a menu-bar app author needs to know.
    pub note: &'static str,
}

impl XpcType {
    pub const ALL: [XpcType; 17] = [
        XpcType::Dictionary,
        XpcType::Array,
        XpcType::String,
        XpcType::Int64,
        XpcType::Uint64,
        XpcType::Bool,
        XpcType::Data,
        XpcType::Double,
        XpcType::Date,
        XpcType::Uuid,
        XpcType::Fd,
        XpcType::Shmem,
        XpcType::Null,
        XpcType::Endpoint,
        XpcType::Connection,
        XpcType::Error,
        XpcType::Other,
    ];

    /// The table itself. Both directions, the error messages and the table
    /// in docs/xpc.md (checked by a test) read it from here.
    pub fn mapping(self) -> Mapping {
        let (name, plist, note) = match self {
            XpcType::Dictionary => ("dictionary", Some("Dictionary"), "keys are UTF-8 C strings"),
            XpcType::Array => ("array", Some("Array"), "in order"),
            XpcType::String => ("string", Some("String"), "UTF-8, no NUL inside"),
            XpcType::Int64 => (
                "int64",
                Some("Integer"),
                "every integer and flag ztun sends",
            ),
            XpcType::Uint64 => (
                "uint64",
                Some("Integer"),
                "accepted; ztun sends int64 (uint64 only above 2^63-1, which no key reaches)",
            ),
            XpcType::Bool => (
                "bool",
                Some("Boolean"),
                "accepted for flags; ztun sends int64 0/1",
            ),
            XpcType::Data => ("data", Some("Data"), "no key uses it yet"),
            XpcType::Double => ("double", Some("Real"), "no key uses it"),
            XpcType::Date => ("date", None, "refused"),
            XpcType::Uuid => ("uuid", None, "refused"),
            XpcType::Fd => ("fd", None, "refused"),
            XpcType::Shmem => ("shmem", None, "refused"),
            XpcType::Null => ("null", None, "refused; leave the key out instead"),
            XpcType::Endpoint => ("endpoint", None, "refused"),
            XpcType::Connection => ("connection", None, "refused"),
            XpcType::Error => ("error", None, "refused"),
            XpcType::Other => ("any other", None, "refused"),
        };
        Mapping {
            xpc: self,
            name,
            plist,
            note,
        }
    }

    pub fn name(self) -> &'static str {
        self.mapping().name
    }

    /// Whether ztun maps this type to a plist value (or refuses it).
    pub fn is_supported(self) -> bool {
        self.mapping().plist.is_some()
    }
}

/// The mapping table as the Markdown table docs/xpc.md shows.
pub fn markdown_table() -> String {
    let mut out = String::from("| XPC type | plist value | note |\n|---|---|---|\n");
    for m in XpcType::ALL.map(XpcType::mapping) {
        let name = if m.xpc == XpcType::Other {
            m.name.to_owned()
        } else {
            format!("`{}`", m.name)
        };
        let plist = m.plist.map_or("—".to_owned(), |p| format!("`{p}`"));
        let _ = writeln!(out, "| {name} | {plist} | {} |", m.note);
    }
    out
}

/// One node of a received tree as the bridge sees it: a collection's size,
/// a scalar's value, or a type ztun refuses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum View<'a> {
    Dictionary {
        len: usize,
    },
    Array {
        len: usize,
    },
    /// The bytes of the string, without the terminating NUL.
    String(&'a [u8]),
    Int64(i64),
    Uint64(u64),
    Bool(bool),
    Double(f64),
    Data(&'a [u8]),
    Refused(XpcType),
}

/// A node of a received tree. Nodes are borrowed: they, and the bytes they
/// lend, stay valid for `'a`, the life of the root they were reached from.
pub trait XpcRead<'a>: Copy {
    fn view(self) -> View<'a>;
    /// The entries of a node whose view is `Dictionary`, keys as bytes
    /// without the NUL, in any order. Called only after `view` said so.
    fn entries(self) -> Vec<(&'a [u8], Self)>;
    /// The items of a node whose view is `Array`, in order. Called only
    /// after `view` said so.
    fn items(self) -> Vec<Self>;
}

/// Building a tree to send. Each call returns a new object the caller owns;
/// `insert` and `push` take ownership of the child.
pub trait XpcBuild: Sized {
    fn dictionary() -> Self;
    fn array() -> Self;
    fn string(s: &CStr) -> Self;
    fn int64(n: i64) -> Self;
    fn uint64(n: u64) -> Self;
    fn bool(b: bool) -> Self;
    fn double(d: f64) -> Self;
    fn data(bytes: &[u8]) -> Self;
    /// Sets `key` in a dictionary built by [`XpcBuild::dictionary`] (or a
    /// reply dictionary), replacing any value it had.
    fn insert(&mut self, key: &CStr, value: Self);
    /// Appends to an array built by [`XpcBuild::array`].
    fn push(&mut self, item: Self);
}

/// Why a tree cannot cross the bridge: the key path (as the protocol's
/// decode errors spell it, `tunnel.routes[1]`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", shown(.path))]
pub struct BridgeError {
    /// Empty for the message itself.
    pub path: String,
    pub reason: String,
}

impl BridgeError {
    fn new(path: &str, reason: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A received message that cannot cross the bridge is the sender's mistake.
impl From<BridgeError> for ErrorReply {
    fn from(e: BridgeError) -> Self {
        ErrorReply::new(ErrorCode::InvalidArgument, e.to_string())
    }
}

fn shown(path: &str) -> &str {
    if path.is_empty() {
        "(message)"
    } else {
        path
    }
}

fn key_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn index_path(parent: &str, i: usize) -> String {
    format!("{}[{i}]", shown(parent))
}

/// What a received tree has used so far of the bounds.
#[derive(Debug, Default)]
struct Budget {
    values: usize,
    bytes: usize,
}

impl Budget {
    /// Counts one value carrying `bytes` of string, data or key.
    fn count(&mut self, path: &str, bytes: usize) -> Result<(), BridgeError> {
        self.values += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        if self.values > MAX_VALUES {
            Err(too_complex(path, REFUSED_VALUES))
        } else if self.bytes > MAX_EXPANDED_BYTES {
            Err(too_complex(path, REFUSED_BYTES))
        } else {
            Ok(())
        }
    }

    /// Enters a collection of `children` values at nesting `depth` (the
    /// message itself is 1), refusing it before its children are listed if
    /// it is too deep or cannot fit.
    fn enter(&self, path: &str, depth: usize, children: usize) -> Result<(), BridgeError> {
        if depth > MAX_DEPTH {
            Err(too_complex(path, REFUSED_DEPTH))
        } else if self.values.saturating_add(children) > MAX_VALUES {
            Err(too_complex(path, REFUSED_VALUES))
        } else {
            Ok(())
        }
    }
}

fn too_complex(path: &str, why: &str) -> BridgeError {
    BridgeError::new(path, format!("message is too complex: {why}"))
}

fn supported_types() -> String {
    let names: Vec<&str> = XpcType::ALL
        .into_iter()
        .filter(|t| t.is_supported())
        .map(XpcType::name)
        .collect();
    names.join(", ")
}

/// Converts a received XPC tree into a plist value, within the bounds.
pub fn to_plist<'a, R: XpcRead<'a>>(root: R) -> Result<Value, BridgeError> {
    read(root, "", 0, &mut Budget::default())
}

fn read<'a, R: XpcRead<'a>>(
    node: R,
    path: &str,
    depth: usize,
    budget: &mut Budget,
) -> Result<Value, BridgeError> {
    let view = node.view();
    let bytes = match view {
        View::String(b) | View::Data(b) => b.len(),
        _ => 0,
    };
    budget.count(path, bytes)?;
    Ok(match view {
        View::Dictionary { len } => {
            // Each entry is a key and a value.
            budget.enter(path, depth + 1, len.saturating_mul(2))?;
            let mut dict = Dictionary::new();
            for (key, child) in node.entries() {
                let Ok(key) = std::str::from_utf8(key) else {
                    let lossy = String::from_utf8_lossy(key);
                    return Err(BridgeError::new(
                        &key_path(path, &lossy),
                        "key is not UTF-8",
                    ));
                };
                let at = key_path(path, key);
                budget.count(&at, key.len())?;
                let value = read(child, &at, depth + 1, budget)?;
                dict.insert(key.to_owned(), value);
            }
            Value::Dictionary(dict)
        }
        View::Array { len } => {
            budget.enter(path, depth + 1, len)?;
            let items = node.items();
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                out.push(read(item, &index_path(path, i), depth + 1, budget)?);
            }
            Value::Array(out)
        }
        View::String(bytes) => match std::str::from_utf8(bytes) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => return Err(BridgeError::new(path, "string is not UTF-8")),
        },
        View::Int64(n) => Value::Integer(n.into()),
        View::Uint64(n) => Value::Integer(n.into()),
        View::Bool(b) => Value::Boolean(b),
        View::Double(d) => Value::Real(d),
        View::Data(bytes) => Value::Data(bytes.to_vec()),
        View::Refused(t) => {
            return Err(BridgeError::new(
                path,
                format!(
                    "XPC type {} cannot carry a ztun value; use one of {}",
                    t.name(),
                    supported_types()
                ),
            ))
        }
    })
}

/// Builds the XPC tree for a plist value (a message ztun sends).
pub fn from_plist<B: XpcBuild>(value: &Value) -> Result<B, BridgeError> {
    build(value, "")
}

/// Sets every entry of `dict` in `target`, a dictionary that already exists:
/// the reply libxpc creates for a request.
pub fn fill<B: XpcBuild>(target: &mut B, dict: &Dictionary) -> Result<(), BridgeError> {
    fill_at(target, dict, "")
}

fn fill_at<B: XpcBuild>(target: &mut B, dict: &Dictionary, path: &str) -> Result<(), BridgeError> {
    for (key, value) in dict {
        let at = key_path(path, key);
        let c_key = c_string(key, &at, "key")?;
        target.insert(&c_key, build(value, &at)?);
    }
    Ok(())
}

fn build<B: XpcBuild>(value: &Value, path: &str) -> Result<B, BridgeError> {
    Ok(match value {
        Value::Dictionary(d) => {
            let mut out = B::dictionary();
            fill_at(&mut out, d, path)?;
            out
        }
        Value::Array(items) => {
            let mut out = B::array();
            for (i, item) in items.iter().enumerate() {
                out.push(build(item, &index_path(path, i))?);
            }
            out
        }
        Value::String(s) => B::string(&c_string(s, path, "string")?),
        Value::Integer(n) => match (n.as_signed(), n.as_unsigned()) {
            (Some(signed), _) => B::int64(signed),
            (None, Some(unsigned)) => B::uint64(unsigned),
            (None, None) => {
                return Err(BridgeError::new(
                    path,
                    format!("integer {n} fits neither int64 nor uint64"),
                ))
            }
        },
        Value::Boolean(b) => B::bool(*b),
        Value::Real(d) => B::double(*d),
        Value::Data(bytes) => B::data(bytes),
        other => {
            return Err(BridgeError::new(
                path,
                format!(
                    "plist {} has no XPC form in a ztun message",
                    plist_type_name(other)
                ),
            ))
        }
    })
}

fn c_string(s: &str, path: &str, what: &str) -> Result<CString, BridgeError> {
    CString::new(s).map_err(|e| {
        BridgeError::new(
            path,
            format!(
                "{what} has a NUL byte at {}; XPC keys and strings are C strings",
                e.nul_position()
            ),
        )
    })
}

fn plist_type_name(value: &Value) -> &'static str {
    match value {
        Value::Date(_) => "date",
        Value::Uid(_) => "uid",
        _ => "value",
    }
}
