//! Driving one request through the application: build the environ, call the app, consume its iterable
//! lazily, always call `close()`, and turn every failure into a 500 or an aborted response plus a traceback.
//!
//! Runs on a Python thread with the GIL held; it releases the GIL only inside host I/O that must wait.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyIterator, PyList, PyTuple};

use crate::cpython::latin1;
use crate::environ::CgiVars;
use crate::errors::ErrorStream;
use crate::events::{Begin, Tracked};
use crate::file_wrapper::FileWrapper;
use crate::host::{BodyReader, ClientGone, FileRegion, Output, ResponseSink, TrySendError};
use crate::input::Input;
use crate::keys::{Hint, Withheld};
use crate::metrics::{self, Finished};
use crate::start_response::StartResponse;
use crate::traceback::format_exception;
use crate::Engine;

/// One request, as a host hands it to the engine.
pub struct Request {
    /// The CGI variables (see [`crate::environ`]).
    pub vars: CgiVars,
    /// The request body.
    pub body: Box<dyn BodyReader>,
    /// Where the response goes.
    pub response: Box<dyn ResponseSink>,
    /// The host's id for the request, used in log lines and `mod_wsgi.request_id`.
    pub id: Option<String>,
    /// Set when this is the rest of a request begun on an I/O thread (see [`Engine::handle_inline`]);
    /// `body` and `response` are then placeholders, the real ones being inside.
    resume: Option<Box<Resume>>,
}

impl Request {
    /// A request as a host received it.
    pub fn new(
        vars: CgiVars,
        body: Box<dyn BodyReader>,
        response: Box<dyn ResponseSink>,
        id: Option<String>,
    ) -> Self {
        Self {
            vars,
            body,
            response,
            id,
            resume: None,
        }
    }

    /// Whether this is the rest of a request begun inline, handed over by [`Engine::handle_inline`].
    pub fn is_handover(&self) -> bool {
        self.resume.is_some()
    }
}

/// How a request ended, for the host's access log and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The status sent, if a head went out.
    pub status: Option<u16>,
    /// Body bytes handed to the host.
    pub body_bytes: u64,
    /// The app raised (a traceback was logged).
    pub app_error: bool,
    /// The client went away before the response was complete.
    pub client_gone: bool,
}

/// What came of running a request on a host's I/O thread.
pub enum Inline {
    /// The request is over; its whole response is with the host.
    Done(Outcome),
    /// The response must go on where waiting is allowed: the host queues this request (the rest of the
    /// first) for a Python thread, which serves it like any other.
    Handover(Request),
    /// The request was not started (events or metrics follow requests, which only pool threads report):
    /// the host queues it as usual.
    Declined(Request),
}

/// Why consuming the response stopped early.
enum Stop {
    App(PyErr),
    Gone,
}

impl From<PyErr> for Stop {
    fn from(err: PyErr) -> Self {
        Stop::App(err)
    }
}

impl From<ClientGone> for Stop {
    fn from(_: ClientGone) -> Self {
        Stop::Gone
    }
}

/// How far consuming the response got.
enum Consumed {
    Done(Result<(), Stop>),
    /// Running inline, the app produced more than the host could take at once, or ran past its time: the
    /// iterator, to go on with on a pool thread.
    Paused(Py<PyIterator>),
}

/// The rest of a request begun on an I/O thread, carried to a pool thread inside a [`Request`].
struct Resume {
    start_response: Py<StartResponse>,
    input: Option<Py<Input>>,
    errors: Option<Py<ErrorStream>>,
    stage: Stage,
}

enum Stage {
    /// The app's iterable is still being consumed.
    Iterating {
        iterable: Py<PyAny>,
        iterator: Py<PyIterator>,
    },
    /// The request is over but for handing held output to the host.
    Flushing(Outcome),
}

/// Serves one request. `attach_wait` is how long the thread waited for the GIL to start it, if measured.
pub(crate) fn run(
    py: Python<'_>,
    engine: &Engine,
    mut request: Request,
    attach_wait: Option<Duration>,
) -> Outcome {
    if let Some(resume) = request.resume.take() {
        return resume_request(py, engine, *resume, request.id, attach_wait);
    }
    match serve(py, engine, request, attach_wait, None) {
        Inline::Done(outcome) => outcome,
        // Only an inline request (one with a deadline) is ever handed over or declined.
        Inline::Handover(request) | Inline::Declined(request) => {
            run(py, engine, request, attach_wait)
        }
    }
}

/// Serves a request on a host thread that must never wait: see [`Engine::handle_inline`].
pub(crate) fn run_inline(
    py: Python<'_>,
    engine: &Engine,
    request: Request,
    deadline: Instant,
) -> Inline {
    if metrics::flags() != 0 {
        return Inline::Declined(request);
    }
    serve(py, engine, request, None, Some(deadline))
}

/// Serves a request; with a `deadline` it runs inline, never waiting for the host, and hands what
/// remains over once the app has run past the deadline or produced more than the host took at once.
fn serve(
    py: Python<'_>,
    engine: &Engine,
    request: Request,
    attach_wait: Option<Duration>,
    deadline: Option<Instant>,
) -> Inline {
    let Request {
        vars,
        body,
        response,
        id,
        resume: _,
    } = request;
    release_written(py);
    let _scope = crate::errors::request_scope(id.clone());
    let turn = metrics::RequestTurn::begin(attach_wait);
    let start_response = match Bound::new(py, StartResponse::new(response, deadline.is_some())) {
        Ok(sr) => sr,
        Err(err) => {
            engine.log_exception(py, id.as_deref(), &err);
            return Inline::Done(Outcome {
                app_error: true,
                ..Outcome::default()
            });
        }
    };
    // One relaxed load: 0 unless something subscribed to events, looked at active_requests or started
    // recording metrics.
    let flags = metrics::flags();
    let mut tracked = None;
    let mut input = None;
    let mut errors = None;
    let result =
        build_environ(py, engine, &vars, body, id.clone(), turn.thread_id()).and_then(|built| {
            let app = engine.current_app(py, id.as_deref()).into_bound(py);
            let app = if flags == 0 {
                app
            } else {
                let begin = Begin {
                    log: &engine.log,
                    log_id: id.as_deref(),
                    thread_id: turn.thread_id(),
                    environ: &built.environ,
                    callable_object: engine.callable_object.bind(py),
                    request_start: built.request_start,
                    application_start: built.application_start,
                    start_response: &start_response,
                };
                let (following, app) = Tracked::begin(py, engine.state.bind(py), flags, begin, app);
                tracked = following;
                app
            };
            input = Some(built.input);
            errors = Some(built.errors);
            app.call1((built.environ, &start_response))
        });
    let stop = match result {
        Ok(iterable) => match consume(py, &iterable, &start_response, deadline) {
            Consumed::Paused(iterator) => {
                turn.hand_over();
                let resume = Resume {
                    start_response: start_response.unbind(),
                    input: input.map(Bound::unbind),
                    errors: errors.map(Bound::unbind),
                    stage: Stage::Iterating {
                        iterable: iterable.unbind(),
                        iterator,
                    },
                };
                return Inline::Handover(resumed(vars, id, resume));
            }
            Consumed::Done(consumed) => close_after(consumed, &iterable),
        },
        Err(err) => Some(Stop::App(err)),
    };
    let outcome = end(
        py,
        engine,
        id.as_deref(),
        stop,
        &start_response,
        tracked,
        input.as_ref(),
        errors.as_ref(),
    );
    // Only a request running inline holds output.
    let holds_output = deadline.is_some()
        && start_response
            .get()
            .lock()
            .is_ok_and(|state| state.holds_output());
    if !holds_output {
        return Inline::Done(outcome);
    }
    turn.hand_over();
    let resume = Resume {
        start_response: start_response.unbind(),
        input: None,
        errors: None,
        stage: Stage::Flushing(outcome),
    };
    Inline::Handover(resumed(vars, id, resume))
}

/// The request that carries `resume` to a pool thread, named as the original for the pool's reports.
fn resumed(vars: CgiVars, id: Option<String>, resume: Resume) -> Request {
    Request {
        vars,
        body: Box::new(NoBody),
        response: Box::new(Elsewhere),
        id,
        resume: Some(Box::new(resume)),
    }
}

/// Goes on with a request begun on an I/O thread: hands its held output to the host, waiting as long as
/// it takes, then consumes the rest of the app's iterable.
fn resume_request(
    py: Python<'_>,
    engine: &Engine,
    resume: Resume,
    id: Option<String>,
    attach_wait: Option<Duration>,
) -> Outcome {
    let _scope = crate::errors::request_scope(id.clone());
    let _turn = metrics::RequestTurn::begin(attach_wait);
    let start_response = resume.start_response.into_bound(py);
    let taken_over = match start_response.get().lock() {
        Ok(mut state) => state.take_over(py),
        Err(_) => Err(ClientGone),
    };
    match resume.stage {
        Stage::Flushing(mut outcome) => {
            outcome.client_gone |= taken_over.is_err();
            outcome
        }
        Stage::Iterating { iterable, iterator } => {
            let iterable = iterable.into_bound(py);
            let consumed = match taken_over {
                Ok(()) => consume_iterator(py, iterator.into_bound(py), &start_response, None),
                Err(gone) => Consumed::Done(Err(gone.into())),
            };
            let consumed = match consumed {
                Consumed::Done(consumed) => consumed,
                // Without a deadline consuming is never paused.
                Consumed::Paused(_) => Ok(()),
            };
            let stop = close_after(consumed, &iterable);
            let input = resume.input.map(|input| input.into_bound(py));
            let errors = resume.errors.map(|errors| errors.into_bound(py));
            end(
                py,
                engine,
                id.as_deref(),
                stop,
                &start_response,
                None,
                input.as_ref(),
                errors.as_ref(),
            )
        }
    }
}

/// Finishes a request whose response has been consumed (or failed): logs the app's error and ends the
/// response accordingly, reports to events and metrics, logs an unfinished `wsgi.errors` line, and says
/// how it went. Called inside the request's log scope.
#[allow(clippy::too_many_arguments)]
fn end(
    py: Python<'_>,
    engine: &Engine,
    id: Option<&str>,
    stop: Option<Stop>,
    start_response: &Bound<'_, StartResponse>,
    tracked: Option<Tracked<'_>>,
    input: Option<&Bound<'_, Input>>,
    errors: Option<&Bound<'_, ErrorStream>>,
) -> Outcome {
    let application_finish = tracked.as_ref().map(|_| metrics::epoch_now());
    let mut outcome = Outcome::default();
    let mut timed_out = false;
    match stop {
        Some(Stop::App(err)) => {
            engine.log_exception(py, id, &err);
            outcome.app_error = true;
            timed_out = crate::pyapi::is_request_timeout(py, &err);
            if let (Some(tracked), false) = (&tracked, timed_out) {
                tracked.exception(py, &err);
            }
            if let Ok(mut state) = start_response.get().lock() {
                state.fail(py, timed_out);
            }
        }
        Some(Stop::Gone) => outcome.client_gone = true,
        None => {}
    }
    let mut app_status = None;
    let mut writes = (0, Duration::ZERO);
    if let Ok(state) = start_response.get().lock() {
        outcome.status = state.sent_status();
        outcome.body_bytes = state.body_sent();
        app_status = state.app_status();
        writes = state.writes();
    }
    match tracked {
        Some(tracked) => {
            let (input_reads, input_length, input_time) =
                input.map(|input| input.get().stats()).unwrap_or_default();
            let (gil_wait_time, gil_wait_count) = metrics::gil_waits();
            let figures = Finished {
                request_start: tracked.request_start,
                application_start: tracked.application_start,
                application_finish: application_finish.unwrap_or_else(metrics::epoch_now),
                input_reads,
                input_length,
                input_time,
                output_writes: writes.0,
                output_length: outcome.body_bytes,
                output_time: writes.1,
                // The app's own status, as mod_wsgi reports it; 504 for an interrupted request.
                status: match (timed_out, outcome.status) {
                    (true, Some(504)) => 504,
                    _ => app_status.unwrap_or(0),
                },
                cpu: None,
                gil_wait_time,
                gil_wait_count,
            };
            tracked.finish(py, figures);
        }
        None => {
            if metrics::take_data_made() {
                engine.state.get().forget_request_data();
            }
        }
    }
    if let Some(errors) = errors {
        errors.get().flush();
    }
    outcome
}

/// A request's environ and what building it measured.
struct Built<'py> {
    environ: Bound<'py, PyDict>,
    input: Bound<'py, Input>,
    /// The `mod_wsgi.Log` under `wsgi.errors`: the thread's, so the request's unfinished line is logged
    /// when it ends.
    errors: Bound<'py, ErrorStream>,
    /// When the request arrived, in seconds since the epoch.
    request_start: f64,
    /// When the app was about to be called, in seconds since the epoch.
    application_start: f64,
}

fn build_environ<'py>(
    py: Python<'py>,
    engine: &Engine,
    vars: &CgiVars,
    body: Box<dyn BodyReader>,
    id: Option<String>,
    thread_id: u64,
) -> PyResult<Built<'py>> {
    // Before the warm template is taken: a thread's first request makes its streams, running Python.
    let (text_errors, errors) = engine.text_streams.for_thread(py, thread_id, &engine.log)?;
    let mut environ = engine.keys.environ(py)?;
    let mut https = false;
    let mut request_start = None;
    // Daemon mode: when the daemon took the request off its socket, and when its thread took it.
    let (mut queue_start, mut daemon_start) = (None, None);
    let micros = |value: &[u8]| {
        std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
    };
    let mut apache_version = None;
    for (name, value) in vars.iter() {
        match environ.add(name, value)? {
            None | Some(Withheld::Private) => {}
            Some(Withheld::Hint(Hint::RequestStart)) => request_start = micros(value),
            Some(Withheld::Hint(Hint::QueueStart)) => queue_start = micros(value),
            Some(Withheld::Hint(Hint::DaemonStart)) => daemon_start = micros(value),
            Some(Withheld::Hint(Hint::ApacheVersion)) => apache_version = Some(value),
            Some(Withheld::Https) => https = matches!(value, b"1" | b"on" | b"On" | b"ON"),
        }
    }
    environ.set_thread(thread_id, &text_errors)?;
    let environ = environ.finish()?;
    if let Some(version) = apache_version {
        let parts: Vec<u32> = String::from_utf8_lossy(version)
            .split('.')
            .filter_map(|p| p.parse().ok())
            .collect();
        environ.set_item(
            pyo3::intern!(py, "apache.version"),
            PyTuple::new(py, parts)?,
        )?;
    }
    if https {
        environ.set_item(
            pyo3::intern!(py, "wsgi.url_scheme"),
            pyo3::intern!(py, "https"),
        )?;
    }
    let input = Bound::new(py, Input::new(body))?;
    environ.set_item(pyo3::intern!(py, "wsgi.input"), &input)?;
    // Request timing as mod_wsgi 6 publishes it: seconds since the epoch, as floats. The queue and daemon
    // instants are the template's 0.0 outside daemon mode; a request whose host gave no start of its own
    // shares one float for both of its instants.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let application_start = PyFloat::new(py, now);
    let request_start = match request_start {
        Some(us) => PyFloat::new(py, us as f64 / 1e6),
        None => application_start.clone(),
    };
    environ.set_item(pyo3::intern!(py, "mod_wsgi.request_start"), &request_start)?;
    for (key, us) in [
        (pyo3::intern!(py, "mod_wsgi.queue_start"), queue_start),
        (pyo3::intern!(py, "mod_wsgi.daemon_start"), daemon_start),
    ] {
        if let Some(us) = us {
            environ.set_item(key, us as f64 / 1e6)?;
        }
    }
    environ.set_item(
        pyo3::intern!(py, "mod_wsgi.application_start"),
        &application_start,
    )?;
    if let Some(id) = id {
        environ.set_item(pyo3::intern!(py, "mod_wsgi.request_id"), id)?;
    }
    Ok(Built {
        environ,
        input,
        errors,
        request_start: request_start.value(),
        application_start: now,
    })
}

fn not_bytes(item: &Bound<'_, PyAny>) -> PyErr {
    let name = item
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    PyTypeError::new_err(format!(
        "sequence of byte string values expected, value of type {name} found"
    ))
}

fn not_started() -> PyErr {
    PyRuntimeError::new_err(
        "the application returned response data before calling start_response()",
    )
}

fn consume(
    py: Python<'_>,
    iterable: &Bound<'_, PyAny>,
    sr: &Bound<'_, StartResponse>,
    deadline: Option<Instant>,
) -> Consumed {
    if let Some(region) = file_region(iterable) {
        return Consumed::Done((|| {
            let mut state = sr.get().lock()?;
            if !state.started() {
                return Err(not_started().into());
            }
            state.send_file(py, region)?;
            Ok(state.finish(py, None)?)
        })());
    }
    if let Ok(list) = iterable.cast::<PyList>() {
        return Consumed::Done(consume_sequence(py, list.iter(), list.len(), sr));
    }
    if let Ok(tuple) = iterable.cast::<PyTuple>() {
        return Consumed::Done(consume_sequence(py, tuple.iter(), tuple.len(), sr));
    }
    match iterable.try_iter() {
        Ok(iterator) => consume_iterator(py, iterator, sr, deadline),
        Err(err) => Consumed::Done(Err(err.into())),
    }
}

/// Consumes an iterator item by item. With a `deadline` (running inline) it pauses before the next item
/// once output is held or the deadline has passed.
fn consume_iterator<'py>(
    py: Python<'py>,
    mut iterator: Bound<'py, PyIterator>,
    sr: &Bound<'py, StartResponse>,
    deadline: Option<Instant>,
) -> Consumed {
    let result = (|| -> Result<bool, Stop> {
        loop {
            if let Some(deadline) = deadline {
                let holds = sr.get().lock()?.holds_output();
                if holds || Instant::now() >= deadline {
                    return Ok(false);
                }
            }
            let Some(item) = iterator.next() else {
                break;
            };
            let item = item?;
            let bytes = item
                .cast::<PyBytes>()
                .map_err(|_| not_bytes(&item))?
                .as_bytes();
            if bytes.is_empty() {
                continue;
            }
            let mut state = sr.get().lock()?;
            if !state.started() {
                return Err(not_started().into());
            }
            state.send_body(py, bytes)?;
            if state.remaining() == Some(0) {
                // Content-Length reached: the PEP lets the server stop iterating.
                break;
            }
        }
        finish_returned(py, sr, None)?;
        Ok(true)
    })();
    match result {
        Ok(false) => Consumed::Paused(iterator.unbind()),
        Ok(true) => Consumed::Done(Ok(())),
        Err(stop) => Consumed::Done(Err(stop)),
    }
}

/// A list or tuple is all at hand: it goes to the host as one piece, so small responses cost one hand-off.
fn consume_sequence<'py>(
    py: Python<'py>,
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    len: usize,
    sr: &Bound<'py, StartResponse>,
) -> Result<(), Stop> {
    let mut body = BytesMut::new();
    let mut single = None;
    for item in items {
        let Ok(bytes) = item.cast::<PyBytes>() else {
            // What came before the bad item is the response's start, as if each item had been sent as it
            // came (mod_wsgi's way): it goes out, and the failure then aborts the response.
            if !body.is_empty() {
                let mut state = sr.get().lock()?;
                if state.started() {
                    state.send_body(py, &body)?;
                }
            }
            return Err(not_bytes(&item).into());
        };
        if len == 1 {
            single = Some(response_bytes(bytes));
        } else {
            body.extend_from_slice(bytes.as_bytes());
        }
    }
    finish_returned(py, sr, Some(single.unwrap_or_else(|| body.freeze())))
}

/// Ends the response once the app's iterable is exhausted (`body`: all of it, when it was at hand at once).
fn finish_returned(
    py: Python<'_>,
    sr: &Bound<'_, StartResponse>,
    body: Option<Bytes>,
) -> Result<(), Stop> {
    let mut state = sr.get().lock()?;
    if !state.started() {
        return Err(PyRuntimeError::new_err(
            "the application returned without calling start_response()",
        )
        .into());
    }
    Ok(state.finish(py, body)?)
}

/// Bodies at least this long are handed to the host without a copy: the host holds the `bytes` object
/// itself until it has written it. Shorter ones are copied, which costs less than sharing.
const SHARE_BODY_FROM: usize = 4096;

/// A `bytes` body item as the host takes it.
fn response_bytes(bytes: &Bound<'_, PyBytes>) -> Bytes {
    let data = bytes.as_bytes();
    if data.len() < SHARE_BODY_FROM {
        return Bytes::copy_from_slice(data);
    }
    Bytes::from_owner(Written(Some(PyBackedBytes::from(bytes.clone()))))
}

/// `bytes` objects whose hosts have written them, released by the next request while it holds the GIL.
/// Hosts let go of them on their own threads, without the GIL; PyO3 would defer those decrements until
/// some thread next attaches, which a busy pool thread (it stays attached between requests) may not do
/// for a long time. A `bytes` object has no interpreter state, so any interpreter's request may free it.
static WRITTEN: Mutex<Vec<PyBackedBytes>> = Mutex::new(Vec::new());

/// A shared response body: its bytes are the `bytes` object's own.
struct Written(Option<PyBackedBytes>);

impl AsRef<[u8]> for Written {
    fn as_ref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        if let Some(bytes) = self.0.take() {
            WRITTEN
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(bytes);
        }
    }
}

/// Frees the bodies hosts have finished writing. The caller holds the GIL.
fn release_written(_py: Python<'_>) {
    thread_local! {
        /// An emptied list to swap in, so that neither list is ever reallocated.
        static SPARE: std::cell::RefCell<Vec<PyBackedBytes>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SPARE.with_borrow_mut(|spare| {
        std::mem::swap(
            &mut *WRITTEN
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            spare,
        );
        // Outside the lock: a host thread dropping a body meanwhile does not wait for these frees.
        spare.clear();
    });
}

/// The fast path for `wsgi.file_wrapper`: an unsubclassed wrapper around an object with a real descriptor.
fn file_region(iterable: &Bound<'_, PyAny>) -> Option<FileRegion> {
    let wrapper = iterable.cast_exact::<FileWrapper>().ok()?;
    let filelike = wrapper.borrow().filelike.bind(iterable.py()).clone();
    let fd: i32 = filelike.call_method0("fileno").ok()?.extract().ok()?;
    // Python's buffered files know their logical position; the descriptor's own offset may be ahead of it.
    let offset: u64 = filelike.call_method0("tell").ok()?.extract().ok()?;
    // SAFETY: `fd` is the descriptor of `filelike`, which stays open while we hold a reference to it; it is
    // only borrowed for the duration of the duplication below.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let file = std::fs::File::from(borrowed.try_clone_to_owned().ok()?);
    let metadata = file.metadata().ok()?;
    if !metadata.is_file() {
        return None;
    }
    Some(FileRegion {
        file,
        offset,
        len: metadata.len().saturating_sub(offset),
    })
}

/// Calls the iterable's `close()` however consuming it went; the first failure is what stopped the request.
fn close_after(consumed: Result<(), Stop>, iterable: &Bound<'_, PyAny>) -> Option<Stop> {
    match (consumed, close(iterable)) {
        (Err(stop), _) => Some(stop),
        (Ok(()), Err(err)) => Some(Stop::App(err)),
        (Ok(()), Ok(())) => None,
    }
}

fn close(iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    // Most responses are a list, which has no close(): asking would raise (and format) an
    // AttributeError on every request, even through getattr_opt before Python 3.13.
    if iterable.is_exact_instance_of::<pyo3::types::PyList>()
        || iterable.is_exact_instance_of::<pyo3::types::PyTuple>()
    {
        return Ok(());
    }
    match iterable.getattr_opt(pyo3::intern!(iterable.py(), "close")) {
        Ok(Some(close)) => close.call0().map(drop),
        Ok(None) | Err(_) => Ok(()),
    }
}

impl Engine {
    /// The app's callable for this request, after reloading a changed script file.
    fn current_app(&self, py: Python<'_>, request_id: Option<&str>) -> Py<PyAny> {
        let (callable, reload) = self.app.callable(py);
        match reload {
            crate::app::Reload::Unchanged => {}
            crate::app::Reload::Reloaded => {
                self.log.write(request_id, &format!("WSGI script '{}' changed; reloaded it.", self.label));
            }
            crate::app::Reload::HookRaised(traceback) => self.log.write(
                request_id,
                &format!("reload_required() of WSGI script '{}' raised; not reloading it.\n{traceback}", self.label),
            ),
            crate::app::Reload::Failed(err) => self.log.write(
                request_id,
                &format!("WSGI script '{}' changed but failed to load; still serving the previous code.\n{err}", self.label),
            ),
        }
        callable
    }

    /// Logs an exception the app raised, worded as mod_wsgi words it: the exception's class in the
    /// first line (`SystemExit` is "ignored"), then the traceback; an interrupt (`mod_wsgi.RequestTimeout`)
    /// is one line, without a traceback, since the request was stopped on purpose.
    pub(crate) fn log_exception(&self, py: Python<'_>, request_id: Option<&str>, err: &PyErr) {
        if crate::pyapi::is_request_timeout(py, err) {
            // Where it was stopped is worth knowing; the exception itself is not news.
            let frames = err
                .traceback(py)
                .and_then(|tb| {
                    let lines = py
                        .import("traceback")
                        .ok()?
                        .call_method1("format_tb", (tb,))
                        .ok()?;
                    lines.extract::<Vec<String>>().ok()
                })
                .unwrap_or_default()
                .concat();
            self.log.write(
                request_id,
                &format!(
                    "Request interrupted by RequestTimeout; thread recovered. It was stopped at:\n{frames}"
                ),
            );
            return;
        }
        let message = if err.is_instance_of::<pyo3::exceptions::PySystemExit>(py) {
            format!(
                "SystemExit exception raised by WSGI script '{}'; ignored.\n{}",
                self.label,
                format_exception(py, err)
            )
        } else {
            let class = err
                .get_type(py)
                .name()
                .map_or_else(|_| "An".to_owned(), |n| n.to_string());
            format!(
                "{class} exception raised processing WSGI script '{}'.\n{}",
                self.label,
                format_exception(py, err)
            )
        };
        self.log.write(request_id, &message);
    }
}

/// What an access or authentication script's function returned (mod_wsgi's `allow_access`,
/// `check_password`, `get_realm_hash`, `groups_for_user`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookValue {
    /// `None`.
    None,
    /// `True` or `False`.
    Bool(bool),
    /// A `str` (or `bytes`, taken as latin-1).
    Text(String),
    /// A list, tuple or other iterable of strings.
    Texts(Vec<String>),
    /// Anything else, by its type name.
    Other(String),
}

/// A request body that is empty: hook functions get no input.
struct NoBody;

impl BodyReader for NoBody {
    fn try_next(&mut self) -> Option<std::io::Result<crate::host::BodyChunk>> {
        Some(Ok(crate::host::BodyChunk::End))
    }

    fn next(&mut self) -> std::io::Result<crate::host::BodyChunk> {
        Ok(crate::host::BodyChunk::End)
    }
}

/// The response placeholder of a handed-over request, whose real sink travels inside it.
struct Elsewhere;

impl ResponseSink for Elsewhere {
    fn try_send(&mut self, _output: Output) -> Result<(), TrySendError> {
        Err(TrySendError::Closed)
    }

    fn send(&mut self, _output: Output) -> Result<(), ClientGone> {
        Err(ClientGone)
    }
}

/// Calls the app's callable as `callable(environ, *args)`, the arguments as latin-1 strings. `None` if it
/// raised (the traceback is logged).
pub(crate) fn call_hook(
    py: Python<'_>,
    engine: &Engine,
    vars: &CgiVars,
    args: &[&[u8]],
    id: Option<String>,
) -> Option<HookValue> {
    let call = || -> PyResult<HookValue> {
        let built = build_environ(
            py,
            engine,
            vars,
            Box::new(NoBody),
            id.clone(),
            metrics::thread_id(),
        )?;
        let mut call_args: Vec<Bound<'_, PyAny>> = vec![built.environ.into_any()];
        for arg in args {
            call_args.push(latin1::to_str(py, arg)?.into_any());
        }
        let result = engine
            .current_app(py, id.as_deref())
            .bind(py)
            .call1(pyo3::types::PyTuple::new(py, call_args)?)?;
        Ok(hook_value(&result))
    };
    match call() {
        Ok(value) => Some(value),
        Err(err) => {
            engine.log_exception(py, id.as_deref(), &err);
            None
        }
    }
}

fn text_of(value: &Bound<'_, PyAny>) -> Option<String> {
    if let Ok(text) = value.extract::<String>() {
        return Some(text);
    }
    let bytes = value.cast::<pyo3::types::PyBytes>().ok()?;
    Some(bytes.as_bytes().iter().map(|&b| char::from(b)).collect())
}

fn hook_value(result: &Bound<'_, PyAny>) -> HookValue {
    if result.is_none() {
        return HookValue::None;
    }
    if let Ok(flag) = result.cast::<pyo3::types::PyBool>() {
        return HookValue::Bool(flag.is_true());
    }
    if let Some(text) = text_of(result) {
        return HookValue::Text(text);
    }
    if let Ok(items) = result.try_iter() {
        let texts: Option<Vec<String>> = items.map(|item| text_of(&item.ok()?)).collect();
        if let Some(texts) = texts {
            return HookValue::Texts(texts);
        }
    }
    HookValue::Other(
        result
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default(),
    )
}
