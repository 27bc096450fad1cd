//! XPC connections and the dispatch queues their handlers run on.

use std::ffi::CStr;
use std::fmt;
use std::os::raw::c_void;
use std::ptr::{self, NonNull};
use std::sync::Mutex;

use block::{Block, ConcreteBlock};
use xpc_connection_sys as sys;
use xpc_connection_sys::{xpc_connection_t, xpc_object_t};

use super::ffi;
use super::object::Object;
use crate::value::XpcType;

/// A serial dispatch queue, holding one reference, released on drop. A
/// connection retains its target queue, so a `Queue` may be dropped once
/// the connections using it exist.
pub struct Queue(NonNull<sys::dispatch_queue_s>);

// SAFETY: dispatch queues are thread-safe objects; submitting to and
// releasing them from any thread is what they are for.
unsafe impl Send for Queue {}
// SAFETY: as above; `&Queue` only hands the queue to libxpc.
unsafe impl Sync for Queue {}

impl Queue {
    /// A new serial queue; `label` names it in crash reports and `sample`.
    pub fn serial(label: &CStr) -> Self {
        // SAFETY: `label` is NUL-terminated (libdispatch copies it); a NULL
        // attribute means serial. The result is a queue we own, or libdispatch
        // aborts: it never returns NULL.
        let raw = unsafe { sys::dispatch_queue_create(label.as_ptr(), ptr::null_mut()) };
        match NonNull::new(raw) {
            Some(queue) => Self(queue),
            None => std::process::abort(),
        }
    }

    fn as_raw(&self) -> sys::dispatch_queue_t {
        self.0.as_ptr()
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: we own exactly one reference (type invariant).
        unsafe { ffi::dispatch_release(self.as_raw()) }
    }
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Queue")
    }
}

/// How a connection failed, from libxpc's well-known error dictionaries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XpcError {
    /// The other side went away (crashed, exited); messages in flight are
    /// lost, and a client connection may be used again.
    #[error("the connection was interrupted")]
    Interrupted,
    /// The connection is finished: the service does not exist (or refused
    /// this peer), or the connection was cancelled.
    #[error("the connection is invalid")]
    Invalid,
    /// launchd is about to stop this process.
    #[error("the process is about to be terminated")]
    TerminationImminent,
    /// Any other error dictionary, with its description.
    #[error("{0}")]
    Other(String),
}

/// What a connection's event handler receives.
#[derive(Debug)]
pub enum Event {
    /// A message (a dictionary), retained for the receiver.
    Message(Object),
    /// A new peer of a listener, retained for the receiver, which must set
    /// its event handler and resume it, or cancel it.
    Peer(Connection),
    Error(XpcError),
}

/// An XPC connection holding one reference, released on drop.
pub struct Connection(NonNull<sys::_xpc_connection_s>);

// SAFETY: libxpc connections are thread-safe: sending, cancelling and
// setting handlers may happen from any thread or queue (<xpc/connection.h>:
// "This API is safe to call from multiple GCD queues").
unsafe impl Send for Connection {}
// SAFETY: as above.
unsafe impl Sync for Connection {}

impl Connection {
    /// The listener for `name`, a Mach service launchd registered for this
    /// process (`MachServices` in its plist). Its events are new peers, on
    /// `queue`. Suspended until [`Connection::resume`].
    pub fn mach_service_listener(name: &CStr, queue: &Queue) -> Self {
        Self::mach_service(
            name,
            queue,
            u64::from(sys::XPC_CONNECTION_MACH_SERVICE_LISTENER),
        )
    }

    /// A client connection to `name` in the system (privileged) bootstrap
    /// namespace, where launchd daemons' services live. Events arrive on
    /// `queue`. Suspended until [`Connection::resume`].
    pub fn mach_service_client(name: &CStr, queue: &Queue) -> Self {
        Self::mach_service(
            name,
            queue,
            u64::from(sys::XPC_CONNECTION_MACH_SERVICE_PRIVILEGED),
        )
    }

    fn mach_service(name: &CStr, queue: &Queue, flags: u64) -> Self {
        // SAFETY: `name` is NUL-terminated and copied by libxpc; the queue is
        // live and libxpc retains it. The result is a connection we own, or
        // libxpc aborts: it never returns NULL (an unknown name shows up
        // later as `XpcError::Invalid`).
        let raw = unsafe {
            sys::xpc_connection_create_mach_service(name.as_ptr(), queue.as_raw(), flags)
        };
        match NonNull::new(raw) {
            Some(connection) => Self(connection),
            None => std::process::abort(),
        }
    }

    /// Retains a connection libxpc lends (a new peer in a listener's event
    /// handler).
    ///
    /// # Safety
    /// `raw` is NULL or a live connection.
    unsafe fn retain(raw: xpc_object_t) -> Option<Self> {
        let raw = NonNull::new(raw)?;
        // SAFETY: a live connection (the caller's promise); the extra
        // reference is ours.
        unsafe { sys::xpc_retain(raw.as_ptr()) };
        Some(Self(raw.cast()))
    }

    pub(crate) fn as_raw(&self) -> xpc_connection_t {
        self.0.as_ptr()
    }

    /// Sets the handler for messages (or, on a listener, new peers) and
    /// errors. It runs on the connection's queue, one event at a time, and
    /// must not block. Replacing a handler takes effect after a running one
    /// returns.
    pub fn set_event_handler<F>(&self, handler: F)
    where
        F: Fn(Event) + Send + Sync + 'static,
    {
        let block = ConcreteBlock::new(move |raw: xpc_object_t| handler(event(raw))).copy();
        let block: &Block<(xpc_object_t,), ()> = &block;
        // SAFETY: the connection is live; libxpc copies the heap block (one
        // more reference to it) and calls it with a lent object, which
        // `event` retains before the block returns. Our reference to the
        // block is released when `block` drops, after this call.
        unsafe {
            sys::xpc_connection_set_event_handler(
                self.as_raw(),
                ptr::from_ref(block).cast_mut().cast::<c_void>(),
            );
        }
    }

    /// Starts delivering events. Call once, after the handler is set.
    pub fn resume(&self) {
        // SAFETY: a live connection.
        unsafe { sys::xpc_connection_resume(self.as_raw()) }
    }

    /// Ends the connection: the event handler gets one last
    /// `XpcError::Invalid`, replies outstanding get the same, and sends
    /// become no-ops.
    pub fn cancel(&self) {
        // SAFETY: a live connection; cancelling twice is allowed.
        unsafe { sys::xpc_connection_cancel(self.as_raw()) }
    }

    /// Queues `message` (a dictionary) for the peer. libxpc copies it.
    pub fn send(&self, message: &Object) {
        if message.xpc_type() != XpcType::Dictionary {
            return;
        }
        // SAFETY: a live connection and a live dictionary, which libxpc
        // logically copies ("safe to modify the dictionary after this call").
        unsafe { sys::xpc_connection_send_message(self.as_raw(), message.as_raw()) }
    }

    /// Sends `message` expecting a reply; `on_reply` runs once, on `queue`,
    /// with the reply or the error that replaced it (`Interrupted` if the
    /// peer exited first, `Invalid` if the connection never worked).
    pub fn send_with_reply<F>(&self, message: &Object, queue: &Queue, on_reply: F)
    where
        F: FnOnce(Result<Object, XpcError>) + Send + 'static,
    {
        if message.xpc_type() != XpcType::Dictionary {
            return;
        }
        let once = Mutex::new(Some(on_reply));
        let block = ConcreteBlock::new(move |raw: xpc_object_t| {
            let taken = once.lock().ok().and_then(|mut slot| slot.take());
            if let Some(on_reply) = taken {
                on_reply(match event(raw) {
                    Event::Message(reply) => Ok(reply),
                    Event::Error(e) => Err(e),
                    Event::Peer(_) => Err(XpcError::Other("a connection came as a reply".into())),
                });
            }
        })
        .copy();
        let block: &Block<(xpc_object_t,), ()> = &block;
        // SAFETY: a live connection, dictionary and queue; libxpc copies the
        // message and the heap block, and calls the block once with a lent
        // object, which `event` retains.
        unsafe {
            sys::xpc_connection_send_message_with_reply(
                self.as_raw(),
                message.as_raw(),
                queue.as_raw(),
                ptr::from_ref(block).cast_mut().cast::<c_void>(),
            );
        }
    }

    /// Runs `after` on the connection's queue once every message sent so far
    /// has left this process (at once if the connection is cancelled). This
    /// is how a sender learns that a slow peer is not taking its messages.
    pub fn barrier<F>(&self, after: F)
    where
        F: FnOnce() + Send + 'static,
    {
        let once = Mutex::new(Some(after));
        let block = ConcreteBlock::new(move || {
            if let Some(after) = once.lock().ok().and_then(|mut slot| slot.take()) {
                after();
            }
        })
        .copy();
        let block: &Block<(), ()> = &block;
        // SAFETY: a live connection; libxpc copies the heap block and calls
        // it once.
        unsafe {
            sys::xpc_connection_send_barrier(
                self.as_raw(),
                ptr::from_ref(block).cast_mut().cast::<c_void>(),
            );
        }
    }
}

impl Clone for Connection {
    fn clone(&self) -> Self {
        // SAFETY: a live connection; the new reference belongs to the clone.
        unsafe { sys::xpc_retain(self.as_raw().cast()) };
        Self(self.0)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: we own exactly one reference (type invariant).
        unsafe { sys::xpc_release(self.as_raw().cast()) }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connection")
    }
}

/// Turns the object a handler was lent into an owned [`Event`].
fn event(raw: xpc_object_t) -> Event {
    if raw.is_null() {
        return Event::Error(XpcError::Other("libxpc passed no object".into()));
    }
    // SAFETY: `raw` is the live object libxpc lent the handler.
    let Some(object) = (unsafe { Object::retain(raw) }) else {
        return Event::Error(XpcError::Other("libxpc passed no object".into()));
    };
    match object.xpc_type() {
        XpcType::Dictionary => Event::Message(object),
        XpcType::Connection => {
            // SAFETY: a live connection, kept alive by `object` meanwhile.
            match unsafe { Connection::retain(raw) } {
                Some(peer) => Event::Peer(peer),
                None => Event::Error(XpcError::Other("libxpc passed no connection".into())),
            }
        }
        XpcType::Error => Event::Error(error(&object)),
        other => Event::Error(XpcError::Other(format!(
            "unexpected {} on a connection",
            other.name()
        ))),
    }
}

/// Names libxpc's well-known error dictionaries (<xpc/connection.h>, all
/// macOS 10.7+). `XPC_ERROR_PEER_CODE_SIGNING_REQUIREMENT` (macOS 12+) is
/// left to its description rather than referenced, so the binary still
/// loads on older systems.
fn error(object: &Object) -> XpcError {
    let raw = object.as_raw().cast_const();
    if raw == (&raw const sys::_xpc_error_connection_interrupted).cast() {
        return XpcError::Interrupted;
    }
    if raw == (&raw const sys::_xpc_error_connection_invalid).cast() {
        return XpcError::Invalid;
    }
    if raw == (&raw const sys::_xpc_error_termination_imminent).cast() {
        return XpcError::TerminationImminent;
    }
    // SAFETY: `_xpc_error_key_description` is libxpc's constant key, a
    // NUL-terminated string that lives forever; reading the pointer is a
    // plain load.
    let key = unsafe { sys::_xpc_error_key_description };
    // SAFETY: `object` is a live error dictionary; the result is NULL or a
    // string it owns, copied before `object` can drop.
    let description = unsafe { sys::xpc_dictionary_get_string(object.as_raw(), key) };
    if description.is_null() {
        return XpcError::Other("an XPC error without a description".into());
    }
    // SAFETY: non-NULL, NUL-terminated, owned by `object` (alive here).
    XpcError::Other(
        unsafe { CStr::from_ptr(description) }
            .to_string_lossy()
            .into_owned(),
    )
}
