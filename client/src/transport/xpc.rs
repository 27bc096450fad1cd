//! XPC to the helper's Mach service (macOS): each request goes out with a
//! reply handler, and the reply, or the error that replaces it, comes back
//! through a channel this thread waits on with the command's deadline.
//! Events of a `watch` stream arrive on the connection's event handler, in a
//! channel of their own: libxpc does not order a reply against the events
//! that follow it.

use std::ffi::CString;
use std::io;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use ztun_proto::plist::Value;
use ztun_xpc::macos::{Connection as XpcConnection, Event, Object, Queue, XpcError};
use ztun_xpc::{from_plist, to_plist, BridgeError};

use super::Endpoint;
use crate::ClientError;

/// What arrives from the helper: a message, or why none will.
type Incoming = Result<Value, Failure>;

#[derive(Debug)]
enum Failure {
    Xpc(XpcError),
    /// The helper sent a tree that cannot be a ztun message.
    Bridge(BridgeError),
}

#[derive(Debug)]
pub(super) struct Connection {
    xpc: XpcConnection,
    queue: Queue,
    service: &'static str,
    timeout: Duration,
    reply_tx: Sender<Incoming>,
    replies: Receiver<Incoming>,
    events: Receiver<Incoming>,
    /// Requests sent whose reply has not been received.
    outstanding: usize,
    /// Whether the helper has answered anything yet: before that, a
    /// connection that fails means no helper is there.
    answered: bool,
}

fn incoming(message: &Object) -> Incoming {
    to_plist(message.node()).map_err(Failure::Bridge)
}

impl Connection {
    pub(super) fn connect(service: &'static str, timeout: Duration) -> Result<Self, ClientError> {
        let endpoint = Endpoint::Xpc(service);
        let name = CString::new(service).map_err(|e| ClientError::Unreachable {
            endpoint: endpoint.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let queue = Queue::serial(c"com.ztun.ztunctl");
        let xpc = XpcConnection::mach_service_client(&name, &queue);
        let (event_tx, events) = mpsc::channel();
        xpc.set_event_handler(move |event| {
            let item = match event {
                Event::Message(message) => incoming(&message),
                Event::Error(e) => Err(Failure::Xpc(e)),
                Event::Peer(_) => return,
            };
            // The receiver is gone only when ztunctl is finishing.
            let _ = event_tx.send(item);
        });
        xpc.resume();
        let (reply_tx, replies) = mpsc::channel();
        Ok(Self {
            xpc,
            queue,
            service,
            timeout,
            reply_tx,
            replies,
            events,
            outstanding: 0,
            answered: false,
        })
    }

    pub(super) fn send(&mut self, message: &Value) -> Result<(), ClientError> {
        let request: Object = from_plist(message)
            .map_err(|e| ClientError::Protocol(format!("cannot encode the request: {e}")))?;
        let reply_tx = self.reply_tx.clone();
        self.xpc
            .send_with_reply(&request, &self.queue, move |reply| {
                let _ = reply_tx.send(match reply {
                    Ok(message) => incoming(&message),
                    Err(e) => Err(Failure::Xpc(e)),
                });
            });
        self.outstanding += 1;
        Ok(())
    }

    pub(super) fn receive(&mut self, wait_forever: bool) -> Result<Value, ClientError> {
        let awaiting_reply = self.outstanding > 0;
        if awaiting_reply {
            self.outstanding -= 1;
        }
        let received = match (awaiting_reply, wait_forever) {
            (true, _) => self.replies.recv_timeout(self.timeout),
            (false, false) => self.events.recv_timeout(self.timeout),
            (false, true) => self
                .events
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(Ok(value)) => {
                self.answered = true;
                Ok(value)
            }
            Ok(Err(failure)) => Err(self.failed(failure)),
            Err(RecvTimeoutError::Timeout) => Err(ClientError::Timeout {
                endpoint: self.endpoint(),
                after: self.timeout,
            }),
            Err(RecvTimeoutError::Disconnected) => {
                Err(self.failed(Failure::Xpc(XpcError::Invalid)))
            }
        }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::Xpc(self.service)
    }

    fn failed(&self, failure: Failure) -> ClientError {
        match failure {
            Failure::Bridge(e) => ClientError::Protocol(e.to_string()),
            Failure::Xpc(XpcError::Invalid) if !self.answered => ClientError::Unreachable {
                endpoint: self.endpoint(),
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    "launchd has no such service, or the helper refused this program",
                ),
            },
            Failure::Xpc(e) => ClientError::Lost {
                endpoint: self.endpoint(),
                source: io::Error::new(io::ErrorKind::ConnectionAborted, e),
            },
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Tells the helper at once that a watcher has gone.
        self.xpc.cancel();
    }
}
