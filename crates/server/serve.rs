//! `rwsgi serve`: start Python, load the app, listen, and stop gracefully on SIGTERM/SIGINT.

use std::sync::Arc;

use anyhow::Context;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use rwsgi_engine::interp::{self, InterpreterConfig};
use rwsgi_engine::{
    AppSource, Engine, EngineError, EngineOptions, Output, Request, ResponseHead, StderrLog,
};
use rwsgi_pool::{Names, Pool, PoolOptions, Recycle};
use tokio::signal::unix::{signal, SignalKind};

use crate::access_log::AccessLog;
use crate::http::{self, Peer, Shared};
use crate::listener::{Listener, SocketFile, Stream};
use crate::settings::{Listen, Settings};
use crate::supervisor;

/// How long a retiring worker waits for keep-alive clients to make one more request (and be told to close).
const RETIRE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// The name of the threads doing HTTP I/O (apps and logs see it as the thread that ran an inline request).
const IO_THREAD_NAME: &str = "rwsgi-io";

/// How `rwsgi serve` names its workers and their limits in the log.
const NAMES: Names = Names {
    log: "rwsgi",
    process: "worker",
    max_requests: "--max-requests",
    request_timeout: "--request-timeout",
    interrupt_timeout: "--interrupt-timeout",
    inactivity_timeout: "--inactivity-timeout",
    restart_interval: "--restart-interval",
};

/// Why `serve` stopped without serving.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    /// The app failed to import: its traceback is the whole message.
    #[error("{0}")]
    AppLoad(#[source] EngineError),
}

pub(crate) fn run(settings: Settings) -> anyhow::Result<()> {
    let worker = supervisor::is_worker();
    if worker {
        supervisor::follow_supervisor();
        crate::malloc::tune_for_bodies();
    }
    if let Some(path) = &settings.log_file {
        crate::logfile::redirect_stderr(path)?;
    }
    // Opened here, so a path that cannot be written stops the supervisor before any worker starts, and a
    // worker opens it before it gives up root.
    let access_log = settings
        .access_log
        .as_ref()
        .map(AccessLog::open)
        .transpose()?;
    let _pid_file = match (&settings.pid_file, worker) {
        (Some(path), false) => Some(PidFile::create(path)?),
        _ => None,
    };
    // A socket passed in by systemd socket activation, or by our own supervisor.
    let inherited = Listener::inherited(&settings.listen)?;
    // `rwsgi serve` is always a supervisor (no Python) over workers, as gunicorn always has its arbiter.
    if !worker {
        let mut socket_file = None;
        let listener = match (inherited, &settings.listen) {
            (Some(listener), _) => listener,
            (None, Listen::Tcp(addr)) if settings.reuse_port => Listener::reserve(*addr)?,
            (None, listen) => {
                let listener = Listener::bind(listen, settings.run_as)?;
                // Only a socket we made is ours to remove: systemd's belongs to its unit.
                socket_file = Some(SocketFile::of(&listener));
                listener
            }
        };
        let served = supervisor::run(settings, listener);
        drop(socket_file);
        return served;
    }
    // The socket is bound (or inherited); nothing after this needs root.
    let listener = match inherited {
        // --reuse-port: the supervisor passed its bound, never-listening socket only to say which address;
        // this worker listens on a socket of its own at that address.
        Some(reserved) if settings.reuse_port => Listener::listen_beside(reserved)?,
        Some(listener) => listener,
        None => Listener::bind(&settings.listen, settings.run_as)?,
    };
    if let Some(run_as) = settings.run_as {
        drop_privileges(run_as)?;
        if worker {
            // Changing credentials clears the parent-death signal: ask for it again.
            supervisor::follow_supervisor();
        }
    }
    interp::initialize(&InterpreterConfig {
        python_home: settings.python_home.clone(),
        python_path: settings.python_path.clone(),
        working_dir_first: matches!(settings.app.source, AppSource::Module(_)),
        ..InterpreterConfig::default()
    })?;
    let options = EngineOptions {
        threads: settings.threads,
        processes: settings.processes,
        script_reloading: settings.script_reloading,
        ..EngineOptions::default()
    };
    let engine =
        Engine::load(&settings.app, &options, Arc::new(StderrLog)).map_err(ServeError::AppLoad)?;
    let engine = Arc::new(engine);
    let inline = settings.inline;
    let recycle_now = Arc::new(tokio::sync::Notify::new());
    let recycle = settings
        .worker_request_limit()
        .filter(|_| worker)
        .map(|after| {
            let retire = Arc::clone(&recycle_now);
            Recycle {
                after,
                notify: Arc::new(move || retire.notify_one()),
            }
        });
    let pool = Pool::start(
        PoolOptions {
            threads: settings.threads,
            stack_size: None,
            recycle,
            queue_timeout: settings.queue_timeout,
            expired: answer_busy,
            names: NAMES,
            inline,
        },
        {
            let engine = Arc::clone(&engine);
            Arc::new(move |source| engine.serve(source))
        },
    )
    .context("cannot start Python threads")?;
    let shared = Arc::new(Shared {
        engine,
        pool: pool.submitter(),
        buffer_body: settings.buffer_body,
        limits: http::Limits {
            head: settings.header_timeout,
            stalled: settings.socket_timeout,
        },
        access_log: access_log.clone(),
        trusted_proxy: settings.trusted_proxy.clone(),
        closing: std::sync::atomic::AtomicBool::new(false),
    });
    let stuck = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let (Some(limit), true) = (settings.request_timeout, worker) {
        let (monitor, stuck, retire) =
            (pool.monitor(), Arc::clone(&stuck), Arc::clone(&recycle_now));
        std::thread::Builder::new()
            .name("rwsgi-timeouts".into())
            .spawn(move || {
                rwsgi_pool::watch_request_timeouts(
                    &monitor,
                    limit,
                    // Other requests get the retiring drain; the stuck one would hold the exit for good.
                    RETIRE_LINGER + std::time::Duration::from_secs(1),
                    NAMES,
                    &|| {
                        stuck.store(true, std::sync::atomic::Ordering::Release);
                        retire.notify_one();
                    },
                )
            })
            .context("cannot start the request-timeout monitor")?;
    }
    if settings.reload && worker {
        let retire = Arc::clone(&recycle_now);
        // The baseline is taken now, before the worker says it is ready, so no change can slip in between.
        let baseline = source_mtimes();
        std::thread::Builder::new()
            .name("rwsgi-reload".into())
            .spawn(move || watch_sources(baseline, &retire))
            .context("cannot start the --reload watcher")?;
    }
    if let Some(limit) = settings.interrupt_timeout {
        let monitor = pool.monitor();
        std::thread::Builder::new()
            .name("rwsgi-interrupts".into())
            .spawn(move || rwsgi_pool::watch_interrupts(&monitor, limit, NAMES))
            .context("cannot start the interrupt monitor")?;
    }
    if let (Some(limit), true) = (settings.inactivity_timeout, worker) {
        let (monitor, retire) = (pool.monitor(), Arc::clone(&recycle_now));
        std::thread::Builder::new()
            .name("rwsgi-inactivity".into())
            .spawn(move || {
                rwsgi_pool::watch_inactivity(&monitor, limit, NAMES, &|| retire.notify_one())
            })
            .context("cannot start the inactivity monitor")?;
    }
    let io_threads = settings.io_threads;
    let settings = &settings;
    let serve_io = move || -> anyhow::Result<()> {
        let runtime = io_runtime(io_threads, inline, access_log.clone())
            .context("cannot start the I/O runtime")?;
        let served = runtime.block_on(listen_and_serve(
            settings,
            shared,
            listener,
            worker,
            recycle_now,
        ));
        let flush_access_log = || access_log.iter().for_each(|log| log.flush());
        if stuck.load(std::sync::atomic::Ordering::Acquire) {
            flush_access_log();
            // The stuck request's thread cannot be joined; the supervisor starts a replacement once we are
            // gone.
            eprintln!(
                "rwsgi: worker {} exiting after a request timeout",
                std::process::id()
            );
            std::process::exit(1);
        }
        // Requests still queued or running finish before the threads exit, their connections still driven.
        runtime.block_on(async {
            tokio::task::spawn_blocking(move || pool.shut_down())
                .await
                .context("the Python threads did not shut down cleanly")
        })?;
        drop(runtime);
        flush_access_log();
        served
    };
    let served = if io_threads == 1 {
        // The one I/O thread is a thread of its own, named as the pool's and the logs name it.
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name(IO_THREAD_NAME.into())
                .spawn_scoped(scope, serve_io)
                .context("cannot start the I/O thread")?
                .join()
                // As a panic on this thread would: the process ends without exit hooks, which would run
                // with requests still inside the app.
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    } else {
        serve_io()
    };
    interp::run_exit_hooks();
    served
}

/// The runtime that does the HTTP I/O (and, inline, runs fast requests), started on the calling thread.
/// One I/O thread is the calling thread, under tokio's single-threaded scheduler: no work-stealing
/// machinery on every task poll.
///
/// With an access log, a thread about to idle writes the lines gathered so far.
fn io_runtime(
    threads: usize,
    inline: bool,
    access_log: Option<Arc<AccessLog>>,
) -> std::io::Result<tokio::runtime::Runtime> {
    // Requests run inline attach to Python on an I/O thread: keep its thread state between them.
    let keep_thread_state = move || {
        if inline {
            interp::keep_thread_state();
        }
    };
    let mut builder = if threads == 1 {
        keep_thread_state();
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(threads)
            .thread_name(IO_THREAD_NAME)
            .on_thread_start(keep_thread_state);
        builder
    };
    if let Some(log) = access_log {
        builder.on_thread_park(move || log.flush());
    }
    builder.enable_all().build()
}

async fn listen_and_serve(
    settings: &Settings,
    shared: Arc<Shared>,
    listener: Listener,
    worker: bool,
    recycle: Arc<tokio::sync::Notify>,
) -> anyhow::Result<()> {
    let description = listener.describe()?;
    let listener = listener.into_async()?;
    // Handlers first: the supervisor may signal a worker as soon as it says it is ready.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut retire = signal(supervisor::RETIRE_SIGNAL)?;
    let mut reopen = signal(SignalKind::user_defined1())?;
    if worker {
        supervisor::worker_ready();
    } else {
        eprintln!("rwsgi: listening on {description}");
    }
    let mut retiring = false;
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    // No `pipeline_flush`: it makes hyper copy every response body into its write buffer, a tenth of the
    // CPU of a 100 KB echo. Queued, a body goes out from its own buffer (a Python `bytes`) with writev.
    builder.title_case_headers(true);
    // A client that shuts its side down after its request still gets the response (as from Apache). It also
    // spares hyper, between a request and its response, a probe read for that EOF, which takes a fresh read
    // buffer each time while the request still holds the last one.
    builder.half_close(true);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors or a connection reset before accept: keep serving the others.
                Err(err) => {
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = retire.recv(), if worker => {
                retiring = true;
                break;
            }
            _ = reopen.recv() => {
                crate::logfile::reopen(settings.log_file.as_deref());
                if let Some(log) = &shared.access_log {
                    log.reopen();
                }
                continue;
            }
            _ = recycle.notified() => {
                retiring = true;
                break;
            }
        };
        match stream {
            Stream::Tcp(stream) => serve_connection(stream, peer, &shared, &builder, &graceful),
            Stream::Unix(stream) => serve_connection(stream, peer, &shared, &builder, &graceful),
        }
    }
    drop(listener);
    if retiring {
        drain_keep_alive(&shared, &graceful).await;
    }
    if tokio::time::timeout(settings.graceful_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("rwsgi: graceful timeout reached with requests still in flight");
    }
    Ok(())
}

/// Serves a connection's requests in a task of its own, until it closes or the shutdown drains it.
fn serve_connection<S>(
    stream: S,
    peer: Peer,
    shared: &Arc<Shared>,
    builder: &http1::Builder,
    graceful: &GracefulShutdown,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let phase = Arc::new(http::Phase::default());
    let stream = http::Stall::new(stream, shared.limits, Arc::clone(&phase));
    let service_shared = Arc::clone(shared);
    let service = service_fn(move |request| {
        http::handle(
            request,
            peer,
            Arc::clone(&service_shared),
            Arc::clone(&phase),
        )
    });
    let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
    tokio::spawn(async move {
        // A client that vanishes mid-request is not the server's error; one that stalled is worth a line.
        if let Err(err) = connection.await {
            if let Some(timeout) = timed_out(&err) {
                let client = match peer {
                    Peer::Tcp { peer, .. } => peer.to_string(),
                    Peer::Unix => "a client of the UNIX socket".to_owned(),
                };
                eprintln!("rwsgi: {client}: {timeout}; connection closed");
            }
        }
    });
}

/// The `--header-timeout` or `--socket-timeout` a connection ended with, if that is why it ended (hyper
/// ends an idle connection whose wait for a head ran out without an error: only a client that had begun,
/// or stalled mid-request, is worth a line).
fn timed_out<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut source = Some(err);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return (io.kind() == std::io::ErrorKind::TimedOut).then_some(io);
        }
        source = err.source();
    }
    None
}

/// Becomes `--user`/`--group` for good: supplementary groups first, then the group, then the user.
fn drop_privileges(run_as: crate::settings::RunAs) -> anyhow::Result<()> {
    use nix::unistd::{getuid, setgid, setgroups, setuid};
    if getuid() == run_as.uid {
        return Ok(());
    }
    if !getuid().is_root() {
        anyhow::bail!("--user needs rwsgi to be started as root");
    }
    setgroups(&[run_as.gid]).context("cannot drop supplementary groups")?;
    setgid(run_as.gid).context("cannot switch to --group")?;
    setuid(run_as.uid).context("cannot switch to --user")?;
    Ok(())
}

/// Modification times of the source files of the modules loaded now.
type SourceTimes = std::collections::HashMap<std::path::PathBuf, std::time::SystemTime>;

fn source_mtimes() -> SourceTimes {
    rwsgi_engine::Engine::module_files()
        .into_iter()
        .filter_map(|path| {
            let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
            Some((path, mtime))
        })
        .collect()
}

/// `--reload`: once a second, the modification times of every loaded module's file; a change retires the
/// worker, and the supervisor starts one that imports everything afresh.
fn watch_sources(mut known: SourceTimes, retire: &tokio::sync::Notify) {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let now = source_mtimes();
        let changed = now
            .iter()
            .find(|(path, mtime)| known.get(*path).is_some_and(|old| old != *mtime));
        if let Some((path, _)) = changed {
            eprintln!(
                "rwsgi: {} changed (--reload); restarting worker {}",
                path.display(),
                std::process::id()
            );
            retire.notify_one();
            return;
        }
        known.extend(now);
    }
}

/// A worker retired by a reload: its keep-alive clients get their next response with `Connection: close`
/// and reconnect to the new workers, instead of racing a close of a connection that looks idle between
/// two requests. Connections still open after the linger are shut down gracefully by the caller.
async fn drain_keep_alive(shared: &Shared, graceful: &GracefulShutdown) {
    shared
        .closing
        .store(true, std::sync::atomic::Ordering::Release);
    let deadline = tokio::time::Instant::now() + RETIRE_LINGER;
    while graceful.count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Answers a request that waited longer than `--queue-timeout`: 503 with Retry-After, without running the app.
fn answer_busy(mut request: Request) {
    let head = ResponseHead {
        status: 503,
        reason: "Service Unavailable".to_owned(),
        headers: vec![
            (
                "Content-Type".to_owned(),
                b"text/plain; charset=utf-8".to_vec(),
            ),
            ("Retry-After".to_owned(), b"1".to_vec()),
        ],
    };
    let body = bytes::Bytes::from_static(
        b"the server is too busy to take this request now; retry shortly\n",
    );
    // A client that has gone already needs no answer.
    let _ = request.response.try_send(Output::Complete(head, body));
}

/// The `--pid-file`, removed again when the server exits.
struct PidFile(std::path::PathBuf);

impl PidFile {
    fn create(path: &std::path::Path) -> anyhow::Result<Self> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write --pid-file {}", path.display()))?;
        Ok(Self(path.to_owned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Already gone (removed by hand) is fine.
        let _ = std::fs::remove_file(&self.0);
    }
}
