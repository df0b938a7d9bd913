//! One daemon process, from just after Apache's parent forked it to its exit: it takes on the group's
//! identity and limits, starts Python, serves the group's socket with `rwsgi serve`'s thread pool, and
//! stops when told to or when one of its limits retires it (Apache's parent then starts another).
//!
//! Signals: SIGTERM, SIGINT and SIGHUP stop it (in-flight requests get `shutdown-timeout`); SIGUSR1,
//! Apache's graceful restart, and the limits (maximum-requests, restart-interval, inactivity-timeout,
//! request-timeout) stop it gracefully (in-flight requests get `graceful-timeout`, or
//! `eviction-timeout` for SIGUSR1). Either way it stops taking connections at once: they wait in the
//! shared socket's backlog for the group's other or next processes, so none is refused.

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use nix::sys::signal::{SigSet, Signal};
use rwsgi_engine::{
    hints, BodyChunk, BodyReader, CgiVars, ClientGone, Outcome, Output, Request, RequestSource,
    ResponseHead, ResponseSink, TrySendError,
};
use rwsgi_pool::{Names, Pool, PoolOptions, Recycle};

use super::wire::{self, Kind};
use super::GroupPlan;
use super::{chroot, origin};
use crate::ffi::Server;
use crate::python::{self, AppKey};

/// How the log names a daemon process and its options.
const NAMES: Names = Names {
    log: "mod_wsgi",
    process: "daemon process",
    max_requests: "maximum-requests",
    request_timeout: "request-timeout",
    interrupt_timeout: "interrupt-timeout",
    inactivity_timeout: "inactivity-timeout",
    restart_interval: "restart-interval",
};

/// The private environ keys that carry a request's route from the Apache child.
pub(crate) const SCRIPT_KEY: &str = "mod_wsgi.x-script";
const RELOADING_KEY: &str = "mod_wsgi.x-script_reloading";

/// The signals that stop a daemon, taken synchronously by its main thread.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(signal);
    }
    set
}

/// The signal a limit sends its own process to retire it gracefully.
const RETIRE: Signal = Signal::SIGUSR2;

/// What a new daemon process is given by Apache's parent.
pub(crate) struct Start<'a> {
    pub(crate) plan: GroupPlan,
    pub(crate) listener: UnixListener,
    pub(crate) server: Server<'a>,
    /// The parent restarted this slot less than a second after its previous start.
    pub(crate) backoff: bool,
}

/// Runs the daemon process; the answer is its exit status.
pub(crate) fn run(start: Start<'_>) -> i32 {
    let name = start.plan.group.name.clone();
    match serve(start) {
        Ok(()) => 0,
        Err(err) => {
            log(&format!("Daemon process '{name}' stopping: {err}"));
            1
        }
    }
}

fn log(message: &str) {
    log_at(crate::ffi::Level::Error, message);
}

fn log_at(level: crate::ffi::Level, message: &str) {
    crate::ffi::log_server(
        None,
        level,
        &format!("mod_wsgi (pid={}): {message}", std::process::id()),
    );
}

fn serve(start: Start<'_>) -> Result<(), String> {
    let Start {
        plan,
        listener,
        server,
        backoff,
    } = start;
    let group = &plan.group;
    // Every thread started from here on inherits the mask, so only `wait_for_stop` sees these signals.
    stop_signals()
        .thread_block()
        .map_err(|err| format!("cannot block signals: {err}"))?;
    crate::daemon::forget_other_secrets(&plan);
    if group.server_metrics {
        rwsgi_engine::show_scoreboard(crate::ffi::scoreboard::snapshot);
    }
    become_identity(&plan)?;
    if backoff {
        // A process that keeps dying at start-up must not spin: it was restarted within a second.
        std::thread::sleep(Duration::from_secs(1));
    }
    log_at(
        crate::ffi::Level::Info,
        &format!(
            "Starting process '{}' with uid={}, gid={} and threads={}.",
            group.name, plan.uid, plan.gid, group.threads
        ),
    );
    python::daemon_init(&server, group)?;
    let accepting = Arc::new(AtomicBool::new(true));
    let retire: Arc<dyn Fn() + Send + Sync> = {
        let accepting = Arc::clone(&accepting);
        Arc::new(move || {
            // Stop taking connections now: the signal reaches the main thread a moment later (under
            // load, after more requests than a limit allows).
            accepting.store(false, Ordering::Release);
            // To the process, not this thread (as `raise` would): only the main thread takes the signal.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), RETIRE);
        })
    };
    let pool = Pool::start(
        PoolOptions {
            threads: group.threads.max(1),
            stack_size: group.stack_size,
            recycle: (group.maximum_requests > 0).then(|| Recycle {
                after: group.maximum_requests,
                notify: Arc::clone(&retire),
            }),
            queue_timeout: group.queue_timeout,
            expired: answer_gateway_timeout,
            names: NAMES,
            inline: false,
        },
        Arc::new(serve_requests),
    )
    .map_err(|err| format!("cannot start threads: {err}"))?;
    start_limits(&plan, &pool, &retire)?;
    let acceptor = {
        let (accepting, submitter, plan) = (Arc::clone(&accepting), pool.submitter(), plan.clone());
        std::thread::Builder::new()
            .name("mod_wsgi-accept".into())
            .spawn(move || accept_loop(&listener, &plan, &submitter, &accepting))
            .map_err(|err| format!("cannot start the accept thread: {err}"))?
    };
    let graceful = wait_for_stop();
    accepting.store(false, Ordering::Release);
    let _ = acceptor.join();
    let wait = if graceful {
        group.eviction_wait().max(group.shutdown_timeout)
    } else {
        group.shutdown_timeout
    };
    // The hard stop: whatever still runs when the wait is over (a stuck request, a slow atexit hook)
    // does not keep the process, and the group's socket, from its successor.
    let monitor = pool.monitor();
    std::thread::Builder::new()
        .name("mod_wsgi-reaper".into())
        .spawn(move || {
            std::thread::sleep(wait);
            let unfinished = rwsgi_pool::unfinished_work(&monitor, Duration::from_secs(1));
            log("Aborting process: shutdown timeout reached. Still unfinished:");
            // Apache escapes a newline inside a message: one log line each.
            unfinished.lines().for_each(log);
            std::process::exit(1);
        })
        .map_err(|err| format!("cannot start the shutdown timer: {err}"))?;
    pool.shut_down();
    python::child_exit();
    Ok(())
}

/// Waits for a stop signal; true if it asks for a graceful stop.
fn wait_for_stop() -> bool {
    loop {
        match stop_signals().wait() {
            Ok(Signal::SIGUSR1) | Ok(Signal::SIGUSR2) => return true,
            Ok(_) => return false,
            // Interrupted: look again.
            Err(_) => continue,
        }
    }
}

/// The group's `user`, `group`, `supplementary-groups`, `chroot`, `home`, `umask`, `lang`/`locale` and
/// resource limits. Without root (Apache started unprivileged) the identity is the one it has.
fn become_identity(plan: &GroupPlan) -> Result<(), String> {
    use nix::sys::resource::{setrlimit, Resource};
    use nix::unistd::{self, Gid, Uid};
    let group = &plan.group;
    let set_limit = |resource, value: Option<u64>, what: &str| -> Result<(), String> {
        match value {
            Some(limit) => setrlimit(resource, limit, limit)
                .map_err(|err| format!("cannot set the {what} limit: {err}")),
            None => Ok(()),
        }
    };
    set_limit(
        Resource::RLIMIT_CPU,
        group.cpu_time_limit.map(|t| t.as_secs()),
        "CPU time",
    )?;
    set_limit(Resource::RLIMIT_DATA, group.memory_limit, "memory")?;
    set_limit(
        Resource::RLIMIT_AS,
        group.virtual_memory_limit,
        "virtual memory",
    )?;
    if unistd::geteuid().is_root() {
        if let Some(root) = &group.chroot {
            unistd::chroot(root)
                .map_err(|err| format!("cannot chroot to {}: {err}", root.display()))?;
            unistd::chdir("/").map_err(|err| format!("cannot enter the chroot: {err}"))?;
        }
        let groups: Vec<Gid> = plan.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        unistd::setgroups(&groups).map_err(|err| format!("cannot set groups: {err}"))?;
        unistd::setgid(Gid::from_raw(plan.gid))
            .map_err(|err| format!("cannot switch to gid {}: {err}", plan.gid))?;
        unistd::setuid(Uid::from_raw(plan.uid))
            .map_err(|err| format!("cannot switch to uid {}: {err}", plan.uid))?;
    }
    // Changing credentials clears the parent-death signal: a daemon must not outlive Apache.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    let home = group.home.clone().or_else(|| {
        nix::unistd::User::from_uid(Uid::from_raw(plan.uid))
            .ok()
            .flatten()
            .map(|user| user.dir)
    });
    if let Some(home) = home {
        // mod_wsgi starts in the user's home directory; a missing one is not fatal there either.
        if let Err(err) = std::env::set_current_dir(&home) {
            log(&format!(
                "Unable to change working directory to '{}': {err}",
                home.display()
            ));
        }
    }
    if let Some(mask) = group.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    if let Some(lang) = &group.lang {
        std::env::set_var("LANG", lang);
    }
    if let Some(locale) = &group.locale {
        std::env::set_var("LC_ALL", locale);
    }
    if let Some(eggs) = &group.python_eggs {
        std::env::set_var("PYTHON_EGG_CACHE", eggs);
    }
    Ok(())
}

/// The group's limits, each on a thread that retires the process when it is reached.
fn start_limits(
    plan: &GroupPlan,
    pool: &Pool,
    retire: &Arc<dyn Fn() + Send + Sync>,
) -> Result<(), String> {
    let group = &plan.group;
    let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(body)
            .map(drop)
            .map_err(|err| format!("cannot start the {name} thread: {err}"))
    };
    if let Some(limit) = group.request_timeout_fire_point() {
        let (monitor, retire) = (pool.monitor(), Arc::clone(retire));
        let grace = group.graceful_timeout.unwrap_or_default() + group.shutdown_timeout;
        if group.interrupt_timeout.is_some() {
            let monitor = pool.monitor();
            spawn(
                "mod_wsgi-interrupt",
                Box::new(move || rwsgi_pool::watch_interrupts(&monitor, limit, NAMES)),
            )?;
        }
        // With interrupt-timeout, the injected exception gets that long to unwind the request first.
        let limit = limit + group.interrupt_timeout.unwrap_or_default();
        spawn(
            "mod_wsgi-timeout",
            Box::new(move || {
                rwsgi_pool::watch_request_timeouts(&monitor, limit, grace, NAMES, &*retire)
            }),
        )?;
    }
    if let Some(limit) = group.startup_timeout {
        let retire = Arc::clone(retire);
        spawn(
            "mod_wsgi-startup",
            Box::new(move || {
                std::thread::sleep(limit);
                if python::only_failed_loads() {
                    log(&format!(
                        "Application failed to load within startup-timeout ({} s); restarting the \
                         process so it can start afresh.",
                        limit.as_secs()
                    ));
                    retire();
                }
            }),
        )?;
    }
    if let Some(limit) = group.deadlock_timeout {
        spawn(
            "mod_wsgi-deadlock",
            Box::new(move || {
                // No clean stop is possible without the GIL: the process ends now, and Apache's parent
                // starts another.
                rwsgi_pool::watch_gil(limit, NAMES, &|| std::process::exit(1))
            }),
        )?;
    }
    if let Some(limit) = group.inactivity_timeout {
        let (monitor, retire) = (pool.monitor(), Arc::clone(retire));
        spawn(
            "mod_wsgi-idle",
            Box::new(move || rwsgi_pool::watch_inactivity(&monitor, limit, NAMES, &*retire)),
        )?;
    }
    if let Some(limit) = group.restart_interval {
        let retire = Arc::clone(retire);
        spawn(
            "mod_wsgi-restart",
            Box::new(move || rwsgi_pool::watch_lifetime(limit, NAMES, &*retire)),
        )?;
    }
    Ok(())
}

/// Takes connections off the group's socket while the process is accepting, and queues their requests.
fn accept_loop(
    listener: &UnixListener,
    plan: &GroupPlan,
    pool: &rwsgi_pool::Submitter,
    accepting: &AtomicBool,
) {
    use std::os::fd::AsFd as _;
    if let Err(err) = listener.set_nonblocking(true) {
        log(&format!("cannot use the daemon socket: {err}"));
        return;
    }
    while accepting.load(Ordering::Acquire) {
        let mut fds = [nix::poll::PollFd::new(
            listener.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        // Short polls, so a stop is noticed quickly; the socket is shared with the group's other
        // processes, so this one cannot simply close it.
        match nix::poll::poll(&mut fds, 100u16) {
            Ok(0) | Err(_) => continue,
            Ok(_) => {}
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            // Another process of the group took it, or it was given up before we got to it.
            Err(_) => continue,
        };
        let daemon_start = SystemTime::now();
        match receive(stream, plan, daemon_start) {
            Ok((request, since)) => {
                if let Err(rwsgi_pool::Closed) = pool.submit_since(request, since) {
                    return;
                }
            }
            // A request refused for its origin or its script's place was logged as such.
            Err(err) if err.get_ref().is_some_and(|inner| inner.is::<Refused>()) => {}
            Err(err) => log(&format!("Unable to read request from Apache: {err}")),
        }
    }
}

/// A request the daemon would not serve, and has logged why.
#[derive(Debug, thiserror::Error)]
#[error("request refused")]
struct Refused;

/// Reads a connection's request frame and makes the engine's request of it; the instant is when the
/// request reached Apache, for `queue-timeout`.
fn receive(
    stream: UnixStream,
    plan: &GroupPlan,
    daemon_start: SystemTime,
) -> io::Result<(Request, Instant)> {
    stream.set_nonblocking(false)?;
    let timeout = Some(plan.socket_timeout());
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)?;
    let mut reader = stream.try_clone()?;
    let mut vars = match wire::read_frame(&mut reader)? {
        Some((Kind::Request, payload)) => wire::decode_request(&payload)?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "connection without a request",
            ))
        }
    };
    if let Err(refusal) = origin::check(&plan.secret, vars.get(origin::TOKEN_KEY)) {
        // Not from one of Apache's children: nothing of it runs, and the connection closes unanswered.
        log_at(crate::ffi::Level::Alert, refusal);
        return Err(io::Error::other(Refused));
    }
    if let Some(root) = &plan.group.chroot {
        if let Err(refusal) = chroot::relocate(root, &mut vars, SCRIPT_KEY) {
            // Unanswered, as from the C module: the client gets the child's 502.
            log(&refusal);
            return Err(io::Error::other(Refused));
        }
    }
    let micros = |at: SystemTime| {
        at.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros()
            .to_string()
            .into_bytes()
    };
    vars.set(hints::QUEUE_START_US, micros(daemon_start));
    vars.set(hints::DAEMON_START_US, micros(SystemTime::now()));
    let waited = vars
        .get(hints::REQUEST_START_US)
        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
        .and_then(|us| {
            daemon_start
                .duration_since(UNIX_EPOCH + Duration::from_micros(us))
                .ok()
        })
        .unwrap_or_default();
    let since = Instant::now()
        .checked_sub(waited)
        .unwrap_or_else(Instant::now);
    let id = vars
        .get("mod_wsgi.request_id")
        .map(|id| String::from_utf8_lossy(id).into_owned());
    let request = Request::new(
        vars,
        Box::new(DaemonBody {
            stream: reader,
            done: false,
        }),
        Box::new(DaemonResponse {
            stream,
            ended: false,
        }),
        id,
    );
    Ok((request, since))
}

/// What each pool thread runs: take a request, find its application from its route, serve it.
fn serve_requests(source: &dyn RequestSource) {
    loop {
        let request = match source.try_next() {
            Some(request) => request,
            None => match source.next() {
                Some(request) => {
                    source.attached();
                    request
                }
                None => return,
            },
        };
        let outcome = serve_one(request);
        source.finished(&outcome);
    }
}

fn serve_one(mut request: Request) -> Outcome {
    let text = |vars: &CgiVars, key: &str| {
        String::from_utf8_lossy(vars.get(key).unwrap_or_default()).into_owned()
    };
    let vars = &request.vars;
    let key = AppKey {
        script: PathBuf::from(text(vars, SCRIPT_KEY)),
        application_group: text(vars, "mod_wsgi.application_group"),
        callable: text(vars, "mod_wsgi.callable_object"),
        script_reloading: vars.get(RELOADING_KEY) != Some(b"0"),
    };
    let process_group = text(vars, "mod_wsgi.process_group");
    match python::application(&key, &process_group) {
        Ok(app) => python::serve(&app, request),
        Err(err) => {
            log(&err.to_string());
            let _ = request.response.send(Output::Complete(
                error_head(500, "Internal Server Error"),
                Bytes::new(),
            ));
            Outcome {
                status: Some(500),
                ..Outcome::default()
            }
        }
    }
}

fn error_head(status: u16, reason: &str) -> ResponseHead {
    ResponseHead {
        status,
        reason: reason.to_owned(),
        headers: Vec::new(),
    }
}

/// `queue-timeout`: a request that waited too long is answered 504 without running, as mod_wsgi does.
fn answer_gateway_timeout(mut request: Request) {
    log("Queue timeout expired for WSGI daemon process.");
    let _ = request.response.try_send(Output::Complete(
        error_head(504, "Gateway Timeout"),
        Bytes::new(),
    ));
}

/// The request body, as `Body` frames from the Apache child.
struct DaemonBody {
    stream: UnixStream,
    done: bool,
}

impl BodyReader for DaemonBody {
    fn try_next(&mut self) -> Option<io::Result<BodyChunk>> {
        self.done.then_some(Ok(BodyChunk::End))
    }

    fn next(&mut self) -> io::Result<BodyChunk> {
        if self.done {
            return Ok(BodyChunk::End);
        }
        match wire::read_frame(&mut self.stream)? {
            Some((Kind::Body, data)) if !data.is_empty() => Ok(BodyChunk::Data(Bytes::from(data))),
            Some((Kind::Body, _)) => self.next(),
            Some((Kind::End, _)) => {
                self.done = true;
                Ok(BodyChunk::End)
            }
            // The child stopped sending before the end: the client went away mid-body.
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "request body truncated",
            )),
        }
    }
}

/// A whole response up to this size is written while the GIL is held: a UNIX socket's buffer takes it.
const SMALL_RESPONSE: usize = 64 * 1024;

/// The response, as frames to the Apache child.
struct DaemonResponse {
    stream: UnixStream,
    ended: bool,
}

impl DaemonResponse {
    fn write_all(&mut self, output: Output) -> io::Result<()> {
        if matches!(output, Output::Complete(..) | Output::End | Output::Abort) {
            self.ended = true;
        }
        let stream = &mut self.stream;
        match output {
            // A small whole response: its frames in one write.
            Output::Complete(head, body) if body.len() <= SMALL_RESPONSE => {
                let mut buf = Vec::with_capacity(body.len() + 512);
                wire::put_frame(&mut buf, Kind::Head, &wire::encode_head(&head))?;
                if !body.is_empty() {
                    wire::put_frame(&mut buf, Kind::Body, &body)?;
                }
                wire::put_frame(&mut buf, Kind::End, b"")?;
                stream.write_all(&buf)
            }
            Output::Complete(head, body) => {
                wire::write_frame(stream, Kind::Head, &wire::encode_head(&head))?;
                wire::write_body(stream, &body)?;
                wire::write_frame(stream, Kind::End, b"")
            }
            Output::Head(head) => wire::write_frame(stream, Kind::Head, &wire::encode_head(&head)),
            Output::Body(bytes) => wire::write_body(stream, &bytes),
            Output::End => wire::write_frame(stream, Kind::End, b""),
            Output::Abort => wire::write_frame(stream, Kind::Abort, b""),
            Output::File(region) => self.send_file(region),
        }
    }

    fn send_file(&mut self, region: rwsgi_engine::FileRegion) -> io::Result<()> {
        use std::io::{Seek as _, SeekFrom};
        let mut file = region.file;
        file.seek(SeekFrom::Start(region.offset))?;
        let mut left = region.len;
        let mut buf = vec![0; 256 * 1024];
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            wire::write_frame(&mut self.stream, Kind::Body, &buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }
}

impl ResponseSink for DaemonResponse {
    fn try_send(&mut self, output: Output) -> Result<(), TrySendError> {
        // Whole small responses go at once: a UNIX socket's buffer takes them without waiting.
        let small = match &output {
            Output::Complete(_, body) => body.len() <= SMALL_RESPONSE,
            Output::Head(_) | Output::End | Output::Abort => true,
            Output::Body(_) | Output::File(_) => false,
        };
        if !small {
            return Err(TrySendError::Full(output));
        }
        self.write_all(output).map_err(|_| TrySendError::Closed)
    }

    fn send(&mut self, output: Output) -> Result<(), ClientGone> {
        self.write_all(output).map_err(|_| ClientGone)
    }
}

impl Drop for DaemonResponse {
    fn drop(&mut self) {
        if !self.ended {
            // Never a response that looks complete when it is not.
            let _ = wire::write_frame(&mut self.stream, Kind::Abort, b"");
        }
    }
}
