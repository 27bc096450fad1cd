//! The control plane: who may do what (S8), and answering requests. One
//! request path serves both transports: a message dictionary is decoded,
//! authorised against the peer's identity, then handed to the daemon's
//! [`Handler`]. Transports (`unix`, and XPC on macOS) only move frames and
//! say who the peer is.

use std::future::Future;

use tokio::sync::broadcast;
use ztun_proto::plist::Value;
use ztun_proto::{ErrorReply, Event, Reply, Request, Response};

pub mod auth;
pub mod unix;

pub use auth::{AdminGroup, Peer};

/// The daemon as the control plane sees it.
pub trait Handler: Send + Sync + 'static {
    /// Carries out an authorised request.
    fn handle(&self, request: Request) -> impl Future<Output = Result<Reply, ErrorReply>> + Send;

    /// A new subscription to the event stream (`watch`). A subscriber that
    /// falls behind loses the oldest events, never the daemon's memory.
    fn subscribe(&self) -> broadcast::Receiver<Event>;
}

/// What a transport does after answering.
#[derive(Debug)]
pub enum After {
    /// Wait for the next request.
    Continue,
    /// Stream events for `name` (all tunnels when `None`) until the peer leaves.
    Watch(Option<ztun_proto::TunnelName>, broadcast::Receiver<Event>),
}

/// Decodes, authorises and carries out one request message.
pub async fn answer<H: Handler>(
    handler: &H,
    admins: &AdminGroup,
    peer: &Peer,
    message: &Value,
) -> (Response, After) {
    let request = match Request::from_value(message) {
        Ok(r) => r,
        Err(e) => return (Response::Err(e.into()), After::Continue),
    };
    if let Err(e) = admins.authorize(request.op(), peer) {
        return (Response::Err(e), After::Continue);
    }
    // Subscribe before replying, so no event between the reply and the
    // stream is lost.
    let after = match &request {
        Request::Watch(name) => After::Watch(name.clone(), handler.subscribe()),
        _ => After::Continue,
    };
    (handler.handle(request).await.into(), after)
}

/// Whether `event` belongs on a watch stream for `name`.
pub fn event_matches(event: &Event, name: Option<&ztun_proto::TunnelName>) -> bool {
    let Some(name) = name else { return true };
    match event {
        Event::Tunnel(t) => &t.spec.name == name,
        Event::Down { name: n } | Event::Route { name: n, .. } => n == name,
        Event::Error { name: n, .. } => n.as_ref().is_none_or(|n| n == name),
    }
}
