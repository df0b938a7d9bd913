//! `chroot=DIR`: a daemon runs inside DIR, so the paths Apache gives it are rewritten as seen from there,
//! by mod_wsgi's rules. The script (`SCRIPT_FILENAME`) must lie inside DIR, or the request is refused;
//! `DOCUMENT_ROOT` loses the DIR prefix, or is dropped when it lies elsewhere.
//!
//! Pure: it rewrites a request's variables and leaves answering to the caller.

use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use rwsgi_engine::CgiVars;

/// Rewrites `vars` for a daemon chrooted to `root`; `script_key` names the variable holding the script the
/// daemon loads. The error is mod_wsgi's message for a script outside `root`.
pub(crate) fn relocate(root: &Path, vars: &mut CgiVars, script_key: &str) -> Result<(), String> {
    let root_bytes = trimmed(root.as_os_str().as_bytes());
    let filename = vars.get("SCRIPT_FILENAME").unwrap_or_default().to_vec();
    let Some(inside) = within(&filename, root_bytes) else {
        return Err(format!(
            "WSGI script '{}' is not located within chroot directory '{}'; rejecting request.",
            String::from_utf8_lossy(&filename),
            root.display()
        ));
    };
    let inside = inside.to_vec();
    vars.set("SCRIPT_FILENAME", &inside);
    // The script the daemon loads is that file, or a handler script, which lies inside or fails to load.
    if let Some(script) = vars.get(script_key).and_then(|s| within(s, root_bytes)) {
        let script = script.to_vec();
        vars.set(script_key.to_owned(), script);
    }
    match vars.get("DOCUMENT_ROOT") {
        Some(dir) if dir == root_bytes || (root_bytes.is_empty() && dir == b"/") => {
            vars.set("DOCUMENT_ROOT", b"/")
        }
        Some(dir) => match within(dir, root_bytes) {
            Some(inside) => {
                let inside = inside.to_vec();
                vars.set("DOCUMENT_ROOT", inside);
            }
            None => vars.remove("DOCUMENT_ROOT"),
        },
        None => {}
    }
    Ok(())
}

/// `root` without trailing slashes (`/` becomes empty: every absolute path is inside it).
fn trimmed(root: &[u8]) -> &[u8] {
    let mut root = root;
    while let Some(rest) = root.strip_suffix(b"/") {
        root = rest;
    }
    root
}

/// `path` as seen from inside `root`: the rest after `root`, starting with `/`.
fn within<'p>(path: &'p [u8], root: &[u8]) -> Option<&'p [u8]> {
    path.strip_prefix(root)
        .filter(|rest| rest.starts_with(b"/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "mod_wsgi.x-script";

    fn vars(pairs: &[(&'static str, &str)]) -> CgiVars {
        let mut vars = CgiVars::default();
        for (name, value) in pairs {
            vars.set(*name, value.as_bytes());
        }
        vars
    }

    #[test]
    fn paths_inside_the_root_are_seen_from_it() {
        let mut v = vars(&[
            ("SCRIPT_FILENAME", "/srv/jail/app/site.wsgi"),
            (SCRIPT, "/srv/jail/app/site.wsgi"),
            ("DOCUMENT_ROOT", "/srv/jail/www"),
        ]);
        relocate(Path::new("/srv/jail/"), &mut v, SCRIPT).unwrap();
        assert_eq!(v.get("SCRIPT_FILENAME"), Some(&b"/app/site.wsgi"[..]));
        assert_eq!(v.get(SCRIPT), Some(&b"/app/site.wsgi"[..]));
        assert_eq!(v.get("DOCUMENT_ROOT"), Some(&b"/www"[..]));
    }

    #[test]
    fn a_script_outside_the_root_is_refused_and_a_foreign_document_root_dropped() {
        let mut v = vars(&[("SCRIPT_FILENAME", "/srv/jailbreak/site.wsgi")]);
        assert_eq!(
            relocate(Path::new("/srv/jail"), &mut v, SCRIPT),
            Err(
                "WSGI script '/srv/jailbreak/site.wsgi' is not located within chroot directory \
                 '/srv/jail'; rejecting request."
                    .into()
            )
        );
        let mut v = vars(&[
            ("SCRIPT_FILENAME", "/srv/jail/site.wsgi"),
            ("DOCUMENT_ROOT", "/var/www"),
        ]);
        relocate(Path::new("/srv/jail"), &mut v, SCRIPT).unwrap();
        assert_eq!(v.get("DOCUMENT_ROOT"), None);
        let mut v = vars(&[
            ("SCRIPT_FILENAME", "/srv/jail/site.wsgi"),
            ("DOCUMENT_ROOT", "/srv/jail"),
        ]);
        relocate(Path::new("/srv/jail"), &mut v, SCRIPT).unwrap();
        assert_eq!(v.get("DOCUMENT_ROOT"), Some(&b"/"[..]));
    }

    #[test]
    fn a_handler_script_outside_the_root_is_left_to_fail_its_load() {
        let mut v = vars(&[
            ("SCRIPT_FILENAME", "/srv/jail/page.html"),
            (SCRIPT, "/opt/handler.wsgi"),
        ]);
        relocate(Path::new("/srv/jail"), &mut v, SCRIPT).unwrap();
        assert_eq!(v.get(SCRIPT), Some(&b"/opt/handler.wsgi"[..]));
        assert_eq!(v.get("SCRIPT_FILENAME"), Some(&b"/page.html"[..]));
    }
}
