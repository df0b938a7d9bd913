//! The contract between the engine and a host (the standalone server, the Apache module).
//!
//! A host turns its request into [`CgiVars`](crate::CgiVars) plus two blocking I/O handles: a [`BodyReader`]
//! for the request body and a [`ResponseSink`] for the response. The engine calls them from a Python thread.
//! Every handle has a non-blocking `try_` form that the engine uses while it holds the GIL; only when that
//! would block does the engine release the GIL and call the blocking form. Hosts must never call into Python.

use std::fs::File;
use std::io;

use bytes::Bytes;

/// One piece of a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyChunk {
    /// Body bytes, never empty.
    Data(Bytes),
    /// The body is complete; every later read also answers `End`.
    End,
}

/// The request body, as the host receives it.
pub trait BodyReader: Send {
    /// The next chunk if it is already at hand, `None` if it is still on its way.
    fn try_next(&mut self) -> Option<io::Result<BodyChunk>>;
    /// Waits for the next chunk. Called with the GIL released.
    fn next(&mut self) -> io::Result<BodyChunk>;
}

/// A status line and headers, validated by `start_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The numeric status, 100..=999.
    pub status: u16,
    /// The reason phrase exactly as the app gave it.
    pub reason: String,
    /// Header names and values as the app gave them; values are latin-1 bytes.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A region of an open file to send as body bytes (`wsgi.file_wrapper`'s fast path).
#[derive(Debug)]
pub struct FileRegion {
    /// The file, owned by the host from now on (a duplicate of the app's descriptor).
    pub file: File,
    /// Where the region starts.
    pub offset: u64,
    /// How many bytes to send; the host sends fewer only if the file is shorter.
    pub len: u64,
}

/// What the engine hands to the host, in order: either one `Complete`, or a `Head` followed by any number of
/// `Body`/`File` and then exactly one of `End` or `Abort`.
#[derive(Debug)]
pub enum Output {
    /// The whole response at once: the body is every byte there is (the host may add Content-Length).
    Complete(ResponseHead, Bytes),
    /// The start of a streamed response.
    Head(ResponseHead),
    /// Body bytes, never empty.
    Body(Bytes),
    /// Body bytes taken from a file, without passing through Python.
    File(FileRegion),
    /// The response ended cleanly.
    End,
    /// The response is incomplete: the host must end it so the client can tell (no final chunk; close).
    Abort,
}

/// Why an output was not taken.
#[derive(Debug)]
pub enum TrySendError {
    /// The host's buffer is full: retry with the blocking [`ResponseSink::send`].
    Full(Output),
    /// The client is gone; nothing more will be sent.
    Closed,
}

/// The client has gone away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("client connection closed")]
pub struct ClientGone;

/// Where the response goes.
pub trait ResponseSink: Send {
    /// Hands over an output if the host can take it now.
    fn try_send(&mut self, output: Output) -> Result<(), TrySendError>;
    /// Hands over an output, waiting for room. Called with the GIL released.
    fn send(&mut self, output: Output) -> Result<(), ClientGone>;
}

/// Where the engine writes its error log lines (app tracebacks, `wsgi.errors`).
pub trait ErrorLog: Send + Sync {
    /// Writes one message; `request_id` names the request it belongs to, if any.
    fn write(&self, request_id: Option<&str>, message: &str);
}

/// An [`ErrorLog`] that writes to the process's standard error.
#[derive(Debug, Default, Clone, Copy)]
pub struct StderrLog;

impl ErrorLog for StderrLog {
    fn write(&self, request_id: Option<&str>, message: &str) {
        use std::io::Write as _;
        let message = message.strip_suffix('\n').unwrap_or(message);
        let mut err = io::stderr().lock();
        for line in message.lines() {
            // A closed stderr must not take the server down; there is nowhere left to report it.
            let _ = match request_id {
                Some(id) => writeln!(err, "[rwsgi] [{id}] {line}"),
                None => writeln!(err, "[rwsgi] {line}"),
            };
        }
    }
}
