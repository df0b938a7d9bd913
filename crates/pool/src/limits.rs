//! The limits that end or interrupt a serving process, each a loop on a thread of its own that watches
//! the pool through its [`Monitor`] and calls the host's `retire` when the process should go.

use std::time::{Duration, Instant};

use crate::{Monitor, Names};

/// How often the watchers look.
const TICK: Duration = Duration::from_millis(100);

/// How long a stack dump may wait for the GIL (a C call may hold it) before giving up.
const STACK_DUMP_WAIT: Duration = Duration::from_secs(5);

/// Request timeout: names each request running longer than `limit`, dumps every Python thread's stack
/// (as mod_wsgi does), calls `retire`, and exits the process with status 1 after `grace` if it is still
/// here (the stuck request's thread can never be joined).
pub fn watch_request_timeouts(
    monitor: &Monitor,
    limit: Duration,
    grace: Duration,
    names: Names,
    retire: &dyn Fn(),
) {
    let pid = std::process::id();
    loop {
        std::thread::sleep(TICK);
        let overdue = monitor.overdue(limit);
        if overdue.is_empty() {
            continue;
        }
        for request in &overdue {
            eprintln!(
                "{}: request {} in {} {pid} has run for {:.1} s, past {} {:.1} s",
                names.log,
                request.what,
                names.process,
                request.started.elapsed().as_secs_f64(),
                names.request_timeout,
                limit.as_secs_f64()
            );
        }
        eprintln!(
            "{}: Python stacks of {} {pid}:\n{}",
            names.log,
            names.process,
            stacks_within(STACK_DUMP_WAIT)
        );
        retire();
        std::thread::sleep(grace);
        eprintln!(
            "{}: {} {pid} exiting after a request timeout",
            names.log, names.process
        );
        std::process::exit(1);
    }
}

/// Inactivity timeout: a process that served nothing for the whole period retires (a fresh one takes
/// its place), giving back whatever the app accumulated.
pub fn watch_inactivity(monitor: &Monitor, limit: Duration, names: Names, retire: &dyn Fn()) {
    let mut last = (monitor.activity().0, Instant::now());
    loop {
        std::thread::sleep(TICK);
        let (served, busy) = monitor.activity();
        if served != last.0 || busy {
            last = (served, Instant::now());
        } else if last.1.elapsed() >= limit {
            eprintln!(
                "{}: {} {} idle for {:.1} s ({}); recycling",
                names.log,
                names.process,
                std::process::id(),
                limit.as_secs_f64(),
                names.inactivity_timeout
            );
            retire();
            return;
        }
    }
}

/// Restart interval: the process retires once it has run for `limit`.
pub fn watch_lifetime(limit: Duration, names: Names, retire: &dyn Fn()) {
    std::thread::sleep(limit);
    eprintln!(
        "{}: {} {} has run for {:.1} s ({}); recycling",
        names.log,
        names.process,
        std::process::id(),
        limit.as_secs_f64(),
        names.restart_interval
    );
    retire();
}

/// Interrupt timeout: raises `mod_wsgi.RequestTimeout` once in the thread of each request running
/// longer than `limit`, so it unwinds and its client gets 504 (code in C sees it only when it returns
/// to Python).
pub fn watch_interrupts(monitor: &Monitor, limit: Duration, names: Names) {
    let mut interrupted: Vec<(u64, Instant)> = Vec::new();
    loop {
        std::thread::sleep(TICK);
        let overdue = monitor.overdue(limit);
        interrupted.retain(|done| overdue.iter().any(|o| (o.python_ident, o.started) == *done));
        for request in overdue {
            if interrupted.contains(&(request.python_ident, request.started)) {
                continue;
            }
            eprintln!(
                "{}: Injected RequestTimeout into thread {} of {} {} (request {}, running for {:.1} s, past {})",
                names.log,
                request.python_ident,
                names.process,
                std::process::id(),
                request.what,
                request.started.elapsed().as_secs_f64(),
                names.interrupt_timeout
            );
            rwsgi_engine::interrupt_thread(request.python_ident);
            interrupted.push((request.python_ident, request.started));
        }
    }
}

/// Deadlock timeout: once a second, a probe thread takes the GIL; if no thread has let it go for `limit`
/// (a C extension holding it while it blocks or spins), the process cannot serve and `stuck` is called
/// (it ends the process: the GIL will not be had for a clean stop).
pub fn watch_gil(limit: Duration, names: Names, stuck: &dyn Fn()) {
    let (ask, asked) = std::sync::mpsc::channel::<()>();
    let (answer, answered) = std::sync::mpsc::channel::<()>();
    let probe = std::thread::Builder::new()
        .name("rwsgi-gil-probe".into())
        .spawn(move || {
            while asked.recv().is_ok() {
                rwsgi_engine::Engine::touch_gil();
                if answer.send(()).is_err() {
                    return;
                }
            }
        });
    if probe.is_err() {
        return;
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if ask.send(()).is_err() {
            return;
        }
        if answered.recv_timeout(limit).is_err() {
            eprintln!(
                "{}: the Python GIL has not been released for {:.0} s in {} {} (a deadlock, or a C \
                 extension holding it); restarting",
                names.log,
                limit.as_secs_f64(),
                names.process,
                std::process::id()
            );
            stuck();
            return;
        }
    }
}

/// What keeps a process that must end now from ending: the requests still running (with how long each
/// has run), how many are still queued, and every Python thread's stack (if the GIL is had within
/// `wait`). For the log line of a process killed by its shutdown timeout.
pub fn unfinished_work(monitor: &Monitor, wait: Duration) -> String {
    let mut report = String::new();
    for request in monitor.overdue(Duration::ZERO) {
        report.push_str(&format!(
            "request {} running for {:.1} s\n",
            request.what,
            request.started.elapsed().as_secs_f64()
        ));
    }
    report.push_str(&format!("{} requests queued\n", monitor.queued()));
    report.push_str("Threads (kernel state, wait channel):\n");
    report.push_str(&kernel_thread_states());
    report.push_str("Python stacks:\n");
    report.push_str(&stacks_within(wait));
    report
}

/// Each thread of this process by name, with its scheduling state and the kernel function it waits in:
/// where a thread stuck outside Python (or holding the GIL) is, when no Python stack can be had.
fn kernel_thread_states() -> String {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return "(unknown: /proc/self/task cannot be read)\n".into();
    };
    let mut lines: Vec<String> = tasks
        .flatten()
        .map(|task| {
            let read = |file: &str| {
                std::fs::read_to_string(task.path().join(file))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            let stat = read("stat");
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?")
                .to_owned();
            format!(
                "{} (tid {}): {state} {}\n",
                read("comm"),
                task.file_name().to_string_lossy(),
                read("wchan")
            )
        })
        .collect();
    lines.sort();
    lines.concat()
}

/// Every Python thread's stack, or a note saying why not if the GIL is not had within `wait`.
pub fn stacks_within(wait: Duration) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let dumper = std::thread::Builder::new()
        .name("rwsgi-stacks".into())
        .spawn(move || {
            let _ = tx.send(rwsgi_engine::Engine::dump_stacks());
        });
    match dumper {
        Ok(_) => rx
            .recv_timeout(wait)
            .unwrap_or_else(|_| "(no stacks: the GIL was not released in time)\n".into()),
        Err(err) => format!("(no stacks: {err})\n"),
    }
}
