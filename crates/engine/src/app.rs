//! Loading the WSGI application: a script file executed as a fresh module (as mod_wsgi loads a
//! `WSGIScriptAlias` target), or a `module:callable` imported normally.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use pyo3::prelude::*;
use pyo3::types::PyModule;

use crate::error::EngineError;
use crate::traceback::format_exception;

/// Where the application comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSource {
    /// A WSGI script file (`hello.py`, `mysite.wsgi`): any file name, executed as a module of its own.
    Script(PathBuf),
    /// An importable module, by dotted name.
    Module(String),
}

/// What to load and which callable in it to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    /// The script or module.
    pub source: AppSource,
    /// The callable's name (mod_wsgi's `WSGICallableObject`, `application` by default).
    pub callable: String,
}

impl AppSpec {
    /// How logs and errors name this app: the script path, or `module:callable`.
    pub fn label(&self) -> String {
        match &self.source {
            AppSource::Script(path) => path.display().to_string(),
            AppSource::Module(module) => format!("{module}:{}", self.callable),
        }
    }
}

/// A loaded application.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) callable: Py<PyAny>,
    /// The script's module (none for `module:callable`).
    module: Option<Py<PyModule>>,
}

/// How often a script file's modification time is looked at, at most.
const SCRIPT_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The application as requests see it: with script reloading (mod_wsgi's `WSGIScriptReloading`, on by
/// default), a script file whose modification time changed is executed afresh and replaces the callable;
/// requests already running keep the code they started with.
pub(crate) struct LiveApp {
    spec: AppSpec,
    reloading: bool,
    state: Mutex<LiveState>,
}

struct LiveState {
    callable: Py<PyAny>,
    module: Option<Py<PyModule>>,
    mtime: Option<SystemTime>,
    next_check: Instant,
}

/// What happened when the script was looked at.
pub(crate) enum Reload {
    Unchanged,
    Reloaded,
    /// The changed script failed to load; the previous code keeps serving.
    Failed(EngineError),
    /// The script's `reload_required` raised (the traceback); nothing was reloaded.
    HookRaised(String),
}

/// Why a script is loaded afresh before this request, besides its file changing.
enum Asked {
    No,
    Yes,
    HookRaised(String),
}

impl LiveApp {
    pub(crate) fn load(
        py: Python<'_>,
        spec: &AppSpec,
        reloading: bool,
    ) -> Result<Self, EngineError> {
        let mtime = script_mtime(spec);
        let app = load(py, spec, false)?;
        let state = LiveState {
            callable: app.callable,
            module: app.module,
            mtime,
            next_check: Instant::now() + SCRIPT_CHECK_INTERVAL,
        };
        Ok(Self {
            spec: spec.clone(),
            reloading,
            state: Mutex::new(state),
        })
    }

    /// The callable to serve this request with, reloading a changed script first.
    pub(crate) fn callable(&self, py: Python<'_>) -> (Py<PyAny>, Reload) {
        if !self.reloading {
            return (self.lock(py).callable.clone_ref(py), Reload::Unchanged);
        }
        // The app's `reload_required` hook runs without the lock: it is the app's code, may take its
        // time, and would otherwise make every other request wait for it.
        let module = self.lock(py).module.as_ref().map(|m| m.clone_ref(py));
        let mut outcome = Reload::Unchanged;
        let mut fresh = false;
        match asked_to_reload(py, module.as_ref(), &self.spec) {
            Asked::No => {}
            Asked::Yes => fresh = true,
            Asked::HookRaised(traceback) => outcome = Reload::HookRaised(traceback),
        }
        let mut state = self.lock(py);
        let mut changed = false;
        if Instant::now() >= state.next_check {
            state.next_check = Instant::now() + SCRIPT_CHECK_INTERVAL;
            let mtime = script_mtime(&self.spec);
            if mtime.is_some() && mtime != state.mtime {
                state.mtime = mtime;
                changed = true;
            }
        }
        if fresh || changed {
            outcome = match load(py, &self.spec, fresh) {
                Ok(app) => {
                    state.callable = app.callable;
                    state.module = app.module;
                    Reload::Reloaded
                }
                Err(err) => Reload::Failed(err),
            };
        }
        (state.callable.clone_ref(py), outcome)
    }

    /// The live state, waited for with the GIL released: whoever holds the lock may give the GIL up
    /// while it does (a reload executes the script; PyO3 detaches to initialise an interned string),
    /// and a thread blocked on the lock while attached would keep it from ever getting the GIL back.
    fn lock<'a>(&'a self, py: Python<'_>) -> std::sync::MutexGuard<'a, LiveState> {
        pyo3::sync::MutexExt::lock_py_attached(&self.state, py)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// mod_wsgi's other reasons to reload a script, checked on every request: its module lost `__mtime__`,
/// or its `reload_required(resource)` function says so.
fn asked_to_reload(py: Python<'_>, module: Option<&Py<PyModule>>, spec: &AppSpec) -> Asked {
    let (Some(module), AppSource::Script(path)) = (module, &spec.source) else {
        return Asked::No;
    };
    let module = module.bind(py);
    // Looked up in the module's namespace: this runs on every request, and a failed getattr on a module
    // raises (and formats) several AttributeErrors inside CPython before Python 3.13, even when asked
    // for an optional attribute.
    let namespace = module.dict();
    if !namespace
        .contains(pyo3::intern!(py, "__mtime__"))
        .unwrap_or(true)
    {
        return Asked::Yes;
    }
    let Ok(Some(hook)) = namespace.get_item(pyo3::intern!(py, "reload_required")) else {
        return Asked::No;
    };
    match hook
        .call1((crate::path_str(path),))
        .and_then(|answer| answer.is_truthy())
    {
        Ok(true) => Asked::Yes,
        Ok(false) => Asked::No,
        Err(err) => Asked::HookRaised(format_exception(py, &err)),
    }
}

fn script_mtime(spec: &AppSpec) -> Option<SystemTime> {
    match &spec.source {
        AppSource::Script(path) => std::fs::metadata(path).and_then(|m| m.modified()).ok(),
        AppSource::Module(_) => None,
    }
}

/// The module name mod_wsgi gives a script file: unique per path, so two scripts never share a module.
pub(crate) fn script_module_name(py: Python<'_>, path: &std::path::Path) -> PyResult<String> {
    let digest = py
        .import("hashlib")?
        .call_method1("md5", (path.as_os_str().as_encoded_bytes(),))?
        .call_method0("hexdigest")?;
    Ok(format!("_mod_wsgi_{}", digest.extract::<String>()?))
}

/// Loads the app; `fresh` executes a script again even if its current version is loaded.
pub(crate) fn load(py: Python<'_>, spec: &AppSpec, fresh: bool) -> Result<App, EngineError> {
    let load_error = |err: PyErr| EngineError::AppLoad {
        target: spec.label(),
        traceback: format_exception(py, &err),
    };
    let module = match &spec.source {
        AppSource::Script(path) => match loaded_script(py, path).filter(|_| !fresh) {
            Some(module) => module,
            None => {
                let source = std::fs::read(path).map_err(|source| EngineError::ScriptRead {
                    path: path.clone(),
                    source,
                })?;
                exec_script(py, path, &source).map_err(load_error)?
            }
        },
        AppSource::Module(name) => py.import(name.as_str()).map_err(load_error)?,
    };
    let callable = match module.getattr(spec.callable.as_str()) {
        Ok(callable) => callable,
        Err(err) if err.is_instance_of::<pyo3::exceptions::PyAttributeError>(py) => {
            return Err(EngineError::NoCallable {
                target: spec.label(),
                callable: spec.callable.clone(),
            })
        }
        Err(err) => return Err(load_error(err)),
    };
    let is_script = matches!(spec.source, AppSource::Script(_));
    Ok(App {
        callable: callable.unbind(),
        module: is_script.then(|| module.unbind()),
    })
}

/// The file's modification time as mod_wsgi records it on a script's module (`__mtime__`, in seconds).
fn mtime_seconds(path: &std::path::Path) -> Option<f64> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    Some(
        modified
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs_f64(),
    )
}

/// The script's module if this interpreter already executed this version of the file (an import script,
/// or another callable of the same script): like mod_wsgi, a script runs once per interpreter and change.
fn loaded_script<'py>(py: Python<'py>, path: &std::path::Path) -> Option<Bound<'py, PyModule>> {
    let name = script_module_name(py, path).ok()?;
    let module = py
        .import("sys")
        .ok()?
        .getattr("modules")
        .ok()?
        .get_item(&name)
        .ok()?
        .cast_into::<PyModule>()
        .ok()?;
    let recorded: f64 = module.getattr("__mtime__").ok()?.extract().ok()?;
    (Some(recorded) == mtime_seconds(path)).then_some(module)
}

/// Executes a script file as its module now (mod_wsgi's `WSGIImportScript`), unless this version of it is
/// loaded already; an application that names it later uses that module.
pub(crate) fn import_script(py: Python<'_>, path: &std::path::Path) -> Result<(), EngineError> {
    if loaded_script(py, path).is_some() {
        return Ok(());
    }
    let source = std::fs::read(path).map_err(|source| EngineError::ScriptRead {
        path: path.to_path_buf(),
        source,
    })?;
    exec_script(py, path, &source)
        .map(drop)
        .map_err(|err| EngineError::AppLoad {
            target: path.display().to_string(),
            traceback: format_exception(py, &err),
        })
}

fn exec_script<'py>(
    py: Python<'py>,
    path: &std::path::Path,
    source: &[u8],
) -> PyResult<Bound<'py, PyModule>> {
    let name = script_module_name(py, path)?;
    let module = PyModule::new(py, &name)?;
    module.setattr("__file__", crate::path_str(path))?;
    if let Some(mtime) = mtime_seconds(path) {
        module.setattr("__mtime__", mtime)?;
    }
    let builtins = py.import("builtins")?;
    let code =
        builtins
            .getattr("compile")?
            .call1((source, crate::path_str(path), "exec", 0, true))?;
    let modules = py.import("sys")?.getattr("modules")?;
    modules.set_item(&name, &module)?;
    let globals = module.dict();
    globals.set_item("__builtins__", &builtins)?;
    if let Err(err) = builtins.getattr("exec")?.call1((code, &globals)) {
        modules.del_item(&name)?;
        return Err(err);
    }
    Ok(module)
}
