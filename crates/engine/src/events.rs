//! mod_wsgi's events and per-request state: `subscribe_events`/`subscribe_shutdown` callbacks, the
//! `request_started`, `response_started`, `request_finished`, `request_exception` and `process_stopping`
//! events, `request_data()` and `active_requests`.
//!
//! Everything Python lives in the [`State`] of one interpreter's `mod_wsgi` module (subscriptions are
//! per interpreter, as in mod_wsgi); what the request path checks first is a process-wide flag
//! ([`crate::metrics::flags`]), so a request pays nothing here unless something was subscribed or asked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyModule, PyString, PyTuple};

use crate::host::ErrorLog;
use crate::metrics::{self, Finished};
use crate::start_response::StartResponse;
use crate::traceback::format_exception;

/// The name of the `mod_wsgi` module attribute holding its [`State`].
pub(crate) const STATE_ATTR: &str = "_rwsgi_state";

/// One interpreter's `mod_wsgi` state.
#[pyclass(module = "mod_wsgi", name = "_State", frozen)]
pub(crate) struct State {
    /// `subscribe_events` callbacks (also the module's `event_callbacks`).
    pub(crate) event_callbacks: Py<PyList>,
    /// `subscribe_shutdown` callbacks (also the module's `shutdown_callbacks`).
    pub(crate) shutdown_callbacks: Py<PyList>,
    /// `mod_wsgi.active_requests`, made when first asked for (or on the first subscription): until then
    /// requests do not pay for keeping it.
    active_requests: OnceLock<Py<PyDict>>,
    /// Each thread's current `request_data()` dict.
    request_data: Mutex<HashMap<ThreadId, Py<PyDict>>>,
    /// `process_stopping` was published.
    stopped: AtomicBool,
}

impl State {
    pub(crate) fn new(py: Python<'_>) -> Self {
        Self {
            event_callbacks: PyList::empty(py).unbind(),
            shutdown_callbacks: PyList::empty(py).unbind(),
            active_requests: OnceLock::new(),
            request_data: Mutex::new(HashMap::new()),
            stopped: AtomicBool::new(false),
        }
    }

    /// The `active_requests` dict, made now if need be, and set on `module` so later lookups find it
    /// without the module's `__getattr__`.
    pub(crate) fn activate_active_requests<'py>(
        &self,
        py: Python<'py>,
        module: &Bound<'py, PyModule>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let dict = self
            .active_requests
            .get_or_init(|| PyDict::new(py).unbind())
            .bind(py)
            .clone();
        module.setattr("active_requests", &dict)?;
        metrics::enable(metrics::TRACKING);
        Ok(dict)
    }

    fn requests_data(&self) -> std::sync::MutexGuard<'_, HashMap<ThreadId, Py<PyDict>>> {
        self.request_data
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The calling thread's `request_data()` dict, made now if the request has none yet.
    pub(crate) fn current_request_data<'py>(&self, py: Python<'py>) -> Bound<'py, PyDict> {
        let thread = std::thread::current().id();
        if let Some(data) = self.requests_data().get(&thread) {
            return data.bind(py).clone();
        }
        let data = PyDict::new(py);
        self.requests_data().insert(thread, data.clone().unbind());
        metrics::note_data_made();
        data
    }

    /// Drops the calling thread's `request_data()` dict at the end of its request.
    pub(crate) fn forget_request_data(&self) {
        let gone = self.requests_data().remove(&std::thread::current().id());
        // Dropped outside the lock: freeing the dict may run code that asks for request_data() again.
        drop(gone);
    }
}

/// The `State` of the `mod_wsgi` module of the interpreter current on this thread, if the engine made one.
pub(crate) fn current_state<'py>(py: Python<'py>) -> Option<Bound<'py, State>> {
    let module = py
        .import("sys")
        .ok()?
        .getattr("modules")
        .ok()?
        .get_item("mod_wsgi")
        .ok()?;
    module.getattr(STATE_ATTR).ok()?.cast_into::<State>().ok()
}

/// Calls each of `callbacks` (a snapshot, so a callback may subscribe or unsubscribe) as
/// `callback(name, **event)`; a dict a callback returns is merged into `event` for the ones after it.
/// A callback that raises is reported and the others still run.
pub(crate) fn publish(
    py: Python<'_>,
    name: &str,
    callbacks: &Bound<'_, PyList>,
    event: &Bound<'_, PyDict>,
    report: &dyn Fn(String),
) {
    let snapshot = callbacks.get_slice(0, callbacks.len());
    for callback in snapshot.iter() {
        let merged =
            callback
                .call((name,), Some(event))
                .and_then(|result| match result.cast::<PyDict>() {
                    Ok(update) => event.update(update.as_mapping()),
                    Err(_) => Ok(()),
                });
        if let Err(err) = merged {
            let kind = err
                .get_type(py)
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            report(format!(
                "{kind} exception raised by event callback for '{name}'.\n{}",
                format_exception(py, &err)
            ));
        }
    }
}

/// Publishes `process_stopping` in the interpreter current on this thread, once: to the
/// `subscribe_events` callbacks, then the `subscribe_shutdown` ones. Callback errors go to `sys.stderr`.
pub(crate) fn process_stopping(py: Python<'_>, reason: &str) {
    let Some(state) = current_state(py) else {
        return;
    };
    let state = state.get();
    if state.stopped.swap(true, Ordering::AcqRel) {
        return;
    }
    let event = PyDict::new(py);
    if event.set_item("shutdown_reason", reason).is_err() {
        return;
    }
    let report = |message: String| {
        let written = py.import("sys").and_then(|sys| {
            let stderr = sys.getattr("stderr")?;
            stderr.call_method1("write", (message,))?;
            stderr.call_method0("flush")
        });
        if let Err(err) = written {
            err.print(py);
        }
    };
    publish(
        py,
        "process_stopping",
        state.event_callbacks.bind(py),
        &event,
        &report,
    );
    publish(
        py,
        "process_stopping",
        state.shutdown_callbacks.bind(py),
        &event,
        &report,
    );
}

/// An id for a request the host gave none, unique in the process: `active_requests` needs a key.
fn generated_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// What [`Tracked::begin`] needs to know of a request about to call its app.
pub(crate) struct Begin<'a, 'py> {
    pub(crate) log: &'a Arc<dyn ErrorLog>,
    pub(crate) log_id: Option<&'a str>,
    pub(crate) thread_id: u64,
    pub(crate) environ: &'a Bound<'py, PyDict>,
    pub(crate) callable_object: &'a Bound<'py, PyString>,
    pub(crate) request_start: f64,
    pub(crate) application_start: f64,
    pub(crate) start_response: &'a Bound<'py, StartResponse>,
}

/// A request some subscriber, `active_requests` or the metrics recorder is following.
pub(crate) struct Tracked<'py> {
    state: Bound<'py, State>,
    log: Arc<dyn ErrorLog>,
    log_id: Option<String>,
    thread_id: u64,
    /// `subscribe_events` callbacks get this request's events.
    events: bool,
    /// The metrics recorder counted its start.
    recorded: bool,
    /// Set when events or `active_requests` follow the request.
    request_id: Option<Bound<'py, PyString>>,
    data: Option<Bound<'py, PyDict>>,
    active: Option<Bound<'py, PyDict>>,
    cpu_start: Option<(f64, f64)>,
    pub(crate) request_start: f64,
    pub(crate) application_start: f64,
}

impl<'py> Tracked<'py> {
    /// Starts following a request whose app is `app`, if anything in `flags` concerns this interpreter:
    /// registers it in `active_requests`, publishes `request_started` (whose callbacks may replace the
    /// app), and tells the recorder. Returns the app to call.
    pub(crate) fn begin(
        py: Python<'py>,
        state: &Bound<'py, State>,
        flags: u8,
        request: Begin<'_, 'py>,
        app: Bound<'py, PyAny>,
    ) -> (Option<Self>, Bound<'py, PyAny>) {
        let events =
            flags & metrics::EVENTS != 0 && !state.get().event_callbacks.bind(py).is_empty();
        let active = (flags & metrics::TRACKING != 0)
            .then(|| state.get().active_requests.get())
            .flatten()
            .map(|dict| dict.bind(py).clone());
        let recording = flags & metrics::RECORDING != 0;
        if !events && active.is_none() && !recording {
            return (None, app);
        }
        let mut tracked = Tracked {
            state: state.clone(),
            log: Arc::clone(request.log),
            log_id: request.log_id.map(str::to_owned),
            thread_id: request.thread_id,
            events,
            recorded: false,
            request_id: None,
            data: None,
            active,
            cpu_start: None,
            request_start: request.request_start,
            application_start: request.application_start,
        };
        let mut app = app;
        if events || tracked.active.is_some() {
            let id = match request.log_id {
                Some(id) => PyString::new(py, id),
                None => PyString::new(py, &generated_id()),
            };
            let data = state.get().current_request_data(py);
            match tracked.started(py, &request, &id, &data, &app) {
                Ok(Some(replacement)) => app = replacement,
                Ok(None) => {}
                Err(err) => tracked.report(py, "request_started", &err),
            }
            if events {
                request.start_response.get().set_events(ResponseEvents {
                    state: state.clone().unbind(),
                    request_id: id.clone().unbind(),
                    data: data.clone().unbind(),
                    log: Arc::clone(request.log),
                    log_id: tracked.log_id.clone(),
                });
            }
            tracked.request_id = Some(id);
            tracked.data = Some(data);
        }
        if events || recording {
            tracked.cpu_start = metrics::thread_cpu();
        }
        tracked.recorded = recording && metrics::record_start(request.thread_id);
        (Some(tracked), app)
    }

    /// Registers the request in `active_requests` and publishes `request_started`; the app a callback
    /// put in the event's `application_object`, if it changed.
    fn started(
        &self,
        py: Python<'py>,
        request: &Begin<'_, 'py>,
        id: &Bound<'py, PyString>,
        data: &Bound<'py, PyDict>,
        app: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let event = PyDict::new(py);
        event.set_item("request_id", id)?;
        event.set_item("thread_id", self.thread_id)?;
        event.set_item("server_pid", std::process::id())?;
        event.set_item("request_start", request.request_start)?;
        // Outside daemon mode there is no queue or daemon phase, and no daemon connection.
        event.set_item("queue_start", 0.0)?;
        event.set_item("daemon_start", 0.0)?;
        event.set_item("daemon_connects", 0)?;
        event.set_item("daemon_restarts", 0)?;
        event.set_item("application_start", request.application_start)?;
        event.set_item("application_object", app)?;
        event.set_item("callable_object", request.callable_object)?;
        event.set_item("request_environ", request.environ)?;
        event.set_item("request_data", data)?;
        // The same dict: keys a subscriber returns show in active_requests too.
        if let Some(active) = &self.active {
            active.set_item(id, &event)?;
        }
        if !self.events {
            return Ok(None);
        }
        self.publish(py, "request_started", &event);
        Ok(event
            .get_item("application_object")?
            .filter(|replacement| !replacement.is(app)))
    }

    fn publish(&self, py: Python<'py>, name: &str, event: &Bound<'py, PyDict>) {
        let log = &self.log;
        let log_id = self.log_id.as_deref();
        let callbacks = self.state.get().event_callbacks.bind(py).clone();
        publish(py, name, &callbacks, event, &|message| {
            log.write(log_id, &message)
        });
    }

    fn report(&self, py: Python<'py>, name: &str, err: &PyErr) {
        self.log.write(
            self.log_id.as_deref(),
            &format!(
                "could not publish the '{name}' event.\n{}",
                format_exception(py, err)
            ),
        );
    }

    /// Publishes `request_exception` for an exception that escaped the app.
    pub(crate) fn exception(&self, py: Python<'py>, err: &PyErr) {
        if !self.events {
            return;
        }
        let build = || -> PyResult<Bound<'py, PyDict>> {
            let event = PyDict::new(py);
            if let Some(id) = &self.request_id {
                event.set_item("request_id", id)?;
            }
            let traceback = err.traceback(py);
            let info = PyTuple::new(
                py,
                [
                    err.get_type(py).into_any(),
                    err.value(py).clone().into_any(),
                    traceback.map_or_else(|| py.None().into_bound(py), Bound::into_any),
                ],
            )?;
            event.set_item("exception_info", info)?;
            if let Some(data) = &self.data {
                event.set_item("request_data", data)?;
            }
            Ok(event)
        };
        match build() {
            Ok(event) => self.publish(py, "request_exception", &event),
            Err(err) => self.report(py, "request_exception", &err),
        }
    }

    /// Ends the request: publishes `request_finished`, folds it into the metrics, and takes it out of
    /// `active_requests` and `request_data()`.
    pub(crate) fn finish(self, py: Python<'py>, mut figures: Finished) {
        if let (Some((user0, system0)), Some((user1, system1))) =
            (self.cpu_start, metrics::thread_cpu())
        {
            let mut user = (user1 - user0).max(0.0);
            let mut system = (system1 - system0).max(0.0);
            // The kernel's tick accounting can exceed the wall time; scale it back as mod_wsgi does.
            let wall = (figures.application_finish - figures.application_start).max(0.0);
            let total = user + system;
            if total > wall && total > 0.0 {
                user = user / total * wall;
                system = wall - user;
            }
            figures.cpu = Some((user, system));
        }
        if self.events {
            match self.finished_event(py, &figures) {
                Ok(event) => self.publish(py, "request_finished", &event),
                Err(err) => self.report(py, "request_finished", &err),
            }
        }
        if self.recorded {
            metrics::record_finish(self.thread_id, &figures);
        }
        if let (Some(active), Some(id)) = (&self.active, &self.request_id) {
            // Already gone if the app removed it itself.
            let _ = active.del_item(id);
        }
        if self.data.is_some() || metrics::take_data_made() {
            self.state.get().forget_request_data();
        }
    }

    fn finished_event(&self, py: Python<'py>, f: &Finished) -> PyResult<Bound<'py, PyDict>> {
        let event = PyDict::new(py);
        if let Some(id) = &self.request_id {
            event.set_item("request_id", id)?;
        }
        event.set_item("thread_id", self.thread_id)?;
        event.set_item("server_pid", std::process::id())?;
        event.set_item("request_start", f.request_start)?;
        event.set_item("queue_start", 0.0)?;
        event.set_item("daemon_start", 0.0)?;
        event.set_item("application_start", f.application_start)?;
        event.set_item("application_finish", f.application_finish)?;
        event.set_item(
            "application_time",
            (f.application_finish - f.application_start).max(0.0),
        )?;
        event.set_item("input_reads", f.input_reads)?;
        event.set_item("input_length", f.input_length)?;
        event.set_item("input_time", f.input_time.as_secs_f64())?;
        event.set_item("output_writes", f.output_writes)?;
        event.set_item("output_length", f.output_length)?;
        event.set_item("output_time", f.output_time.as_secs_f64())?;
        event.set_item("status", f.status)?;
        if let Some((user, system)) = f.cpu {
            event.set_item("cpu_user_time", user)?;
            event.set_item("cpu_system_time", system)?;
            event.set_item("cpu_time", user + system)?;
        }
        event.set_item("gil_wait_time", f.gil_wait_time.as_secs_f64())?;
        event.set_item("gil_wait_count", f.gil_wait_count)?;
        if let Some(data) = &self.data {
            event.set_item("request_data", data)?;
        }
        Ok(event)
    }
}

/// What `start_response` needs to publish `response_started`.
pub(crate) struct ResponseEvents {
    state: Py<State>,
    request_id: Py<PyString>,
    data: Py<PyDict>,
    log: Arc<dyn ErrorLog>,
    log_id: Option<String>,
}

impl ResponseEvents {
    /// Publishes `response_started` for a `start_response(status, headers, exc_info)` call it accepted.
    pub(crate) fn publish(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) {
        let event = PyDict::new(py);
        let built = (|| -> PyResult<()> {
            event.set_item("request_id", self.request_id.bind(py))?;
            event.set_item("response_status", status)?;
            event.set_item("response_headers", headers)?;
            event.set_item("exception_info", exc_info)?;
            event.set_item("request_data", self.data.bind(py))
        })();
        let report = |message: String| self.log.write(self.log_id.as_deref(), &message);
        match built {
            Ok(()) => publish(
                py,
                "response_started",
                self.state.get().event_callbacks.bind(py),
                &event,
                &report,
            ),
            Err(err) => report(format!(
                "could not publish the 'response_started' event.\n{}",
                format_exception(py, &err)
            )),
        }
    }
}
