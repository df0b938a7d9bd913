//! `start_response` and `write()`, and the response state they share with the request driver.
//!
//! One [`StartResponse`] is made per request and owns the host's [`ResponseSink`]. `start_response` only
//! validates and records the status and headers; they go out with the first non-empty body bytes (or at the
//! end), so an app may call it late, or again with `exc_info`, until then. Content-Length is enforced here:
//! never more bytes than declared, and a short body ends in `Abort` rather than a clean end.
//!
//! A request running on the host's own I/O thread (see [`crate::Engine::handle_inline`]) must never wait
//! for the host: output the host cannot take at once is held here, in order, and handed over later by
//! whichever Python thread takes the rest of the response over.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::host::{ClientGone, FileRegion, Output, ResponseHead, ResponseSink, TrySendError};

/// Headers that belong to one connection, which only the server may set (PEP 3333).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
];

/// The `start_response` callable; its `write` method is the PEP's `write()` callable.
#[pyclass(module = "mod_wsgi", name = "StartResponse", frozen)]
pub struct StartResponse {
    state: Mutex<ResponseState>,
    /// Set when `subscribe_events` callbacks follow the request (`response_started`).
    events: OnceLock<crate::events::ResponseEvents>,
}

/// Where a request's response stands.
pub(crate) struct ResponseState {
    sink: Box<dyn ResponseSink>,
    /// The status and headers from the latest `start_response` call, until they are sent.
    head: Option<ResponseHead>,
    /// The status of the latest `start_response` call (kept after the head is sent).
    status: Option<u16>,
    content_length: Option<u64>,
    head_sent: bool,
    body_sent: u64,
    /// Set once `End`, `Abort` or `Complete` went out, or the client left.
    done: bool,
    /// The status the client was actually sent (the app's, or 500/504 when it failed first).
    sent_status: Option<u16>,
    /// Pieces of body handed to the host (`output_writes`).
    writes: u64,
    /// Time spent waiting for the host to take output (`output_time`).
    waited: Duration,
    /// Running on the host's I/O thread: output the host cannot take now is held instead of waited for.
    inline: bool,
    /// Output held while inline, oldest first; everything later queues behind it.
    held: VecDeque<Output>,
}

impl StartResponse {
    /// `inline`: the response holds, rather than waits for, output the host cannot take at once.
    pub(crate) fn new(sink: Box<dyn ResponseSink>, inline: bool) -> Self {
        Self {
            state: Mutex::new(ResponseState {
                sink,
                head: None,
                status: None,
                content_length: None,
                head_sent: false,
                body_sent: 0,
                done: false,
                sent_status: None,
                writes: 0,
                waited: Duration::ZERO,
                inline,
                held: VecDeque::new(),
            }),
            events: OnceLock::new(),
        }
    }

    /// Makes `start_response` publish `response_started` to these subscribers.
    pub(crate) fn set_events(&self, events: crate::events::ResponseEvents) {
        // Set once, before the app runs.
        let _ = self.events.set(events);
    }

    pub(crate) fn lock(&self) -> PyResult<MutexGuard<'_, ResponseState>> {
        // The holder may be waiting for the client with the GIL released; blocking here with the GIL held
        // would deadlock, so concurrent use from another thread is refused.
        self.state
            .try_lock()
            .map_err(|_| PyRuntimeError::new_err("the response is being written by another thread"))
    }
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let exc_info = exc_info.filter(|info| !info.is_none());
        if exc_info.is_some_and(|info| info.cast::<PyTuple>().map_or(true, |t| t.len() != 3)) {
            return Err(PyRuntimeError::new_err(
                "start_response() argument 'exc_info' must be a 3-tuple or None",
            ));
        }
        {
            let this = slf.get();
            let mut state = this.lock()?;
            // As mod_wsgi: until the head is sent, a later call replaces an earlier one (with exc_info
            // or without); once it is sent, exc_info re-raises, and a call without it is an error.
            match exc_info {
                Some(info) if state.head_sent => return Err(reraise(info)),
                None if state.head_sent => {
                    return Err(PyRuntimeError::new_err(
                        "start_response() called more than once without exc_info",
                    ))
                }
                _ => {}
            }
            let head = parse_head(status, headers)?;
            state.content_length = content_length(&head)?;
            state.status = Some(head.status);
            state.head = Some(head);
        }
        if let Some(events) = slf.get().events.get() {
            events.publish(slf.py(), status, headers, exc_info);
        }
        slf.getattr(pyo3::intern!(slf.py(), "write"))
    }

    /// Sends body bytes at once, before any the iterable returns (the PEP's imperative API).
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!(
                "write() argument must be a bytes object, not {}",
                type_name(data)
            ))
        })?;
        let mut state = self.lock()?;
        if state.status.is_none() {
            return Err(PyRuntimeError::new_err(
                "write() called before start_response()",
            ));
        }
        state
            .send_body(py, data.as_bytes())
            .map_err(|gone| pyo3::exceptions::PyOSError::new_err(gone.to_string()))
    }
}

impl ResponseState {
    pub(crate) fn started(&self) -> bool {
        self.status.is_some()
    }

    /// The status the client was sent, if a head went out.
    pub(crate) fn sent_status(&self) -> Option<u16> {
        self.sent_status
    }

    pub(crate) fn body_sent(&self) -> u64 {
        self.body_sent
    }

    /// The status the app gave `start_response`, if it called it.
    pub(crate) fn app_status(&self) -> Option<u16> {
        self.status
    }

    /// Pieces of body handed to the host, and the time spent waiting for it to take output.
    pub(crate) fn writes(&self) -> (u64, Duration) {
        (self.writes, self.waited)
    }

    /// Output is held that the host has yet to take: the response cannot go on on an I/O thread.
    pub(crate) fn holds_output(&self) -> bool {
        !self.held.is_empty()
    }

    /// From now on the response runs on a Python thread of the pool: the held output is handed over
    /// first, waiting for the host as long as it takes, with the GIL released.
    pub(crate) fn take_over(&mut self, py: Python<'_>) -> Result<(), ClientGone> {
        self.inline = false;
        if self.held.is_empty() {
            return Ok(());
        }
        let held = std::mem::take(&mut self.held);
        let sink = &mut self.sink;
        let began = Instant::now();
        let (result, sent) = py.detach(|| {
            let result = held.into_iter().try_for_each(|output| sink.send(output));
            (result, Instant::now())
        });
        self.waited += sent.saturating_duration_since(began);
        crate::metrics::gil_reacquired(sent.elapsed());
        if result.is_err() {
            self.done = true;
        }
        result
    }

    /// How many more body bytes the declared Content-Length allows.
    pub(crate) fn remaining(&self) -> Option<u64> {
        self.content_length
            .map(|cl| cl.saturating_sub(self.body_sent))
    }

    /// Hands `output` to the host, releasing the GIL only if the host must wait.
    fn send(&mut self, py: Python<'_>, output: Output) -> Result<(), ClientGone> {
        if self.done {
            return Err(ClientGone);
        }
        if let Output::Head(head) | Output::Complete(head, _) = &output {
            self.sent_status = Some(head.status);
        }
        match &output {
            Output::Body(_) => self.writes += 1,
            Output::Complete(_, body) if !body.is_empty() => self.writes += 1,
            _ => {}
        }
        if !self.held.is_empty() {
            self.held.push_back(output);
            return Ok(());
        }
        let result = match self.sink.try_send(output) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(output)) if self.inline => {
                self.held.push_back(output);
                Ok(())
            }
            Err(TrySendError::Full(output)) => {
                let sink = &mut self.sink;
                let began = Instant::now();
                let (result, sent) = py.detach(|| (sink.send(output), Instant::now()));
                self.waited += sent.saturating_duration_since(began);
                crate::metrics::gil_reacquired(sent.elapsed());
                result
            }
            Err(TrySendError::Closed) => Err(ClientGone),
        };
        if result.is_err() {
            self.done = true;
        }
        result
    }

    fn send_head(&mut self, py: Python<'_>) -> Result<(), ClientGone> {
        if self.head_sent {
            return Ok(());
        }
        let head = self.head.take().ok_or(ClientGone)?;
        self.head_sent = true;
        self.send(py, Output::Head(head))
    }

    /// Sends body bytes (the head first if need be), cut to the declared Content-Length.
    pub(crate) fn send_body(&mut self, py: Python<'_>, data: &[u8]) -> Result<(), ClientGone> {
        let data = match self.remaining() {
            Some(room) => &data[..data.len().min(usize::try_from(room).unwrap_or(usize::MAX))],
            None => data,
        };
        if data.is_empty() {
            return Ok(());
        }
        self.send_head(py)?;
        self.body_sent += data.len() as u64;
        self.send(py, Output::Body(Bytes::copy_from_slice(data)))
    }

    /// Sends a file region (the head first if need be), cut to the declared Content-Length.
    pub(crate) fn send_file(
        &mut self,
        py: Python<'_>,
        mut region: FileRegion,
    ) -> Result<(), ClientGone> {
        if let Some(room) = self.remaining() {
            region.len = region.len.min(room);
        }
        if region.len == 0 {
            return Ok(());
        }
        self.send_head(py)?;
        self.body_sent += region.len;
        if self.done {
            return Err(ClientGone);
        }
        self.writes += 1;
        if self.inline || !self.held.is_empty() {
            // Reading the file blocks: only a Python thread of the pool may do it.
            self.held.push_back(Output::File(region));
            return Ok(());
        }
        let sink = &mut self.sink;
        let began = Instant::now();
        let (result, sent) = py.detach(|| (sink.send(Output::File(region)), Instant::now()));
        self.waited += sent.saturating_duration_since(began);
        crate::metrics::gil_reacquired(sent.elapsed());
        if result.is_err() {
            self.done = true;
        }
        result
    }

    /// Ends the response after the iterable is exhausted; `body` is everything the app returned when it was
    /// all at hand at once (a list or tuple) and nothing went out yet, so it can go in one piece.
    pub(crate) fn finish(&mut self, py: Python<'_>, body: Option<Bytes>) -> Result<(), ClientGone> {
        if self.done {
            return Ok(());
        }
        match (self.head_sent, body) {
            (false, Some(body)) if self.content_length.is_none_or(|cl| cl <= body.len() as u64) => {
                let body = match self.content_length {
                    Some(cl) => {
                        body.slice(..usize::try_from(cl).unwrap_or(usize::MAX).min(body.len()))
                    }
                    None => body,
                };
                let head = self.head.take().ok_or(ClientGone)?;
                self.head_sent = true;
                self.body_sent = body.len() as u64;
                self.send(py, Output::Complete(head, body))?;
            }
            (_, body) => {
                if let Some(body) = body {
                    self.send_body(py, &body)?;
                }
                if !self.head_sent {
                    // Nothing was sent and there is no body: the whole response is the head.
                    let head = self.head.take().ok_or(ClientGone)?;
                    self.head_sent = true;
                    if self.content_length.is_none_or(|cl| cl == 0) {
                        self.send(py, Output::Complete(head, Bytes::new()))?;
                        self.done = true;
                        return Ok(());
                    }
                    self.send(py, Output::Head(head))?;
                }
                let short = self.remaining().is_some_and(|left| left > 0);
                self.send(py, if short { Output::Abort } else { Output::End })?;
            }
        }
        self.done = true;
        Ok(())
    }

    /// Ends a response that failed: a 500 page if nothing went out yet, otherwise an abort the client sees.
    pub(crate) fn fail(&mut self, py: Python<'_>, timed_out: bool) {
        if self.done {
            return;
        }
        let output = match (self.head_sent, timed_out) {
            (true, _) => Output::Abort,
            (false, false) => internal_server_error(),
            (false, true) => gateway_timeout(),
        };
        self.head_sent = true;
        // The client leaving now changes nothing: the request is over either way.
        let _ = self.send(py, output);
        self.done = true;
    }
}

/// The response for a request interrupted by `--interrupt-timeout` before it sent anything.
pub(crate) fn gateway_timeout() -> Output {
    let head = ResponseHead {
        status: 504,
        reason: "Gateway Timeout".to_owned(),
        headers: vec![(
            "Content-Type".to_owned(),
            b"text/plain; charset=utf-8".to_vec(),
        )],
    };
    Output::Complete(
        head,
        Bytes::from_static(b"the request took too long and was interrupted\n"),
    )
}

/// The response for an app that raised before sending anything, as Apache words it.
pub(crate) fn internal_server_error() -> Output {
    const BODY: &str = "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n\
        <title>500 Internal Server Error</title>\n</head><body>\n<h1>Internal Server Error</h1>\n\
        <p>The server encountered an internal error or\nmisconfiguration and was unable to complete\n\
        your request.</p>\n</body></html>\n";
    let head = ResponseHead {
        status: 500,
        reason: "Internal Server Error".to_owned(),
        headers: vec![(
            "Content-Type".to_owned(),
            b"text/html; charset=iso-8859-1".to_vec(),
        )],
    };
    Output::Complete(head, Bytes::from_static(BODY.as_bytes()))
}

fn reraise(exc_info: &Bound<'_, PyAny>) -> PyErr {
    let value = match exc_info
        .cast::<PyTuple>()
        .ok()
        .filter(|t| t.len() == 3)
        .and_then(|t| t.get_item(1).ok())
    {
        Some(value) => value,
        None => return PyTypeError::new_err("exc_info must be a (type, value, traceback) tuple"),
    };
    if let Ok(tb) = exc_info.get_item(2) {
        if let Ok(with_tb) = value.call_method1("with_traceback", (tb,)) {
            return PyErr::from_value(with_tb);
        }
    }
    PyErr::from_value(value)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

fn parse_head(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<ResponseHead> {
    if !status.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "status must be a str, not {}",
            type_name(status)
        )));
    }
    let (code, reason) = parse_status(&latin1(status)?).map_err(PyValueError::new_err)?;
    let headers = headers.cast::<PyList>().map_err(|_| {
        PyTypeError::new_err(format!(
            "start_response() argument 2 must be list, not {}",
            type_name(headers)
        ))
    })?;
    let mut parsed = Vec::with_capacity(headers.len());
    for item in headers.iter() {
        parsed.push(parse_header(&item)?);
    }
    Ok(ResponseHead {
        status: code,
        reason,
        headers: parsed,
    })
}

/// A `str` as latin-1 bytes, raising Python's own UnicodeEncodeError (as mod_wsgi does) if it is not.
fn latin1<'a>(text: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    let Ok(string) = text.cast::<PyString>() else {
        return Err(PyTypeError::new_err(format!(
            "must be str, not {}",
            type_name(text)
        )));
    };
    // Every response's status and headers pass here: a str stored one byte per code point is its own
    // latin-1, borrowed as it is. Any other goes through Python's encoder, for its exact
    // UnicodeEncodeError (as mod_wsgi).
    if let Some(bytes) = crate::cpython::latin1::bytes_of(string) {
        return Ok(Cow::Borrowed(bytes));
    }
    Ok(Cow::Owned(
        text.call_method1(pyo3::intern!(text.py(), "encode"), ("latin-1",))?
            .cast_into::<PyBytes>()?
            .as_bytes()
            .to_vec(),
    ))
}

/// Bytes as Python shows them (`b'200 OK'`), for messages worded as mod_wsgi words them.
fn shown(bytes: &[u8]) -> String {
    let mut text = String::from("b'");
    for &b in bytes {
        match b {
            b'\\' => text.push_str("\\\\"),
            b'\'' => text.push_str("\\'"),
            b'\t' => text.push_str("\\t"),
            b'\n' => text.push_str("\\n"),
            b'\r' => text.push_str("\\r"),
            0x20..=0x7e => text.push(char::from(b)),
            _ => text.push_str(&format!("\\x{b:02x}")),
        }
    }
    text.push('\'');
    text
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// The status line's code and reason; the error is mod_wsgi's message.
fn parse_status(status: &[u8]) -> Result<(u16, String), String> {
    let three_digits = status.len() >= 3 && status[..3].iter().all(u8::is_ascii_digit);
    if !three_digits || status.get(3).is_some_and(u8::is_ascii_digit) {
        return Err(format!(
            "status code must be a 3 digit integer: {}",
            shown(status)
        ));
    }
    if status.get(3) != Some(&b' ') {
        return Err(format!("no space following status code: {}", shown(status)));
    }
    if status[4..].iter().any(|&b| is_control(b) && b != b'\t') {
        return Err(format!(
            "control character in status reason phrase: {}",
            shown(status)
        ));
    }
    let code = status[..3]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if code < 100 {
        return Err(format!(
            "status code must be a 3 digit integer: {}",
            shown(status)
        ));
    }
    Ok((code, latin1_string(&status[4..])))
}

fn parse_header(item: &Bound<'_, PyAny>) -> PyResult<(String, Vec<u8>)> {
    let pair = item.cast::<PyTuple>().map_err(|_| {
        PyTypeError::new_err(format!(
            "each header must be a 2-tuple, not {}",
            type_name(item)
        ))
    })?;
    if pair.len() != 2 {
        return Err(PyValueError::new_err(format!(
            "each header must be a 2-tuple, got length {}",
            pair.len()
        )));
    }
    let (name_str, value) = (pair.get_item(0)?, pair.get_item(1)?);
    let (name, value) = (latin1(&name_str)?, latin1(&value)?);
    check_header_name(&name).map_err(PyValueError::new_err)?;
    check_header_value(&value).map_err(PyValueError::new_err)?;
    // Token characters only, so the name is ASCII: CPython hands that out as UTF-8 as it is stored.
    let name = name_str.cast::<PyString>()?.to_str()?.to_owned();
    if HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(&name)) {
        return Err(PyValueError::new_err(format!(
            "hop-by-hop header {name:?} is not allowed in a WSGI response; the server manages the connection"
        )));
    }
    Ok((name, value.into_owned()))
}

/// Latin-1 bytes as text (each byte is the code point of the same number).
fn latin1_string(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(ascii) if bytes.is_ascii() => ascii.to_owned(),
        _ => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// RFC 9110's token characters, by byte.
const TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// mod_wsgi's checks and messages, then the token rule of RFC 9110.
fn check_header_name(name: &[u8]) -> Result<(), String> {
    // Every header of every response passes here: one look at each byte when the name is good, and the
    // checks below (for mod_wsgi's messages) only when it is not.
    if !name.is_empty() && name.iter().all(|&b| TOKEN[usize::from(b)]) {
        return Ok(());
    }
    if name.is_empty() {
        return Err("header name is empty".into());
    }
    if name.contains(&b' ') {
        return Err(format!("space character in header name: {}", shown(name)));
    }
    if name.iter().any(|&b| is_control(b)) {
        return Err(format!("control character in header name: {}", shown(name)));
    }
    if !name.iter().all(|&b| is_token_byte(b)) {
        return Err(format!("invalid character in header name: {}", shown(name)));
    }
    Ok(())
}

/// The bytes a header value may hold: all but the control characters, of which tab is allowed.
const FIELD_VALUE: [bool; 256] = {
    let mut table = [true; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b == 0x09;
        b += 1;
    }
    table[0x7f] = false;
    table
};

fn check_header_value(value: &[u8]) -> Result<(), String> {
    // As for names: one look at each byte of a good value, mod_wsgi's messages for a bad one.
    if value.iter().all(|&b| FIELD_VALUE[usize::from(b)]) {
        return Ok(());
    }
    if value.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(format!(
            "carriage return/line feed character in header value: {}",
            shown(value)
        ));
    }
    if value.iter().any(|&b| is_control(b) && b != b'\t') {
        return Err(format!(
            "control character in header value: {}",
            shown(value)
        ));
    }
    Ok(())
}

fn is_token_byte(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

fn content_length(head: &ResponseHead) -> PyResult<Option<u64>> {
    let Some((_, value)) = head
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    else {
        return Ok(None);
    };
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "invalid Content-Length {:?}",
                String::from_utf8_lossy(value)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_table_is_rfc_9110_s_tchar() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(TOKEN[usize::from(b)], tchar, "byte {b:#04x}");
        }
    }

    #[test]
    fn latin1_strings_keep_every_byte() {
        assert_eq!(latin1_string(b"OK"), "OK");
        assert_eq!(latin1_string(b"caf\xe9"), "caf\u{e9}");
    }

    #[test]
    fn status_lines_are_checked_with_mod_wsgi_s_messages() {
        assert_eq!(parse_status(b"200 OK").unwrap(), (200, "OK".into()));
        assert_eq!(parse_status(b"299 Custom").unwrap(), (299, "Custom".into()));
        let error = |status: &[u8]| parse_status(status).unwrap_err();
        assert_eq!(error(b"OK"), "status code must be a 3 digit integer: b'OK'");
        assert_eq!(
            error(b"2000 OK"),
            "status code must be a 3 digit integer: b'2000 OK'"
        );
        assert_eq!(
            error(b"20X OK"),
            "status code must be a 3 digit integer: b'20X OK'"
        );
        assert_eq!(error(b"200OK"), "no space following status code: b'200OK'");
        assert_eq!(error(b"200"), "no space following status code: b'200'");
        assert_eq!(
            error(b"200 OK\r\nX: y"),
            "control character in status reason phrase: b'200 OK\\r\\nX: y'"
        );
        assert!(parse_status(b"099 Low").is_err());
    }

    #[test]
    fn header_names_and_values_are_checked() {
        assert_eq!(check_header_name(b""), Err("header name is empty".into()));
        assert_eq!(
            check_header_name(b"X\tFoo"),
            Err("control character in header name: b'X\\tFoo'".into())
        );
        assert!(check_header_name(b"X:Foo").is_err());
        assert!(check_header_name(b"X-Custom_Header").is_ok());
        assert!(check_header_value(b"caf\xe9\tx").is_ok());
        assert_eq!(
            check_header_value(b"a\nb"),
            Err("carriage return/line feed character in header value: b'a\\nb'".into())
        );
        assert!(check_header_value(b"a\x00b").is_err());
    }

    #[test]
    fn the_field_value_table_refuses_control_characters_but_tab() {
        for b in 0..=255u8 {
            let allowed = b == b'\t' || !(b < 0x20 || b == 0x7f);
            assert_eq!(FIELD_VALUE[usize::from(b)], allowed, "byte {b:#04x}");
        }
    }

    #[test]
    fn token_bytes() {
        assert!(b"X-Custom_Header".iter().all(|&b| is_token_byte(b)));
        assert!(!is_token_byte(b' '));
        assert!(!is_token_byte(b':'));
    }
}
