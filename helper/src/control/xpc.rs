//! The XPC transport (macOS): the Mach service `com.ztun.helper`, which
//! launchd registers from the job's `MachServices`. A request dictionary
//! crosses the bridge (`ztun_xpc::value`) into the same [`answer`] the Unix
//! socket uses, and the reply goes back through the request's reply
//! context; after `watch`, events follow on the peer connection until the
//! peer leaves.
//!
//! Threads: libxpc runs the handlers below on one serial dispatch queue, and
//! they never block it. A handler takes only what must be taken at that
//! moment — the audit token of the message just received — and hands the
//! message to the tokio runtime, which answers and replies.
//!
//! Who the peer is comes from that audit token, never its pid: the uid and
//! primary group it names, admin membership from Open Directory, and, on a
//! signed helper, whether the sending code satisfies the requirement. libxpc
//! enforces the same requirement on the listener (macOS 12+); the helper
//! checks each message itself as well, which is the only check on macOS 11.
//!
//! This module holds no `unsafe`: libxpc is reached through `ztun_xpc::macos`.

use std::ffi::CString;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{broadcast, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use ztun_proto::plist::Value;
use ztun_proto::{ErrorCode, ErrorReply, Event, Response, TunnelName};
use ztun_xpc::macos::{
    check_peer, is_member, own_signature, AuditToken, Connection, Event as XpcEvent, Object,
    PeerRequirement, Queue, Requirement, XpcError,
};
use ztun_xpc::value::fill;
use ztun_xpc::{from_plist, to_plist, XpcBuild};

use super::auth::user_name;
use super::signing::choose_requirement;
use super::{answer, watch_step, AdminGroup, After, Caller, CodeCheck, Handler, WatchStep};

/// Time a watcher has to take each event off its connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests being answered and watch streams open at once; beyond this a
/// request is told the helper is busy.
pub const MAX_IN_FLIGHT: usize = 256;

/// Which programs the helper answers.
#[derive(Debug, Clone)]
pub enum CodePolicy {
    /// Only code satisfying this requirement (a signed helper, or one given
    /// `--code-requirement`).
    Require(Requirement),
    /// Any code: an unsigned development helper, which has no team to
    /// require. Users are still checked.
    Unchecked,
}

impl CodePolicy {
    /// The policy this helper's own signature and `configured`
    /// (`--code-requirement`) call for (`signing::choose_requirement`).
    pub fn for_this_helper(configured: Option<&str>) -> Result<Self, String> {
        let own = own_signature();
        match choose_requirement(configured, own.apple_issued, own.team_id.as_deref())? {
            Some(text) => Requirement::parse(&text).map(CodePolicy::Require),
            None => Ok(CodePolicy::Unchecked),
        }
    }
}

/// The listener. Dropping it cancels the listener and ends every watch
/// stream; requests in flight are dropped with it, as on the Unix socket.
#[derive(Debug)]
pub struct XpcServer {
    listener: Connection,
    stopping: watch::Sender<bool>,
    failure: Mutex<Option<oneshot::Receiver<XpcError>>>,
    enforcement: Option<PeerRequirement>,
}

/// What every handler shares.
struct Shared<H> {
    runtime: Handle,
    handler: Arc<H>,
    admins: Arc<AdminGroup>,
    policy: CodePolicy,
    slots: Arc<Semaphore>,
    stopping: watch::Receiver<bool>,
}

impl XpcServer {
    /// Listens on `ztun_proto::service::MACH_SERVICE`. Handlers hand work to
    /// `runtime`. Fails if the requirement cannot be set on the listener.
    pub fn start<H: Handler>(
        runtime: Handle,
        handler: Arc<H>,
        admins: Arc<AdminGroup>,
        policy: CodePolicy,
    ) -> io::Result<Self> {
        let name = CString::new(ztun_proto::service::MACH_SERVICE)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let queue = Queue::serial(c"com.ztun.helper.xpc");
        let listener = Connection::mach_service_listener(&name, &queue);
        let enforcement = match &policy {
            CodePolicy::Require(requirement) => {
                let text = CString::new(requirement.text())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                Some(
                    listener
                        .set_peer_code_signing_requirement(&text)
                        .map_err(|e| {
                            io::Error::new(
                                e.kind(),
                                format!(
                                    "libxpc refused the code requirement {}: {e}",
                                    requirement.text()
                                ),
                            )
                        })?,
                )
            }
            CodePolicy::Unchecked => None,
        };
        let (stopping, stopping_rx) = watch::channel(false);
        let (failed, failure) = oneshot::channel();
        let failed = Mutex::new(Some(failed));
        let shared = Arc::new(Shared {
            runtime,
            handler,
            admins,
            policy,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            stopping: stopping_rx,
        });
        listener.set_event_handler(move |event| match event {
            XpcEvent::Peer(peer) => accept(&shared, &peer),
            XpcEvent::Error(e) => {
                // `Invalid` is also what our own cancel delivers, when no
                // one waits any more.
                if let Some(failed) = failed.lock().ok().and_then(|mut f| f.take()) {
                    let _ = failed.send(e);
                }
            }
            XpcEvent::Message(_) => {}
        });
        listener.resume();
        Ok(Self {
            listener,
            stopping,
            failure: Mutex::new(Some(failure)),
            enforcement,
        })
    }

    /// Whether libxpc itself enforces the requirement (`None`: none set).
    pub fn enforcement(&self) -> Option<PeerRequirement> {
        self.enforcement
    }

    /// Resolves if the listener stops working; for the first error libxpc
    /// reports on it, typically `Invalid` when launchd has not registered the
    /// Mach service for this process.
    pub async fn failed(&self) -> XpcError {
        let receiver = self.failure.lock().ok().and_then(|mut f| f.take());
        match receiver {
            Some(receiver) => receiver
                .await
                .unwrap_or_else(|_| XpcError::Other("the listener's handler is gone".into())),
            None => std::future::pending().await,
        }
    }
}

impl Drop for XpcServer {
    fn drop(&mut self) {
        self.stopping.send_replace(true);
        self.listener.cancel();
    }
}

/// One peer connection, as its handler and its tasks share it.
struct PeerState {
    /// The connection, until it ends. The peer's handler holds this state,
    /// and libxpc holds the handler until the connection is released, so
    /// the reference here is given up when the connection ends; otherwise
    /// neither would ever be freed.
    connection: Mutex<Option<Connection>>,
    closed: watch::Sender<bool>,
}

impl PeerState {
    fn connection(&self) -> Option<Connection> {
        self.connection.lock().ok().and_then(|c| c.clone())
    }

    fn close(&self) {
        if let Ok(mut c) = self.connection.lock() {
            c.take();
        }
        self.closed.send_replace(true);
    }
}

/// Accepts a new peer: every peer may connect (reads are open); what it
/// may do is decided per message.
fn accept<H: Handler>(shared: &Arc<Shared<H>>, peer: &Connection) {
    let state = Arc::new(PeerState {
        connection: Mutex::new(Some(peer.clone())),
        closed: watch::channel(false).0,
    });
    let (shared, handler_state) = (Arc::clone(shared), Arc::clone(&state));
    peer.set_event_handler(move |event| match event {
        XpcEvent::Message(message) => {
            let Some(connection) = handler_state.connection() else {
                return;
            };
            // The token of this message, while it is the connection's latest.
            let token = connection.audit_token();
            let (shared2, state) = (Arc::clone(&shared), Arc::clone(&handler_state));
            shared.runtime.spawn(async move {
                let mut stopping = shared2.stopping.clone();
                tokio::select! {
                    () = respond(&shared2, &state, connection, message, token) => {}
                    _ = stopping.wait_for(|s| *s) => {}
                }
            });
        }
        // launchd is stopping the helper; replies in flight still go out.
        XpcEvent::Error(XpcError::TerminationImminent) | XpcEvent::Peer(_) => {}
        XpcEvent::Error(_) => handler_state.close(),
    });
    peer.resume();
}

/// Answers one request, then streams events if it was `watch`.
async fn respond<H: Handler>(
    shared: &Arc<Shared<H>>,
    state: &Arc<PeerState>,
    connection: Connection,
    request: Object,
    token: AuditToken,
) {
    let Ok(slot) = Arc::clone(&shared.slots).try_acquire_owned() else {
        let busy = ErrorReply::new(
            ErrorCode::Internal,
            "the helper is serving too many clients; try again",
        );
        reply(&connection, &request, &Response::Err(busy).to_value());
        return;
    };
    let message = match to_plist(request.node()) {
        Ok(m) => m,
        Err(e) => {
            reply(
                &connection,
                &request,
                &Response::Err(ErrorReply::from(e)).to_value(),
            );
            return;
        }
    };
    let caller = {
        let (admins, policy) = (Arc::clone(&shared.admins), shared.policy.clone());
        // Membership asks opendirectoryd, and a signature check may read
        // the peer's executable: both can block.
        match tokio::task::spawn_blocking(move || identify(&token, &admins, &policy)).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("identifying an XPC peer failed: {e}");
                let internal = ErrorReply::new(ErrorCode::Internal, "cannot identify the caller");
                reply(&connection, &request, &Response::Err(internal).to_value());
                return;
            }
        }
    };
    tracing::debug!("XPC request from uid {} (pid {})", caller.uid, token.pid());
    let (response, after) = answer(&*shared.handler, &shared.admins, &caller, &message).await;
    reply(&connection, &request, &response.to_value());
    if let After::Watch(name, events) = after {
        stream_events(&connection, state, name, events, slot).await;
    }
}

/// Who sent a message, from its audit token.
fn identify(token: &AuditToken, admins: &AdminGroup, policy: &CodePolicy) -> Caller {
    let (uid, gid) = (token.euid(), token.egid());
    let mut groups = vec![gid];
    if let Some(admin) = admins.gid.filter(|&g| g != gid && uid != 0) {
        match is_member(uid, admin) {
            Ok(true) => groups.push(admin),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                "cannot tell whether uid {uid} is in group {}: {e}",
                admins.name
            ),
        }
    }
    let code = match policy {
        CodePolicy::Require(requirement) => CodeCheck::of(true, || check_peer(token, requirement)),
        CodePolicy::Unchecked => CodeCheck::NotEnforced,
    };
    if let CodeCheck::Failed(why) = &code {
        tracing::warn!("refusing XPC peer pid {} uid {uid}: {why}", token.pid());
    }
    Caller {
        uid,
        user: user_name(uid),
        groups,
        code,
    }
}

/// Sends `message` as the reply to `request`. A request sent without a
/// reply handler (`xpc_connection_send_message`) has no reply context; its
/// answer goes to the peer's event handler instead.
fn reply(connection: &Connection, request: &Object, message: &Value) {
    let Value::Dictionary(entries) = message else {
        return;
    };
    let mut out = request.create_reply().unwrap_or_else(Object::dictionary);
    if let Err(e) = fill(&mut out, entries) {
        tracing::error!("cannot encode a reply for XPC: {e}");
        let internal = Response::Err(ErrorReply::new(
            ErrorCode::Internal,
            format!("the helper cannot encode its reply: {e}"),
        ));
        let mut out = request.create_reply().unwrap_or_else(Object::dictionary);
        if let Value::Dictionary(entries) = internal.to_value() {
            if fill(&mut out, &entries).is_ok() {
                connection.send(&out);
            }
        }
        return;
    }
    connection.send(&out);
}

/// Forwards events until the peer leaves, the helper stops, or the peer
/// stops taking them: each event must have left the process within
/// [`WRITE_TIMEOUT`] before the next is sent, so a stalled watcher costs
/// the helper at most one queued event.
async fn stream_events(
    connection: &Connection,
    state: &PeerState,
    name: Option<TunnelName>,
    mut events: broadcast::Receiver<Event>,
    _slot: OwnedSemaphorePermit,
) {
    let mut closed = state.closed.subscribe();
    loop {
        let received = tokio::select! {
            _ = closed.wait_for(|c| *c) => return,
            e = events.recv() => e,
        };
        let event = match watch_step(received, name.as_ref()) {
            WatchStep::Send(event) => event,
            WatchStep::Skip => continue,
            WatchStep::End => return,
        };
        let message: Object = match from_plist(&event.to_value()) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("cannot encode an event for XPC: {e}");
                continue;
            }
        };
        connection.send(&message);
        let (sent, has_left) = oneshot::channel();
        connection.barrier(move || {
            let _ = sent.send(());
        });
        if timeout(WRITE_TIMEOUT, has_left).await.is_err() {
            tracing::debug!("an XPC watcher stopped taking events; closing it");
            connection.cancel();
            return;
        }
    }
}
