//! A model of libxpc's object tree, for running the bridge where there is no
//! libxpc. It keeps what matters to the bridge: dictionaries keyed by C
//! strings with no order of their own (a `BTreeMap`, so a round trip never
//! depends on insertion order), arrays, the scalar types, and a placeholder
//! for every type ztun refuses, so tests can send what a hostile or careless
//! peer would.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};

use crate::value::{View, XpcBuild, XpcRead, XpcType};

#[derive(Debug, Clone, PartialEq)]
pub enum StandIn {
    Dictionary(BTreeMap<CString, StandIn>),
    Array(Vec<StandIn>),
    String(CString),
    Int64(i64),
    Uint64(u64),
    Bool(bool),
    Double(f64),
    Data(Vec<u8>),
    /// An object of a type the bridge refuses (a file descriptor, a date…).
    Unsupported(XpcType),
}

impl StandIn {
    /// A dictionary from `(key, value)` pairs; keys must hold no NUL.
    pub fn dict<'k>(entries: impl IntoIterator<Item = (&'k str, StandIn)>) -> Self {
        StandIn::Dictionary(
            entries
                .into_iter()
                .map(|(k, v)| (CString::new(k).unwrap_or_default(), v))
                .collect(),
        )
    }

    /// A string; one with a NUL inside becomes empty (libxpc would stop there).
    pub fn string(s: &str) -> Self {
        StandIn::String(CString::new(s).unwrap_or_default())
    }
}

impl<'a> XpcRead<'a> for &'a StandIn {
    fn view(self) -> View<'a> {
        match self {
            StandIn::Dictionary(d) => View::Dictionary { len: d.len() },
            StandIn::Array(a) => View::Array { len: a.len() },
            StandIn::String(s) => View::String(s.to_bytes()),
            StandIn::Int64(n) => View::Int64(*n),
            StandIn::Uint64(n) => View::Uint64(*n),
            StandIn::Bool(b) => View::Bool(*b),
            StandIn::Double(d) => View::Double(*d),
            StandIn::Data(d) => View::Data(d),
            StandIn::Unsupported(t) => View::Refused(*t),
        }
    }

    fn entries(self) -> Vec<(&'a [u8], Self)> {
        match self {
            StandIn::Dictionary(d) => d.iter().map(|(k, v)| (k.to_bytes(), v)).collect(),
            _ => Vec::new(),
        }
    }

    fn items(self) -> Vec<Self> {
        match self {
            StandIn::Array(a) => a.iter().collect(),
            _ => Vec::new(),
        }
    }
}

impl XpcBuild for StandIn {
    fn dictionary() -> Self {
        StandIn::Dictionary(BTreeMap::new())
    }

    fn array() -> Self {
        StandIn::Array(Vec::new())
    }

    fn string(s: &CStr) -> Self {
        StandIn::String(s.to_owned())
    }

    fn int64(n: i64) -> Self {
        StandIn::Int64(n)
    }

    fn uint64(n: u64) -> Self {
        StandIn::Uint64(n)
    }

    fn bool(b: bool) -> Self {
        StandIn::Bool(b)
    }

    fn double(d: f64) -> Self {
        StandIn::Double(d)
    }

    fn data(bytes: &[u8]) -> Self {
        StandIn::Data(bytes.to_vec())
    }

    fn insert(&mut self, key: &CStr, value: Self) {
        // libxpc aborts the process on a set into a non-dictionary; the
        // bridge never does one, and the model just ignores it.
        if let StandIn::Dictionary(d) = self {
            d.insert(key.to_owned(), value);
        }
    }

    fn push(&mut self, item: Self) {
        if let StandIn::Array(a) = self {
            a.push(item);
        }
    }
}
