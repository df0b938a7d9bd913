//! The `mod_wsgi` Python module that apps import, in the form both hosts share.
//!
//! It is registered in `sys.modules` before the app loads, so `import mod_wsgi` works under `rwsgi serve`
//! as it does under Apache.

use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyModule, PyTuple};

use crate::EngineOptions;

/// The mod_wsgi API level these names follow.
pub const MOD_WSGI_API_VERSION: (u8, u8, u8) = (6, 1, 1);

pub(crate) fn install(py: Python<'_>, options: &EngineOptions) -> PyResult<()> {
    let module = PyModule::new(py, "mod_wsgi")?;
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
    py.import("sys")?
        .getattr("modules")?
        .set_item("mod_wsgi", module)?;
    Ok(())
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
