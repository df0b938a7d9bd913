//! `rwsgi module-config` and `rwsgi install-module`: what an Apache config needs to load rwsgi's
//! mod_wsgi.so, the way `mod_wsgi-express module-config` and `install-module` print it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

use crate::cli::{InstallArgs, ModuleArgs};

/// The module's file name as cargo builds it, beside the `rwsgi` binary.
const BUILT_NAME: &str = "libmod_wsgi.so";
/// Its name once installed, the one mod_wsgi users' configs already load.
const INSTALLED_NAME: &str = "mod_wsgi.so";

/// The module built with this binary.
fn built_module() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the rwsgi binary")?;
    let module = exe
        .parent()
        .map(|dir| dir.join(BUILT_NAME))
        .context("the rwsgi binary has no directory")?;
    if !module.is_file() {
        bail!(
            "{} not found: build the Apache module with `cargo build --release --workspace` \
             (it needs apache2-dev and libclang)",
            module.display()
        );
    }
    Ok(module)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("{} does not exist", path.display()))
}

/// The config lines: LoadModule, and WSGIPythonHome when a virtualenv or home is given.
fn config_lines(module: &Path, args: &ModuleArgs) -> anyhow::Result<String> {
    let mut lines = format!("LoadModule wsgi_module \"{}\"\n", module.display());
    if let Some(home) = &args.python_home {
        lines.push_str(&format!(
            "WSGIPythonHome \"{}\"\n",
            absolute(home)?.display()
        ));
    }
    Ok(lines)
}

pub(crate) fn print_config(args: &ModuleArgs) -> anyhow::Result<()> {
    print!("{}", config_lines(&absolute(&built_module()?)?, args)?);
    Ok(())
}

/// Apache's module directory, as its build tool reports it.
fn apache_modules_dir() -> anyhow::Result<PathBuf> {
    let output = Command::new("apxs")
        .args(["-q", "LIBEXECDIR"])
        .output()
        .context("running `apxs -q LIBEXECDIR` (install apache2-dev, or pass --modules-dir)")?;
    if !output.status.success() {
        bail!(
            "`apxs -q LIBEXECDIR` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    ))
}

pub(crate) fn install(args: &InstallArgs) -> anyhow::Result<()> {
    let module = built_module()?;
    let dir = match &args.modules_dir {
        Some(dir) => dir.clone(),
        None => apache_modules_dir()?,
    };
    let target = absolute(&dir)?.join(INSTALLED_NAME);
    // Copy beside, then rename: a running Apache that maps the old file keeps its copy intact.
    let staging = target.with_extension("so.rwsgi-new");
    std::fs::copy(&module, &staging)
        .with_context(|| format!("copying {} to {}", module.display(), staging.display()))?;
    std::fs::rename(&staging, &target)
        .with_context(|| format!("installing {}", target.display()))?;
    print!("{}", config_lines(&target, &args.module)?);
    Ok(())
}
