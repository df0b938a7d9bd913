//! `mod_wsgi.server_metrics()`: the host's view of its server's workers (Apache's scoreboard), given as
//! plain data by a source the host registers, and turned into mod_wsgi's dictionary here.
//!
//! The engine reads no scoreboard itself; without a registered source (`rwsgi serve`, or Apache without
//! `WSGIServerMetrics On` / `server-metrics=On`) the function answers `None`, as mod_wsgi's does.

use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// The server as a whole, and each of its process slots.
#[derive(Debug, Clone, Default)]
pub struct Scoreboard {
    /// The most processes the MPM may run (`ServerLimit`).
    pub server_limit: i64,
    /// The most threads a process may run (`ThreadLimit`).
    pub thread_limit: i64,
    /// The generation (restart count) whose children serve now.
    pub running_generation: i64,
    /// When the server (re)started, in seconds since the epoch.
    pub restart_time: f64,
    /// Now, in seconds since the epoch.
    pub current_time: f64,
    /// Whole seconds since the restart.
    pub running_time: i64,
    /// Every process slot, used or not.
    pub processes: Vec<ProcessScore>,
}

/// One process slot.
#[derive(Debug, Clone, Default)]
pub struct ProcessScore {
    /// The slot's index.
    pub process_num: i64,
    /// The process in the slot (0: none).
    pub pid: i64,
    /// The generation it was started in.
    pub generation: i64,
    /// It is stopping gracefully.
    pub quiescing: bool,
    /// Its worker slots.
    pub workers: Vec<WorkerScore>,
}

/// One worker (thread) slot of a process.
#[derive(Debug, Clone, Default)]
pub struct WorkerScore {
    /// The worker's number across the server.
    pub thread_num: i64,
    /// The generation it was started in.
    pub generation: i64,
    /// Apache's one-letter state, as mod_status shows it (`_` waiting, `W` sending, `.` open slot…).
    pub status: char,
    /// Requests served.
    pub access_count: u64,
    /// Bytes sent.
    pub bytes_served: u64,
    /// When its current or last request began, in seconds since the epoch.
    pub start_time: f64,
    /// When its last request ended, in seconds since the epoch.
    pub stop_time: f64,
    /// When it last did anything, in seconds since the epoch.
    pub last_used: f64,
    /// The client's address (latin-1 text, as the scoreboard holds it, as are the next two).
    pub client: Vec<u8>,
    /// The request line it serves or served last.
    pub request: Vec<u8>,
    /// The virtual host of that request.
    pub vhost: Vec<u8>,
}

/// Where the scoreboard comes from: a function of the host's, `None` when it has none to show.
pub type ScoreboardSource = fn() -> Option<Scoreboard>;

static SOURCE: OnceLock<ScoreboardSource> = OnceLock::new();

/// Makes `mod_wsgi.server_metrics()` answer from `source` in this process (the first registration holds).
pub fn show_scoreboard(source: ScoreboardSource) {
    let _ = SOURCE.set(source);
}

/// The dictionary `mod_wsgi.server_metrics()` returns, or `None`.
pub(crate) fn server_metrics(py: Python<'_>) -> PyResult<Option<Bound<'_, PyDict>>> {
    let Some(board) = SOURCE.get().and_then(|source| source()) else {
        return Ok(None);
    };
    let dict = PyDict::new(py);
    dict.set_item("server_limit", board.server_limit)?;
    dict.set_item("thread_limit", board.thread_limit)?;
    dict.set_item("running_generation", board.running_generation)?;
    dict.set_item("restart_time", board.restart_time)?;
    dict.set_item("current_time", board.current_time)?;
    dict.set_item("running_time", board.running_time)?;
    let processes = PyList::empty(py);
    for process in &board.processes {
        let entry = PyDict::new(py);
        entry.set_item("process_num", process.process_num)?;
        entry.set_item("pid", process.pid)?;
        entry.set_item("generation", process.generation)?;
        entry.set_item("quiescing", process.quiescing)?;
        let workers = PyList::empty(py);
        for worker in &process.workers {
            workers.append(worker_dict(py, worker)?)?;
        }
        entry.set_item("workers", workers)?;
        processes.append(entry)?;
    }
    dict.set_item("processes", processes)?;
    Ok(Some(dict))
}

fn worker_dict<'py>(py: Python<'py>, worker: &WorkerScore) -> PyResult<Bound<'py, PyDict>> {
    let latin1 = |bytes: &[u8]| crate::cpython::latin1::to_str(py, bytes);
    let entry = PyDict::new(py);
    entry.set_item("thread_num", worker.thread_num)?;
    entry.set_item("generation", worker.generation)?;
    entry.set_item("status", worker.status.to_string())?;
    entry.set_item("access_count", worker.access_count)?;
    entry.set_item("bytes_served", worker.bytes_served)?;
    entry.set_item("start_time", worker.start_time)?;
    entry.set_item("stop_time", worker.stop_time)?;
    entry.set_item("last_used", worker.last_used)?;
    entry.set_item("client", latin1(&worker.client)?)?;
    entry.set_item("request", latin1(&worker.request)?)?;
    entry.set_item("vhost", latin1(&worker.vhost)?)?;
    Ok(entry)
}
