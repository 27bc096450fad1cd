//! Typed reads from a `plist::Value` dictionary that name the key on failure.
//!
//! Every decode error a client sees names the full key path (`tunnel.routes[2]`),
//! so a Swift menu-bar app author can tell which field to fix. Unknown keys are
//! never looked at, which is what makes them ignored.

use plist::{Dictionary, Value};

use crate::DecodeError;

/// A dictionary being decoded, with the key path that leads to it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    dict: &'a Dictionary,
    path: &'a str,
}

/// The name of a plist value's type, as an error message shows it.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "array",
        Value::Dictionary(_) => "dictionary",
        Value::Boolean(_) => "bool",
        Value::Data(_) => "data",
        Value::Date(_) => "date",
        Value::Real(_) => "real",
        Value::Integer(_) => "integer",
        Value::String(_) => "string",
        Value::Uid(_) => "uid",
        _ => "unknown",
    }
}

/// Joins a parent path and a key: `("", "op") -> "op"`, `("tunnel", "mtu") -> "tunnel.mtu"`.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> Fields<'a> {
    /// Starts decoding `value` at `path` (empty for a whole message).
    pub(crate) fn new(value: &'a Value, path: &'a str) -> Result<Self, DecodeError> {
        match value {
            Value::Dictionary(dict) => Ok(Self { dict, path }),
            other => Err(DecodeError::WrongType {
                key: if path.is_empty() {
                    "(message)".to_owned()
                } else {
                    path.to_owned()
                },
                expected: "dictionary",
                found: type_name(other),
            }),
        }
    }

    /// The keys present, for dictionaries whose keys are data (drop reasons).
    pub(crate) fn keys(&self) -> impl Iterator<Item = &'a str> {
        self.dict.keys().map(String::as_str)
    }

    pub(crate) fn key(&self, key: &str) -> String {
        join(self.path, key)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.dict.get(key)
    }

    fn wrong_type(&self, key: &str, expected: &'static str, found: &Value) -> DecodeError {
        DecodeError::WrongType {
            key: self.key(key),
            expected,
            found: type_name(found),
        }
    }

    pub(crate) fn missing(&self, key: &str) -> DecodeError {
        DecodeError::Missing { key: self.key(key) }
    }

    pub(crate) fn invalid(&self, key: &str, reason: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            key: self.key(key),
            reason: reason.into(),
        }
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&'a str>, DecodeError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong_type(key, "string", other)),
        }
    }

    pub(crate) fn str(&self, key: &str) -> Result<&'a str, DecodeError> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    pub(crate) fn opt_int(&self, key: &str) -> Result<Option<i64>, DecodeError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Integer(i)) => i
                .as_signed()
                .map(Some)
                .ok_or_else(|| self.invalid(key, "integer does not fit in int64")),
            Some(other) => Err(self.wrong_type(key, "integer", other)),
        }
    }

    pub(crate) fn int(&self, key: &str) -> Result<i64, DecodeError> {
        self.opt_int(key)?.ok_or_else(|| self.missing(key))
    }

    /// An integer that must fit `T` (a count, a port, an MTU).
    pub(crate) fn opt_int_as<T: TryFrom<i64>>(&self, key: &str) -> Result<Option<T>, DecodeError> {
        match self.opt_int(key)? {
            None => Ok(None),
            Some(n) => T::try_from(n)
                .map(Some)
                .map_err(|_| self.invalid(key, format!("{n} is out of range"))),
        }
    }

    /// A flag. The wire form is int64 0/1 (the schema was pinned when the
    /// client was to be `xpc-connection`, which has no bool); a real bool is
    /// accepted too, so a Swift app using `xpc_dictionary_set_bool` is
    /// understood.
    pub(crate) fn opt_flag(&self, key: &str) -> Result<Option<bool>, DecodeError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(Value::Integer(i)) => match i.as_signed() {
                Some(0) => Ok(Some(false)),
                Some(1) => Ok(Some(true)),
                _ => Err(self.invalid(key, format!("flag must be 0 or 1, got {i}"))),
            },
            Some(other) => Err(self.wrong_type(key, "integer 0/1", other)),
        }
    }

    pub(crate) fn flag(&self, key: &str) -> Result<bool, DecodeError> {
        self.opt_flag(key)?.ok_or_else(|| self.missing(key))
    }

    pub(crate) fn opt_array(&self, key: &str) -> Result<Option<&'a [Value]>, DecodeError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(other) => Err(self.wrong_type(key, "array", other)),
        }
    }

    pub(crate) fn array(&self, key: &str) -> Result<&'a [Value], DecodeError> {
        self.opt_array(key)?.ok_or_else(|| self.missing(key))
    }

    /// Each element of a string array, parsed by `parse`; errors name the
    /// element (`routes[2]`). A missing array is empty.
    pub(crate) fn str_list<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, DecodeError> {
        let Some(items) = self.opt_array(key)? else {
            return Ok(Vec::new());
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let at = format!("{}[{i}]", self.key(key));
                match item {
                    Value::String(s) => {
                        parse(s).map_err(|reason| DecodeError::Invalid { key: at, reason })
                    }
                    other => Err(DecodeError::WrongType {
                        key: at,
                        expected: "string",
                        found: type_name(other),
                    }),
                }
            })
            .collect()
    }

    /// A string parsed by `parse`, or `None` when absent.
    pub(crate) fn opt_parsed<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, DecodeError> {
        self.opt_str(key)?
            .map(|s| parse(s).map_err(|reason| self.invalid(key, reason)))
            .transpose()
    }

    pub(crate) fn parsed<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, DecodeError> {
        self.opt_parsed(key, parse)?
            .ok_or_else(|| self.missing(key))
    }

    /// The raw value under `key`, for nested dictionaries and arrays of them.
    pub(crate) fn value(&self, key: &str) -> Result<&'a Value, DecodeError> {
        self.get(key).ok_or_else(|| self.missing(key))
    }

    pub(crate) fn opt_value(&self, key: &str) -> Option<&'a Value> {
        self.get(key)
    }
}

/// Builds a dictionary; `None` values are left out so optional keys are absent
/// rather than empty.
#[derive(Debug, Default)]
pub(crate) struct DictBuilder(Dictionary);

impl DictBuilder {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    pub(crate) fn set_opt(self, key: &str, value: Option<impl Into<Value>>) -> Self {
        match value {
            Some(v) => self.set(key, v),
            None => self,
        }
    }

    pub(crate) fn flag(self, key: &str, on: bool) -> Self {
        self.set(key, i64::from(on))
    }

    pub(crate) fn strings<T: ToString>(self, key: &str, items: &[T]) -> Self {
        let list: Vec<Value> = items.iter().map(|i| Value::String(i.to_string())).collect();
        self.set(key, list)
    }

    pub(crate) fn build(self) -> Value {
        Value::Dictionary(self.0)
    }
}

/// A counter on the wire: int64, saturating (a u64 counter never reaches 2^63
/// in practice, but a wrap would turn into a negative number on the wire).
pub(crate) fn counter(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
