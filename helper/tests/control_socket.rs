//! The control socket with the real ztunctl transport on the other end: who
//! may do what (through real `SO_PEERCRED`), and that no client, however
//! broken or hostile, can stop the helper from serving the others.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use ztun_helper::control::unix::{UnixServer, BODY_TIMEOUT};
use ztun_helper::control::{AdminGroup, Handler};
use ztun_proto::{frame, DownTarget, ErrorCode, ErrorReply, Event, Op, Reply, Request, Response};
use ztunctl::Connection;

#[derive(Default)]
struct FakeDaemon {
    seen: Mutex<Vec<Request>>,
    events: Mutex<Option<broadcast::Sender<Event>>>,
}

impl FakeDaemon {
    fn sender(&self) -> broadcast::Sender<Event> {
        self.events
            .lock()
            .unwrap()
            .get_or_insert_with(|| broadcast::channel(16).0)
            .clone()
    }
}

impl Handler for FakeDaemon {
    async fn handle(&self, request: Request) -> Result<Reply, ErrorReply> {
        self.seen.lock().unwrap().push(request.clone());
        match request {
            Request::Version => Ok(Reply::Version {
                version: "test".into(),
                protocol: 1,
            }),
            Request::Status(_) => Ok(Reply::Tunnels {
                tunnels: vec![],
                stale_routes: vec![],
            }),
            Request::Down(DownTarget::Name(n)) => Err(ErrorReply::new(
                ErrorCode::NotFound,
                format!("no tunnel {n}"),
            )),
            _ => Ok(Reply::Done),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender().subscribe()
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

struct Running {
    path: PathBuf,
    daemon: Arc<FakeDaemon>,
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

/// Starts a server on its own runtime; the returned handle keeps it alive.
fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/ztun/control.sock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let daemon = Arc::new(FakeDaemon::default());
    let admins = Arc::new(AdminGroup {
        name: "ztun".into(),
        gid: None,
        members: vec![],
    });
    let server = rt.block_on(async { UnixServer::bind(&path) }).unwrap();
    let d = Arc::clone(&daemon);
    rt.spawn(async move { server.run(d, admins).await });
    Running {
        path,
        daemon,
        _dir: dir,
        rt,
    }
}

fn ask(path: &Path, request: &Request) -> Response {
    let mut conn = Connection::connect(path, Duration::from_secs(10)).unwrap();
    conn.send(&request.to_value()).unwrap();
    Response::from_value(request.op(), &conn.receive(false).unwrap()).unwrap()
}

fn raw_reply(stream: &mut std::os::unix::net::UnixStream) -> Response {
    let mut header = [0; 4];
    stream.read_exact(&mut header).unwrap();
    let mut body = vec![0; frame::body_len(header).unwrap()];
    stream.read_exact(&mut body).unwrap();
    Response::from_value(Op::Status, &frame::decode_body(&body).unwrap()).unwrap()
}

#[test]
fn socket_is_world_connectable_in_a_0755_directory() {
    let s = start();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.path), 0o666);
    assert_eq!(mode(s.path.parent().unwrap()), 0o755);
}

#[test]
fn requests_reach_the_daemon_and_replies_come_back() {
    let s = start();
    assert_eq!(
        ask(&s.path, &Request::Status(None)),
        Response::Ok(Reply::Tunnels {
            tunnels: vec![],
            stale_routes: vec![]
        })
    );
    let down = Request::Down(DownTarget::Name("work".parse().unwrap()));
    let Response::Err(e) = ask(&s.path, &down) else {
        panic!("down of a missing tunnel succeeded")
    };
    assert_eq!(
        (e.code, e.message.as_str()),
        (ErrorCode::NotFound, "no tunnel work")
    );
    assert_eq!(
        *s.daemon.seen.lock().unwrap(),
        [Request::Status(None), down]
    );
}

#[test]
fn several_requests_on_one_connection_are_answered_in_order() {
    let s = start();
    let mut conn = Connection::connect(&s.path, Duration::from_secs(10)).unwrap();
    for request in [Request::Version, Request::Status(None), Request::Version] {
        conn.send(&request.to_value()).unwrap();
        let reply = Response::from_value(request.op(), &conn.receive(false).unwrap()).unwrap();
        assert!(matches!(reply, Response::Ok(_)), "{reply:?}");
    }
}

#[test]
fn an_ordinary_user_may_read_but_not_change() {
    if !is_root() {
        eprintln!("\n!!! SKIPPED: an_ordinary_user_may_read_but_not_change needs root to become uid 65534\n");
        return;
    }
    let s = start();
    let path = s.path.clone();
    let (status, up) = std::thread::spawn(move || {
        // SAFETY: the raw syscall (unlike libc's setresuid wrapper) changes
        // the credentials of this thread only; it never returns to root.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        let up = Request::Down(DownTarget::All);
        (ask(&path, &Request::Status(None)), ask(&path, &up))
    })
    .join()
    .unwrap();
    assert_eq!(
        status,
        Response::Ok(Reply::Tunnels {
            tunnels: vec![],
            stale_routes: vec![]
        })
    );
    let Response::Err(e) = up else {
        panic!("nobody took every tunnel down")
    };
    assert_eq!(e.code, ErrorCode::Unauthorized);
    assert!(
        e.message
            .starts_with("down: user nobody is not root and not in group ztun"),
        "{}",
        e.message
    );
    assert_eq!(
        *s.daemon.seen.lock().unwrap(),
        [Request::Status(None)],
        "the refused request never reached the daemon"
    );
}

#[test]
fn garbage_gets_a_reason_and_the_next_client_is_served() {
    let s = start();
    let mut bad = std::os::unix::net::UnixStream::connect(&s.path).unwrap();
    bad.write_all(&[0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o'])
        .unwrap();
    let Response::Err(e) = raw_reply(&mut bad) else {
        panic!("garbage accepted")
    };
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            ErrorCode::InvalidArgument,
            "frame body is not a binary plist"
        )
    );
    assert_eq!(
        bad.read(&mut [0; 1]).unwrap(),
        0,
        "connection closed after the reason"
    );
    assert!(matches!(ask(&s.path, &Request::Version), Response::Ok(_)));
}

#[test]
fn a_two_gib_length_prefix_is_refused_at_once() {
    let s = start();
    let mut hostile = std::os::unix::net::UnixStream::connect(&s.path).unwrap();
    hostile.write_all(&0x8000_0000_u32.to_be_bytes()).unwrap();
    let Response::Err(e) = raw_reply(&mut hostile) else {
        panic!("2 GiB frame accepted")
    };
    assert_eq!(
        e.message,
        "frame of 2147483648 bytes exceeds the 1048576-byte limit"
    );
}

#[test]
fn a_client_stalled_mid_frame_is_dropped_without_delaying_others() {
    let s = start();
    let mut staller = std::os::unix::net::UnixStream::connect(&s.path).unwrap();
    let mut framed = Vec::new();
    frame::encode(&Request::Status(None).to_value(), &mut framed).unwrap();
    staller.write_all(&framed[..framed.len() / 2]).unwrap();
    let started = Instant::now();
    assert!(matches!(ask(&s.path, &Request::Version), Response::Ok(_)));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "others served at once: {:?}",
        started.elapsed()
    );
    let Response::Err(e) = raw_reply(&mut staller) else {
        panic!("stalled frame answered")
    };
    assert_eq!(
        e.message,
        format!("frame not completed within {}s", BODY_TIMEOUT.as_secs())
    );
    assert!(started.elapsed() >= BODY_TIMEOUT);
}

#[test]
fn a_hundred_clients_at_once_are_all_answered() {
    let s = start();
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let path = s.path.clone();
            std::thread::spawn(move || ask(&path, &Request::Status(None)))
        })
        .collect();
    for t in threads {
        assert_eq!(
            t.join().unwrap(),
            Response::Ok(Reply::Tunnels {
                tunnels: vec![],
                stale_routes: vec![]
            })
        );
    }
}

#[test]
fn watch_streams_this_tunnels_events_until_the_client_leaves() {
    let s = start();
    let mut conn = Connection::connect(&s.path, Duration::from_secs(10)).unwrap();
    let watch = Request::Watch(Some("work".parse().unwrap()));
    conn.send(&watch.to_value()).unwrap();
    assert_eq!(
        Response::from_value(Op::Watch, &conn.receive(false).unwrap()).unwrap(),
        Response::Ok(Reply::Done)
    );
    let events = s.daemon.sender();
    let other = Event::Down {
        name: "other".parse().unwrap(),
    };
    let mine = Event::Down {
        name: "work".parse().unwrap(),
    };
    let global = Event::Error {
        name: None,
        message: "the physical network changed".into(),
    };
    for e in [&other, &mine, &global] {
        events.send(e.clone()).unwrap();
    }
    assert_eq!(
        Event::from_value(&conn.receive(false).unwrap()).unwrap(),
        mine
    );
    assert_eq!(
        Event::from_value(&conn.receive(false).unwrap()).unwrap(),
        global
    );
    drop(conn);
    // The server notices the departure and drops its subscription.
    let deadline = Instant::now() + Duration::from_secs(5);
    while events.receiver_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "subscription still held after the client left"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn binding_replaces_a_stale_socket_but_never_a_live_one() {
    let s = start();
    let err =
        s.rt.block_on(async { UnixServer::bind(&s.path) })
            .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(
        err.to_string().contains("another helper is serving"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("control.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists(), "a crashed helper leaves its socket file");
    let server = s.rt.block_on(async { UnixServer::bind(&stale) }).unwrap();
    drop(server);
    assert!(!stale.exists(), "dropping the server removes its socket");
}

#[test]
fn binding_in_an_existing_directory_leaves_its_mode_alone() {
    // With --socket /tmp/ztun.sock, changing the parent's mode would strip
    // /tmp's sticky bit.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(async { UnixServer::bind(&dir.path().join("ztun.sock")) })
        .unwrap();
    let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o1777);
    drop(server);
}

/// Runs `f` on a thread whose credentials are uid/gid 65534 (nobody).
fn as_nobody<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: the raw syscall (unlike libc's setresuid wrapper) changes
        // the credentials of this thread only; it never returns to root.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn a_thousand_connections_from_one_user_cannot_lock_others_out() {
    if !is_root() {
        eprintln!("\n!!! SKIPPED: a_thousand_connections_from_one_user_cannot_lock_others_out needs root to become uid 65534\n");
        return;
    }
    let s = start();
    let path = s.path.clone();
    // Nobody opens 1,000 connections and keeps every one of them open.
    let (held, answered, refused) = as_nobody(move || {
        let mut held = Vec::new();
        let (mut answered, mut refused) = (0, 0);
        let mut request = Vec::new();
        frame::encode(&Request::Status(None).to_value(), &mut request).unwrap();
        for _ in 0..1000 {
            let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            // A refused connection may be closed before the request lands.
            let _ = c.write_all(&request);
            match raw_reply(&mut c) {
                Response::Ok(_) => answered += 1,
                Response::Err(e) => {
                    assert!(
                        e.message.contains("connections open to the helper"),
                        "{}",
                        e.message
                    );
                    refused += 1;
                }
            }
            held.push(c);
        }
        (held, answered, refused)
    });
    assert_eq!(
        (answered, refused),
        (32, 968),
        "32 served, the rest told why"
    );
    // With all of them still open, anyone else is served at once.
    let started = Instant::now();
    assert!(matches!(
        ask(&s.path, &Request::Status(None)),
        Response::Ok(_)
    ));
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "status took {:?}",
        started.elapsed()
    );
    drop(held);
}

#[test]
fn a_watcher_that_never_reads_is_dropped_and_holds_nothing() {
    let s = start();
    let mut conn = Connection::connect(&s.path, Duration::from_secs(10)).unwrap();
    conn.send(&Request::Watch(None).to_value()).unwrap();
    assert_eq!(
        Response::from_value(Op::Watch, &conn.receive(false).unwrap()).unwrap(),
        Response::Ok(Reply::Done)
    );
    let events = s.daemon.sender();
    // Far more than the socket buffer holds: the watcher never reads.
    let big = Event::Error {
        name: None,
        message: "x".repeat(60_000),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while events.receiver_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled watcher is still subscribed"
        );
        let _ = events.send(big.clone());
        // Others are served meanwhile.
        assert!(matches!(ask(&s.path, &Request::Version), Response::Ok(_)));
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(conn);
}

#[test]
fn a_client_that_leaves_before_its_reply_does_not_disturb_the_next() {
    let s = start();
    for _ in 0..50 {
        let mut c = std::os::unix::net::UnixStream::connect(&s.path).unwrap();
        let mut request = Vec::new();
        frame::encode(&Request::Status(None).to_value(), &mut request).unwrap();
        c.write_all(&request).unwrap();
        drop(c);
    }
    assert!(matches!(
        ask(&s.path, &Request::Status(None)),
        Response::Ok(_)
    ));
    // The departed clients' requests are handled too, their replies dropped.
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.daemon.seen.lock().unwrap().len() < 51 {
        assert!(
            Instant::now() < deadline,
            "a departed client's request was lost"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
