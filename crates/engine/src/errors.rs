//! `wsgi.errors`, `sys.stdout` and `sys.stderr`: streams whose lines go to the host's error log, tagged
//! with the request's id.
//!
//! As in mod_wsgi, the app sees an `io.TextIOWrapper` (so `.buffer` takes bytes) over a `mod_wsgi.Log`,
//! which also takes text directly. Line buffered: a line is logged when its newline arrives, on
//! `flush()`, or when the stream is dropped.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

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

/// Wraps a `mod_wsgi.Log` in the `io.TextIOWrapper` apps are given, as mod_wsgi does.
pub(crate) fn text_stream<'py>(
    py: Python<'py>,
    stream: ErrorStream,
) -> PyResult<Bound<'py, PyAny>> {
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("encoding", "utf-8")?;
    kwargs.set_item("errors", "backslashreplace")?;
    kwargs.set_item("line_buffering", true)?;
    kwargs.set_item("write_through", true)?;
    py.import(pyo3::intern!(py, "io"))?
        .getattr(pyo3::intern!(py, "TextIOWrapper"))?
        .call((Bound::new(py, stream)?,), Some(&kwargs))
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

    fn flush(&self) {
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

    fn isatty(&self) -> bool {
        false
    }
}

impl Drop for ErrorStream {
    fn drop(&mut self) {
        self.flush();
    }
}
