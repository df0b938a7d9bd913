//! `--log-file`: everything the server and the app write to stderr goes to a file instead, appended, and
//! SIGUSR1 reopens it (the supervisor reopens its own and tells every worker to do the same), so a log
//! rotator can move the file away and signal, as with gunicorn and Apache.

use std::fs::OpenOptions;
use std::path::Path;

use anyhow::Context as _;

/// Points this process's stderr at `path`, opened (or created) for appending.
pub(crate) fn redirect_stderr(path: &Path) -> anyhow::Result<()> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the log file {}", path.display()))?;
    nix::unistd::dup2_stderr(&file)
        .with_context(|| format!("cannot send stderr to {}", path.display()))?;
    Ok(())
}

/// On SIGUSR1: reopens the log file if there is one; says so either way.
pub(crate) fn reopen(path: Option<&Path>) {
    match path {
        Some(path) => match redirect_stderr(path) {
            Ok(()) => eprintln!(
                "rwsgi: pid {}: SIGUSR1: reopened {}",
                std::process::id(),
                path.display()
            ),
            Err(err) => eprintln!("rwsgi: SIGUSR1: {err:#}"),
        },
        None => eprintln!("rwsgi: SIGUSR1: no --log-file to reopen"),
    }
}
