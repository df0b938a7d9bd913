//! The `mod_wsgi` Python module that apps import, in the form both hosts share.
//!
//! It is registered in `sys.modules` before the app loads, so `import mod_wsgi` works under `rwsgi serve`
//! as it does under Apache.

use pyo3::exceptions::{PyAttributeError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyDict, PyList, PyModule, PyTuple};

use crate::events::{State, STATE_ATTR};
use crate::metrics::{self, Value};
use crate::EngineOptions;

/// The mod_wsgi API level these names follow.
pub const MOD_WSGI_API_VERSION: (u8, u8, u8) = (6, 1, 1);

/// Makes the `mod_wsgi` module of the interpreter current on this thread, or refreshes the one an
/// earlier load made there (keeping its subscribers), and returns its state.
pub(crate) fn install<'py>(
    py: Python<'py>,
    options: &EngineOptions,
) -> PyResult<Bound<'py, State>> {
    metrics::engine_loaded(options.threads);
    let modules = py.import("sys")?.getattr("modules")?;
    let ours = modules.get_item("mod_wsgi").ok().and_then(|module| {
        let state = module.getattr(STATE_ATTR).ok()?.cast_into::<State>().ok()?;
        Some((module.cast_into::<PyModule>().ok()?, state))
    });
    let (module, state) = match ours {
        Some(ours) => ours,
        None => new_module(py)?,
    };
    module.setattr(
        "version",
        PyTuple::new(
            py,
            [
                MOD_WSGI_API_VERSION.0,
                MOD_WSGI_API_VERSION.1,
                MOD_WSGI_API_VERSION.2,
            ],
        )?,
    )?;
    module.setattr("rwsgi_version", env!("CARGO_PKG_VERSION"))?;
    module.setattr("process_group", &options.process_group)?;
    module.setattr("application_group", &options.application_group)?;
    module.setattr("maximum_processes", options.processes)?;
    module.setattr("threads_per_process", options.threads)?;
    modules.set_item("mod_wsgi", &module)?;
    Ok(state)
}

fn new_module(py: Python<'_>) -> PyResult<(Bound<'_, PyModule>, Bound<'_, State>)> {
    let module = PyModule::new(py, "mod_wsgi")?;
    let state = Bound::new(py, State::new(py))?;
    module.add_class::<crate::file_wrapper::FileWrapper>()?;
    // Raised inside a request's thread by the host's interrupt timeout. A BaseException, like
    // KeyboardInterrupt, so an app's `except Exception:` does not swallow it and the request unwinds.
    let builtins = py.import("builtins")?;
    let timeout = builtins.getattr("type")?.call1((
        "RequestTimeout",
        (builtins.getattr("BaseException")?,),
        [
            ("__module__", "mod_wsgi"),
            (
                "__doc__",
                "The request ran past the server's interrupt timeout.",
            ),
        ]
        .into_py_dict(py)?,
    ))?;
    module.setattr("RequestTimeout", timeout)?;
    module.setattr("event_callbacks", state.get().event_callbacks.bind(py))?;
    module.setattr(
        "shutdown_callbacks",
        state.get().shutdown_callbacks.bind(py),
    )?;
    // subscribe_signals never keeps a callback here: rwsgi publishes no process_signal (see below).
    module.setattr("signal_callbacks", PyList::empty(py))?;
    module.setattr(STATE_ATTR, &state)?;
    module.add_function(wrap_pyfunction!(subscribe_events, &module)?)?;
    module.add_function(wrap_pyfunction!(subscribe_shutdown, &module)?)?;
    module.add_function(wrap_pyfunction!(subscribe_signals, &module)?)?;
    module.add_function(wrap_pyfunction!(request_data, &module)?)?;
    module.add_function(wrap_pyfunction!(start_recording_metrics, &module)?)?;
    module.add_function(wrap_pyfunction!(request_metrics, &module)?)?;
    module.add_function(wrap_pyfunction!(process_metrics, &module)?)?;
    module.add_function(wrap_pyfunction!(server_metrics, &module)?)?;
    module.add_function(wrap_pyfunction!(module_getattr, &module)?)?;
    module.add_function(wrap_pyfunction!(module_dir, &module)?)?;
    Ok((module, state))
}

fn state_of<'py>(module: &Bound<'py, PyModule>) -> PyResult<Bound<'py, State>> {
    Ok(module.getattr(STATE_ATTR)?.cast_into::<State>()?)
}

/// `mod_wsgi.subscribe_events(callback)`: `callback(name, **event)` gets every event published in this
/// interpreter. Returns the callback, so it also works as a decorator.
#[pyfunction]
#[pyo3(pass_module)]
fn subscribe_events<'py>(
    module: &Bound<'py, PyModule>,
    callback: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = module.py();
    let state = state_of(module)?;
    state.get().event_callbacks.bind(py).append(&callback)?;
    // Subscribers may look at the requests in flight: keep active_requests from now on.
    state.get().activate_active_requests(py, module)?;
    metrics::enable(metrics::EVENTS);
    Ok(callback)
}

/// `mod_wsgi.subscribe_shutdown(callback)`: `callback(name, **event)` gets `process_stopping` only.
#[pyfunction]
#[pyo3(pass_module)]
fn subscribe_shutdown<'py>(
    module: &Bound<'py, PyModule>,
    callback: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    state_of(module)?
        .get()
        .shutdown_callbacks
        .bind(module.py())
        .append(&callback)?;
    Ok(callback)
}

/// `mod_wsgi.subscribe_signals(callback)`: accepted and returned, as mod_wsgi does in embedded mode, but
/// never called: rwsgi delivers no `process_signal` events. Says so on stderr, with where it was called.
#[pyfunction]
fn subscribe_signals<'py>(
    py: Python<'py>,
    callback: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let warn = || -> PyResult<()> {
        let stderr = py.import("sys")?.getattr("stderr")?;
        stderr.call_method1(
            "write",
            ("mod_wsgi.subscribe_signals(): rwsgi publishes no process_signal events; the callback \
              will not be invoked. Registered at:\n",),
        )?;
        let kwargs = [("file", &stderr)].into_py_dict(py)?;
        py.import("traceback")?
            .call_method("print_stack", (), Some(&kwargs))?;
        stderr.call_method0("flush").map(drop)
    };
    // Only a diagnostic: failing to print it must not fail the registration.
    let _ = warn();
    Ok(callback)
}

/// `mod_wsgi.request_data()`: the current request's scratchpad dict, shared with the event subscribers
/// (their `request_data`). `RuntimeError` outside a request.
#[pyfunction]
#[pyo3(pass_module)]
fn request_data<'py>(module: &Bound<'py, PyModule>) -> PyResult<Bound<'py, PyDict>> {
    if !metrics::in_request() {
        return Err(PyRuntimeError::new_err("no active request for thread"));
    }
    Ok(state_of(module)?.get().current_request_data(module.py()))
}

/// `mod_wsgi.start_recording_metrics()`: turns on the per-request accounting `request_metrics()` and
/// `process_metrics()` report, for the whole process. Idempotent.
#[pyfunction]
fn start_recording_metrics() {
    metrics::start_recording();
}

/// `mod_wsgi.request_metrics()`: the figures of the interval since the previous call (drained), or `None`
/// before `start_recording_metrics()`.
#[pyfunction]
fn request_metrics(py: Python<'_>) -> PyResult<Option<Bound<'_, PyDict>>> {
    metrics::request_metrics()
        .map(|sample| dict_of(py, &sample))
        .transpose()
}

/// `mod_wsgi.process_metrics()`: the process's totals and current state, or `None` before
/// `start_recording_metrics()`.
#[pyfunction]
fn process_metrics(py: Python<'_>) -> PyResult<Option<Bound<'_, PyDict>>> {
    metrics::process_metrics()
        .map(|sample| dict_of(py, &sample))
        .transpose()
}

/// `mod_wsgi.server_metrics()`: the host's scoreboard (Apache's, when `WSGIServerMetrics On` or the daemon
/// group's `server-metrics=On`), else `None`, as mod_wsgi answers.
#[pyfunction]
fn server_metrics(py: Python<'_>) -> PyResult<Option<Bound<'_, PyDict>>> {
    crate::scoreboard::server_metrics(py)
}

/// The module's `__getattr__` (PEP 562), called only for names not set on it: `active_requests` is made
/// on first use, so requests do not keep it up to date until someone looks.
#[pyfunction(name = "__getattr__")]
#[pyo3(pass_module)]
fn module_getattr<'py>(module: &Bound<'py, PyModule>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    if name == "active_requests" {
        let state = state_of(module)?;
        return Ok(state
            .get()
            .activate_active_requests(module.py(), module)?
            .into_any());
    }
    Err(PyAttributeError::new_err(format!(
        "module 'mod_wsgi' has no attribute '{name}'"
    )))
}

/// The module's `__dir__`: its attributes, `active_requests` included before it is made.
#[pyfunction(name = "__dir__")]
#[pyo3(pass_module)]
fn module_dir<'py>(module: &Bound<'py, PyModule>) -> PyResult<Bound<'py, PyList>> {
    let names = module.dict().keys();
    if !names.contains("active_requests")? {
        names.append("active_requests")?;
    }
    names.sort()?;
    Ok(names)
}

fn dict_of<'py>(py: Python<'py>, items: &[(&str, Value)]) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in items {
        dict.set_item(key, value_of(py, value)?)?;
    }
    Ok(dict)
}

fn value_of<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::None => py.None().into_bound(py),
        Value::Int(n) => n.into_pyobject(py)?.into_any(),
        Value::Float(x) => x.into_pyobject(py)?.into_any(),
        Value::Ints(ns) => PyList::new(py, ns)?.into_any(),
        Value::Floats(xs) => PyList::new(py, xs)?.into_any(),
        Value::Dicts(dicts) => {
            let list = PyList::empty(py);
            for items in dicts {
                list.append(dict_of(py, items)?)?;
            }
            list.into_any()
        }
    })
}

/// Publishes mod_wsgi's `process_stopping` event in the interpreter current on this thread, with `reason`
/// as its `shutdown_reason` (mod_wsgi's values: `"shutdown_signal"`, `"graceful_signal"`,
/// `"maximum_requests"`, `"inactivity_timeout"`, `"request_timeout"`, …; `""` when the host cannot tell).
/// Once per interpreter: [`crate::interp::run_exit_hooks`] publishes it with `""` unless the host did so
/// first with a reason. A host with sub-interpreters calls it inside each.
pub fn process_stopping(reason: &str) {
    Python::attach(|py| crate::events::process_stopping(py, reason));
}

/// Whether `err` is the `mod_wsgi.RequestTimeout` an interrupt raised.
pub(crate) fn is_request_timeout(py: Python<'_>, err: &PyErr) -> bool {
    let timeout = py
        .import("mod_wsgi")
        .and_then(|m| m.getattr("RequestTimeout"));
    timeout.is_ok_and(|timeout| err.get_type(py).is(&timeout))
}

/// Raises `mod_wsgi.RequestTimeout` in the Python thread `thread_ident` (as `threading.get_ident()` names
/// it) the next time it runs Python code. Returns whether such a thread was found.
pub fn interrupt_thread(thread_ident: u64) -> bool {
    Python::attach(|py| {
        let Ok(timeout) = py
            .import("mod_wsgi")
            .and_then(|m| m.getattr("RequestTimeout"))
        else {
            return false;
        };
        // CPython's thread ids are unsigned longs; the binding's signed type carries the same bits.
        let ident = thread_ident as std::ffi::c_long;
        // SAFETY: the GIL is held (attach); `timeout` is a live exception type that the call only borrows
        // (CPython takes its own reference); `ident` is a plain integer CPython looks up among its threads.
        let found = unsafe { pyo3::ffi::PyThreadState_SetAsyncExc(ident, timeout.as_ptr()) };
        found == 1
    })
}

/// The calling thread's Python thread id (`threading.get_ident()`), for [`interrupt_thread`].
pub fn current_thread_ident() -> u64 {
    Python::attach(|py| {
        py.import("threading")
            .and_then(|t| t.call_method0("get_ident"))
            .and_then(|id| id.extract())
            .unwrap_or(0)
    })
}
