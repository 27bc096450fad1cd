//! The Unix-socket transport (Linux, and macOS for development): frames
//! from `ztun_proto::frame`, peer identity from `SO_PEERCRED`.
//!
//! The socket is world-connectable (0666) because status is for everyone;
//! authorisation happens per request. A client cannot hurt the others: a
//! frame must arrive whole within [`BODY_TIMEOUT`] of its first byte, replies
//! must be taken within [`WRITE_TIMEOUT`], at most [`MAX_CLIENTS`]
//! connections are served at once, and one user other than root may hold at
//! most [`MAX_PER_USER`] of them (so one user's idle connections cannot
//! lock everyone else out).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use ztun_proto::frame::{self, HEADER_LEN};
use ztun_proto::plist::Value;
use ztun_proto::{ErrorCode, ErrorReply, Event, Response};

use super::{answer, watch_step, AdminGroup, After, Handler, Peer, WatchStep};

/// Time allowed between a frame's first byte and its last.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take a reply or an event off the socket.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time an idle connection (between requests) is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once; more are told so and closed.
pub const MAX_CLIENTS: usize = 256;
/// Connections one user other than root may hold at once.
pub const MAX_PER_USER: usize = 32;

/// A bound control socket. Dropping it removes the socket file.
#[derive(Debug)]
pub struct UnixServer {
    listener: UnixListener,
    path: PathBuf,
}

impl UnixServer {
    /// Binds `path`, creating its directory (0755) if it does not exist —
    /// an existing directory's mode is never changed, which matters when it
    /// is `/tmp` — and replacing a stale socket left by a crash, but refusing
    /// to steal one a live helper holds.
    pub fn bind(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            fs::create_dir_all(dir)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another helper is serving {}; stop it first",
                        path.display()
                    ),
                ));
            }
            fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o666))?;
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves clients until the future is dropped (which also drops every
    /// connection task).
    pub async fn run<H: Handler>(
        &self,
        handler: Arc<H>,
        admins: Arc<AdminGroup>,
    ) -> io::Result<()> {
        let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
        let per_user = PerUser::default();
        let mut clients = JoinSet::new();
        loop {
            let (mut stream, _) = tokio::select! {
                accepted = self.listener.accept() => accepted?,
                // Reap finished connections so the set does not grow.
                Some(_) = clients.join_next(), if !clients.is_empty() => continue,
            };
            let Ok(cred) = stream.peer_cred() else {
                continue;
            };
            let peer = Peer {
                uid: cred.uid(),
                gid: cred.gid(),
            };
            let taken = match per_user.take(peer.uid) {
                None => Err(format!(
                    "uid {} already has {MAX_PER_USER} connections open to the helper; close some (each ztunctl status --watch holds one)",
                    peer.uid
                )),
                Some(user_slot) => match Arc::clone(&slots).try_acquire_owned() {
                    Ok(slot) => Ok((slot, user_slot)),
                    Err(_) => Err("the helper is serving too many clients; try again".to_owned()),
                },
            };
            let slot = match taken {
                Ok(slot) => slot,
                Err(why) => {
                    let reply = Response::Err(ErrorReply::new(ErrorCode::Internal, why));
                    clients.spawn(async move {
                        let _ = send(&mut stream, &reply.to_value()).await;
                    });
                    continue;
                }
            };
            let (handler, admins) = (Arc::clone(&handler), Arc::clone(&admins));
            clients.spawn(async move {
                let _slot = slot;
                if let Err(e) = serve(stream, peer, &*handler, &admins).await {
                    tracing::debug!("control client: {e}");
                }
            });
        }
    }
}

impl Drop for UnixServer {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Connections held per uid; root is not counted.
#[derive(Debug, Default, Clone)]
struct PerUser(Arc<Mutex<HashMap<u32, usize>>>);

/// One connection of a user, given back when dropped (root's are not
/// counted: `uid` is `None`).
#[derive(Debug)]
struct UserSlot {
    uid: Option<u32>,
    table: PerUser,
}

impl PerUser {
    fn take(&self, uid: u32) -> Option<UserSlot> {
        if uid == 0 {
            return Some(UserSlot {
                uid: None,
                table: self.clone(),
            });
        }
        let mut table = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let held = table.entry(uid).or_default();
        if *held >= MAX_PER_USER {
            return None;
        }
        *held += 1;
        Some(UserSlot {
            uid: Some(uid),
            table: self.clone(),
        })
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let Some(uid) = self.uid else { return };
        let mut table = self.table.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = table.get_mut(&uid) {
            *held -= 1;
            if *held == 0 {
                table.remove(&uid);
            }
        }
    }
}

/// One connection: requests in order until the client leaves, breaks the
/// framing, stalls, or turns into a watch stream.
async fn serve<H: Handler>(
    mut stream: UnixStream,
    peer: Peer,
    handler: &H,
    admins: &AdminGroup,
) -> io::Result<()> {
    let caller = admins.caller(&peer);
    loop {
        let message = match read_message(&mut stream).await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(e) => {
                // Tell the client why before hanging up; it may be a person
                // debugging a menu-bar app.
                let reply =
                    Response::Err(ErrorReply::new(ErrorCode::InvalidArgument, e.to_string()));
                let _ = send(&mut stream, &reply.to_value()).await;
                return Err(e);
            }
        };
        let (response, after) = answer(handler, admins, &caller, &message).await;
        send(&mut stream, &response.to_value()).await?;
        if let After::Watch(name, events) = after {
            return stream_events(stream, name, events).await;
        }
    }
}

/// Reads one frame; `Ok(None)` when the client closed between frames.
async fn read_message(stream: &mut UnixStream) -> io::Result<Option<Value>> {
    let mut header = [0_u8; HEADER_LEN];
    match timeout(IDLE_TIMEOUT, stream.read(&mut header[..1])).await {
        Err(_) | Ok(Ok(0)) => return Ok(None),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
    }
    let whole_frame = async {
        stream.read_exact(&mut header[1..]).await?;
        let len = frame::body_len(header).map_err(invalid)?;
        let mut body = vec![0; len];
        stream.read_exact(&mut body).await?;
        frame::decode_body(&body).map_err(invalid)
    };
    match timeout(BODY_TIMEOUT, whole_frame).await {
        Ok(result) => result.map(Some),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("frame not completed within {}s", BODY_TIMEOUT.as_secs()),
        )),
    }
}

fn invalid(e: frame::FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

async fn send(stream: &mut UnixStream, message: &Value) -> io::Result<()> {
    let mut bytes = Vec::new();
    frame::encode(message, &mut bytes).map_err(invalid)?;
    timeout(WRITE_TIMEOUT, stream.write_all(&bytes))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client did not take its reply"))?
}

/// Forwards events until the client hangs up or stops reading.
async fn stream_events(
    mut stream: UnixStream,
    name: Option<ztun_proto::TunnelName>,
    mut events: broadcast::Receiver<Event>,
) -> io::Result<()> {
    let mut probe = [0_u8; 1];
    loop {
        let received = tokio::select! {
            // Anything from the client (or EOF) ends the stream: a watch
            // connection carries no further requests.
            _ = stream.read(&mut probe) => return Ok(()),
            e = events.recv() => e,
        };
        match watch_step(received, name.as_ref()) {
            WatchStep::Send(event) => send(&mut stream, &event.to_value()).await?,
            WatchStep::Skip => {}
            WatchStep::End => return Ok(()),
        }
    }
}
