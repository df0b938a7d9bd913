//! The listening socket: TCP (`--host`, `--port`, `--reuse-port`) or a UNIX socket (`--unix-socket`). The
//! supervisor binds it (or takes systemd's) and hands a copy to each worker, which accepts on it.
//!
//! Owns binding, the socket file's life, and turning an accepted connection into a stream and its
//! [`Peer`]; it knows nothing of HTTP.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use listenfd::ListenFd;

use crate::http::Peer;
use crate::settings::{Listen, RunAs};

/// Connections waiting to be accepted before the kernel refuses more.
const LISTEN_BACKLOG: i32 = 1024;

/// A bound, listening socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(std::net::TcpListener),
    /// With the path it was made at, if we made it (the kernel names a socket by where it was bound,
    /// which for ours is a private directory it has since left).
    Unix(std::os::unix::net::UnixListener, Option<PathBuf>),
}

impl Listener {
    /// Binds and listens where the settings say (for `--reuse-port`, see [`Listener::reserve`]). A UNIX
    /// socket is given to `owner` (`--user`), as gunicorn does, so the app's group can be the one the
    /// proxy connects with.
    pub(crate) fn bind(listen: &Listen, owner: Option<RunAs>) -> anyhow::Result<Self> {
        let bound = match listen {
            Listen::Tcp(addr) => bind_tcp(*addr, false).map(Listener::Tcp),
            Listen::Unix { path, mode } => bind_unix(path, *mode, owner)
                .map(|listener| Listener::Unix(listener, Some(path.clone()))),
        };
        bound.with_context(|| format!("cannot listen on {listen}"))
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
            Listen::Unix { .. } => fds
                .take_unix_listener(0)
                .map(|l| l.map(|l| Listener::Unix(l, None))),
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

    /// A descriptor of the same socket, for a worker.
    pub(crate) fn share(&self) -> io::Result<OwnedFd> {
        Ok(match self {
            Listener::Tcp(listener) => listener.try_clone()?.into(),
            Listener::Unix(listener, _) => listener.try_clone()?.into(),
        })
    }

    /// Where clients reach it, as the listening line says: `http://127.0.0.1:8000`, `unix:/run/app.sock`.
    pub(crate) fn describe(&self) -> io::Result<String> {
        Ok(match self {
            Listener::Tcp(listener) => format!("http://{}", listener.local_addr()?),
            Listener::Unix(_, Some(path)) => format!("unix:{}", path.display()),
            Listener::Unix(listener, None) => match listener.local_addr()?.as_pathname() {
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
            Listener::Unix(listener, _) => {
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

/// Binds the UNIX socket, replacing a stale socket file (one that refuses connections) but never another
/// kind of file, nor a socket a server still answers on.
///
/// The socket is made in a directory of its own that only we can enter, given its mode and owner there,
/// and then renamed into place: done at the final path, another user able to write its directory could
/// swap the socket for a link between the bind and the chmod, and have root change that file instead.
fn bind_unix(
    path: &Path,
    mode: Option<u32>,
    owner: Option<RunAs>,
) -> io::Result<std::os::unix::net::UnixListener> {
    refuse_live_or_foreign(path)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let private = dir.join(format!(
        ".{}.rwsgi-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let made = private.join("socket");
    let bound = (|| {
        let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
        socket.bind(&socket2::SockAddr::unix(&made)?)?;
        if let Some(mode) = mode {
            std::fs::set_permissions(&made, std::fs::Permissions::from_mode(mode))?;
        }
        if let Some(owner) = owner {
            std::os::unix::fs::lchown(&made, Some(owner.uid.as_raw()), Some(owner.gid.as_raw()))?;
        }
        socket.listen(LISTEN_BACKLOG)?;
        std::fs::rename(&made, path)?;
        Ok(socket.into())
    })();
    let _ = std::fs::remove_file(&made);
    let _ = std::fs::remove_dir(&private);
    bound
}

/// Clears the way for a new socket at `path`: nothing there, or a stale socket (removed).
fn refuse_live_or_foreign(path: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        ));
    }
    // Without waiting: a live server with a full backlog answers "try again", not a hang.
    let probe = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    probe.set_nonblocking(true)?;
    match probe.connect(&socket2::SockAddr::unix(path)?) {
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Ok(()) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "a server is listening on it",
        )),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "a server is listening on it",
        )),
        Err(err) => Err(io::Error::new(
            err.kind(),
            format!("cannot tell whether a server is listening on it: {err}"),
        )),
    }
}

/// The UNIX socket's file, removed when the supervisor exits (as gunicorn removes its own).
pub(crate) struct SocketFile(Option<PathBuf>);

impl SocketFile {
    /// The file of a socket this process made; nothing for others (systemd's, a TCP socket).
    pub(crate) fn of(listener: &Listener) -> Self {
        match listener {
            Listener::Unix(_, path) => SocketFile(path.clone()),
            Listener::Tcp(_) => SocketFile(None),
        }
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
        let live = bind_unix(&path, Some(0o600), None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = bind_unix(&path, None, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(live);
        // Closed but still on disk: stale, so replaced.
        assert!(path.exists());
        let _again = bind_unix(&path, None, None).unwrap();
        let plain = dir.join("plain");
        std::fs::write(&plain, b"keep me").unwrap();
        assert!(bind_unix(&plain, None, None).is_err());
        assert_eq!(std::fs::read(&plain).unwrap(), b"keep me");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
