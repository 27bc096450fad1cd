//! Error codes on the wire and the decode errors that map to them.

use std::fmt;
use std::str::FromStr;

use crate::PROTOCOL_VERSION;

/// The `error.code` of a failed reply (DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A missing, mistyped or invalid field; the message names the key.
    InvalidArgument,
    /// The peer may read but not change tunnels or routes (S8).
    Unauthorized,
    NotFound,
    Exists,
    UnsupportedVersion,
    /// The operating system refused (a route, an interface, an address).
    Platform,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::InvalidArgument,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::Exists,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Platform,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Exists => "exists",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Platform => "platform",
            ErrorCode::Internal => "internal",
        }
    }
}

impl FromStr for ErrorCode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("\"{s}\" is not an error code"))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a dictionary is not a valid message. Each variant names the key path
/// (`tunnel.routes[1]`) so the sender knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{key}: required key is missing")]
    Missing { key: String },
    #[error("{key}: expected {expected}, got {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("v: protocol version {found} is not supported; this helper speaks version {PROTOCOL_VERSION}")]
    UnsupportedVersion { found: i64 },
}

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            _ => ErrorCode::InvalidArgument,
        }
    }

    /// The key path the error is about.
    pub fn key(&self) -> &str {
        match self {
            DecodeError::Missing { key }
            | DecodeError::WrongType { key, .. }
            | DecodeError::Invalid { key, .. } => key,
            DecodeError::UnsupportedVersion { .. } => "v",
        }
    }
}
