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
    /// `sys.flags.optimize` (mod_wsgi's `WSGIPythonOptimize`): 0, 1 or 2.
    pub optimize: u8,
    /// A fixed hash seed (`WSGIPythonHashSeed`); `None` keeps Python's random seed.
    pub hash_seed: Option<u32>,
    /// Don't write `.pyc` files (`WSGIDontWriteBytecode`).
    pub dont_write_bytecode: bool,
    /// Warning filters, as `-W` takes them (`WSGIPythonWarnings`).
    pub warnings: Vec<String>,
    /// The GIL switch interval in seconds (`WSGISwitchInterval`); `None` keeps Python's 5 ms.
    pub switch_interval: Option<f64>,
}

/// The version (`major.minor`) of the Python the engine was built against.
pub const PYTHON_VERSION: &str = env!("RWSGI_PYTHON_VERSION");

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
    let warnings = config
        .warnings
        .iter()
        .map(|w| {
            CString::new(w.as_str()).map_err(|_| EngineError::Setting {
                name: "python-warnings",
                reason: format!("{w:?} contains a NUL byte"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = StartOptions {
        executable: executable.as_deref(),
        home: home.as_deref(),
        optimize: config.optimize,
        hash_seed: config.hash_seed,
        dont_write_bytecode: config.dont_write_bytecode,
        warnings: &warnings,
    };
    // SAFETY: called once before any other Python API use (the host's contract, see the fn doc); the config
    // is initialised by PyConfig_InitPythonConfig before any field is touched, and cleared on every path.
    unsafe { start(&options)? };
    Python::attach(|py| {
        if let Some(interval) = config.switch_interval {
            py.import("sys")?
                .call_method1("setswitchinterval", (interval,))?;
        }
        extend_sys_path(py, config)
    })
    .map_err(|e| EngineError::Interpreter(e.to_string()))
}

/// What `start` sets in CPython's `PyConfig`.
struct StartOptions<'a> {
    executable: Option<&'a CStr>,
    home: Option<&'a CStr>,
    optimize: u8,
    hash_seed: Option<u32>,
    dont_write_bytecode: bool,
    warnings: &'a [CString],
}

fn path_cstring(name: &'static str, path: &Path) -> Result<CString, EngineError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| EngineError::Setting {
        name,
        reason: format!("{} contains a NUL byte", path.display()),
    })
}

/// # Safety
/// Must run once per process, before any other Python API call, on the thread that will own shutdown.
unsafe fn start(options: &StartOptions<'_>) -> Result<(), EngineError> {
    let StartOptions {
        executable, home, ..
    } = *options;
    let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
    // SAFETY: PyConfig_InitPythonConfig fully initialises the struct it is given.
    unsafe { ffi::PyConfig_InitPythonConfig(config.as_mut_ptr()) };
    // SAFETY: initialised just above.
    let config = unsafe { config.assume_init_mut() };
    // Signals belong to the host (graceful stop, reload); Python must not install its own handlers.
    config.install_signal_handlers = 0;
    config.parse_argv = 0;
    config.optimization_level = i32::from(options.optimize);
    config.write_bytecode = i32::from(!options.dont_write_bytecode);
    if let Some(seed) = options.hash_seed {
        config.use_hash_seed = 1;
        config.hash_seed = std::ffi::c_ulong::from(seed);
    }
    let result = (|| {
        for warning in options.warnings {
            let wide = widen(warning)?;
            // SAFETY: the list belongs to `config`, initialised above; `wide` is NUL-terminated and copied.
            check(unsafe { ffi::PyWideStringList_Append(&mut config.warnoptions, wide.as_ptr()) })?;
        }
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

/// A C string as the `wchar_t` string CPython's lists take (ASCII and UTF-8 decoded; no locale needed).
fn widen(text: &CStr) -> Result<Vec<libc::wchar_t>, EngineError> {
    let text = text
        .to_str()
        .map_err(|_| EngineError::Interpreter(format!("{text:?} is not UTF-8")))?;
    let mut wide: Vec<libc::wchar_t> = text.chars().map(|c| c as libc::wchar_t).collect();
    wide.push(0);
    Ok(wide)
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

/// Ends the interpreter current on this thread as a stopping mod_wsgi process does: publishes mod_wsgi's
/// `process_stopping` event to its `subscribe_shutdown`/`subscribe_events` callbacks (with an empty
/// `shutdown_reason`, unless the host already published it with [`crate::process_stopping`]), then runs its
/// `atexit` handlers. The interpreter itself is left to the process's exit: finalising it would wait on
/// any non-daemon threads the app started (which `process_stopping` callbacks can tell to stop).
pub fn run_exit_hooks() {
    Python::attach(|py| {
        crate::events::process_stopping(py, "");
        if let Err(err) = py
            .import("atexit")
            .and_then(|atexit| atexit.call_method0("_run_exitfuncs"))
        {
            err.print(py);
        }
    });
}

thread_local! {
    /// Whether this thread keeps a Python thread state between requests (see [`keep_thread_state`]).
    static THREAD_STATE_KEPT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Gives the calling thread a Python thread state that lives as long as the thread, so requests served on it
/// do not create and destroy one each (which `Python::attach` does on a thread Python did not start). For
/// hosts whose long-lived threads Python did not create, such as Apache's workers. The interpreter must be
/// initialised, and the calling thread must not be attached to it now.
pub fn keep_thread_state() {
    if THREAD_STATE_KEPT.get() {
        return;
    }
    // SAFETY: the interpreter is initialised (our contract) and this thread is not attached, so Ensure takes
    // the GIL with a thread state of its own; SaveThread releases the GIL and keeps that state, whose
    // counter Ensure left at 1, so PyO3's later Ensure/Release pairs reuse it instead of deleting it.
    unsafe {
        ffi::PyGILState_Ensure();
        ffi::PyEval_SaveThread();
    }
    THREAD_STATE_KEPT.set(true);
}
