//! The Apache child's side of daemon mode: connect to the group's socket, send the environ Apache built
//! and the request body, and relay the daemon's response to the client through Apache's filters.
//!
//! Failures answer as mod_wsgi answers them: no connection within `connect-timeout`, 503; the daemon
//! closed or broke the connection before its head, 502; no head within `socket-timeout`, 504. A
//! response cut short after its head is aborted, so the client sees the truncation.

use std::io::{self, Write as _};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rwsgi_engine::{CgiVars, Output, ResponseSink};

use super::wire::{self, Kind};
use super::GroupPlan;
use crate::ffi::{status, Level, Request, RequestLease};
use crate::io::ApacheResponse;

/// How much body one frame carries.
const BODY_FRAME: usize = 64 * 1024;

/// Hands the request to a daemon of `plan`'s group; the answer is the handler's status.
pub(crate) fn forward(
    request: &mut Request<'_>,
    plan: &GroupPlan,
    vars: &CgiVars,
    error_override: Option<Arc<AtomicU16>>,
) -> i32 {
    let name = &plan.group.name;
    let mut stream = match connect(plan) {
        Ok(stream) => stream,
        Err(err) => {
            request.log(
                Level::Error,
                &format!(
                    "mod_wsgi (pid={}): Unable to connect to WSGI daemon process '{name}' on '{}' after \
                     multiple attempts as listener backlog limit was exceeded or the socket does not \
                     exist: {err}",
                    std::process::id(),
                    plan.socket.display()
                ),
            );
            return status::SERVICE_UNAVAILABLE;
        }
    };
    let lease = request.lease();
    let outcome = exchange(&mut stream, plan, vars, &lease, error_override.clone());
    lease.revoke();
    let code = match outcome {
        Ok(()) => status::OK,
        Err(Failure::BadRequest) => status::BAD_REQUEST,
        Err(Failure::NoHead(err)) if is_timeout(&err) => {
            request.log(
                Level::Error,
                &format!(
                    "mod_wsgi (pid={}): Timeout when reading response headers from daemon process \
                     '{name}': {}",
                    std::process::id(),
                    plan.socket.display()
                ),
            );
            status::GATEWAY_TIME_OUT
        }
        Err(Failure::NoHead(err)) => {
            request.log(
                Level::Error,
                &format!(
                    "mod_wsgi (pid={}): Truncated or oversized response headers received from daemon \
                     process '{name}': {}: {err}",
                    std::process::id(),
                    plan.socket.display()
                ),
            );
            status::BAD_GATEWAY
        }
        Err(Failure::Truncated(err)) => {
            request.log(
                Level::Error,
                &format!(
                    "mod_wsgi (pid={}): Response from daemon process '{name}' was cut short; the \
                     client's response is aborted: {err}",
                    std::process::id()
                ),
            );
            status::OK
        }
        Err(Failure::ClientGone) => status::OK,
    };
    if let Some(status) = error_override {
        let status = status.load(std::sync::atomic::Ordering::Acquire);
        if status != 0 {
            return i32::from(status);
        }
    }
    code
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Why an exchange with a daemon ended early.
enum Failure {
    /// The client's body could not be read as its headers promised.
    BadRequest,
    /// The daemon gave no head.
    NoHead(io::Error),
    /// The daemon's response stopped after its head.
    Truncated(io::Error),
    /// The client went away.
    ClientGone,
}

/// Connects to the group's socket, retrying while its daemons start (or restart), or while its backlog
/// is full, until `connect-timeout`. A full backlog fails the attempt rather than waiting in it, so the
/// timeout holds.
fn connect(plan: &GroupPlan) -> io::Result<UnixStream> {
    let address = socket2::SockAddr::unix(&plan.socket)?;
    let deadline = Instant::now() + plan.group.connect_timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        match socket.connect(&address) {
            Ok(()) => {
                socket.set_nonblocking(false)?;
                return Ok(socket.into());
            }
            Err(err) if Instant::now() + pause > deadline => return Err(err),
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
        }
    }
}

fn exchange(
    stream: &mut UnixStream,
    plan: &GroupPlan,
    vars: &CgiVars,
    lease: &Arc<RequestLease>,
    error_override: Option<Arc<AtomicU16>>,
) -> Result<(), Failure> {
    let timeout = Some(plan.socket_timeout());
    // Set on a fresh socket, these cannot fail in a way that matters: a failure leaves no timeout.
    let _ = stream.set_write_timeout(timeout);
    let _ = stream.set_read_timeout(timeout);
    let request = wire::encode_request(vars);
    if let Err(err) = wire::write_frame(stream, Kind::Request, &request) {
        return Err(Failure::NoHead(err));
    }
    send_body(stream, lease)?;
    relay_response(stream, plan, lease, error_override)
}

/// Streams the client's body to the daemon. A daemon that stops reading (its app answered without
/// reading the body) ends the sending, not the request: its response is still relayed.
fn send_body(stream: &mut UnixStream, lease: &RequestLease) -> Result<(), Failure> {
    match lease.setup_body() {
        Ok(true) => {}
        _ => return Err(Failure::BadRequest),
    }
    let mut buf = vec![0; BODY_FRAME];
    loop {
        let n = match lease.read_body(&mut buf) {
            Ok(Ok(n)) => n,
            _ => return Err(Failure::ClientGone),
        };
        let (kind, payload) = if n == 0 {
            (Kind::End, &buf[..0])
        } else {
            (Kind::Body, &buf[..n])
        };
        if wire::write_frame(stream, kind, payload).is_err() {
            return Ok(());
        }
        if n == 0 {
            let _ = stream.flush();
            return Ok(());
        }
    }
}

fn relay_response(
    stream: &mut UnixStream,
    plan: &GroupPlan,
    lease: &Arc<RequestLease>,
    error_override: Option<Arc<AtomicU16>>,
) -> Result<(), Failure> {
    let mut sink = ApacheResponse::new(Arc::clone(lease), error_override);
    let head = match wire::read_frame(stream) {
        Ok(Some((Kind::Head, payload))) => wire::decode_head(&payload).map_err(Failure::NoHead)?,
        Ok(Some((Kind::Abort, _))) | Ok(None) => {
            return Err(Failure::NoHead(io::ErrorKind::UnexpectedEof.into()))
        }
        Ok(Some((kind, _))) => {
            return Err(Failure::NoHead(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a {kind:?} frame where the head belongs"),
            )))
        }
        Err(err) => return Err(Failure::NoHead(err)),
    };
    sink.send(Output::Head(fold_repeated(head)))
        .map_err(|_| Failure::ClientGone)?;
    if let Some(timeout) = plan.group.response_socket_timeout {
        let _ = stream.set_read_timeout(Some(timeout));
    }
    loop {
        match wire::read_frame(stream) {
            Ok(Some((Kind::Body, data))) => {
                if data.is_empty() {
                    continue;
                }
                sink.send(Output::Body(Bytes::from(data)))
                    .map_err(|_| Failure::ClientGone)?;
            }
            Ok(Some((Kind::End, _))) => {
                return sink.send(Output::End).map_err(|_| Failure::ClientGone);
            }
            Ok(Some((Kind::Abort, _))) => {
                let _ = sink.send(Output::Abort);
                return Err(Failure::Truncated(io::Error::other(
                    "the application's response failed",
                )));
            }
            Ok(Some((kind, _))) => {
                let _ = sink.send(Output::Abort);
                return Err(Failure::Truncated(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("an unexpected {kind:?} frame"),
                )));
            }
            Ok(None) => {
                let _ = sink.send(Output::Abort);
                return Err(Failure::Truncated(io::ErrorKind::UnexpectedEof.into()));
            }
            Err(err) => {
                let _ = sink.send(Output::Abort);
                return Err(Failure::Truncated(err));
            }
        }
    }
}

/// Repeated header names folded into one comma-separated field (RFC 9110 § 5.3), except Set-Cookie, as
/// the C module's daemon mode hands them to Apache (through Apache's CGI header parsing).
fn fold_repeated(mut head: rwsgi_engine::ResponseHead) -> rwsgi_engine::ResponseHead {
    let mut folded: Vec<(String, Vec<u8>)> = Vec::with_capacity(head.headers.len());
    for (name, value) in head.headers.drain(..) {
        let earlier = folded
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(&name) && !n.eq_ignore_ascii_case("set-cookie"));
        match earlier {
            Some((_, existing)) => {
                existing.extend_from_slice(b", ");
                existing.extend_from_slice(&value);
            }
            None => folded.push((name, value)),
        }
    }
    head.headers = folded;
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_headers_fold_but_cookies_do_not() {
        let head = rwsgi_engine::ResponseHead {
            status: 200,
            reason: "OK".into(),
            headers: vec![
                ("X-R".into(), b"a".to_vec()),
                ("Set-Cookie".into(), b"a=1".to_vec()),
                ("x-r".into(), b"b".to_vec()),
                ("Set-Cookie".into(), b"b=2".to_vec()),
            ],
        };
        let folded = fold_repeated(head).headers;
        assert_eq!(
            folded,
            [
                ("X-R".to_owned(), b"a, b".to_vec()),
                ("Set-Cookie".to_owned(), b"a=1".to_vec()),
                ("Set-Cookie".to_owned(), b"b=2".to_vec()),
            ]
        );
    }
}
