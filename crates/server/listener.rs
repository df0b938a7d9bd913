//! The listening socket: TCP (`--host`, `--port`, `--reuse-port`) or a UNIX socket (`--unix-socket`). The
//! supervisor binds it (or takes systemd's) and hands a copy to each worker, which accepts on it.
//!
//! Owns binding, the socket file's life, and turning an accepted connection into a stream and its
//! [`Peer`]; it knows nothing of HTTP.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use listenfd::ListenFd;

use crate::http::Peer;
use crate::settings::Listen;

/// Connections waiting to be accepted before the kernel refuses more.
const LISTEN_BACKLOG: i32 = 1024;

/// A bound, listening socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl Listener {
    /// Binds and listens where the settings say (for `--reuse-port`, see [`Listener::reserve`]).
    pub(crate) fn bind(listen: &Listen) -> anyhow::Result<Self> {
        match listen {
            Listen::Tcp(addr) => bind_tcp(*addr, false)
                .map(Listener::Tcp)
                .with_context(|| format!("cannot listen on {addr}")),
            Listen::Unix { path, mode } => bind_unix(path, *mode)
                .map(Listener::Unix)
                .with_context(|| format!("cannot listen on unix:{}", path.display())),
        }
    }

    /// For `--reuse-port`: the address bound with SO_REUSEPORT but never listening, so the kernel routes no
    /// connection to it; it fixes the port (for `--port 0`) and tells workers where to listen.
    pub(crate) fn reserve(addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        bound_tcp(addr, true)
            .map(|socket| Listener::Tcp(socket.into()))
            .with_context(|| format!("cannot bind {addr}"))
    }

    /// The socket passed in `LISTEN_FDS` (by systemd socket activation, or by our supervisor), if any; it
    /// must be of the kind the settings ask for.
    pub(crate) fn inherited(listen: &Listen) -> anyhow::Result<Option<Self>> {
        let mut fds = ListenFd::from_env();
        let inherited = match listen {
            Listen::Tcp(_) => fds.take_tcp_listener(0).map(|l| l.map(Listener::Tcp)),
            Listen::Unix { .. } => fds.take_unix_listener(0).map(|l| l.map(Listener::Unix)),
        };
        inherited.context("cannot use the socket passed in LISTEN_FDS")
    }

    /// A worker's own SO_REUSEPORT socket at the address of the supervisor's reserved one.
    pub(crate) fn listen_beside(reserved: Self) -> anyhow::Result<Self> {
        let Listener::Tcp(reserved) = reserved else {
            bail!("--reuse-port needs a TCP socket");
        };
        let addr = reserved.local_addr()?;
        drop(reserved);
        bind_tcp(addr, true)
            .map(Listener::Tcp)
            .with_context(|| format!("cannot listen on {addr}"))
    }

    /// With `--user`: the UNIX socket's file is given to that user and group (as gunicorn does), so the
    /// app's group can be the one the proxy connects with.
    pub(crate) fn hand_to(&self, owner: crate::settings::RunAs) -> anyhow::Result<()> {
        let Listener::Unix(listener) = self else {
            return Ok(());
        };
        let Some(path) = listener.local_addr()?.as_pathname().map(Path::to_path_buf) else {
            return Ok(());
        };
        std::os::unix::fs::chown(&path, Some(owner.uid.as_raw()), Some(owner.gid.as_raw()))
            .with_context(|| format!("cannot give unix:{} to --user", path.display()))
    }

    /// A descriptor of the same socket, for a worker.
    pub(crate) fn share(&self) -> io::Result<OwnedFd> {
        Ok(match self {
            Listener::Tcp(listener) => listener.try_clone()?.into(),
            Listener::Unix(listener) => listener.try_clone()?.into(),
        })
    }

    /// Where clients reach it, as the listening line says: `http://127.0.0.1:8000`, `unix:/run/app.sock`.
    pub(crate) fn describe(&self) -> io::Result<String> {
        Ok(match self {
            Listener::Tcp(listener) => format!("http://{}", listener.local_addr()?),
            Listener::Unix(listener) => match listener.local_addr()?.as_pathname() {
                Some(path) => format!("unix:{}", path.display()),
                None => "unix:(unnamed)".to_owned(),
            },
        })
    }

    /// The socket registered with the current tokio runtime, for accepting.
    pub(crate) fn into_async(self) -> io::Result<Accepting> {
        Ok(match self {
            Listener::Tcp(listener) => {
                listener.set_nonblocking(true)?;
                Accepting::Tcp(tokio::net::TcpListener::from_std(listener)?)
            }
            Listener::Unix(listener) => {
                listener.set_nonblocking(true)?;
                Accepting::Unix(tokio::net::UnixListener::from_std(listener)?)
            }
        })
    }
}

/// A worker's listening socket, accepting.
pub(crate) enum Accepting {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// An accepted connection.
pub(crate) enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Accepting {
    pub(crate) async fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Accepting::Tcp(listener) => {
                let (stream, remote) = listener.accept().await?;
                // Small responses go out at once instead of waiting for Nagle's timer.
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().or_else(|_| listener.local_addr())?;
                Ok((
                    Stream::Tcp(stream),
                    Peer::Tcp {
                        peer: remote,
                        local,
                    },
                ))
            }
            Accepting::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                Ok((Stream::Unix(stream), Peer::Unix))
            }
        }
    }
}

/// Binds and listens on the TCP socket (outside any runtime, so a supervisor can hand it to its workers).
fn bind_tcp(addr: std::net::SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = bound_tcp(addr, reuse_port)?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

fn bound_tcp(addr: std::net::SocketAddr, reuse_port: bool) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Binds the UNIX socket, replacing a stale socket file (one nothing listens on) but never another kind of
/// file, nor a socket a running server still answers on.
fn bind_unix(path: &Path, mode: Option<u32>) -> io::Result<std::os::unix::net::UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "a server is listening on it",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// The UNIX socket's file, removed when the supervisor exits (as gunicorn removes its own).
pub(crate) struct SocketFile(Option<PathBuf>);

impl SocketFile {
    pub(crate) fn of(listener: &Listener) -> Self {
        let path = match listener {
            Listener::Unix(listener) => listener
                .local_addr()
                .ok()
                .and_then(|addr| addr.as_pathname().map(Path::to_path_buf)),
            Listener::Tcp(_) => None,
        };
        SocketFile(path)
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_or_a_file_is_not() {
        let dir = std::env::temp_dir().join(format!("rwsgi-listener-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let live = bind_unix(&path, Some(0o600)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = bind_unix(&path, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(live);
        // Closed but still on disk: stale, so replaced.
        assert!(path.exists());
        let _again = bind_unix(&path, None).unwrap();
        let plain = dir.join("plain");
        std::fs::write(&plain, b"keep me").unwrap();
        assert!(bind_unix(&plain, None).is_err());
        assert_eq!(std::fs::read(&plain).unwrap(), b"keep me");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
