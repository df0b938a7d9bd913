//! Python in an Apache child process: started when the child starts (never in Apache's parent, so
//! restarts leave nothing behind there), its applications loaded on first use and kept, and its exit
//! hooks run when the child stops.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use rwsgi_engine::interp::{self, InterpreterConfig};
use rwsgi_engine::{AppSource, AppSpec, Engine, EngineOptions, ErrorLog, Outcome, Request};

use crate::config::{HashSeed, PythonSettings};
use crate::ffi::{self, Level, Server};

/// This child's interpreter, if it started.
static CHILD: OnceLock<Result<Child, String>> = OnceLock::new();

struct Child {
    threads: usize,
    processes: usize,
    apps: Mutex<HashMap<AppKey, Arc<Engine>>>,
}

/// What makes two requests share an application: mod_wsgi keys its loaded scripts the same way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AppKey {
    pub(crate) script: PathBuf,
    pub(crate) application_group: String,
    pub(crate) callable: String,
    pub(crate) script_reloading: bool,
}

/// Apache's error log, for the engine's messages (tracebacks, `wsgi.errors`, prints).
struct ApacheLog;

impl ErrorLog for ApacheLog {
    fn write(&self, request_id: Option<&str>, message: &str) {
        let message = message.strip_suffix('\n').unwrap_or(message);
        for line in message.lines() {
            let line = match request_id {
                Some(id) => format!("mod_wsgi (pid={}): [{id}] {line}", std::process::id()),
                None => format!("mod_wsgi (pid={}): {line}", std::process::id()),
            };
            ffi::log_server(None, Level::Error, &line);
        }
    }
}

fn interpreter_config(settings: &PythonSettings) -> InterpreterConfig {
    InterpreterConfig {
        python_home: settings.home.clone(),
        python_path: settings.path.clone(),
        working_dir_first: false,
        optimize: settings.optimize.unwrap_or(0),
        hash_seed: match settings.hash_seed {
            Some(HashSeed::Fixed(seed)) => Some(seed),
            _ => None,
        },
        dont_write_bytecode: settings.dont_write_bytecode.unwrap_or(false),
        warnings: settings.warnings.clone(),
        switch_interval: settings.switch_interval,
    }
}

/// Starts Python in a new Apache child, as the main server's `WSGIPython*` directives say.
pub(crate) fn child_init(server: &Server<'_>) {
    let settings = &server.config().python;
    ffi::log_server(
        Some(server),
        Level::Info,
        &format!(
            "mod_wsgi (pid={}): Starting Python {} for rwsgi's mod_wsgi {}.",
            std::process::id(),
            settings.home.as_deref().map_or_else(
                || "(built-in home)".to_owned(),
                |h| format!("home {}", h.display())
            ),
            env!("CARGO_PKG_VERSION"),
        ),
    );
    let started = interp::initialize(&interpreter_config(settings))
        .and_then(|()| rwsgi_engine::redirect_std_streams(Arc::new(ApacheLog)))
        .map_err(|err| err.to_string());
    if let Err(err) = &started {
        ffi::log_server(
            Some(server),
            Level::Error,
            &format!("mod_wsgi (pid={}): {err}", std::process::id()),
        );
    }
    let (threads, processes) = ffi::mpm_limits();
    let _ = CHILD.set(started.map(|()| Child {
        threads,
        processes,
        apps: Mutex::new(HashMap::new()),
    }));
}

/// Runs the apps' `atexit` hooks as the child stops. The interpreter is left to the process's exit, which
/// follows at once: finalising it would wait for any thread an app started, and crash Apache's shutdown
/// if one were still inside Python.
pub(crate) fn child_exit() {
    if let Some(Ok(_)) = CHILD.get() {
        interp::run_exit_hooks();
    }
}

/// Why a request could not be given to its application.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("the Python interpreter is not available in this process: {0}")]
    NoInterpreter(String),
    #[error("Failed to exec Python script file '{script}'.\n{reason}")]
    Script { script: String, reason: String },
}

/// The loaded application for `key`, loading it now if this is its first request.
pub(crate) fn application(key: &AppKey, process_group: &str) -> Result<Arc<Engine>, LoadError> {
    let child = match CHILD.get() {
        Some(Ok(child)) => child,
        Some(Err(err)) => return Err(LoadError::NoInterpreter(err.clone())),
        None => return Err(LoadError::NoInterpreter("not started".into())),
    };
    let mut apps = child.apps.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(engine) = apps.get(key) {
        return Ok(Arc::clone(engine));
    }
    let spec = AppSpec {
        source: AppSource::Script(key.script.clone()),
        callable: key.callable.clone(),
    };
    let options = EngineOptions {
        threads: child.threads,
        processes: child.processes,
        process_group: process_group.to_owned(),
        application_group: key.application_group.clone(),
        script_reloading: key.script_reloading,
    };
    interp::keep_thread_state();
    let engine =
        Engine::load(&spec, &options, Arc::new(ApacheLog)).map_err(|err| LoadError::Script {
            script: key.script.display().to_string(),
            reason: err.to_string(),
        })?;
    let engine = Arc::new(engine);
    apps.insert(key.clone(), Arc::clone(&engine));
    Ok(engine)
}

/// Serves a request on the calling Apache thread.
pub(crate) fn serve(engine: &Engine, request: Request) -> Outcome {
    interp::keep_thread_state();
    engine.handle(request)
}
