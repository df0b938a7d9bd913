//! Starting the embedded CPython interpreter: python-home (a virtualenv or an installation prefix) and
//! python-path, the way mod_wsgi's `WSGIPythonHome`/`WSGIPythonPath` set them.
//!
//! This is the engine's only raw C-API code: `PyConfig` is not reachable through PyO3's safe API. It runs once
//! per process, before any other Python call, and leaves the interpreter with the GIL released.

use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::error::EngineError;

/// How the interpreter is set up; the host resolves these from its own settings.
#[derive(Debug, Clone, Default)]
pub struct InterpreterConfig {
    /// A virtualenv or Python installation prefix to use as `sys.prefix`.
    pub python_home: Option<PathBuf>,
    /// Directories added with `site.addsitedir` semantics (their `.pth` files honoured), in order.
    pub python_path: Vec<PathBuf>,
    /// Put the working directory first on `sys.path`, so `module:callable` imports from it.
    pub working_dir_first: bool,
}

/// The Python the engine was built against; `sys.executable` points here unless a python-home says otherwise.
const BUILD_PYTHON: Option<&str> = option_env!("RWSGI_BUILD_PYTHON");

/// Starts CPython as `config` describes. Must be called once, before any other use of Python.
pub fn initialize(config: &InterpreterConfig) -> Result<(), EngineError> {
    let executable = match &config.python_home {
        // A virtualenv is recognised by CPython from its interpreter's location (pyvenv.cfg beside or above
        // it), as mod_wsgi does it; a plain prefix is handed over as PYTHONHOME.
        Some(home) if home.join("pyvenv.cfg").is_file() => Some(home.join("bin").join("python")),
        _ => BUILD_PYTHON.map(PathBuf::from),
    };
    let home = config
        .python_home
        .as_deref()
        .filter(|h| !h.join("pyvenv.cfg").is_file());
    let executable = executable
        .as_deref()
        .map(|p| path_cstring("python-executable", p))
        .transpose()?;
    let home = home.map(|p| path_cstring("python-home", p)).transpose()?;
    // SAFETY: called once before any other Python API use (the host's contract, see the fn doc); the config
    // is initialised by PyConfig_InitPythonConfig before any field is touched, and cleared on every path.
    unsafe { start(executable.as_deref(), home.as_deref())? };
    Python::attach(|py| extend_sys_path(py, config))
        .map_err(|e| EngineError::Interpreter(e.to_string()))
}

fn path_cstring(name: &'static str, path: &Path) -> Result<CString, EngineError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| EngineError::Setting {
        name,
        reason: format!("{} contains a NUL byte", path.display()),
    })
}

/// # Safety
/// Must run once per process, before any other Python API call, on the thread that will own shutdown.
unsafe fn start(executable: Option<&CStr>, home: Option<&CStr>) -> Result<(), EngineError> {
    let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
    // SAFETY: PyConfig_InitPythonConfig fully initialises the struct it is given.
    unsafe { ffi::PyConfig_InitPythonConfig(config.as_mut_ptr()) };
    // SAFETY: initialised just above.
    let config = unsafe { config.assume_init_mut() };
    // Signals belong to the host (graceful stop, reload); Python must not install its own handlers.
    config.install_signal_handlers = 0;
    config.parse_argv = 0;
    let result = (|| {
        if let Some(executable) = executable {
            // SAFETY: `config` is initialised and `executable` is a valid C string that outlives the call.
            check(unsafe {
                ffi::PyConfig_SetBytesString(config, &mut config.executable, executable.as_ptr())
            })?;
        }
        if let Some(home) = home {
            // SAFETY: as above.
            check(unsafe {
                ffi::PyConfig_SetBytesString(config, &mut config.home, home.as_ptr())
            })?;
        }
        // SAFETY: `config` is initialised; this is the process's first initialisation (our contract).
        check(unsafe { ffi::Py_InitializeFromConfig(config) })
    })();
    // SAFETY: `config` is initialised, and Python copied what it needed.
    unsafe { ffi::PyConfig_Clear(config) };
    result?;
    // The initialising thread holds the GIL; release it so any thread can attach.
    // SAFETY: the interpreter is initialised and this thread holds the GIL.
    unsafe { ffi::PyEval_SaveThread() };
    Ok(())
}

fn check(status: ffi::PyStatus) -> Result<(), EngineError> {
    // SAFETY: PyStatus_Exception only reads the struct it is given by value.
    if unsafe { ffi::PyStatus_Exception(status) } == 0 {
        return Ok(());
    }
    let message = if status.err_msg.is_null() {
        "unknown error".to_owned()
    } else {
        // SAFETY: a non-null err_msg is a static NUL-terminated string set by CPython.
        unsafe { CStr::from_ptr(status.err_msg) }
            .to_string_lossy()
            .into_owned()
    };
    Err(EngineError::Interpreter(message))
}

fn extend_sys_path(py: Python<'_>, config: &InterpreterConfig) -> PyResult<()> {
    let site = py.import("site")?;
    for dir in &config.python_path {
        site.call_method1("addsitedir", (crate::path_str(dir),))?;
    }
    if config.working_dir_first {
        let cwd = std::env::current_dir()?;
        let sys_path = py.import("sys")?.getattr("path")?.cast_into::<PyList>()?;
        sys_path.insert(0, crate::path_str(&cwd))?;
    }
    Ok(())
}

/// Runs the app's `atexit` handlers, as a stopping mod_wsgi process does. The interpreter itself is left
/// to the process's exit: finalising it would wait on any non-daemon threads the app started.
pub fn run_exit_hooks() {
    Python::attach(|py| {
        if let Err(err) = py
            .import("atexit")
            .and_then(|atexit| atexit.call_method0("_run_exitfuncs"))
        {
            err.print(py);
        }
    });
}
