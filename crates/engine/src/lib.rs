//! The rwsgi engine: everything WSGI and Python, for any host.
//!
//! A host (the standalone `rwsgi` server, the Apache module) starts the interpreter with
//! [`interp::initialize`], loads an application into an [`Engine`], and hands it [`Request`]s: CGI variables
//! plus the blocking I/O handles of [`host`]. The engine builds the environ, calls the app, validates
//! `start_response`, streams the response and reports errors; it knows nothing of sockets, tokio, hyper or
//! Apache.
//!
//! Threads: [`Engine::serve`] runs a thread that takes requests from a [`RequestSource`] and keeps the GIL
//! from one request to the next while more are waiting, releasing it only to wait; that is what keeps many
//! threads from fighting over the GIL. [`Engine::handle`] serves one request from any thread.
#![deny(missing_docs)]

mod app;
mod cpython;
mod environ;
mod errors;
mod events;
mod file_wrapper;
mod host;
mod input;
pub mod interp;
mod keys;
mod metrics;
pub mod proxy;
mod pyapi;
mod request;
pub mod restrict;
mod scoreboard;
mod start_response;
pub mod subinterp;
mod traceback;

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

pub use app::{AppSource, AppSpec};
pub use environ::{from_http, hints, CgiVars, HttpRequest, Key, Transport};
pub use error::EngineError;
pub use host::{
    BodyChunk, BodyReader, ClientGone, ErrorLog, FileRegion, Output, ResponseHead, ResponseSink,
    StderrLog, TrySendError,
};
pub use pyapi::{current_thread_ident, interrupt_thread, process_stopping, MOD_WSGI_API_VERSION};
pub use request::{HookValue, Inline, Outcome, Request};
pub use scoreboard::{show_scoreboard, ProcessScore, Scoreboard, ScoreboardSource, WorkerScore};
pub use subinterp::SubInterpreter;

mod error;

/// How the host runs the app, as the environ and the `mod_wsgi` module report it.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Worker threads per process (`wsgi.multithread` when more than one).
    pub threads: usize,
    /// Processes serving the app (`wsgi.multiprocess` when more than one).
    pub processes: usize,
    /// `wsgi.multiprocess` even with one process (mod_wsgi's explicit `processes=1`).
    pub multiprocess: bool,
    /// mod_wsgi's process group name (`""` outside daemon mode).
    pub process_group: String,
    /// mod_wsgi's application group name.
    pub application_group: String,
    /// Reload a script file whose modification time changed (mod_wsgi's `WSGIScriptReloading`).
    pub script_reloading: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            processes: 1,
            multiprocess: false,
            process_group: String::new(),
            application_group: String::new(),
            script_reloading: true,
        }
    }
}

/// Where a serving thread gets its requests. The host implements the queueing policy.
pub trait RequestSource: Sync {
    /// The next request if one is waiting. Called with the GIL held: it must not block.
    fn try_next(&self) -> Option<Request>;
    /// Waits for the next request; `None` ends the thread. Called with the GIL released.
    fn next(&self) -> Option<Request>;
    /// Called once the thread holds the GIL again after [`RequestSource::next`] returned a request.
    fn attached(&self) {}
    /// Called after each request, with the GIL held.
    fn finished(&self, _outcome: &Outcome) {}
}

/// A loaded application, ready to serve requests from any number of threads.
pub struct Engine {
    app: app::LiveApp,
    label: String,
    log: Arc<dyn ErrorLog>,
    /// The `mod_wsgi` module state of the app's interpreter: subscribers, `active_requests`.
    state: Py<events::State>,
    /// The callable's configured name (`callable_object` of `request_started`).
    callable_object: Py<PyString>,
    /// The environ's keys as Python strings and its templates, made once: most requests repeat the same
    /// few dozen keys, and many of their values.
    keys: keys::EnvironKeys,
    /// Makes each request's `wsgi.errors`.
    text_streams: errors::TextStreams,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("app", &self.label)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Loads the app (the interpreter must be initialised). Import errors come back with their traceback.
    pub fn load(
        spec: &AppSpec,
        options: &EngineOptions,
        log: Arc<dyn ErrorLog>,
    ) -> Result<Self, EngineError> {
        Python::attach(|py| {
            let interp_err =
                |e: PyErr| EngineError::Interpreter(traceback::format_exception(py, &e));
            let state = pyapi::install(py, options).map_err(interp_err)?;
            let environ_template = environ_template(py, spec, options).map_err(interp_err)?;
            let app = app::LiveApp::load(py, spec, options.script_reloading)?;
            Ok(Self {
                app,
                label: spec.label(),
                log,
                state: state.unbind(),
                callable_object: PyString::new(py, &spec.callable).unbind(),
                keys: keys::EnvironKeys::new(py, environ_template).map_err(interp_err)?,
                text_streams: errors::TextStreams::new(py).map_err(interp_err)?,
            })
        })
    }

    /// Serves one request on the calling thread.
    pub fn handle(&self, request: Request) -> Outcome {
        // The wait for the GIL is measured only when mod_wsgi's events or metrics will report it.
        let waiting = (metrics::flags() != 0).then(std::time::Instant::now);
        Python::attach(|py| {
            let attach_wait = waiting.map(|since| since.elapsed());
            request::run(py, self, request, attach_wait)
        })
    }

    /// Serves a request on a thread that must never wait for the host, such as the one driving the
    /// connections: the app runs here, and output the host cannot take at once is held rather than waited
    /// for. Once output is held, or the app has run past `deadline`, the response is paused between
    /// two items of its iterable and [`Inline::Handover`] gives the host the rest of it, as a request to
    /// queue for a pool thread. The caller guarantees that the request's body is complete (reading it never
    /// waits) and that the sink takes a `Complete` or `Head` output without waiting.
    ///
    /// The app can still block the thread for as long as a single call into it takes; hosts use this only
    /// for apps seen to answer fast.
    pub fn handle_inline(&self, request: Request, deadline: std::time::Instant) -> Inline {
        Python::attach(|py| request::run_inline(py, self, request, deadline))
    }

    /// Calls the loaded script's callable as mod_wsgi calls access and authentication scripts:
    /// `callable(environ, *args)`. `None` if it raised (the traceback is logged).
    pub fn call_hook(
        &self,
        vars: &CgiVars,
        args: &[&[u8]],
        id: Option<String>,
    ) -> Option<HookValue> {
        Python::attach(|py| request::call_hook(py, self, vars, args, id))
    }

    /// Serves requests from `source` on the calling thread until it runs dry.
    pub fn serve(&self, source: &dyn RequestSource) {
        Python::attach(|py| loop {
            let (request, attach_wait) = match source.try_next() {
                Some(request) => (request, None),
                None => match py.detach(|| source.next().map(|r| (r, std::time::Instant::now()))) {
                    Some((request, arrived)) => {
                        let attach_wait = arrived.elapsed();
                        source.attached();
                        (request, Some(attach_wait))
                    }
                    None => return,
                },
            };
            let outcome = request::run(py, self, request, attach_wait);
            source.finished(&outcome);
        })
    }
}

/// Keys an environ has room for before it must grow: the template's, the values the warm template keeps
/// (and the entries it deleted), and a request's own variables with plenty of headers.
const ENVIRON_ROOM: usize = 64;

/// The environ keys that are the same for every request; each request starts from a copy.
fn environ_template<'py>(
    py: Python<'py>,
    spec: &AppSpec,
    options: &EngineOptions,
) -> PyResult<Bound<'py, PyDict>> {
    // Room for a request's own keys too: each request's copy then never grows its table.
    let environ = cpython::dict_with_room(py, ENVIRON_ROOM)?;
    environ.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
    environ.set_item("wsgi.url_scheme", "http")?;
    environ.set_item("wsgi.multithread", options.threads > 1)?;
    environ.set_item(
        "wsgi.multiprocess",
        options.multiprocess || options.processes > 1,
    )?;
    environ.set_item("wsgi.run_once", false)?;
    environ.set_item("wsgi.input_terminated", true)?;
    environ.set_item(
        "wsgi.file_wrapper",
        py.get_type::<file_wrapper::FileWrapper>(),
    )?;
    let v = MOD_WSGI_API_VERSION;
    environ.set_item("mod_wsgi.version", PyTuple::new(py, [v.0, v.1, v.2])?)?;
    environ.set_item("mod_wsgi.process_group", &options.process_group)?;
    environ.set_item("mod_wsgi.application_group", &options.application_group)?;
    environ.set_item("mod_wsgi.callable_object", &spec.callable)?;
    // Set per request in daemon mode only (see `request::build_environ`).
    environ.set_item("mod_wsgi.queue_start", 0.0)?;
    environ.set_item("mod_wsgi.daemon_start", 0.0)?;
    if let AppSource::Script(path) = &spec.source {
        environ.set_item("SCRIPT_FILENAME", path_str(path))?;
    }
    Ok(environ)
}

/// A path as Python code expects to find it in `sys.path`, `__file__` and the environ: a `str` (PyO3 would
/// otherwise make a `pathlib.Path`). Non-UTF-8 bytes become surrogate escapes, as `os.fsdecode` makes them.
pub(crate) fn path_str(path: &std::path::Path) -> String {
    match path.to_str() {
        Some(text) => text.to_owned(),
        None => path.to_string_lossy().into_owned(),
    }
}

/// Registers the `mod_wsgi` Python module in the interpreter current on this thread, so code that runs
/// before any application is loaded (import scripts) can `import mod_wsgi`. An application loaded later
/// into the same interpreter shares that module, and what import scripts subscribed there.
pub fn install_mod_wsgi(options: &EngineOptions) -> Result<(), EngineError> {
    Python::attach(|py| pyapi::install(py, options).map(drop))
        .map_err(|err| EngineError::Interpreter(err.to_string()))
}

/// Executes a WSGI script file as its module now, in the interpreter current on this thread, so a later
/// [`Engine::load`] of it starts at once (mod_wsgi's `WSGIImportScript`). Errors carry the traceback.
pub fn import_script(path: &std::path::Path) -> Result<(), EngineError> {
    Python::attach(|py| app::import_script(py, path))
}

/// Makes the type objects of the engine's Python classes now, in the interpreter current on this thread.
pub(crate) fn prepare_types(py: Python<'_>) {
    py.get_type::<start_response::StartResponse>();
    py.get_type::<input::Input>();
    py.get_type::<errors::ErrorStream>();
    py.get_type::<file_wrapper::FileWrapper>();
    py.get_type::<events::State>();
}

/// Sends what Python code prints to `sys.stdout` and `sys.stderr` to `log`, line by line, as mod_wsgi does
/// inside Apache, whose child processes have no standard streams worth writing to.
pub fn redirect_std_streams(log: Arc<dyn ErrorLog>) -> Result<(), EngineError> {
    Python::attach(|py| {
        let sys = py.import("sys")?;
        let streams = errors::TextStreams::new(py)?;
        for name in ["stdout", "stderr"] {
            let stream = streams.wrap(
                py,
                Bound::new(py, errors::ErrorStream::new(Arc::clone(&log), None))?,
            )?;
            sys.setattr(name, stream)?;
        }
        Ok(())
    })
    .map_err(|err: PyErr| EngineError::Interpreter(err.to_string()))
}

impl Engine {
    /// Takes the GIL and gives it back: returns only when some thread released it (a watchdog's probe).
    pub fn touch_gil() {
        Python::attach(|_| ());
    }

    /// Every Python thread's current stack, formatted as tracebacks, named by thread (for stuck requests).
    /// Waits for the GIL: a thread spinning in C with the GIL held makes this wait, so callers bound it.
    pub fn dump_stacks() -> String {
        Python::attach(|py| {
            let dump = || -> PyResult<String> {
                let names: HashMap<u64, String> = py
                    .import("threading")?
                    .call_method0("enumerate")?
                    .try_iter()?
                    .filter_map(|t| {
                        let t = t.ok()?;
                        Some((
                            t.getattr("ident").ok()?.extract().ok()?,
                            t.getattr("name").ok()?.extract().ok()?,
                        ))
                    })
                    .collect();
                let frames = py
                    .import("sys")?
                    .call_method0("_current_frames")?
                    .cast_into::<PyDict>()?;
                let traceback = py.import("traceback")?;
                let mut out = String::new();
                for (ident, frame) in frames.iter() {
                    let ident: u64 = ident.extract()?;
                    let name = names.get(&ident).map_or("?", String::as_str);
                    out.push_str(&format!("Thread {ident} ({name}):\n"));
                    for line in traceback
                        .call_method1("format_stack", (frame,))?
                        .try_iter()?
                    {
                        out.push_str(&line?.extract::<String>()?);
                    }
                }
                Ok(out)
            };
            dump().unwrap_or_else(|err| format!("could not dump the Python stacks: {err}\n"))
        })
    }
}

impl Engine {
    /// The source files of every module loaded now (for `--reload`): `__file__` of each entry of
    /// `sys.modules` that has one.
    pub fn module_files() -> Vec<std::path::PathBuf> {
        Python::attach(|py| {
            let files = || -> PyResult<Vec<std::path::PathBuf>> {
                let modules = py
                    .import("sys")?
                    .getattr("modules")?
                    .cast_into::<PyDict>()?
                    .copy()?;
                Ok(modules
                    .values()
                    .iter()
                    .filter_map(|m| m.getattr("__file__").ok()?.extract::<String>().ok())
                    .map(std::path::PathBuf::from)
                    .collect())
            };
            files().unwrap_or_default()
        })
    }
}
