//! `wsgi.errors`, `sys.stdout` and `sys.stderr`: streams whose lines go to the host's error log, tagged
//! with the request's id.
//!
//! As in mod_wsgi, the app sees an `io.TextIOWrapper` (so `.buffer` takes bytes) over a `mod_wsgi.Log`,
//! which also takes text directly. Line buffered: a line is logged when its newline arrives, on
//! `flush()`, or when the stream is dropped.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use rustc_hash::FxHashMap;

use crate::host::ErrorLog;

thread_local! {
    /// The id of the request the current thread is serving, for what the app prints to sys.stdout/stderr.
    static CURRENT_REQUEST: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Marks the current thread as serving request `id` until dropped.
pub(crate) struct RequestScope(Option<String>);

pub(crate) fn request_scope(id: Option<String>) -> RequestScope {
    RequestScope(CURRENT_REQUEST.replace(id))
}

impl Drop for RequestScope {
    fn drop(&mut self) {
        CURRENT_REQUEST.set(self.0.take());
    }
}

/// The `wsgi.errors` object.
#[pyclass(module = "mod_wsgi", name = "Log", frozen)]
pub struct ErrorStream {
    log: Arc<dyn ErrorLog>,
    request_id: Option<String>,
    pending: Mutex<String>,
}

impl ErrorStream {
    pub(crate) fn new(log: Arc<dyn ErrorLog>, request_id: Option<String>) -> Self {
        Self {
            log,
            request_id,
            pending: Mutex::new(String::new()),
        }
    }

    fn emit(&self, text: &str) {
        match &self.request_id {
            Some(id) => self.log.write(Some(id), text),
            // sys.stdout/sys.stderr: tagged with the request this thread is serving, if any.
            None => CURRENT_REQUEST.with_borrow(|id| self.log.write(id.as_deref(), text)),
        }
    }

    fn take_complete_lines(&self, text: &str) -> Option<String> {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pending.push_str(text);
        let end = pending.rfind('\n')? + 1;
        let rest = pending.split_off(end);
        Some(std::mem::replace(&mut *pending, rest))
    }
}

/// Makes the `io.TextIOWrapper` over a `mod_wsgi.Log` that apps are given, as mod_wsgi does.
///
/// An [`crate::Engine`] keeps one, and with it one stream per thread that serves its requests: making an
/// `io.TextIOWrapper` (codec lookup, encoder) and finalizing it cost as much as the rest of a small
/// request's environ, so a thread's stream is made once and given to each request it serves. Its lines
/// are tagged with the request the thread is serving, and what is left of an unfinished line is logged
/// when the request ends, as a per-request stream would.
pub(crate) struct TextStreams {
    wrapper: Py<PyAny>,
    kwargs: Py<pyo3::types::PyDict>,
    /// Each serving thread's `wsgi.errors` and the `mod_wsgi.Log` under it, by `mod_wsgi.thread_id`
    /// (one per thread of the process). Only touched with the GIL held, so the lock is never contended.
    per_thread: Mutex<FxHashMap<u64, ThreadStream>>,
}

/// A thread's `wsgi.errors` (the `io.TextIOWrapper`) and the `mod_wsgi.Log` it writes to.
type ThreadStream = (Py<PyAny>, Py<ErrorStream>);

/// Beyond this many threads' streams (a host whose threads come and go), the cache starts afresh.
const MAX_THREAD_STREAMS: usize = 4096;

impl TextStreams {
    pub(crate) fn new(py: Python<'_>) -> PyResult<Self> {
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("encoding", "utf-8")?;
        kwargs.set_item("errors", "backslashreplace")?;
        kwargs.set_item("line_buffering", true)?;
        kwargs.set_item("write_through", true)?;
        Ok(Self {
            wrapper: py.import("io")?.getattr("TextIOWrapper")?.unbind(),
            kwargs: kwargs.unbind(),
            per_thread: Mutex::new(FxHashMap::default()),
        })
    }

    /// `stream` wrapped for the app.
    pub(crate) fn wrap<'py>(
        &self,
        py: Python<'py>,
        stream: Bound<'py, ErrorStream>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.wrapper
            .bind(py)
            .call((stream,), Some(self.kwargs.bind(py)))
    }

    /// The `wsgi.errors` and its `mod_wsgi.Log` of the calling thread, whose `mod_wsgi.thread_id` is
    /// `thread`, made on its first request.
    pub(crate) fn for_thread<'py>(
        &self,
        py: Python<'py>,
        thread: u64,
        log: &Arc<dyn ErrorLog>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, ErrorStream>)> {
        let streams = || {
            self.per_thread
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        };
        if let Some((text, raw)) = streams().get(&thread) {
            return Ok((text.bind(py).clone(), raw.bind(py).clone()));
        }
        // Made without the lock: making an io.TextIOWrapper runs Python, which may give the GIL up (an
        // import), and another thread must not then wait for the lock with the GIL held.
        // Tagged from the thread's current request, not a fixed one: the stream serves them all.
        let raw = Bound::new(py, ErrorStream::new(Arc::clone(log), None))?;
        let text = self.wrap(py, raw.clone())?;
        let mut streams = streams();
        if streams.len() >= MAX_THREAD_STREAMS {
            streams.clear();
        }
        streams.insert(thread, (text.clone().unbind(), raw.clone().unbind()));
        Ok((text, raw))
    }
}

#[pymethods]
impl ErrorStream {
    /// Takes text, or bytes-like data (UTF-8; what `io.TextIOWrapper` and `.buffer` writers pass).
    fn write(&self, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let text = match data.cast::<pyo3::types::PyString>() {
            Ok(text) => text.to_cow()?.into_owned(),
            Err(_) => {
                let bytes: Vec<u8> = match data.extract::<Vec<u8>>() {
                    Ok(bytes) => bytes,
                    // memoryview and other buffers.
                    Err(_) => data
                        .py()
                        .import(pyo3::intern!(data.py(), "builtins"))?
                        .getattr(pyo3::intern!(data.py(), "bytes"))?
                        .call1((data,))?
                        .extract()?,
                };
                String::from_utf8_lossy(&bytes).into_owned()
            }
        };
        let written = text.len();
        if let Some(lines) = self.take_complete_lines(&text) {
            self.emit(&lines);
        }
        Ok(written)
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(&line?)?;
        }
        Ok(())
    }

    fn readable(&self) -> bool {
        false
    }

    fn writable(&self) -> bool {
        true
    }

    fn seekable(&self) -> bool {
        false
    }

    pub(crate) fn flush(&self) {
        let rest = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if !rest.is_empty() {
            self.emit(&rest);
        }
    }

    fn close(&self) {
        self.flush();
    }

    #[getter]
    fn closed(&self) -> bool {
        false
    }

    /// Called by the wrapping `io.TextIOWrapper` as it is finalized (io's own buffers warn of an unclosed
    /// file here); without it, every request's wrapper raised and dropped an AttributeError.
    fn _dealloc_warn(&self, _source: &Bound<'_, PyAny>) {}

    fn isatty(&self) -> bool {
        false
    }
}

impl Drop for ErrorStream {
    fn drop(&mut self) {
        self.flush();
    }
}
