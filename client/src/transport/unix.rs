//! The Unix-socket transport: one connection, frames from `ztun_proto::frame`,
//! blocking I/O with a deadline. A CLI sends one request and reads one reply
//! (or a stream of events), so threads and async buy nothing here.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ztun_proto::frame::{self, HEADER_LEN};
use ztun_proto::plist::Value;

use super::Endpoint;
use crate::ClientError;

#[derive(Debug)]
pub(super) struct Connection {
    stream: UnixStream,
    path: PathBuf,
    timeout: Duration,
}

impl Connection {
    pub(super) fn connect(path: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            endpoint: Endpoint::Unix(path.to_owned()),
            source,
        };
        let stream = UnixStream::connect(path).map_err(unreachable)?;
        stream
            .set_write_timeout(Some(timeout))
            .and_then(|()| stream.set_read_timeout(Some(timeout)))
            .map_err(unreachable)?;
        Ok(Self {
            stream,
            path: path.to_owned(),
            timeout,
        })
    }

    pub(super) fn send(&mut self, message: &Value) -> Result<(), ClientError> {
        let mut bytes = Vec::new();
        frame::encode(message, &mut bytes)
            .map_err(|e| ClientError::Protocol(format!("cannot encode the request: {e}")))?;
        self.stream.write_all(&bytes).map_err(|e| self.lost(e))
    }

    /// Reads one whole message. With `wait_forever` (a `watch` stream) there
    /// is no deadline between messages.
    pub(super) fn receive(&mut self, wait_forever: bool) -> Result<Value, ClientError> {
        let deadline = if wait_forever {
            None
        } else {
            Some(self.timeout)
        };
        self.stream
            .set_read_timeout(deadline)
            .map_err(|e| self.lost(e))?;
        let mut header = [0; HEADER_LEN];
        self.stream
            .read_exact(&mut header)
            .map_err(|e| self.lost(e))?;
        // The body has a deadline even on a watch stream: a helper never
        // stalls mid-message.
        self.stream
            .set_read_timeout(Some(self.timeout))
            .map_err(|e| self.lost(e))?;
        let len = frame::body_len(header)
            .map_err(|e| ClientError::Protocol(format!("bad frame from the helper: {e}")))?;
        let mut body = vec![0; len];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| self.lost(e))?;
        frame::decode_body(&body)
            .map_err(|e| ClientError::Protocol(format!("bad frame from the helper: {e}")))
    }

    fn lost(&self, e: io::Error) -> ClientError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout {
                endpoint: Endpoint::Unix(self.path.clone()),
                after: self.timeout,
            },
            _ => ClientError::Lost {
                endpoint: Endpoint::Unix(self.path.clone()),
                source: e,
            },
        }
    }
}
