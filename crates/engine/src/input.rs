//! `wsgi.input`: the request body as a file-like object (read, readline, readlines, iteration).
//!
//! Created once per request by [`crate::request`] and owned by Python from then on; it owns the host's
//! [`BodyReader`]. It never reads past the body: the host delivers exactly the body's bytes, then `End`.
//! Reads take chunks already at hand while holding the GIL and release the GIL only to wait for more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::host::{BodyChunk, BodyReader};

/// The `wsgi.input` object.
#[pyclass(module = "mod_wsgi", name = "Input", frozen)]
pub struct Input {
    state: Mutex<InputState>,
    /// What mod_wsgi's events and metrics report: chunks taken from the host, bytes handed to the app,
    /// microseconds spent waiting for the body.
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    reads: AtomicU64,
    bytes: AtomicU64,
    waited_us: AtomicU64,
}

struct InputState {
    reader: Box<dyn BodyReader>,
    /// Bytes received but not yet handed to the app.
    buffered: Bytes,
    /// A chunk taken from the reader to look ahead, not yet moved into `buffered`.
    peeked: Option<std::io::Result<BodyChunk>>,
    at_end: bool,
}

impl Input {
    pub(crate) fn new(reader: Box<dyn BodyReader>) -> Self {
        Self {
            state: Mutex::new(InputState {
                reader,
                buffered: Bytes::new(),
                peeked: None,
                at_end: false,
            }),
            stats: Stats::default(),
        }
    }

    /// Reads from the host, bytes handed to the app, and the time spent waiting for the body.
    pub(crate) fn stats(&self) -> (u64, u64, Duration) {
        (
            self.stats.reads.load(Ordering::Relaxed),
            self.stats.bytes.load(Ordering::Relaxed),
            Duration::from_micros(self.stats.waited_us.load(Ordering::Relaxed)),
        )
    }

    fn delivered(&self, bytes: usize) {
        self.stats.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn lock(&self) -> PyResult<MutexGuard<'_, InputState>> {
        // Another thread may hold the lock with the GIL released while it waits for the body; blocking here
        // with the GIL held would deadlock, so concurrent use is refused instead.
        self.state
            .try_lock()
            .map_err(|_| PyRuntimeError::new_err("wsgi.input is being read by another thread"))
    }
}

impl InputState {
    /// Makes sure some bytes are buffered, waiting if needed; false once the body is exhausted.
    fn fill(&mut self, py: Python<'_>, stats: &Stats) -> PyResult<bool> {
        while self.buffered.is_empty() && !self.at_end {
            stats.reads.fetch_add(1, Ordering::Relaxed);
            let chunk = match self.peeked.take().or_else(|| self.reader.try_next()) {
                Some(chunk) => chunk,
                None => {
                    let reader = &mut self.reader;
                    let began = Instant::now();
                    let (chunk, arrived) = py.detach(|| (reader.next(), Instant::now()));
                    let waited = arrived.saturating_duration_since(began).as_micros() as u64;
                    stats.waited_us.fetch_add(waited, Ordering::Relaxed);
                    crate::metrics::gil_reacquired(arrived.elapsed());
                    chunk
                }
            };
            match chunk.map_err(|e| PyOSError::new_err(format!("request body read error: {e}")))? {
                BodyChunk::Data(data) => self.buffered = data,
                BodyChunk::End => self.at_end = true,
            }
        }
        Ok(!self.buffered.is_empty())
    }

    /// Reads up to `limit` bytes (all with `None`), stopping after a newline when `line` is set.
    fn read_until(
        &mut self,
        py: Python<'_>,
        stats: &Stats,
        limit: Option<usize>,
        line: bool,
    ) -> PyResult<Vec<u8>> {
        let mut out = Vec::new();
        while limit.is_none_or(|limit| out.len() < limit) && self.fill(py, stats)? {
            let room = limit.map_or(usize::MAX, |limit| limit - out.len());
            let mut take = self.buffered.len().min(room);
            let mut found_newline = false;
            if line {
                if let Some(nl) = self.buffered[..take].iter().position(|&b| b == b'\n') {
                    take = nl + 1;
                    found_newline = true;
                }
            }
            out.extend_from_slice(&self.buffered[..take]);
            self.buffered.advance(take);
            if found_newline {
                break;
            }
        }
        Ok(out)
    }

    /// The common `read(n)` case where the buffered chunk already holds what is asked: no intermediate copy.
    fn take_buffered<'py>(
        &mut self,
        py: Python<'py>,
        stats: &Stats,
        limit: Option<usize>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        if !self.fill(py, stats)? {
            return Ok(Some(PyBytes::new(py, b"")));
        }
        let whole_body_buffered = limit.is_none() && self.reader_exhausted();
        match limit {
            Some(n) if n <= self.buffered.len() => {
                let bytes = PyBytes::new(py, &self.buffered[..n]);
                self.buffered.advance(n);
                Ok(Some(bytes))
            }
            None if whole_body_buffered => {
                let bytes = PyBytes::new(py, &self.buffered);
                self.buffered.clear();
                Ok(Some(bytes))
            }
            _ => Ok(None),
        }
    }

    /// Whether the body ends after what is buffered, found out without waiting.
    fn reader_exhausted(&mut self) -> bool {
        if self.at_end {
            return true;
        }
        if self.peeked.is_none() {
            self.peeked = self.reader.try_next();
        }
        if let Some(Ok(BodyChunk::End)) = self.peeked {
            self.peeked = None;
            self.at_end = true;
        }
        self.at_end
    }
}

/// `-1` or `None` mean "no limit", as for Python's own file objects.
fn limit(size: Option<isize>) -> Option<usize> {
    size.and_then(|size| usize::try_from(size).ok())
}

#[pymethods]
impl Input {
    /// Reads `size` bytes, fewer only at the end of the body; everything left without a size.
    #[pyo3(signature = (size = None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = limit(size);
        if limit == Some(0) {
            return Ok(PyBytes::new(py, b""));
        }
        let mut state = self.lock()?;
        if let Some(bytes) = state.take_buffered(py, &self.stats, limit)? {
            self.delivered(bytes.as_bytes().len());
            return Ok(bytes);
        }
        let data = state.read_until(py, &self.stats, limit, false)?;
        self.delivered(data.len());
        Ok(PyBytes::new(py, &data))
    }

    /// Reads one line, newline included, or at most `size` bytes of it.
    #[pyo3(signature = (size = None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = limit(size);
        if limit == Some(0) {
            return Ok(PyBytes::new(py, b""));
        }
        let data = self.lock()?.read_until(py, &self.stats, limit, true)?;
        self.delivered(data.len());
        Ok(PyBytes::new(py, &data))
    }

    /// Reads lines until the end, or until their total length reaches `hint`.
    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = limit(hint).filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut state = self.lock()?;
        let mut total = 0;
        loop {
            let line = state.read_until(py, &self.stats, None, true)?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            self.delivered(line.len());
            lines.append(PyBytes::new(py, &line))?;
            if hint.is_some_and(|hint| total >= hint) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.lock()?.read_until(py, &self.stats, None, true)?;
        self.delivered(line.len());
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }

    /// Nothing to release early: the body belongs to the request. Present because apps call it.
    fn close(&self) {}
}
