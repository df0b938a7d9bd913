//! The engine's I/O handles over an Apache request: the body comes from Apache's input filters (already
//! dechunked), the response goes to its output filters. Every call may block on the client, so none is
//! made with the GIL held: the `try_` forms answer "not now", and the engine releases the GIL and calls
//! the blocking form.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rwsgi_engine::{
    BodyChunk, BodyReader, ClientGone, Output, ResponseHead, ResponseSink, TrySendError,
};

use crate::ffi::{Head, RequestLease};

/// How much body one read asks Apache for.
const READ_SIZE: usize = 64 * 1024;

/// The request body, read through Apache.
pub(crate) struct ApacheBody {
    lease: Arc<RequestLease>,
    done: bool,
}

impl ApacheBody {
    pub(crate) fn new(lease: Arc<RequestLease>) -> Self {
        Self { lease, done: false }
    }
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the request has finished; its input can no longer be read",
    )
}

impl BodyReader for ApacheBody {
    fn try_next(&mut self) -> Option<io::Result<BodyChunk>> {
        self.done.then_some(Ok(BodyChunk::End))
    }

    fn next(&mut self) -> io::Result<BodyChunk> {
        if self.done {
            return Ok(BodyChunk::End);
        }
        let mut buf = vec![0; READ_SIZE];
        let n = self.lease.read_body(&mut buf).map_err(|_| gone())??;
        if n == 0 {
            self.done = true;
            return Ok(BodyChunk::End);
        }
        buf.truncate(n);
        Ok(BodyChunk::Data(Bytes::from(buf)))
    }
}

/// The response, written through Apache.
pub(crate) struct ApacheResponse {
    lease: Arc<RequestLease>,
    /// `WSGIErrorOverride On`: an error status is handed to Apache (for its ErrorDocument) instead of
    /// sending the app's page; the status lands here.
    error_override: Option<Arc<AtomicU16>>,
}

impl ApacheResponse {
    pub(crate) fn new(lease: Arc<RequestLease>, error_override: Option<Arc<AtomicU16>>) -> Self {
        Self {
            lease,
            error_override,
        }
    }

    /// Under `WSGIErrorOverride`, takes an error response's status for Apache; true if it did.
    fn overridden(&self, head: &ResponseHead) -> bool {
        match &self.error_override {
            Some(status) if head.status >= 400 => {
                status.store(head.status, Ordering::Release);
                true
            }
            _ => false,
        }
    }

    fn set_head(&self, head: &ResponseHead) -> Result<(), ClientGone> {
        let status_line = format!("{} {}", head.status, head.reason);
        self.lease
            .set_head(&Head {
                status: head.status,
                status_line: &status_line,
                headers: &head.headers,
            })
            .map_err(|_| ClientGone)
    }

    fn write(&self, bytes: &[u8], flush: bool) -> Result<(), ClientGone> {
        match self.lease.write(bytes, flush) {
            Ok(true) => Ok(()),
            _ => Err(ClientGone),
        }
    }
}

impl ResponseSink for ApacheResponse {
    fn try_send(&mut self, output: Output) -> Result<(), TrySendError> {
        match output {
            // Setting the head only fills in the request's fields: nothing waits on the client.
            // An overridden error page stops here: the app's body is not wanted.
            Output::Head(head) if self.overridden(&head) => Err(TrySendError::Closed),
            Output::Head(head) => self.set_head(&head).map_err(|_| TrySendError::Closed),
            output => Err(TrySendError::Full(output)),
        }
    }

    fn send(&mut self, output: Output) -> Result<(), ClientGone> {
        match output {
            Output::Complete(head, _) | Output::Head(head) if self.overridden(&head) => {
                Err(ClientGone)
            }
            Output::Complete(head, body) => {
                self.set_head(&head)?;
                // Apache ends the response when the handler returns: no flush needed here.
                self.write(&body, false)
            }
            Output::Head(head) => self.set_head(&head),
            // Each block an app yields goes to the client now, as mod_wsgi does.
            Output::Body(bytes) => self.write(&bytes, true),
            Output::File(region) => {
                match self
                    .lease
                    .send_file(region.file.into(), region.offset, region.len)
                {
                    Ok(true) => Ok(()),
                    _ => Err(ClientGone),
                }
            }
            Output::End => Ok(()),
            Output::Abort => self.lease.abort().map_err(|_| ClientGone),
        }
    }
}
