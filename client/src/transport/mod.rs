//! How ztunctl reaches the helper: a Unix socket (Linux; macOS with
//! `--socket` or `ZTUN_SOCKET`), or on macOS XPC to the Mach service an
//! installed helper serves. Both carry the same message dictionaries under
//! the same deadline, and fail with the same errors (so the same exit
//! codes): unreachable, lost, or timed out.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ztun_proto::plist::Value;

use crate::ClientError;

mod unix;
#[cfg(target_os = "macos")]
mod xpc;

/// Where the helper is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix control socket.
    Unix(PathBuf),
    /// An XPC Mach service in the system namespace (macOS).
    Xpc(&'static str),
}

impl Endpoint {
    /// The socket when one is named (`--socket`, `ZTUN_SOCKET`); otherwise
    /// XPC on macOS, where an installed helper serves no socket, and the
    /// default socket elsewhere.
    pub fn choose(socket: Option<&Path>) -> Self {
        match socket {
            Some(path) => Endpoint::Unix(path.to_owned()),
            None if cfg!(target_os = "macos") => Endpoint::Xpc(ztun_proto::service::MACH_SERVICE),
            None => Endpoint::Unix(PathBuf::from(ztun_proto::DEFAULT_SOCKET_PATH)),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Xpc(service) => write!(f, "XPC service {service}"),
        }
    }
}

/// One connection to the helper.
#[derive(Debug)]
pub struct Connection(Inner);

#[derive(Debug)]
enum Inner {
    Unix(unix::Connection),
    #[cfg(target_os = "macos")]
    Xpc(xpc::Connection),
}

impl Connection {
    /// Connects to the Unix socket at `path`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, ClientError> {
        Ok(Self(Inner::Unix(unix::Connection::connect(path, timeout)?)))
    }

    /// Connects to `endpoint`. Over XPC nothing is sent until the first
    /// request, so an absent helper shows up then, as `Unreachable`.
    pub fn open(endpoint: &Endpoint, timeout: Duration) -> Result<Self, ClientError> {
        match endpoint {
            Endpoint::Unix(path) => Self::connect(path, timeout),
            #[cfg(target_os = "macos")]
            Endpoint::Xpc(service) => Ok(Self(Inner::Xpc(xpc::Connection::connect(
                service, timeout,
            )?))),
            #[cfg(not(target_os = "macos"))]
            Endpoint::Xpc(service) => Err(ClientError::Unreachable {
                endpoint: endpoint.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    format!("{service} is an XPC service, and XPC exists only on macOS"),
                ),
            }),
        }
    }

    /// Sends one request.
    pub fn send(&mut self, message: &Value) -> Result<(), ClientError> {
        match &mut self.0 {
            Inner::Unix(c) => c.send(message),
            #[cfg(target_os = "macos")]
            Inner::Xpc(c) => c.send(message),
        }
    }

    /// Receives the reply to the request sent, or, once it has come, the
    /// next event of a `watch` stream. With `wait_forever` there is no
    /// deadline between events.
    pub fn receive(&mut self, wait_forever: bool) -> Result<Value, ClientError> {
        match &mut self.0 {
            Inner::Unix(c) => c.receive(wait_forever),
            #[cfg(target_os = "macos")]
            Inner::Xpc(c) => c.receive(wait_forever),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_socket_is_always_the_unix_transport() {
        let path = Path::new("/tmp/ztun/ztun.sock");
        assert_eq!(
            Endpoint::choose(Some(path)),
            Endpoint::Unix(path.to_owned())
        );
        assert_eq!(
            Endpoint::choose(Some(path)).to_string(),
            "/tmp/ztun/ztun.sock"
        );
    }

    #[test]
    fn without_a_socket_macos_uses_xpc_and_linux_the_default_socket() {
        let expected = if cfg!(target_os = "macos") {
            Endpoint::Xpc("com.ztun.helper")
        } else {
            Endpoint::Unix(PathBuf::from("/run/ztun/control.sock"))
        };
        assert_eq!(Endpoint::choose(None), expected);
        assert_eq!(
            Endpoint::Xpc("com.ztun.helper").to_string(),
            "XPC service com.ztun.helper"
        );
    }

    #[cfg(not(target_os = "macos"))]
    #[test]
    fn xpc_elsewhere_than_macos_is_unreachable_with_exit_3() {
        let err = Connection::open(&Endpoint::Xpc("com.ztun.helper"), Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(err.exit_code(), 3);
        assert!(
            err.to_string().starts_with(
                "cannot reach the ztun helper at XPC service com.ztun.helper: \
                 com.ztun.helper is an XPC service, and XPC exists only on macOS"
            ),
            "{err}"
        );
    }
}
