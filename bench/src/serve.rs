//! `zbench serve`: the server end, one task per connection.
//!
//! The first byte from the client picks the behaviour (see `Command::Serve`
//! in main.rs for the protocol). Whatever a client does, the server logs at
//! most accept errors and goes on.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;

/// Listen backlog; the kernel caps it at net.core.somaxconn.
const BACKLOG: u32 = 4096;
/// The longest a connection is kept, so that clients (or relays) that never
/// close cannot pile up tasks; every test's exchange takes far less.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(60);
/// Bytes echoed by `e`.
pub(crate) const ECHO_LEN: usize = 64;

/// Binds every address, then serves until killed.
pub(crate) async fn run(listen: &[SocketAddr]) -> anyhow::Result<()> {
    let mut loops = JoinSet::new();
    for &addr in listen {
        let listener = bind(addr).with_context(|| format!("listen on {addr}"))?;
        let local = listener.local_addr().unwrap_or(addr);
        eprintln!("zbench serve: listening on {local}");
        loops.spawn(accept_loop(listener));
        loops.spawn(async move {
            if let Err(e) = crate::udp::sink(local).await {
                eprintln!("zbench serve: {e:#}");
            }
        });
    }
    while let Some(done) = loops.join_next().await {
        // The loops never return; a panic in one would be a bug here.
        done.context("accept loop")?;
    }
    Ok(())
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

async fn accept_loop(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                tokio::spawn(async move {
                    // Errors and timeouts end the connection; nothing else
                    // to do about a misbehaving client.
                    let _ = tokio::time::timeout(CONNECTION_DEADLINE, handle(stream)).await;
                });
            }
            Err(e) => {
                // Out of descriptors, say: back off instead of spinning.
                eprintln!("zbench serve: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut first = [0u8; 1];
    if stream.read(&mut first).await? == 0 {
        return Ok(());
    }
    match first[0] {
        b'e' => {
            let mut buf = [0u8; ECHO_LEN];
            stream.read_exact(&mut buf).await?;
            stream.write_all(&buf).await?;
            read_to_eof(&mut stream).await?;
        }
        b'c' => {
            stream.write_all(b"x").await?;
            // FIN now; the drop below closes the socket.
            stream.shutdown().await?;
        }
        b'h' => {
            read_to_eof(&mut stream).await?;
            stream.write_all(b"E").await?;
            stream.shutdown().await?;
        }
        _ => {}
    }
    Ok(())
}

/// Reads and discards until end of stream.
pub(crate) async fn read_to_eof<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<()> {
    let mut sink = [0u8; 512];
    while r.read(&mut sink).await? != 0 {}
    Ok(())
}
