//! Python in an Apache child process or a daemon process: started when the process starts (never in
//! Apache's parent, so restarts leave nothing behind there), its applications loaded on first use and
//! kept, and its exit hooks run when the process stops.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rwsgi_engine::interp::{self, InterpreterConfig};
use rwsgi_engine::restrict::Restrictions;
use rwsgi_engine::{
    AppSource, AppSpec, CgiVars, Engine, EngineOptions, ErrorLog, HookValue, Outcome, Request,
    SubInterpreter,
};

use crate::config::{HashSeed, PythonSettings};
use crate::ffi::{self, Level, Server};

/// This child's interpreter, if it started.
static CHILD: OnceLock<Result<Child, String>> = OnceLock::new();

/// Whether an application failed to load in this process, and whether one ever loaded (`startup-timeout`).
static LOADS: (AtomicBool, AtomicBool) = (AtomicBool::new(false), AtomicBool::new(false));

/// True when an application failed to load here and none has loaded since the process started.
pub(crate) fn only_failed_loads() -> bool {
    LOADS.0.load(Ordering::Acquire) && !LOADS.1.load(Ordering::Acquire)
}

struct Child {
    threads: usize,
    processes: usize,
    multiprocess: bool,
    /// The daemon process group this process serves (`""`: an Apache child, embedded mode).
    process_group: String,
    python_path: Vec<PathBuf>,
    restrictions: Restrictions,
    apps: Mutex<Apps>,
}

/// The applications loaded in this process, and the sub-interpreters of their groups.
#[derive(Default)]
struct Apps {
    loaded: HashMap<AppKey, LoadedApp>,
    /// By application group name; the empty name (`%{GLOBAL}`) is the main interpreter, never here.
    interpreters: HashMap<String, Arc<SubInterpreter>>,
}

/// An application and the interpreter it runs in (`None`: the main one).
#[derive(Clone)]
pub(crate) struct LoadedApp {
    engine: Arc<Engine>,
    interpreter: Option<Arc<SubInterpreter>>,
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

/// `WSGIRestrictStdin`, `WSGIRestrictStdout` (both Off by default) and `WSGIRestrictSignal` (On).
fn restrictions(settings: &PythonSettings) -> Restrictions {
    Restrictions {
        stdin: settings.restrict_stdin.unwrap_or(false),
        stdout: settings.restrict_stdout.unwrap_or(false),
        signal: settings.restrict_signal.unwrap_or(true),
    }
}

/// Starts Python in a new Apache child, as the main server's `WSGIPython*` directives say.
pub(crate) fn child_init(server: &Server<'_>) {
    let (threads, processes) = ffi::mpm_limits();
    let settings = server.config().python.clone();
    if settings.server_metrics == Some(true) {
        rwsgi_engine::show_scoreboard(ffi::scoreboard::snapshot);
    }
    start(
        server,
        &settings,
        Role {
            threads,
            processes,
            multiprocess: processes > 1,
            process_group: String::new(),
        },
    );
}

/// Starts Python in a daemon process of `group`: its `python-home` and `python-path` over the server's
/// `WSGIPythonHome` and `WSGIPythonPath`. Whether it started is the answer.
pub(crate) fn daemon_init(
    server: &Server<'_>,
    group: &crate::daemon::DaemonGroup,
) -> Result<(), String> {
    let mut settings = server.config().python.clone();
    if group.python_home.is_some() {
        settings.home = group.python_home.clone();
    }
    if !group.python_path.is_empty() {
        settings.path = group.python_path.clone();
    }
    if group.switch_interval.is_some() {
        settings.switch_interval = group.switch_interval;
    }
    start(
        server,
        &settings,
        Role {
            threads: group.threads,
            processes: group.processes,
            multiprocess: group.multiprocess,
            process_group: group.name.clone(),
        },
    );
    match CHILD.get() {
        Some(Ok(_)) => Ok(()),
        Some(Err(err)) => Err(err.clone()),
        None => Err("Python was not started".into()),
    }
}

/// How the process being started serves: its threads, and the group it belongs to.
struct Role {
    threads: usize,
    processes: usize,
    multiprocess: bool,
    process_group: String,
}

fn start(server: &Server<'_>, settings: &PythonSettings, role: Role) {
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
        .and_then(|()| rwsgi_engine::subinterp::prepare_shared_types())
        .and_then(|()| rwsgi_engine::restrict::apply(&restrictions(settings)))
        .map_err(|err| err.to_string());
    if let Err(err) = &started {
        ffi::log_server(
            Some(server),
            Level::Error,
            &format!("mod_wsgi (pid={}): {err}", std::process::id()),
        );
    }
    let _ = CHILD.set(started.map(|()| Child {
        threads: role.threads,
        processes: role.processes,
        multiprocess: role.multiprocess,
        process_group: role.process_group,
        python_path: settings.path.clone(),
        restrictions: restrictions(settings),
        apps: Mutex::new(Apps::default()),
    }));
    run_import_scripts(server);
}

/// `WSGIImportScript`: every server's scripts for this process's group, each in its application group,
/// as the process starts.
fn run_import_scripts(main: &Server<'_>) {
    let Some(Ok(child)) = CHILD.get() else {
        return;
    };
    // A group declared in a virtual host runs only the import scripts of hosts that may use it (as the
    // C module, which refuses the others when it reads the configuration).
    let scope =
        crate::daemon::find(&child.process_group).and_then(|p| p.group.virtual_host.clone());
    for current in main.with_own_configs() {
        let imports = current.config().import_scripts.iter();
        for import in imports.filter(|i| i.process_group == child.process_group) {
            if scope
                .as_ref()
                .is_some_and(|scope| !scope.admits(current.config_id(), current.hostname()))
            {
                ffi::log_server(
                    Some(&current),
                    Level::Error,
                    &format!(
                        "mod_wsgi (pid={}): WSGIImportScript '{}' of server '{}' not run: WSGI process \
                         group '{}' not accessible.",
                        std::process::id(),
                        import.script.display(),
                        current.hostname(),
                        child.process_group
                    ),
                );
                continue;
            }
            let result =
                interpreter_for(child, &import.application_group).and_then(|interpreter| {
                    let options = EngineOptions {
                        application_group: import.application_group.clone(),
                        ..child.engine_options()
                    };
                    let run = || {
                        rwsgi_engine::install_mod_wsgi(&options)
                            .and_then(|()| rwsgi_engine::import_script(&import.script))
                    };
                    interp::keep_thread_state();
                    match interpreter {
                        Some(interpreter) => interpreter.enter(run),
                        None => run(),
                    }
                    .map_err(|err| LoadError::Script {
                        script: import.script.display().to_string(),
                        reason: err.to_string(),
                    })
                });
            match result {
                Ok(()) => ffi::log_server(
                    Some(&current),
                    Level::Info,
                    &format!(
                        "mod_wsgi (pid={}): Imported script '{}' into application group '{}'.",
                        std::process::id(),
                        import.script.display(),
                        import.application_group
                    ),
                ),
                Err(err) => ffi::log_server(Some(&current), Level::Error, &err.to_string()),
            }
        }
    }
}

impl Child {
    fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            threads: self.threads,
            processes: self.processes,
            multiprocess: self.multiprocess,
            process_group: self.process_group.clone(),
            application_group: String::new(),
            script_reloading: true,
        }
    }

    fn mode(&self) -> String {
        if self.process_group.is_empty() {
            "embedded mode".to_owned()
        } else {
            format!("daemon process group '{}'", self.process_group)
        }
    }
}

/// The interpreter of an application group, created now if it has none yet (`None`: the main one).
fn interpreter_for(child: &Child, group: &str) -> Result<Option<Arc<SubInterpreter>>, LoadError> {
    if group.is_empty() {
        return Ok(None);
    }
    let mut apps = child.apps.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(interpreter) = apps.interpreters.get(group) {
        return Ok(Some(Arc::clone(interpreter)));
    }
    log_info(&format!(
        "Creating sub-interpreter '{group}' in {}.",
        child.mode()
    ));
    let interpreter = SubInterpreter::new(group, &child.python_path, Arc::new(ApacheLog))
        .and_then(|interpreter| {
            interpreter.enter(|| rwsgi_engine::restrict::apply(&child.restrictions))?;
            Ok(interpreter)
        })
        .map(Arc::new)
        .map_err(|err| LoadError::NoInterpreter(err.to_string()))?;
    apps.interpreters
        .insert(group.to_owned(), Arc::clone(&interpreter));
    Ok(Some(interpreter))
}

/// Runs the apps' `atexit` hooks as the child stops, in every interpreter (sub-interpreters first, as
/// mod_wsgi does). The interpreters themselves are left to the process's exit, which follows at once:
/// finalising them would wait for any thread an app started, and crash Apache's shutdown if one were
/// still inside Python.
pub(crate) fn child_exit() {
    let Some(Ok(child)) = CHILD.get() else {
        return;
    };
    let interpreters: Vec<_> = child
        .apps
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .interpreters
        .values()
        .cloned()
        .collect();
    interp::keep_thread_state();
    for interpreter in interpreters {
        interpreter.enter(interp::run_exit_hooks);
    }
    interp::run_exit_hooks();
}

fn log_info(message: &str) {
    ffi::log_server(
        None,
        Level::Info,
        &format!("mod_wsgi (pid={}): {message}", std::process::id()),
    );
}

/// Why a request could not be given to its application.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("the Python interpreter is not available in this process: {0}")]
    NoInterpreter(String),
    #[error("Failed to exec Python script file '{script}'.\n{reason}")]
    Script { script: String, reason: String },
    #[error("Target WSGI script '{script}' does not contain WSGI application '{callable}'.")]
    NoCallable { script: String, callable: String },
}

/// The loaded application for `key`, loading it now (in its application group's interpreter, created
/// now if needed) if this is its first request. The calling thread must not be attached to Python.
pub(crate) fn application(key: &AppKey, process_group: &str) -> Result<LoadedApp, LoadError> {
    let child = match CHILD.get() {
        Some(Ok(child)) => child,
        Some(Err(err)) => return Err(LoadError::NoInterpreter(err.clone())),
        None => return Err(LoadError::NoInterpreter("not started".into())),
    };
    if let Some(app) = child
        .apps
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .loaded
        .get(key)
    {
        return Ok(app.clone());
    }
    let interpreter = interpreter_for(child, &key.application_group)?;
    let mut apps = child.apps.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(app) = apps.loaded.get(key) {
        return Ok(app.clone());
    }
    let spec = AppSpec {
        source: AppSource::Script(key.script.clone()),
        callable: key.callable.clone(),
    };
    let options = EngineOptions {
        process_group: process_group.to_owned(),
        application_group: key.application_group.clone(),
        script_reloading: key.script_reloading,
        ..child.engine_options()
    };
    log_info(&format!(
        "Loading WSGI script '{}' into {} in {}.",
        key.script.display(),
        match &interpreter {
            Some(_) => format!("sub-interpreter '{}'", key.application_group),
            None => "main interpreter".to_owned(),
        },
        child.mode()
    ));
    let load = || Engine::load(&spec, &options, Arc::new(ApacheLog));
    interp::keep_thread_state();
    let engine = match &interpreter {
        Some(interpreter) => interpreter.enter(load),
        None => load(),
    }
    .map_err(|err| {
        LOADS.0.store(true, Ordering::Release);
        if let rwsgi_engine::EngineError::NoCallable { callable, .. } = &err {
            return LoadError::NoCallable {
                script: key.script.display().to_string(),
                callable: callable.clone(),
            };
        }
        let mut reason = err.to_string();
        if interpreter.is_some() && refuses_sub_interpreters(&reason) {
            reason.push_str(
                "\nThis looks like a C extension that cannot run in a sub-interpreter: run the \
                 application in the main interpreter with `WSGIApplicationGroup %{GLOBAL}`.",
            );
        }
        LoadError::Script {
            script: key.script.display().to_string(),
            reason,
        }
    })?;
    let app = LoadedApp {
        engine: Arc::new(engine),
        interpreter,
    };
    apps.loaded.insert(key.clone(), app.clone());
    LOADS.1.store(true, Ordering::Release);
    Ok(app)
}

/// Whether an import error reads like an extension module's refusal to load in a sub-interpreter.
fn refuses_sub_interpreters(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    error.contains("subinterpreter") || error.contains("sub-interpreter")
}

/// Serves a request on the calling Apache thread, in the application's interpreter.
pub(crate) fn serve(app: &LoadedApp, request: Request) -> Outcome {
    interp::keep_thread_state();
    match &app.interpreter {
        Some(interpreter) => interpreter.enter(|| app.engine.handle(request)),
        None => app.engine.handle(request),
    }
}

/// Calls an access or authentication function in its interpreter (see [`crate::auth`]).
pub(crate) fn call_hook(
    app: &LoadedApp,
    vars: &CgiVars,
    args: &[&[u8]],
    id: Option<String>,
) -> Option<HookValue> {
    interp::keep_thread_state();
    match &app.interpreter {
        Some(interpreter) => interpreter.enter(|| app.engine.call_hook(vars, args, id)),
        None => app.engine.call_hook(vars, args, id),
    }
}
