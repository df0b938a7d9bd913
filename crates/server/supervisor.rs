//! `rwsgi serve --processes N`: a supervisor that holds no Python interpreter. It binds the listening socket,
//! starts N workers by re-executing this binary (never forking a process that runs threads or Python), hands
//! them the socket by the systemd `LISTEN_FDS` protocol, replaces any worker that dies, and stops them all
//! gracefully on SIGTERM/SIGINT.
//!
//! Workers accept connections themselves (the kernel balances them) and report readiness with one line on
//! their stdout; anything else they print there is passed through. Their stderr is the supervisor's.

use std::io;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::settings::Settings;

/// Set in a worker's environment (to its slot number): the process serves instead of supervising.
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
    Ready,
    Exited {
        slot: usize,
        pid: u32,
        status: io::Result<ExitStatus>,
        was_ready: bool,
        started: Instant,
    },
}

pub(crate) fn run(settings: Settings, listener: TcpListener) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the supervisor's runtime")?;
    runtime.block_on(supervise(settings, listener))
}

async fn supervise(settings: Settings, listener: TcpListener) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut live = (0..settings.processes)
        .map(|slot| spawn_worker(slot, &listener, events_tx.clone()).map(Some))
        .collect::<anyhow::Result<Vec<Option<u32>>>>()?;
    let mut backoff = vec![Duration::ZERO; settings.processes];
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut announced = false;
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        match event {
            Some(Event::Ready) if !announced => {
                eprintln!("rwsgi: listening on http://{addr}");
                announced = true;
            }
            Some(Event::Ready) | None => {}
            Some(Event::Exited {
                slot,
                pid,
                status,
                was_ready,
                started,
            }) => {
                live[slot] = None;
                let status = describe(&status);
                if !announced {
                    // No worker ever came up: the app cannot be served (its traceback is already on stderr).
                    stop_all(&live, &mut events, settings.graceful_timeout).await;
                    bail!("worker {pid} failed to start ({status})");
                }
                backoff[slot] = if was_ready || started.elapsed() > MAX_BACKOFF {
                    Duration::ZERO
                } else {
                    (backoff[slot] * 2).clamp(Duration::from_millis(100), MAX_BACKOFF)
                };
                eprintln!(
                    "rwsgi: worker {pid} exited ({status}); starting a replacement{}",
                    if backoff[slot].is_zero() {
                        String::new()
                    } else {
                        format!(" in {:?}", backoff[slot])
                    }
                );
                tokio::time::sleep(backoff[slot]).await;
                live[slot] = Some(spawn_worker(slot, &listener, events_tx.clone())?);
            }
        }
    }
    drop(listener);
    stop_all(&live, &mut events, settings.graceful_timeout).await;
    Ok(())
}

/// Asks every live worker to stop gracefully, and kills those still running after the grace period.
async fn stop_all(
    live: &[Option<u32>],
    events: &mut mpsc::UnboundedReceiver<Event>,
    graceful: Duration,
) {
    let mut running: Vec<u32> = live.iter().flatten().copied().collect();
    for &pid in &running {
        signal_worker(pid, Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + graceful + STOP_GRACE;
    while !running.is_empty() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Exited { pid, .. })) => running.retain(|&p| p != pid),
            Ok(Some(Event::Ready)) => {}
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
fn spawn_worker(
    slot: usize,
    listener: &TcpListener,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<u32> {
    let socket: OwnedFd = listener
        .try_clone()
        .context("cannot share the listening socket")?
        .into();
    let exe = std::env::current_exe().context("cannot find the rwsgi executable")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .args(std::env::args_os().skip(1))
        .env(WORKER_ENV, slot.to_string())
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
                    let _ = events.send(Event::Ready);
                } else {
                    println!("{line}");
                }
            }
        }
        let status = child.wait().await;
        let _ = events.send(Event::Exited {
            slot,
            pid,
            status,
            was_ready,
            started,
        });
    });
    Ok(pid)
}
