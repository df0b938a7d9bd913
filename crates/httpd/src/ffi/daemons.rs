//! Daemon processes, from Apache's parent: their sockets, forking them, restarting the ones that die,
//! and stopping a generation's when Apache restarts or stops.
//!
//! Apache's parent never runs Python. In `post_config` (the real pass, not the dry run before it) it
//! makes each group's listening socket, publishes the groups for the children it is about to fork, and
//! forks each group's processes (on the first start from the last `pre_mpm` hook instead, once Apache
//! has made the scoreboard the daemons show through `mod_wsgi.server_metrics()`); each new process leaves Apache's code at once for
//! [`crate::daemon::process::run`] and never returns. APR's "other child" registry tells the parent when
//! one dies (it starts another in its slot) and forgets them with the configuration pool; that pool's
//! cleanup asks the generation's daemons to stop.
//!
//! A socket outlives generations while its group keeps its name, number and user: on a graceful
//! restart the old daemons stop taking connections and the new ones take them from the same socket,
//! so nothing queued there is lost. Apache unloads and reloads this library on every restart, which
//! resets its statics, so the sockets' descriptors are also noted in the process pool's user data,
//! which lives as long as Apache does, and taken back from there after a reload.

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::bindings as sys;
use super::{log_server, Level, Server};
use crate::daemon::{self, GroupPlan, Plan};

/// The parent's view of its daemons.
struct Parent {
    pid: u32,
    /// Every group socket, by path, kept across generations.
    sockets: HashMap<PathBuf, UnixListener>,
    generation: Option<Generation>,
}

/// This configuration's daemons.
struct Generation {
    pconf: *mut sys::apr_pool_t,
    server: *mut sys::server_rec,
    plan: Arc<Plan>,
    /// Boxed: APR holds a pointer to each slot's `apr_proc_t`, and the slot's address is the
    /// registration's key, so a slot must not move when the vector does.
    #[allow(clippy::vec_box)]
    slots: Vec<Box<Slot>>,
}

// SAFETY: the raw pointers are Apache's configuration pool and main server, which live as long as the
// generation; the parent is single-threaded, and the mutex only satisfies the static's requirements.
unsafe impl Send for Parent {}

/// One daemon process of a group.
struct Slot {
    group: usize,
    process: sys::apr_proc_t,
    started: Option<Instant>,
}

static PARENT: Mutex<Option<Parent>> = Mutex::new(None);

/// `post_config`: starts this configuration's daemon groups. An error stops Apache's start-up.
///
/// # Safety
/// Called from Apache's parent in `post_config` with its live configuration pool and main server.
pub(super) unsafe fn start(
    pconf: *mut sys::apr_pool_t,
    server: *mut sys::server_rec,
) -> Result<(), String> {
    // SAFETY: a plain query of Apache's state.
    let state = unsafe { sys::ap_state_query(sys::AP_SQ_MAIN_STATE as c_int) };
    if state == sys::AP_SQ_MS_CREATE_PRE_CONFIG as c_int {
        // The dry run before Apache detaches: no processes yet.
        return Ok(());
    }
    // SAFETY: the main server is live for the configuration's life (caller's contract).
    let Some(main) = (unsafe { Server::from_raw(server) }) else {
        return Ok(());
    };
    let groups = collect_groups(&main)?;
    // SAFETY: mod_unixd's record, filled in from `User`/`Group` before post_config.
    let (apache_uid, apache_gid) =
        unsafe { (sys::ap_unixd_config.user_id, sys::ap_unixd_config.group_id) };
    // SAFETY: the main server is live.
    let apache_timeout =
        Duration::from_micros(u64::try_from(unsafe { (*server).timeout }).unwrap_or(0));
    // SAFETY: the pool is live.
    let prefix = unsafe { socket_prefix(pconf, &main) };
    let pid = std::process::id();
    // SAFETY: the main server's process record and its pool live as long as Apache.
    let process_pool = unsafe { (*(*server).process).pool };
    // SAFETY: the process pool is live; its notes were written by an earlier load of this library.
    let secrets = unsafe { remembered_secrets(process_pool) };
    let mut plan = Plan::new();
    for group in groups {
        let secret = match secrets.get(&group.name).cloned() {
            Some(secret) => secret,
            None => daemon::origin::Secret::generate().map_err(|err| {
                format!("mod_wsgi: cannot make a secret for daemon groups: {err}")
            })?,
        };
        let (uid, gid, supplementary) = daemon::resolve_identity(&group, apache_uid, apache_gid)?;
        let socket = PathBuf::from(format!(
            "{}.{pid}.u{uid}.{}.sock",
            prefix.display(),
            group.id
        ));
        plan.push(Arc::new(GroupPlan {
            group,
            uid,
            gid,
            groups: supplementary,
            socket,
            apache_timeout,
            secret,
        }));
    }
    for secret in secrets.values() {
        secret.wipe();
    }
    // SAFETY: as above.
    unsafe { remember_secrets(process_pool, &plan) };
    let mut parent = PARENT.lock().unwrap_or_else(|p| p.into_inner());
    let parent = parent.get_or_insert_with(|| Parent {
        pid,
        // SAFETY: the process pool is live; its notes were written by an earlier load of this library.
        sockets: unsafe { remembered_sockets(process_pool) },
        generation: None,
    });
    keep_sockets(parent, &plan, apache_uid)?;
    // SAFETY: as above.
    unsafe { remember_sockets(process_pool, &parent.sockets) };
    daemon::publish(plan.clone());
    let plan = Arc::new(plan);
    let slots = plan
        .iter()
        .enumerate()
        .flat_map(|(group, p)| (0..p.group.processes).map(move |_| group))
        .map(|group| {
            Box::new(Slot {
                group,
                process: sys::apr_proc_t::default(),
                started: None,
            })
        })
        .collect();
    parent.generation = Some(Generation {
        pconf,
        server,
        plan,
        slots,
    });
    let Parent {
        sockets,
        generation: Some(generation),
        ..
    } = parent
    else {
        return Ok(());
    };
    // SAFETY: a plain query of Apache's state.
    if unsafe { sys::ap_exists_scoreboard_image() } == 0 {
        // The first start: Apache makes its scoreboard after this hook, and a daemon forked now would never
        // see it (`mod_wsgi.server_metrics()`). As mod_wsgi does, they are forked from the last `pre_mpm`
        // hook, which runs once the scoreboard exists. On a restart the scoreboard is kept: they start now.
        // SAFETY: registers a function of this library, which stays loaded until the hooks are cleared.
        unsafe {
            sys::ap_hook_pre_mpm(
                Some(start_deferred),
                std::ptr::null(),
                std::ptr::null(),
                sys::APR_HOOK_REALLY_LAST as c_int,
            )
        };
    } else {
        for index in 0..generation.slots.len() {
            // SAFETY: the generation's pool and server are live; the parent is single-threaded.
            unsafe { spawn(generation, index, sockets) };
        }
    }
    // SAFETY: the pool is live; the cleanup runs when it is cleared (restart) or destroyed (stop).
    unsafe {
        sys::apr_pool_cleanup_register(
            pconf,
            std::ptr::null_mut(),
            Some(stop_generation),
            Some(sys::apr_pool_cleanup_null),
        );
    }
    Ok(())
}

/// `pre_mpm`, on Apache's first start: forks the daemons of the generation [`start`] prepared.
unsafe extern "C" fn start_deferred(
    _pool: *mut sys::apr_pool_t,
    _scoreboard: sys::ap_scoreboard_e,
) -> c_int {
    // A panic must not unwind into Apache.
    let _ = std::panic::catch_unwind(|| {
        let mut parent = PARENT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(Parent {
            sockets,
            generation: Some(generation),
            ..
        }) = parent.as_mut()
        {
            for index in 0..generation.slots.len() {
                // SAFETY: the generation's pool and server are live; the parent is single-threaded.
                unsafe { spawn(generation, index, sockets) };
            }
        }
    });
    sys::OK as c_int
}

/// Every server's groups, numbered; a name may be used once in the whole configuration.
fn collect_groups(main: &Server<'_>) -> Result<Vec<daemon::DaemonGroup>, String> {
    let mut groups: Vec<daemon::DaemonGroup> = Vec::new();
    for (index, server) in main.with_own_configs().into_iter().enumerate() {
        // The first is the main server itself.
        let virtual_host = (index > 0).then(|| daemon::options::VirtualHostScope {
            config: server.config_id(),
            server_name: server.hostname().to_owned(),
        });
        for group in &server.config().daemons {
            if groups.iter().any(|g| g.name == group.name) {
                return Err(format!(
                    "WSGIDaemonProcess: name '{}' duplicates a previous WSGI daemon definition.",
                    group.name
                ));
            }
            let mut group = group.clone();
            group.id = groups.len() + 1;
            group.virtual_host = virtual_host.clone();
            groups.push(group);
        }
    }
    Ok(groups)
}

/// `WSGISocketPrefix` (relative to ServerRoot), or `wsgi` in Apache's runtime directory.
///
/// # Safety
/// `pconf` is live.
unsafe fn socket_prefix(pconf: *mut sys::apr_pool_t, main: &Server<'_>) -> PathBuf {
    use std::os::unix::ffi::OsStrExt as _;
    let relative = |path: *const std::ffi::c_char| {
        // SAFETY: Apache returns a pool string or null.
        unsafe { super::opt_bytes(path) }.map(|b| PathBuf::from(std::ffi::OsStr::from_bytes(b)))
    };
    match &main.config().socket_prefix {
        Some(prefix) => {
            let c = super::c_string(&prefix.to_string_lossy());
            // SAFETY: the pool is live and the name NUL-terminated.
            relative(unsafe { sys::ap_server_root_relative(pconf, c.as_ptr()) })
                .unwrap_or_else(|| prefix.clone())
        }
        // SAFETY: as above.
        None => relative(unsafe { sys::ap_runtime_dir_relative(pconf, c"wsgi".as_ptr()) })
            .unwrap_or_else(|| PathBuf::from("/var/run/apache2/wsgi")),
    }
}

/// The process pool's note of each group's secret: `HEX NAME` lines. A group keeps its secret across
/// restarts, so that a child of the last generation, finishing a request, still reaches its group's new
/// daemons (which take connections from the same socket).
const SECRETS_NOTE: &std::ffi::CStr = c"rwsgi:mod_wsgi:daemon-secrets";

/// Calls `with` on the note of the secrets, if an earlier load of this library wrote one.
///
/// # Safety
/// `pool` is Apache's live process pool.
unsafe fn with_secrets_note<T>(
    pool: *mut sys::apr_pool_t,
    with: impl FnOnce(&mut [u8]) -> T,
) -> Option<T> {
    let mut note: *mut c_void = std::ptr::null_mut();
    // SAFETY: reads the pool's note, a NUL-terminated pool string if present, which lives as long as
    // the pool (all of Apache's life), which only this library reads or writes, and which the parent
    // (single-threaded here) lends out for this call only.
    let note = unsafe {
        sys::apr_pool_userdata_get(&mut note, SECRETS_NOTE.as_ptr(), pool);
        if note.is_null() {
            return None;
        }
        let len = libc::strlen(note.cast());
        std::slice::from_raw_parts_mut(note.cast::<u8>(), len)
    };
    Some(with(note))
}

/// The secrets an earlier load of this library gave its groups, by group name.
///
/// # Safety
/// `pool` is Apache's live process pool.
unsafe fn remembered_secrets(
    pool: *mut sys::apr_pool_t,
) -> HashMap<String, daemon::origin::Secret> {
    let parse = |note: &mut [u8]| {
        std::str::from_utf8(note)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (hex, name) = line.split_once(' ')?;
                Some((name.to_owned(), daemon::origin::Secret::from_hex(hex)?))
            })
            .collect()
    };
    // SAFETY: the caller's contract.
    unsafe { with_secrets_note(pool, parse) }.unwrap_or_default()
}

/// Notes the plan's secrets where the next load of this library finds them, and blanks the last note.
///
/// # Safety
/// `pool` is Apache's live process pool.
unsafe fn remember_secrets(pool: *mut sys::apr_pool_t, plan: &Plan) {
    // SAFETY: the caller's contract.
    unsafe { forget_secrets_note(pool) };
    // Sized once and written in place: a grown buffer would leave copies of the secrets behind.
    let size = plan.iter().map(|p| 34 + p.group.name.len()).sum();
    let mut note: Vec<u8> = Vec::with_capacity(size);
    for group in plan {
        let mut hex = group.secret.to_hex().into_bytes();
        note.extend_from_slice(&hex);
        hex.fill(0);
        note.push(b' ');
        note.extend_from_slice(group.group.name.as_bytes());
        note.push(b'\n');
    }
    // SAFETY: the copy is the pool's, so it outlives this library; APR copies the key (this library's
    // static string goes when Apache unloads it at a restart).
    unsafe {
        let copy = super::pool_str(pool, &note);
        sys::apr_pool_userdata_set(copy.cast(), SECRETS_NOTE.as_ptr(), None, pool);
    }
    note.fill(0);
}

/// Blanks the note of the secrets in this process's memory (a daemon keeps only its own group's).
///
/// # Safety
/// `pool` is Apache's live process pool.
unsafe fn forget_secrets_note(pool: *mut sys::apr_pool_t) {
    // SAFETY: the caller's contract.
    unsafe { with_secrets_note(pool, |note| note.fill(b' ')) };
}

/// The process pool's note of the group sockets: `FD PATH` lines.
const SOCKETS_NOTE: &std::ffi::CStr = c"rwsgi:mod_wsgi:daemon-sockets";

/// Notes the sockets' descriptors where the next load of this library finds them.
///
/// # Safety
/// `pool` is Apache's live process pool.
unsafe fn remember_sockets(pool: *mut sys::apr_pool_t, sockets: &HashMap<PathBuf, UnixListener>) {
    let note: String = sockets
        .iter()
        .map(|(path, listener)| format!("{} {}\n", listener.as_raw_fd(), path.display()))
        .collect();
    // SAFETY: the copy is the pool's, so it outlives this library; APR copies the key (this library's
    // static string goes when Apache unloads it at a restart).
    unsafe {
        let copy = super::pool_str(pool, note.as_bytes());
        sys::apr_pool_userdata_set(copy.cast(), SOCKETS_NOTE.as_ptr(), None, pool);
    }
}

/// The sockets an earlier load of this library made, still open in this process. A descriptor is
/// taken only if it is a socket listening at the noted path.
///
/// # Safety
/// `pool` is Apache's live process pool.
unsafe fn remembered_sockets(pool: *mut sys::apr_pool_t) -> HashMap<PathBuf, UnixListener> {
    let mut note: *mut c_void = std::ptr::null_mut();
    // SAFETY: reads the pool's note, a NUL-terminated pool string if present.
    let text = unsafe {
        sys::apr_pool_userdata_get(&mut note, SOCKETS_NOTE.as_ptr(), pool);
        super::opt_str(note.cast())
    };
    let mut sockets = HashMap::new();
    for line in text.unwrap_or_default().lines() {
        let Some((fd, path)) = line.split_once(' ') else {
            continue;
        };
        let Ok(fd) = fd.parse::<c_int>() else {
            continue;
        };
        // SAFETY: probing a descriptor number; a closed one answers -1.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            continue;
        }
        // SAFETY: the descriptor is open and was this library's socket; it is checked before it is kept.
        let listener = UnixListener::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let bound = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_owned));
        if bound.as_deref() == Some(Path::new(path)) {
            sockets.insert(PathBuf::from(path), listener);
        } else {
            // Not ours (the number was reused): leave it open for whoever owns it.
            std::mem::forget(listener);
        }
    }
    sockets
}

/// Makes the sockets this plan needs (keeping those it shares with the last generation) and closes
/// and removes the others.
fn keep_sockets(parent: &mut Parent, plan: &Plan, apache_uid: u32) -> Result<(), String> {
    let wanted: Vec<&Path> = plan.iter().map(|p| p.socket.as_path()).collect();
    parent.sockets.retain(|path, _| {
        let keep = wanted.contains(&path.as_path());
        if !keep {
            let _ = std::fs::remove_file(path);
        }
        keep
    });
    for group in plan {
        if parent.sockets.contains_key(&group.socket) {
            continue;
        }
        let owner = daemon::socket_owner(&group.group, apache_uid)?;
        let listener = listen(&group.socket, &group.group, owner).map_err(|err| {
            format!(
                "mod_wsgi: cannot create the socket '{}' of WSGI daemon process '{}': {err}",
                group.socket.display(),
                group.group.name
            )
        })?;
        parent.sockets.insert(group.socket.clone(), listener);
    }
    Ok(())
}

fn listen(path: &Path, group: &daemon::DaemonGroup, owner: u32) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    // A socket left by an Apache that did not stop cleanly.
    let _ = std::fs::remove_file(path);
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    // `send-buffer-size`/`receive-buffer-size`: accepted connections inherit them.
    if let Some(size) = group.send_buffer_size {
        socket.set_send_buffer_size(size)?;
    }
    if let Some(size) = group.receive_buffer_size {
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    socket.listen(i32::try_from(group.listen_backlog).unwrap_or(i32::MAX))?;
    // Only Apache's children (running as `User`, or `socket-user`) may connect.
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(owner)), None)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(socket.into())
}

/// Forks the daemon for slot `index`; in the new process, runs it and exits.
///
/// # Safety
/// Apache's parent, single-threaded, with the generation's pool and server live.
unsafe fn spawn(
    generation: &mut Generation,
    index: usize,
    sockets: &HashMap<PathBuf, UnixListener>,
) {
    let plan = &generation.plan;
    let slot = &mut generation.slots[index];
    let group_plan = &plan[slot.group];
    let Some(listener) = sockets.get(&group_plan.socket) else {
        return;
    };
    let backoff = slot
        .started
        .is_some_and(|at| at.elapsed() < Duration::from_secs(1));
    slot.started = Some(Instant::now());
    // SAFETY: the pool is live; the slot's `apr_proc_t` is boxed and outlives the registration.
    let status = unsafe { sys::apr_proc_fork(&mut slot.process, generation.pconf) };
    match status as u32 {
        sys::APR_INCHILD => {
            // A daemon must not hold the other groups' sockets: its application could accept their
            // requests. This process never drops `sockets` (it ends in `_exit`), so closing here is final.
            for (path, other) in sockets {
                if path != &group_plan.socket {
                    // SAFETY: the descriptor is this process's inherited copy, used by nothing here.
                    unsafe { libc::close(other.as_raw_fd()) };
                }
            }
            // SAFETY: the new process is single-threaded and about to leave Apache for good.
            unsafe { become_daemon(group_plan, listener.as_raw_fd(), generation.server, backoff) }
        }
        sys::APR_INPARENT => {
            let data = std::ptr::from_mut::<Slot>(slot).cast::<c_void>();
            // SAFETY: the slot is boxed and lives in the generation until the pool's cleanup, when
            // APR drops the registration itself.
            unsafe {
                sys::apr_proc_other_child_register(
                    &mut slot.process,
                    Some(maintain),
                    data,
                    std::ptr::null_mut(),
                    generation.pconf,
                )
            };
        }
        _ => log_server(
            None,
            Level::Error,
            &format!(
                "mod_wsgi (pid={}): Couldn't spawn process '{}' (status {status}).",
                std::process::id(),
                group_plan.group.name
            ),
        ),
    }
}

/// The new daemon process: leaves Apache's signal handling and listeners behind, takes its display
/// name and priority, runs, and exits without returning into Apache.
///
/// # Safety
/// Called once, in the child of `apr_proc_fork`, single-threaded; `server` is the live main server.
unsafe fn become_daemon(
    plan: &GroupPlan,
    listener_fd: c_int,
    server: *mut sys::server_rec,
    backoff: bool,
) -> ! {
    // SAFETY: restoring default dispositions and an empty mask in a single-threaded process.
    unsafe {
        for signal in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGWINCH,
            libc::SIGCHLD,
        ] {
            libc::signal(signal, libc::SIG_DFL);
        }
        // Writes to a closed connection must fail, not kill the daemon.
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let mut empty = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        sys::ap_close_listeners();
    }
    // SAFETY: the main server and its process record live for the whole process.
    unsafe { set_display_name(plan, server) };
    if plan.group.cpu_priority != 0 {
        // SAFETY: a plain system call on this process.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, plan.group.cpu_priority) };
    }
    // SAFETY: the parent's listening socket, inherited: duplicated so this process owns its copy.
    let fd = unsafe { libc::dup(listener_fd) };
    if fd < 0 {
        // SAFETY: ends this forked process without returning into Apache.
        unsafe { libc::_exit(1) };
    }
    // SAFETY: `fd` was just duplicated and is owned by nothing else.
    let listener = UnixListener::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // SAFETY: the main server's process record and its pool live for the whole process.
    unsafe { forget_secrets_note((*(*server).process).pool) };
    // SAFETY: the main server lives for the whole process.
    let code = match unsafe { Server::from_raw(server) } {
        Some(server) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            daemon::process::run(daemon::process::Start {
                plan: plan.clone(),
                listener,
                server,
                backoff,
            })
        }))
        .unwrap_or(70),
        None => 1,
    };
    // SAFETY: ends the process without running Apache's exit handlers, which belong to the parent.
    unsafe { libc::_exit(code) }
}

/// `display-name`: what `ps` shows for the daemon (`%{GROUP}` is `(wsgi:NAME)`), written over the
/// process's argument area as mod_wsgi does, and as the thread name `top` shows.
///
/// # Safety
/// Single-threaded; `server` is the live main server.
unsafe fn set_display_name(plan: &GroupPlan, server: *mut sys::server_rec) {
    let Some(name) = &plan.group.display_name else {
        return;
    };
    let name = if name == "%{GROUP}" {
        format!("(wsgi:{})", plan.group.name)
    } else {
        name.clone()
    };
    if let Ok(short) =
        std::ffi::CString::new(name.as_bytes().iter().take(15).copied().collect::<Vec<_>>())
    {
        let _ = nix::sys::prctl::set_name(&short);
    }
    // SAFETY: the process record and its argv are Apache's, live for the process; the arguments are
    // laid out one after another, so the area from the first to the end of the last is writable.
    unsafe {
        let process = (*server).process;
        if process.is_null() || (*process).argc < 1 || (*process).argv.is_null() {
            return;
        }
        let argv = (*process).argv;
        let first = *argv;
        let last = *argv.add(((*process).argc - 1) as usize);
        if first.is_null() || last.is_null() {
            return;
        }
        let end = last.add(libc::strlen(last));
        let area = usize::try_from(end.offset_from(first)).unwrap_or(0);
        if area == 0 {
            return;
        }
        let bytes = name.as_bytes();
        let n = bytes.len().min(area);
        let target = first.cast_mut().cast::<u8>();
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), target, n);
        std::ptr::write_bytes(target.add(n), 0, area + 1 - n);
    }
}

/// APR's callback for a registered daemon: one that died is started again, unless Apache is stopping.
unsafe extern "C" fn maintain(reason: c_int, data: *mut c_void, _status: c_int) {
    let reason = reason as u32;
    if reason != sys::APR_OC_REASON_DEATH && reason != sys::APR_OC_REASON_LOST {
        return;
    }
    // SAFETY: `data` is the registration's key, which APR is done with once the process is gone.
    unsafe { sys::apr_proc_other_child_unregister(data) };
    let mut mpm_state: c_int = 0;
    // SAFETY: a plain query of the MPM's state.
    unsafe { sys::ap_mpm_query(sys::AP_MPMQ_MPM_STATE as c_int, &mut mpm_state) };
    if mpm_state == sys::AP_MPMQ_STOPPING as c_int {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        let mut parent = PARENT.lock().unwrap_or_else(|p| p.into_inner());
        let Some(Parent {
            sockets,
            generation: Some(generation),
            ..
        }) = parent.as_mut()
        else {
            return;
        };
        let Some(index) = generation
            .slots
            .iter()
            .position(|slot| std::ptr::eq(&**slot, data.cast::<Slot>()))
        else {
            return;
        };
        let slot = &generation.slots[index];
        // SAFETY: the generation's main server is live.
        let server = unsafe { Server::from_raw(generation.server) };
        log_server(
            server.as_ref(),
            Level::Info,
            &format!(
                "mod_wsgi (pid={}): Process '{}' has died, deregister and restart it.",
                slot.process.pid, generation.plan[slot.group].group.name
            ),
        );
        // SAFETY: Apache's parent, single-threaded; the generation's pool and server are live.
        unsafe { spawn(generation, index, sockets) };
    });
}

/// The configuration pool's cleanup: the generation's daemons are asked to stop (Apache restarts or
/// stops); a restart's `post_config` starts the next generation's.
unsafe extern "C" fn stop_generation(_data: *mut c_void) -> sys::apr_status_t {
    let _ = std::panic::catch_unwind(|| {
        let mut parent = PARENT.lock().unwrap_or_else(|p| p.into_inner());
        let Some(parent) = parent.as_mut() else {
            return;
        };
        // Apache's children share the pool's cleanups but not its daemons.
        if parent.pid != std::process::id() {
            return;
        }
        // SAFETY: a plain query of Apache's state.
        let state = unsafe { sys::ap_state_query(sys::AP_SQ_MAIN_STATE as c_int) };
        if state == sys::AP_SQ_MS_EXITING as c_int {
            // Apache is stopping, not restarting: no generation will use the sockets again.
            for path in parent.sockets.keys() {
                let _ = std::fs::remove_file(path);
            }
            parent.sockets.clear();
        }
        let Some(generation) = parent.generation.take() else {
            return;
        };
        // The next generation takes its secrets from the note; the copies here and in the published plan
        // (which outlives this library) must not be left for its daemons to inherit.
        for group in generation.plan.iter() {
            group.secret.wipe();
        }
        daemon::unpublish();
        for slot in &generation.slots {
            if slot.process.pid > 0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(slot.process.pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
    });
    0
}

/// In a new Apache child: the group sockets it inherited from the parent are the daemons' to accept on,
/// not its own; it connects by path. Closing them keeps the child's descriptors to what it uses.
pub(super) fn close_in_child() {
    let mut parent = PARENT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(parent) = parent.as_mut() {
        parent.sockets.clear();
    }
}
