//! The engine's blocking I/O handles over hyper: [`RequestBody`] feeds `wsgi.input` from the connection, and
//! [`ResponseChannel`] carries the response back to the connection's task.
//!
//! Both are used from Python threads and only ever touch channels, never the socket: a slow client stalls a
//! channel, not a Python thread that is not waiting on it.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use rwsgi_engine::{
    BodyChunk, BodyReader, ClientGone, FileRegion, Output, ResponseHead, ResponseSink, TrySendError,
};
use tokio::sync::{mpsc, oneshot};

/// Chunks of a streamed body in flight between the connection and a Python thread, each way.
const CHANNEL_CHUNKS: usize = 8;
/// How much of a file is read per chunk when sending a `wsgi.file_wrapper` response.
const FILE_CHUNK: usize = 256 * 1024;

/// The request body: what was read before dispatch, then (for large bodies) the rest as it arrives.
pub(crate) struct RequestBody {
    /// The first chunk read before dispatch: most bodies come in one, which then costs no allocation.
    first: Option<Bytes>,
    /// The chunks read before dispatch after the first, as hyper gave them (kept apart: joining them would
    /// copy the body).
    buffered: VecDeque<Bytes>,
    rest: Option<mpsc::Receiver<io::Result<Bytes>>>,
}

impl RequestBody {
    /// Reads up to `limit` bytes of `body` now; a larger body is streamed by a task from then on.
    pub(crate) async fn read(mut body: Incoming, limit: usize) -> io::Result<Self> {
        let mut first = None;
        let mut buffered = VecDeque::new();
        let mut len = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(connection_error)?;
            if let Ok(data) = frame.into_data() {
                if data.is_empty() {
                    continue;
                }
                len += data.len();
                match first {
                    None => first = Some(data),
                    Some(_) => buffered.push_back(data),
                }
                if len > limit {
                    return Ok(Self {
                        first,
                        buffered,
                        rest: Some(stream(body)),
                    });
                }
            }
        }
        Ok(Self {
            first,
            buffered,
            rest: None,
        })
    }

    /// The whole body is at hand: reading it never waits.
    pub(crate) fn is_complete(&self) -> bool {
        self.rest.is_none()
    }

    /// A body with nothing in it.
    pub(crate) fn empty() -> Self {
        Self {
            first: None,
            buffered: VecDeque::new(),
            rest: None,
        }
    }
}

fn stream(mut body: Incoming) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            let item = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => Ok(data),
                    _ => continue,
                },
                Err(err) => Err(connection_error(err)),
            };
            let failed = item.is_err();
            // The app stopped reading (the request is over): drop the rest.
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// hyper's error for a body the connection failed to deliver, with the cause (a timeout, a reset) kept.
fn connection_error(err: hyper::Error) -> io::Error {
    let cause = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<io::Error>());
    match cause {
        Some(cause) => io::Error::new(cause.kind(), format!("{err}: {cause}")),
        None => io::Error::other(err),
    }
}

impl BodyReader for RequestBody {
    fn try_next(&mut self) -> Option<io::Result<BodyChunk>> {
        if let Some(data) = self.first.take().or_else(|| self.buffered.pop_front()) {
            return Some(Ok(BodyChunk::Data(data)));
        }
        let Some(rest) = &mut self.rest else {
            return Some(Ok(BodyChunk::End));
        };
        match rest.try_recv() {
            Ok(item) => Some(item.map(BodyChunk::Data)),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(Ok(BodyChunk::End)),
        }
    }

    fn next(&mut self) -> io::Result<BodyChunk> {
        if let Some(chunk) = self.try_next() {
            return chunk;
        }
        // A client that stops sending fails the connection's read (`--socket-timeout`, in `stall`), which
        // ends this wait with the error.
        match self.rest.as_mut().and_then(|rest| rest.blocking_recv()) {
            Some(item) => item.map(BodyChunk::Data),
            None => Ok(BodyChunk::End),
        }
    }
}

/// How a response reaches the connection's task.
pub(crate) enum ResponseStart {
    /// The whole response at once.
    Complete(ResponseHead, Bytes),
    /// The head now; body frames follow on the channel, an `Err` meaning "abort".
    Streaming(ResponseHead, mpsc::Receiver<Result<Frame<Bytes>, Aborted>>),
}

/// The app failed after the response had started; the connection must not end it cleanly.
#[derive(Debug, thiserror::Error)]
#[error("response aborted by the application")]
pub(crate) struct Aborted;

/// The engine's [`ResponseSink`]: a one-shot for the head, then a bounded channel for the body.
pub(crate) struct ResponseChannel {
    start: Option<oneshot::Sender<ResponseStart>>,
    body: Option<mpsc::Sender<Result<Frame<Bytes>, Aborted>>>,
    /// A slot kept for the abort, so a streamed body that is not ended (an abort, or the sink dropped
    /// without an end) always tells the connection so at once: a channel that just closed would make hyper
    /// end the response as if it were complete.
    unfinished: Option<mpsc::OwnedPermit<Result<Frame<Bytes>, Aborted>>>,
}

impl Drop for ResponseChannel {
    fn drop(&mut self) {
        if let Some(permit) = self.unfinished.take() {
            permit.send(Err(Aborted));
        }
    }
}

impl ResponseChannel {
    pub(crate) fn new() -> (Self, oneshot::Receiver<ResponseStart>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                start: Some(tx),
                body: None,
                unfinished: None,
            },
            rx,
        )
    }

    /// Hands a body frame to the connection, waiting while the client is slow. A client that stops
    /// reading fails the connection's write (`--socket-timeout`, in `stall`), which closes the channel and
    /// ends this wait: the wait itself has no limit, since a slow client still reading is no reason to cut
    /// its response short.
    fn send_frame(&self, frame: Frame<Bytes>) -> Result<(), ClientGone> {
        self.body()?
            .blocking_send(Ok(frame))
            .map_err(|_| ClientGone)
    }

    fn start(&mut self, start: ResponseStart) -> Result<(), TrySendError> {
        let tx = self.start.take().ok_or(TrySendError::Closed)?;
        tx.send(start).map_err(|_| TrySendError::Closed)
    }

    fn body(&self) -> Result<&mpsc::Sender<Result<Frame<Bytes>, Aborted>>, ClientGone> {
        self.body.as_ref().ok_or(ClientGone)
    }

    fn send_file(&self, region: &FileRegion) -> Result<(), ClientGone> {
        let mut offset = region.offset;
        let end = region.offset.saturating_add(region.len);
        while offset < end {
            let want = usize::try_from(end - offset)
                .unwrap_or(usize::MAX)
                .min(FILE_CHUNK);
            let mut buf = vec![0; want];
            let read = match region.file.read_at(&mut buf, offset) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            buf.truncate(read);
            offset += read as u64;
            self.send_frame(Frame::data(buf.into()))?;
        }
        Ok(())
    }
}

impl ResponseSink for ResponseChannel {
    fn try_send(&mut self, output: Output) -> Result<(), TrySendError> {
        match output {
            Output::Complete(head, body) => self.start(ResponseStart::Complete(head, body)),
            Output::Head(head) => {
                let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS + 1);
                // A fresh channel has room: the reservation cannot fail.
                self.unfinished = tx.clone().try_reserve_owned().ok();
                self.body = Some(tx);
                self.start(ResponseStart::Streaming(head, rx))
            }
            Output::Body(data) => {
                let body = self.body().map_err(|_| TrySendError::Closed)?;
                body.try_send(Ok(Frame::data(data)))
                    .map_err(|err| match err {
                        mpsc::error::TrySendError::Full(Ok(frame)) => {
                            TrySendError::Full(Output::Body(frame.into_data().unwrap_or_default()))
                        }
                        _ => TrySendError::Closed,
                    })
            }
            output @ Output::File(_) => Err(TrySendError::Full(output)),
            Output::End => {
                self.body = None;
                self.unfinished = None;
                Ok(())
            }
            Output::Abort => {
                self.body = None;
                let permit = self.unfinished.take().ok_or(TrySendError::Closed)?;
                permit.send(Err(Aborted));
                Ok(())
            }
        }
    }

    fn send(&mut self, output: Output) -> Result<(), ClientGone> {
        match output {
            Output::Body(data) => self.send_frame(Frame::data(data)),
            Output::File(region) => self.send_file(&region),
            other => self.try_send(other).map_err(|_| ClientGone),
        }
    }
}
