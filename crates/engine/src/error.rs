//! The engine's error type. Messages say what failed at this level; the cause is in `source()`.

use std::path::PathBuf;

/// What went wrong inside the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The interpreter could not be started.
    #[error("could not initialise Python: {0}")]
    Interpreter(String),
    /// A setting handed to the engine is unusable (a path with a NUL byte, say).
    #[error("invalid setting {name}: {reason}")]
    Setting {
        /// The setting's name as the host knows it.
        name: &'static str,
        /// Why it is unusable.
        reason: String,
    },
    /// A WSGI script file could not be read.
    #[error("could not read WSGI script {path}")]
    ScriptRead {
        /// The script's path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Importing the application raised; `traceback` is the formatted Python traceback.
    #[error("failed to load WSGI application {target}:\n{traceback}")]
    AppLoad {
        /// The script path or `module:callable` being loaded.
        target: String,
        /// Python's formatted traceback.
        traceback: String,
    },
    /// The application module has no such callable.
    #[error("{target} has no callable named {callable:?}")]
    NoCallable {
        /// The script path or module.
        target: String,
        /// The missing name.
        callable: String,
    },
}
