//! `script-user` and `script-group`: a daemon group that names one serves only WSGI scripts owned by that
//! user (or group), in a directory owned by the same, that no one else may write to. mod_wsgi makes the
//! check in the Apache child before it hands a request over, and answers a script that fails it with 403;
//! so do we, with its log messages.
//!
//! It reads only the file system and the user and group databases; the caller logs and answers.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

/// Who must own a group's scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Required<'a> {
    /// `script-user=NAME`: the script and its directory owned by NAME; neither writable by its group nor by
    /// the world.
    User(&'a str),
    /// `script-group=NAME`: the script and its directory of group NAME; neither writable by the world.
    Group(&'a str),
}

const GROUP_WRITE: u32 = 0o020;
const WORLD_WRITE: u32 = 0o002;

/// Whether `script` (the request's file) satisfies `required`; the error is mod_wsgi's message.
pub(crate) fn check(script: &Path, required: Required<'_>) -> Result<(), String> {
    let (missing, what) = match required {
        Required::User(_) => ("User", "owner"),
        Required::Group(_) => ("Group", "group"),
    };
    let file = std::fs::metadata(script)
        .map_err(|_| format!("{missing} information not available for WSGI script file."))?;
    let owner = owner_name(&file, required)
        .map_err(|id| format!("Unable to determine {what} of WSGI script file from {id}."))?;
    if !matches(&owner, required) {
        return Err(match required {
            Required::User(_) => format!(
                "WSGI script file owner '{owner}' does not match user required for daemon process."
            ),
            Required::Group(_) => format!(
                "WSGI script file group '{owner}' does not match group required for daemon process."
            ),
        });
    }
    if matches!(required, Required::User(_)) && file.mode() & GROUP_WRITE != 0 {
        return Err("WSGI script file is writable to group.".into());
    }
    if file.mode() & WORLD_WRITE != 0 {
        return Err("WSGI script file is writable to world.".into());
    }

    // mod_wsgi names the directory as Apache writes it, with its trailing slash.
    let parent = script.parent().unwrap_or(Path::new("/"));
    let shown = format!("{}/", parent.display()).replace("//", "/");
    let dir = std::fs::metadata(parent)
        .map_err(|_| format!("Unable to stat parent directory '{shown}' of WSGI script."))?;
    let owner = owner_name(&dir, required).map_err(|id| {
        format!("Unable to determine {what} of parent directory of WSGI script file from {id}.")
    })?;
    if !matches(&owner, required) {
        return Err(match required {
            Required::User(_) => format!(
                "Parent directory of WSGI script file has owner '{owner}' which does not match user \
                 required for daemon process."
            ),
            Required::Group(_) => format!(
                "Parent directory of WSGI script file has group '{owner}' which does not match group \
                 required for daemon process."
            ),
        });
    }
    if dir.mode() & WORLD_WRITE != 0 {
        return Err("Parent directory of WSGI script file is writable to world.".into());
    }
    if matches!(required, Required::User(_)) && dir.mode() & GROUP_WRITE != 0 {
        return Err("Parent directory of WSGI script file is writable to group.".into());
    }
    Ok(())
}

/// The name of the file's owner (or group, as `required` asks); the error shows the id that has none.
fn owner_name(file: &std::fs::Metadata, required: Required<'_>) -> Result<String, String> {
    match required {
        Required::User(_) => match User::from_uid(Uid::from_raw(file.uid())) {
            Ok(Some(user)) => Ok(user.name),
            _ => Err(format!("uid {}", file.uid())),
        },
        Required::Group(_) => match Group::from_gid(Gid::from_raw(file.gid())) {
            Ok(Some(group)) => Ok(group.name),
            _ => Err(format!("gid {}", file.gid())),
        },
    }
}

/// mod_wsgi compares names, as given: `#0` never matches.
fn matches(name: &str, required: Required<'_>) -> bool {
    match required {
        Required::User(wanted) | Required::Group(wanted) => name == wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A directory of its own holding `app.wsgi`, with the given modes, owned by whoever runs the tests.
    fn script(dir_mode: u32, file_mode: u32) -> (tempdir::Dir, std::path::PathBuf) {
        let dir = tempdir::Dir::new();
        let file = dir.path().join("app.wsgi");
        std::fs::write(&file, "application = None\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(file_mode)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(dir_mode)).unwrap();
        (dir, file)
    }

    fn me() -> (String, String) {
        let user = User::from_uid(Uid::current()).unwrap().unwrap().name;
        let group = Group::from_gid(Gid::current()).unwrap().unwrap().name;
        (user, group)
    }

    #[test]
    fn a_script_of_the_required_owner_that_no_one_else_may_write_passes() {
        let (user, group) = me();
        let (_dir, file) = script(0o755, 0o644);
        assert_eq!(check(&file, Required::User(&user)), Ok(()));
        assert_eq!(check(&file, Required::Group(&group)), Ok(()));
    }

    #[test]
    fn another_owner_is_refused_by_name() {
        let (_dir, file) = script(0o755, 0o644);
        assert_eq!(
            check(&file, Required::User("nobody-such-user")),
            Err(format!(
                "WSGI script file owner '{}' does not match user required for daemon process.",
                me().0
            ))
        );
        assert_eq!(
            check(&file, Required::Group("nobody-such-group")),
            Err(format!(
                "WSGI script file group '{}' does not match group required for daemon process.",
                me().1
            ))
        );
        assert!(check(&file, Required::User(&format!("#{}", Uid::current()))).is_err());
    }

    #[test]
    fn group_write_refuses_a_script_user_but_not_a_script_group() {
        let (user, group) = me();
        let (_dir, file) = script(0o755, 0o664);
        assert_eq!(
            check(&file, Required::User(&user)),
            Err("WSGI script file is writable to group.".into())
        );
        assert_eq!(check(&file, Required::Group(&group)), Ok(()));
        let (_dir, file) = script(0o775, 0o644);
        assert_eq!(
            check(&file, Required::User(&user)),
            Err("Parent directory of WSGI script file is writable to group.".into())
        );
        assert_eq!(check(&file, Required::Group(&group)), Ok(()));
    }

    #[test]
    fn world_write_refuses_both() {
        let (user, group) = me();
        let (_dir, file) = script(0o755, 0o646);
        for required in [Required::User(&user), Required::Group(&group)] {
            assert_eq!(
                check(&file, required),
                Err("WSGI script file is writable to world.".into())
            );
        }
        let (_dir, file) = script(0o757, 0o644);
        for required in [Required::User(&user), Required::Group(&group)] {
            assert_eq!(
                check(&file, required),
                Err("Parent directory of WSGI script file is writable to world.".into())
            );
        }
    }

    #[test]
    fn a_missing_script_is_refused() {
        let (user, _) = me();
        assert_eq!(
            check(Path::new("/nonexistent/app.wsgi"), Required::User(&user)),
            Err("User information not available for WSGI script file.".into())
        );
    }

    /// A directory removed when dropped (std has none, and one test helper does not need a crate).
    mod tempdir {
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicUsize, Ordering};

        pub(super) struct Dir(PathBuf);

        impl Dir {
            pub(super) fn new() -> Self {
                static SERIAL: AtomicUsize = AtomicUsize::new(0);
                let path = std::env::temp_dir().join(format!(
                    "rwsgi-script-owner-{}-{}",
                    std::process::id(),
                    SERIAL.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Self(path)
            }

            pub(super) fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
