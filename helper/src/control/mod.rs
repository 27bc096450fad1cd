//! The control plane: who may do what (S8), and answering requests. One
//! request path serves both transports: a message dictionary is decoded,
//! authorised against the caller's identity, then handed to the daemon's
//! [`Handler`]. Transports (`unix`, and `xpc` on macOS) only move messages
//! and say who the caller is.

use std::future::Future;
use std::path::{Path, PathBuf};

use tokio::sync::broadcast;
use ztun_proto::plist::Value;
use ztun_proto::{ErrorReply, Event, Reply, Request, Response, TunnelName};

pub mod auth;
pub mod signing;
pub mod unix;
#[cfg(target_os = "macos")]
pub mod xpc;

pub use auth::{AdminGroup, Caller, CodeCheck, Peer};

/// The daemon as the control plane sees it.
pub trait Handler: Send + Sync + 'static {
    /// Carries out an authorised request.
    fn handle(&self, request: Request) -> impl Future<Output = Result<Reply, ErrorReply>> + Send;

    /// A new subscription to the event stream (`watch`). A subscriber that
    /// falls behind loses the oldest events, never the daemon's memory.
    fn subscribe(&self) -> broadcast::Receiver<Event>;
}

/// The transports a helper serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transports {
    /// The Mach service `com.ztun.helper` (macOS under launchd).
    pub xpc: bool,
    /// A Unix socket at this path.
    pub unix: Option<PathBuf>,
}

impl Transports {
    /// - Linux: the Unix socket, at `socket` or the default path.
    /// - macOS under launchd (an installed helper): XPC, and the socket only
    ///   when `--socket` asks for it. The socket identifies users but not
    ///   programs, so on a signed install it admits code the XPC listener
    ///   would refuse; it is opt-in.
    /// - macOS from a terminal (development): the socket only. launchd
    ///   registers the Mach service for its own job, not for this process.
    pub fn choose(macos: bool, under_launchd: bool, socket: Option<&Path>) -> Self {
        let default = || PathBuf::from(ztun_proto::DEFAULT_SOCKET_PATH);
        match (macos, under_launchd) {
            (true, true) => Self {
                xpc: true,
                unix: socket.map(Path::to_path_buf),
            },
            _ => Self {
                xpc: false,
                unix: Some(socket.map_or_else(default, Path::to_path_buf)),
            },
        }
    }
}

/// What a transport does after answering.
#[derive(Debug)]
pub enum After {
    /// Wait for the next request.
    Continue,
    /// Stream events for `name` (all tunnels when `None`) until the peer leaves.
    Watch(Option<TunnelName>, broadcast::Receiver<Event>),
}

/// Decodes, authorises and carries out one request message.
pub async fn answer<H: Handler>(
    handler: &H,
    admins: &AdminGroup,
    caller: &Caller,
    message: &Value,
) -> (Response, After) {
    let request = match Request::from_value(message) {
        Ok(r) => r,
        Err(e) => return (Response::Err(e.into()), After::Continue),
    };
    if let Err(e) = admins.decide(request.op(), caller) {
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

/// What a watch stream does with the next thing its subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchStep {
    /// Send this event to the watcher.
    Send(Event),
    /// An event about another tunnel.
    Skip,
    /// The daemon is gone: end the stream.
    End,
}

/// The next step of a watch stream for `name`: matching events go out, and a
/// watcher that fell behind is told how many it missed, in the stream.
pub fn watch_step(
    received: Result<Event, broadcast::error::RecvError>,
    name: Option<&TunnelName>,
) -> WatchStep {
    match received {
        Ok(e) if event_matches(&e, name) => WatchStep::Send(e),
        Ok(_) => WatchStep::Skip,
        Err(broadcast::error::RecvError::Lagged(missed)) => WatchStep::Send(Event::Error {
            name: name.cloned(),
            message: format!(
                "this watcher fell behind and missed {missed} events; run status to resync"
            ),
        }),
        Err(broadcast::error::RecvError::Closed) => WatchStep::End,
    }
}

/// Whether `event` belongs on a watch stream for `name`.
pub fn event_matches(event: &Event, name: Option<&TunnelName>) -> bool {
    let Some(name) = name else { return true };
    match event {
        Event::Tunnel(t) => &t.spec.name == name,
        Event::Down { name: n } | Event::Route { name: n, .. } => n == name,
        Event::Error { name: n, .. } => n.as_ref().is_none_or(|n| n == name),
        // The network is every tunnel's.
        Event::Network { .. } => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_for_each_platform_launcher_and_socket_flag() {
        let dev = Path::new("/tmp/ztun/ztun.sock");
        let default = Some(PathBuf::from(ztun_proto::DEFAULT_SOCKET_PATH));
        let cases = [
            // (macOS, under launchd, --socket) → (xpc, unix)
            ((false, false, None), (false, default.clone())),
            ((false, true, None), (false, default.clone())),
            ((false, false, Some(dev)), (false, Some(dev.to_path_buf()))),
            ((false, true, Some(dev)), (false, Some(dev.to_path_buf()))),
            ((true, true, None), (true, None)),
            ((true, true, Some(dev)), (true, Some(dev.to_path_buf()))),
            ((true, false, None), (false, default.clone())),
            ((true, false, Some(dev)), (false, Some(dev.to_path_buf()))),
        ];
        for ((macos, launchd, socket), (xpc, unix)) in cases {
            assert_eq!(
                Transports::choose(macos, launchd, socket),
                Transports { xpc, unix },
                "macos {macos}, launchd {launchd}, socket {socket:?}"
            );
        }
    }

    #[test]
    fn a_watcher_that_fell_behind_is_told_in_the_stream() {
        let name: TunnelName = "work".parse().unwrap();
        assert_eq!(
            watch_step(Err(broadcast::error::RecvError::Lagged(3)), Some(&name)),
            WatchStep::Send(Event::Error {
                name: Some(name.clone()),
                message: "this watcher fell behind and missed 3 events; run status to resync"
                    .into()
            })
        );
        assert_eq!(
            watch_step(Err(broadcast::error::RecvError::Closed), None),
            WatchStep::End
        );
        let other = Event::Down {
            name: "home".parse().unwrap(),
        };
        assert_eq!(watch_step(Ok(other.clone()), Some(&name)), WatchStep::Skip);
        assert_eq!(watch_step(Ok(other.clone()), None), WatchStep::Send(other));
    }
}
