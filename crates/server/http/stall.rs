//! Time limits on a connection that stops making progress. `--header-timeout` bounds the whole wait for a
//! request head (a new connection's first request, or the next on a keep-alive connection), however the
//! bytes trickle in; `--socket-timeout` bounds each wait in the middle of a request, a read (a client that
//! stops sending its body) or a write (one that stops reading its response). When a limit runs out, the
//! read or write fails and hyper closes the connection, which also ends any Python thread's wait on it.
//!
//! The HTTP layer says where the connection is through its [`Phase`]: a request begins when its head has
//! been parsed (the service is called) and ends when its response body is dropped.
//!
//! Cheap on the path every request takes: a wait records when it began (one clock read) and polls a timer
//! the connection keeps. The timer is not moved on each request (which costs a timer-wheel removal and
//! insertion): it fires at a deadline that may be stale, and is then set to the real one. hyper's own
//! header timer, which makes a timer per request, cost 4 % of the instructions of the smallest requests.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The connection's limits: `None` waits for ever.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Receiving a request head.
    pub(crate) head: Option<Duration>,
    /// Any one wait in the middle of a request, either way.
    pub(crate) stalled: Option<Duration>,
}

/// How many requests of a connection have begun and ended; equal between requests. One connection is one
/// task, so the counts need no ordering, only to be shareable.
#[derive(Debug, Default)]
pub(crate) struct Phase {
    begun: AtomicU64,
    ended: AtomicU64,
}

impl Phase {
    /// A request's head has been parsed.
    pub(crate) fn begin(&self) {
        self.begun.fetch_add(1, Ordering::Relaxed);
    }

    /// A request's response is done with (sent, or given up).
    pub(crate) fn end(&self) {
        self.ended.fetch_add(1, Ordering::Relaxed);
    }

    /// The number of requests ended, if no request is under way.
    fn between_requests(&self) -> Option<u64> {
        let ended = self.ended.load(Ordering::Relaxed);
        (self.begun.load(Ordering::Relaxed) == ended).then_some(ended)
    }
}

/// A stream whose reads and writes fail once they have waited past their limit.
pub(crate) struct Stall<S> {
    io: S,
    limits: Limits,
    phase: Arc<Phase>,
    /// When the wait for the next head began, and how many requests had ended then.
    head_since: Option<(u64, Instant)>,
    reading: Waiting,
    writing: Waiting,
}

/// One direction's wait, and its timer, made at the first wait and kept.
#[derive(Default)]
struct Waiting {
    /// When the current wait began; cleared by progress.
    since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Waiting {
    /// The stream answered `Pending`: fails the wait once `since + limit` has passed, else makes sure the
    /// timer will wake the connection then.
    fn pending(&mut self, cx: &mut Context<'_>, since: Instant, limit: Duration) -> Poll<()> {
        // A limit too large for the clock is no limit.
        let Some(deadline) = since.checked_add(limit) else {
            return Poll::Pending;
        };
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
                return Poll::Ready(());
            }
            // It fired at an earlier wait's deadline: on to this one's.
            timer.as_mut().reset(deadline);
        }
    }
}

fn timed_out(what: &str, limit: Duration, flag: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the client {what} for {} s ({flag})", limit.as_secs_f64()),
    )
}

impl<S> Stall<S> {
    pub(crate) fn new(io: S, limits: Limits, phase: Arc<Phase>) -> Self {
        Stall {
            io,
            limits,
            phase,
            head_since: None,
            reading: Waiting::default(),
            writing: Waiting::default(),
        }
    }

    fn read_outcome(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        if polled.is_ready() {
            self.reading.since = None;
            return polled;
        }
        match self.phase.between_requests() {
            // Waiting for a head: from when that wait began, whatever has arrived since.
            Some(ended) => {
                let Some(limit) = self.limits.head else {
                    return Poll::Pending;
                };
                let since = match self.head_since {
                    Some((seen, since)) if seen == ended => since,
                    _ => self.head_since.insert((ended, Instant::now())).1,
                };
                let timed = self.reading.pending(cx, since, limit);
                timed.map(|()| {
                    Err(timed_out(
                        "sent no complete request",
                        limit,
                        "--header-timeout",
                    ))
                })
            }
            None => {
                let Some(limit) = self.limits.stalled else {
                    return Poll::Pending;
                };
                let since = *self.reading.since.get_or_insert_with(Instant::now);
                let timed = self.reading.pending(cx, since, limit);
                timed.map(|()| Err(timed_out("sent nothing more", limit, "--socket-timeout")))
            }
        }
    }

    fn write_outcome<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.writing.since = None;
            return polled;
        }
        let Some(limit) = self.limits.stalled else {
            return Poll::Pending;
        };
        let since = *self.writing.since.get_or_insert_with(Instant::now);
        let timed = self.writing.pending(cx, since, limit);
        timed.map(|()| Err(timed_out("read nothing", limit, "--socket-timeout")))
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
        this.write_outcome(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
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
