//! Time limits on a connection that stops making progress: `--header-timeout` while it waits for a
//! request (a new connection's first, or the next on an idle keep-alive connection) and `--socket-timeout`
//! while a read or a write waits in the middle of one (a client that stops sending its body, or stops
//! reading its response). When a limit runs out, the read or write fails and hyper closes the connection.
//!
//! Cheap on the path every request takes: a wait records when it began (one clock read) and polls a timer
//! the connection keeps; progress only clears that record. The timer is not moved on each request (which
//! costs a timer-wheel removal and insertion): it fires at a deadline that may be stale, and is then set to
//! the real one. hyper's own header timer, which makes a timer per request, cost 4 % of the instructions of
//! the smallest requests.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The connection's limits: `None` waits for ever.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Waiting for a request to begin.
    pub(crate) idle: Option<Duration>,
    /// Waiting in the middle of one, either way.
    pub(crate) stalled: Option<Duration>,
}

/// A stream whose reads and writes fail once they have waited past their limit.
pub(crate) struct Stall<S> {
    io: S,
    limits: Limits,
    /// Nothing read since a response was written (or since the connection opened): a read that waits now
    /// waits for the next request.
    between_requests: bool,
    reading: Waiting,
    writing: Waiting,
}

/// One direction's wait, and its timer, made at the first wait and kept.
#[derive(Default)]
struct Waiting {
    /// When the current wait began, and its limit.
    since: Option<(Instant, Duration)>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Waiting {
    /// The stream answered `Pending`: records the wait if it is new, and fails it once it is too long.
    fn pending(
        &mut self,
        cx: &mut Context<'_>,
        limit: Option<(Duration, &str)>,
        what: &str,
    ) -> Poll<io::Error> {
        let Some((limit, flag)) = limit else {
            return Poll::Pending;
        };
        let (since, limit) = *self.since.get_or_insert_with(|| (Instant::now(), limit));
        let deadline = since + limit;
        let timer = match &mut self.timer {
            Some(timer) => timer,
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        // An armed timer already holds this connection's waker (a connection is one task): polling it again
        // is needed only when it fired, or when it must come forward for a shorter limit.
        let registered = timer.deadline() <= deadline && !timer.is_elapsed();
        if registered && timer.deadline() != deadline {
            return Poll::Pending;
        }
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= deadline {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client {what} for {} s ({flag})", limit.as_secs_f64()),
                ));
            }
            // It fired at an earlier wait's deadline: on to this one's.
            timer.as_mut().reset(deadline);
        }
    }

    fn progressed(&mut self) {
        self.since = None;
    }
}

impl<S> Stall<S> {
    pub(crate) fn new(io: S, limits: Limits) -> Self {
        Stall {
            io,
            limits,
            between_requests: true,
            reading: Waiting::default(),
            writing: Waiting::default(),
        }
    }

    fn read_outcome(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        match polled {
            Poll::Pending => {
                let (limit, what) = match self.between_requests {
                    true => (
                        self.limits.idle.map(|l| (l, "--header-timeout")),
                        "sent no request",
                    ),
                    false => (
                        self.limits.stalled.map(|l| (l, "--socket-timeout")),
                        "sent nothing more",
                    ),
                };
                self.reading.pending(cx, limit, what).map(Err)
            }
            ready => {
                self.reading.progressed();
                self.between_requests = false;
                ready
            }
        }
    }

    fn write_outcome<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self
                .writing
                .pending(
                    cx,
                    self.limits.stalled.map(|l| (l, "--socket-timeout")),
                    "read nothing",
                )
                .map(Err),
            ready => {
                self.writing.progressed();
                ready
            }
        }
    }

    /// Bytes of a response went out: the next read that waits may be waiting for the next request.
    fn wrote(&mut self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.between_requests = true;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stall<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        this.read_outcome(cx, polled)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stall<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(&polled);
        this.write_outcome(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(&polled);
        this.write_outcome(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.write_outcome(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.write_outcome(cx, polled)
    }
}
