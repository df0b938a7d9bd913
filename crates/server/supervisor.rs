//! `rwsgi serve --processes N`: a supervisor that holds no Python interpreter. It binds the listening socket,
//! starts N workers by re-executing this binary (never forking a process that runs threads or Python), hands
//! them the socket by the systemd `LISTEN_FDS` protocol, replaces any worker that dies, and stops them all
//! gracefully on SIGTERM/SIGINT.
//!
//! Workers accept connections themselves (the kernel balances them) and report readiness with one line on
//! their stdout; anything else they print there is passed through. Their stderr is the supervisor's.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use command_fds::{CommandFdExt, FdMapping};

use crate::listener::Listener;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::settings::Settings;

/// Set in a worker's environment: the process serves instead of supervising.
const WORKER_ENV: &str = "RWSGI_WORKER";
/// The line a worker prints on stdout once it is accepting connections.
const READY_LINE: &str = "rwsgi-worker: ready";
/// The first descriptor systemd's protocol passes; the listening socket goes there.
const LISTEN_FD: i32 = 3;
/// A worker that dies this soon after starting, before it was ever ready, is restarted with back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Added to the graceful timeout before workers that have not stopped are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Whether this process is a worker started by a supervisor.
pub(crate) fn is_worker() -> bool {
    std::env::var_os(WORKER_ENV).is_some()
}

/// Called by a worker once it accepts connections. The worker also asks to be stopped if its supervisor
/// dies, so no orphan keeps serving.
pub(crate) fn worker_ready() {
    use std::io::Write as _;
    println!("{READY_LINE}");
    let _ = io::stdout().flush();
}

/// Makes a worker stop when its supervisor is gone.
pub(crate) fn follow_supervisor() {
    // Failing to set it only loses the orphan clean-up; the worker still serves.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    if nix::unistd::getppid() == Pid::from_raw(1) {
        // The supervisor died before the request above took effect.
        std::process::exit(0);
    }
}

enum Event {
    /// A back-off ended: start the replacement it delayed.
    Respawn,
    Ready {
        pid: u32,
    },
    Exited {
        pid: u32,
        status: io::Result<ExitStatus>,
        was_ready: bool,
        started: Instant,
    },
}

/// The signal a supervisor sends a worker it replaces: finish, tell keep-alive clients to reconnect, exit.
pub(crate) const RETIRE_SIGNAL: SignalKind = SignalKind::user_defined2();

/// What the supervisor knows of one worker.
struct Worker {
    generation: u64,
    ready: bool,
    started: Instant,
}

/// The workers, by process id, and which generation is current (a reload starts a new one).
struct Workers {
    by_pid: HashMap<u32, Worker>,
    generation: u64,
    /// The generation a reload is replacing, until the new one is all ready.
    reloading_from: Option<u64>,
    /// How many workers the current generation should have (SIGTTIN/SIGTTOU change it).
    target: usize,
    backoff: Duration,
}

impl Workers {
    fn current(&self) -> impl Iterator<Item = (&u32, &Worker)> {
        self.by_pid
            .iter()
            .filter(move |(_, w)| w.generation == self.generation)
    }

    /// Starts a worker of `generation` and keeps track of it.
    fn spawn(
        &mut self,
        generation: u64,
        listener: &Listener,
        events: &mpsc::UnboundedSender<Event>,
    ) -> anyhow::Result<u32> {
        let pid = spawn_worker(listener, events.clone())?;
        let worker = Worker {
            generation,
            ready: false,
            started: Instant::now(),
        };
        self.by_pid.insert(pid, worker);
        Ok(pid)
    }

    fn pids_of(&self, keep: impl Fn(&Worker) -> bool) -> Vec<u32> {
        self.by_pid
            .iter()
            .filter(|(_, w)| keep(w))
            .map(|(&pid, _)| pid)
            .collect()
    }
}

pub(crate) fn run(settings: Settings, listener: Listener) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the supervisor's runtime")?;
    runtime.block_on(supervise(settings, listener))
}

async fn supervise(settings: Settings, listener: Listener) -> anyhow::Result<()> {
    let description = listener.describe()?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut workers = Workers {
        by_pid: HashMap::new(),
        generation: 0,
        reloading_from: None,
        target: settings.processes,
        backoff: Duration::ZERO,
    };
    for _ in 0..workers.target {
        workers.spawn(0, &listener, &events_tx)?;
    }
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut more = signal(SignalKind::from_raw(libc_signal(Signal::SIGTTIN)))?;
    let mut fewer = signal(SignalKind::from_raw(libc_signal(Signal::SIGTTOU)))?;
    let mut reopen = signal(SignalKind::user_defined1())?;
    let mut announced = false;
    let mut memory_check = tokio::time::interval(MEMORY_CHECK_INTERVAL);
    let mut startup_check = tokio::time::interval(Duration::from_millis(100));
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = startup_check.tick(), if settings.startup_timeout.is_some() => {
                if let Some(limit) = settings.startup_timeout {
                    kill_slow_starters(&workers, limit);
                }
                continue;
            }
            _ = memory_check.tick(), if settings.max_memory_kib.is_some() => {
                if let Some(limit) = settings.max_memory_kib {
                    replace_oversized(&mut workers, limit, &listener, &events_tx)?;
                }
                continue;
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                start_reload(&mut workers, &listener, &events_tx)?;
                continue;
            }
            _ = reopen.recv() => {
                crate::logfile::reopen(settings.log_file.as_deref());
                // Workers still starting have no handler yet (the signal would kill them); they open the
                // file afresh when they start anyway.
                for pid in workers.pids_of(|w| w.ready) {
                    signal_worker(pid, Signal::SIGUSR1);
                }
                continue;
            }
            _ = more.recv() => {
                workers.target += 1;
                workers.spawn(workers.generation, &listener, &events_tx)?;
                eprintln!("rwsgi: SIGTTIN: now {} workers", workers.target);
                continue;
            }
            _ = fewer.recv() => {
                if workers.target > 1 {
                    workers.target -= 1;
                    if let Some(pid) = workers.pids_of(|w| w.generation == workers.generation).into_iter().max() {
                        workers.by_pid.remove(&pid);
                        signal_worker(pid, Signal::SIGTERM);
                    }
                    eprintln!("rwsgi: SIGTTOU: now {} workers", workers.target);
                }
                continue;
            }
        };
        match event {
            Some(Event::Ready { pid }) => {
                if let Some(worker) = workers.by_pid.get_mut(&pid) {
                    worker.ready = true;
                }
                if !announced {
                    eprintln!("rwsgi: listening on {description}");
                    announced = true;
                }
                finish_reload_if_ready(&mut workers);
            }
            None => {}
            Some(Event::Exited {
                pid,
                status,
                was_ready,
                started,
            }) => {
                let Some(worker) = workers.by_pid.remove(&pid) else {
                    continue; // retired or removed on purpose
                };
                let status = describe(&status);
                if !announced {
                    // No worker ever came up: the app cannot be served (its traceback is already on stderr).
                    stop_all(&workers, &mut events, settings.graceful_timeout).await;
                    bail!("worker {pid} failed to start ({status})");
                }
                if worker.generation != workers.generation {
                    continue;
                }
                if !was_ready && workers.reloading_from.is_some() {
                    abandon_reload(&mut workers, pid, &status);
                    continue;
                }
                workers.backoff = if was_ready || started.elapsed() > MAX_BACKOFF {
                    Duration::ZERO
                } else {
                    (workers.backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF)
                };
                let delay = workers.backoff;
                eprintln!(
                    "rwsgi: worker {pid} exited ({status}); starting a replacement{}",
                    if delay.is_zero() {
                        String::new()
                    } else {
                        format!(" in {delay:?}")
                    }
                );
                if delay.is_zero() {
                    workers.spawn(workers.generation, &listener, &events_tx)?;
                } else {
                    // The loop keeps answering signals while the back-off runs.
                    let events = events_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = events.send(Event::Respawn);
                    });
                }
            }
            Some(Event::Respawn) => {
                workers.spawn(workers.generation, &listener, &events_tx)?;
            }
        }
    }
    drop(listener);
    stop_all(&workers, &mut events, settings.graceful_timeout).await;
    Ok(())
}

/// `--startup-timeout`: a worker still not ready is killed; its exit is handled like a crash at start-up.
fn kill_slow_starters(workers: &Workers, limit: Duration) {
    for (&pid, worker) in &workers.by_pid {
        if !worker.ready && worker.started.elapsed() > limit {
            eprintln!(
                "rwsgi: worker {pid} not ready after {:.1} s (--startup-timeout); killing it",
                limit.as_secs_f64()
            );
            signal_worker(pid, Signal::SIGKILL);
        }
    }
}

/// How often the supervisor reads its workers' resident memory for `--max-memory`.
const MEMORY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// `--max-memory`: a ready worker over the limit is replaced; the replacement starts first, the old one
/// finishes its requests.
fn replace_oversized(
    workers: &mut Workers,
    limit_kib: u64,
    listener: &Listener,
    events: &mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let oversized: Vec<(u32, u64)> = workers
        .by_pid
        .iter()
        .filter(|(_, w)| w.ready)
        .filter_map(|(&pid, _)| {
            rss_kib(pid)
                .filter(|&rss| rss > limit_kib)
                .map(|rss| (pid, rss))
        })
        .collect();
    for (pid, rss) in oversized {
        eprintln!(
            "rwsgi: worker {pid} uses {} MiB, over --max-memory {} MiB; replacing it",
            rss / 1024,
            limit_kib / 1024
        );
        let generation = workers
            .by_pid
            .remove(&pid)
            .map_or(workers.generation, |w| w.generation);
        workers.spawn(generation, listener, events)?;
        signal_worker(pid, RETIRE);
    }
    Ok(())
}

/// A process's resident set size in KiB, from /proc.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// SIGHUP: a new generation of workers imports the app afresh; the old one keeps serving until it is ready.
fn start_reload(
    workers: &mut Workers,
    listener: &Listener,
    events: &mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    if workers.reloading_from.is_some() {
        eprintln!("rwsgi: SIGHUP: a reload is already under way");
        return Ok(());
    }
    workers.reloading_from = Some(workers.generation);
    workers.generation += 1;
    eprintln!("rwsgi: SIGHUP: starting {} new workers", workers.target);
    for _ in 0..workers.target {
        workers.spawn(workers.generation, listener, events)?;
    }
    Ok(())
}

/// Once every new worker is ready, the old ones retire: they finish what they are doing and exit.
fn finish_reload_if_ready(workers: &mut Workers) {
    let Some(old) = workers.reloading_from else {
        return;
    };
    let ready = workers.current().filter(|(_, w)| w.ready).count();
    if ready < workers.target {
        return;
    }
    let retiring = workers.pids_of(|w| w.generation <= old);
    for &pid in &retiring {
        workers.by_pid.remove(&pid);
        signal_worker(pid, RETIRE);
    }
    workers.reloading_from = None;
    eprintln!(
        "rwsgi: reload complete; {} old workers retiring",
        retiring.len()
    );
}

/// A new worker failed while starting: keep the running generation, stop the rest of the new one.
fn abandon_reload(workers: &mut Workers, pid: u32, status: &str) {
    let Some(old) = workers.reloading_from.take() else {
        return;
    };
    eprintln!("rwsgi: reload failed: new worker {pid} exited while starting ({status}); keeping the running workers");
    for pid in workers.pids_of(|w| w.generation == workers.generation) {
        workers.by_pid.remove(&pid);
        signal_worker(pid, Signal::SIGTERM);
    }
    workers.generation = old;
}

/// The same signal as [`RETIRE_SIGNAL`], for sending.
const RETIRE: Signal = Signal::SIGUSR2;

fn libc_signal(signal: Signal) -> i32 {
    signal as i32
}

/// Asks every worker to stop gracefully, and kills those still running after the grace period.
async fn stop_all(
    workers: &Workers,
    events: &mut mpsc::UnboundedReceiver<Event>,
    graceful: Duration,
) {
    let mut running: Vec<u32> = workers.by_pid.keys().copied().collect();
    for &pid in &running {
        signal_worker(pid, Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + graceful + STOP_GRACE;
    while !running.is_empty() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Exited { pid, .. })) => running.retain(|&p| p != pid),
            // Stopping: a pending respawn is dropped.
            Ok(Some(Event::Ready { .. } | Event::Respawn)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    for pid in running {
        eprintln!("rwsgi: worker {pid} did not stop in time; killing it");
        signal_worker(pid, Signal::SIGKILL);
    }
}

fn signal_worker(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        // The worker may have exited already; there is nothing else to do then.
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

fn describe(status: &io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(err) => format!("wait failed: {err}"),
    }
}

/// Starts a worker: this binary with the same arguments, the socket as descriptor 3.
fn spawn_worker(listener: &Listener, events: mpsc::UnboundedSender<Event>) -> anyhow::Result<u32> {
    let socket: OwnedFd = listener
        .share()
        .context("cannot share the listening socket")?;
    let exe = std::env::current_exe().context("cannot find the rwsgi executable")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .args(std::env::args_os().skip(1))
        .env(WORKER_ENV, "1")
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    command
        .fd_mappings(vec![FdMapping {
            parent_fd: socket,
            child_fd: LISTEN_FD,
        }])
        .context("cannot pass the listening socket")?;
    let started = Instant::now();
    let mut child = command.spawn().context("cannot start a worker")?;
    let pid = child.id().unwrap_or_default();
    let stdout = child.stdout.take();
    tokio::spawn(async move {
        let mut was_ready = false;
        if let Some(stdout) = stdout {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line == READY_LINE && !was_ready {
                    was_ready = true;
                    let _ = events.send(Event::Ready { pid });
                } else {
                    println!("{line}");
                }
            }
        }
        let status = child.wait().await;
        let _ = events.send(Event::Exited {
            pid,
            status,
            was_ready,
            started,
        });
    });
    Ok(pid)
}
