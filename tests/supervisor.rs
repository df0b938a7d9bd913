// `--processes N`: a supervisor, workers sharing the socket, replacement of dead workers, stopping.

use crate::support::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// The supervisor's worker processes, from /proc.
fn workers(server: &Server) -> Vec<u32> {
    let pid = server.pid();
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn wait_for_workers(server: &Server, n: usize, not: &[u32]) -> Vec<u32> {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let now = workers(server);
        if now.len() == n && now.iter().all(|p| !not.contains(p)) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "workers never became {n} new ones: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn workers_serve_as_one_multiprocess_app() {
    let server = Server::start(&[&app("suite.py"), "--processes", "2"]);
    let pids = wait_for_workers(&server, 2, &[]);
    let env = server.get("/environ").json();
    assert_eq!(env["wsgi.multiprocess"], true);
    let info = server.get("/mod_wsgi").json();
    assert_eq!(info["maximum_processes"], 2);
    assert!(
        pids.contains(&(info["pid"].as_u64().unwrap() as u32)),
        "served by a worker, not the supervisor"
    );
    assert_ne!(info["pid"].as_u64().unwrap() as u32, server.pid());
}

#[test]
fn a_killed_worker_is_replaced_within_a_second_and_the_site_stays_up() {
    let server = Server::start(&[&app("suite.py"), "--processes", "2"]);
    let before = wait_for_workers(&server, 2, &[]);
    std::process::Command::new("kill")
        .args(["-9", &before[0].to_string()])
        .status()
        .unwrap();
    let killed_at = Instant::now();
    let after = wait_for_workers(&server, 2, &before[..1]);
    assert!(
        killed_at.elapsed() < Duration::from_secs(1),
        "replacement took {:?}",
        killed_at.elapsed()
    );
    assert!(
        after.contains(&before[1]),
        "the other worker was left alone"
    );
    for _ in 0..50 {
        assert_eq!(server.get("/environ").status, 200);
    }
    server.wait_for_log(&format!(
        "worker {} exited (signal: 9 (SIGKILL)); starting a replacement",
        before[0]
    ));
}

#[test]
fn import_failure_in_workers_exits_nonzero_with_traceback() {
    let stderr = serve_must_fail(&["--processes", "2", &app("broken.py")]);
    assert!(
        stderr.contains("Traceback (most recent call last)"),
        "{stderr}"
    );
    assert!(stderr.contains("missing_dependency_for_test"), "{stderr}");
    assert!(stderr.contains("failed to start"), "{stderr}");
}

#[test]
fn sigterm_stops_every_worker_and_exits_zero() {
    let mut server = Server::start(&[&app("suite.py"), "--processes", "2"]);
    let pids = wait_for_workers(&server, 2, &[]);
    assert_eq!(server.get("/environ").status, 200);
    assert!(server.signal_and_wait("TERM").success());
    for pid in pids {
        let deadline = Instant::now() + IO_TIMEOUT;
        while std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z")
        {
            assert!(
                Instant::now() < deadline,
                "worker {pid} outlived the supervisor"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn write_versioned_app(path: &std::path::Path, version: u32) {
    std::fs::write(
        path,
        format!(
            "def application(environ, start_response):\n    body = b'version {version}'\n    \
             start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])\n    \
             return [body]\n"
        ),
    )
    .unwrap();
}

/// Keep-alive clients sending requests until `stop`; each reconnects when told `Connection: close`, as wrk
/// does. Returns (requests, failures, bodies of the last responses).
fn steady_load(
    addr: std::net::SocketAddr,
    clients: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<(u64, u64, String)>> {
    use std::io::{BufReader, Write};
    (0..clients)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut requests, mut failures, mut last) = (0, 0, String::new());
                let mut connection: Option<BufReader<std::net::TcpStream>> = None;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let reader = match connection.as_mut() {
                        Some(reader) => reader,
                        None => {
                            let stream = std::net::TcpStream::connect(addr).unwrap();
                            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                            connection.insert(BufReader::new(stream))
                        }
                    };
                    requests += 1;
                    let sent = reader
                        .get_mut()
                        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
                    match sent
                        .map_err(|e| e.to_string())
                        .and_then(|_| read_response(reader, false).map_err(|e| e.to_string()))
                    {
                        Ok(response) if response.status == 200 && response.complete => {
                            last = response.text();
                            if response
                                .header("connection")
                                .is_some_and(|c| c.eq_ignore_ascii_case("close"))
                            {
                                connection = None;
                            }
                        }
                        _ => {
                            failures += 1;
                            connection = None;
                        }
                    }
                }
                (requests, failures, last)
            })
        })
        .collect()
}

#[test]
fn sighup_reloads_new_code_without_failing_a_request_under_load() {
    let dir = std::env::temp_dir().join(format!("rwsgi-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("reloadable.py");
    write_versioned_app(&script, 1);
    let server = Server::start(&[
        script.to_str().unwrap(),
        "--processes",
        "2",
        "--threads",
        "4",
    ]);
    let old = wait_for_workers(&server, 2, &[]);
    assert_eq!(server.get("/").text(), "version 1");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = steady_load(server.addr, 4, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    write_versioned_app(&script, 2);
    std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    server.wait_for_log("reload complete");
    wait_for_workers(&server, 2, &old);
    std::thread::sleep(Duration::from_millis(3500));
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut total = 0;
    for client in load {
        let (requests, failures, last) = client.join().unwrap();
        total += requests;
        assert_eq!(
            failures, 0,
            "{failures} of {requests} requests failed during the reload"
        );
        assert_eq!(last, "version 2");
    }
    assert!(total > 100, "the load was not steady: {total} requests");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sighup_with_broken_new_code_keeps_the_running_workers() {
    let dir = std::env::temp_dir().join(format!("rwsgi-badreload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("reloadable.py");
    write_versioned_app(&script, 1);
    let server = Server::start(&[script.to_str().unwrap(), "--processes", "2"]);
    let old = wait_for_workers(&server, 2, &[]);
    std::fs::write(&script, "raise ImportError('broken deploy')\n").unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    server.wait_for_log("reload failed");
    assert_eq!(server.get("/").text(), "version 1");
    let deadline = Instant::now() + IO_TIMEOUT;
    while workers(&server).iter().any(|p| !old.contains(p)) {
        assert!(Instant::now() < deadline, "new workers were not stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigttin_and_sigttou_add_and_remove_a_worker() {
    let server = Server::start(&[&app("suite.py"), "--processes", "2"]);
    wait_for_workers(&server, 2, &[]);
    std::process::Command::new("kill")
        .args(["-TTIN", &server.pid().to_string()])
        .status()
        .unwrap();
    wait_for_workers(&server, 3, &[]);
    // Signals of one kind sent back to back may merge into one: wait for each to take effect.
    for remaining in [2, 1] {
        std::process::Command::new("kill")
            .args(["-TTOU", &server.pid().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + IO_TIMEOUT;
        while workers(&server).len() != remaining {
            assert!(Instant::now() < deadline, "workers: {:?}", workers(&server));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert_eq!(server.get("/environ").status, 200);
}

#[test]
fn max_requests_recycles_workers_without_failing_a_request() {
    let server = Server::start(&[
        &app("suite.py"),
        "--processes",
        "2",
        "--max-requests",
        "100",
    ]);
    let mut served: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    for _ in 0..1000 {
        let response = server.get("/mod_wsgi");
        assert_eq!(response.status, 200, "{}", server.log());
        *served
            .entry(response.json()["pid"].as_u64().unwrap())
            .or_default() += 1;
    }
    // Limits are 100 plus up to 10 of jitter; a few more may be in flight when a worker decides to go.
    assert!(served.values().all(|&n| n <= 115), "per worker: {served:?}");
    assert!(
        served.len() >= 9,
        "only {} workers served 1000 requests: {served:?}",
        served.len()
    );
    server.wait_for_log("reached --max-requests (");
}

#[test]
fn pid_file_names_the_supervisor_and_is_removed_on_exit() {
    let path = std::env::temp_dir().join(format!("rwsgi-pid-{}", std::process::id()));
    let mut server = Server::start(&[
        &app("suite.py"),
        "--processes",
        "2",
        "--pid-file",
        path.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().trim(),
        server.pid().to_string()
    );
    assert!(server.signal_and_wait("TERM").success());
    assert!(!path.exists(), "pid file left behind");
}

#[test]
fn a_segfault_on_one_url_leaves_every_other_url_up() {
    let server = Server::start(&[&app("suite.py"), "--processes", "2"]);
    let before = wait_for_workers(&server, 2, &[]);
    let mut stream = server.connect();
    std::io::Write::write_all(&mut stream, b"GET /segfault HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(
        read_response(&mut std::io::BufReader::new(stream), false).is_err(),
        "the crashing request cannot be answered"
    );
    for _ in 0..50 {
        assert_eq!(server.get("/environ").status, 200, "{}", server.log());
    }
    server.wait_for_log("(signal: 11 (SIGSEGV)");
    let after = wait_for_workers(&server, 2, &[]);
    assert_eq!(
        after.iter().filter(|p| before.contains(p)).count(),
        1,
        "exactly the crashed worker was replaced"
    );
}

#[test]
fn request_timeout_logs_the_request_and_stacks_and_replaces_the_worker() {
    let server = Server::start(&[&app("suite.py"), "--request-timeout", "1"]);
    let before = wait_for_workers(&server, 1, &[]);
    let mut stuck = server.connect();
    std::io::Write::write_all(&mut stuck, b"GET /sleep?s=10 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let log = server.wait_for_log("Python stacks of worker");
    assert!(log.contains("request GET /sleep?s=10 in worker"), "{log}");
    server.wait_for_log("in sleep_view");
    server.wait_for_log("time.sleep(seconds)");
    let started = Instant::now();
    let after = wait_for_workers(&server, 1, &before);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_ne!(after, before);
    for _ in 0..10 {
        assert_eq!(server.get("/environ").status, 200);
    }
}

#[test]
fn max_memory_replaces_a_worker_that_grew_too_big() {
    let server = Server::start(&[&app("suite.py"), "--max-memory", "150"]);
    let before = wait_for_workers(&server, 1, &[]);
    let grown = server.get("/grow?mb=200").json();
    assert_eq!(grown["pid"].as_u64().unwrap() as u32, before[0]);
    server.wait_for_log(&format!("worker {} uses", before[0]));
    let after = wait_for_workers(&server, 1, &before);
    assert_ne!(after, before);
    let fresh = server.get("/grow?mb=1").json();
    assert_eq!(
        fresh["held_mib"], 1,
        "the replacement starts with a clean heap"
    );
}

#[test]
fn startup_timeout_gives_up_on_an_app_that_never_finishes_importing() {
    let started = Instant::now();
    let stderr = serve_must_fail(&[
        "--processes",
        "2",
        "--startup-timeout",
        "1",
        &app("slow_import.py"),
    ]);
    assert!(
        stderr.contains("not ready after 1.0 s (--startup-timeout); killing it"),
        "{stderr}"
    );
    assert!(stderr.contains("failed to start"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn inactivity_timeout_recycles_an_idle_worker() {
    let server = Server::start(&[&app("suite.py"), "--inactivity-timeout", "1"]);
    let before = wait_for_workers(&server, 1, &[]);
    assert_eq!(server.get("/environ").status, 200);
    server.wait_for_log("(--inactivity-timeout); recycling");
    wait_for_workers(&server, 1, &before);
    assert_eq!(server.get("/environ").status, 200);
}

fn www_data() -> (u64, u64) {
    let id = |flag: &str| -> u64 {
        let out = std::process::Command::new("id")
            .args([flag, "www-data"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("the www-data user exists")
    };
    (id("-u"), id("-g"))
}

#[test]
fn user_and_group_apply_to_workers_and_to_a_single_process() {
    let (uid, gid) = www_data();
    for processes in ["1", "2"] {
        let server = Server::start(&[
            &app("suite.py"),
            "--processes",
            processes,
            "--user",
            "www-data",
            "--group",
            "www-data",
        ]);
        let who = server.get("/whoami").json();
        assert_eq!(
            (who["uid"].as_u64(), who["gid"].as_u64()),
            (Some(uid), Some(gid)),
            "{who}"
        );
        assert_eq!(
            who["groups"],
            serde_json::json!([gid]),
            "root's supplementary groups must be gone"
        );
        // A worker whose supervisor is killed outright stops too (its parent-death signal survives the
        // change of user).
        let worker = who["pid"].as_u64().unwrap();
        let mut server = server;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        let deadline = Instant::now() + IO_TIMEOUT;
        while std::path::Path::new(&format!("/proc/{worker}")).exists()
            && !std::fs::read_to_string(format!("/proc/{worker}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
        {
            assert!(
                Instant::now() < deadline,
                "worker {worker} outlived its supervisor"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn unknown_user_is_a_clear_error() {
    let stderr = serve_must_fail(&[&app("suite.py"), "--user", "no-such-user-rwsgi"]);
    assert!(
        stderr.contains("--user no-such-user-rwsgi: no such user"),
        "{stderr}"
    );
}

#[test]
fn reload_restarts_workers_when_an_imported_module_changes() {
    let dir = std::env::temp_dir().join(format!("rwsgi-reload-src-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let helper = dir.join("greeting.py");
    std::fs::write(&helper, "TEXT = b'hello'\n").unwrap();
    std::fs::write(
        dir.join("site_app.py"),
        "import greeting\n\ndef application(environ, start_response):\n    \
         start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [greeting.TEXT]\n",
    )
    .unwrap();
    let server = Server::start_in(&["site_app:application", "--reload"], &dir);
    assert_eq!(server.get("/").text(), "hello");
    std::fs::write(&helper, "TEXT = b'hello again'\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&helper)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(10))
        .unwrap();
    server.wait_for_log("greeting.py changed (--reload)");
    let deadline = Instant::now() + IO_TIMEOUT;
    while server.get("/").text() != "hello again" {
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn log_file_gets_the_log_and_sigusr1_reopens_it() {
    let dir = std::env::temp_dir().join(format!("rwsgi-logfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("rwsgi.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rwsgi"))
        .args(["serve", "--port", "0", "--processes", "2", "--log-file"])
        .arg(&log)
        .arg(app("suite.py"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    let wait_for = |path: &std::path::Path, needle: &str| {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let text = read(path);
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} not in {}:\n{text}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let text = wait_for(&log, "rwsgi: listening on http://");
    let addr: std::net::SocketAddr = text
        .lines()
        .find_map(|l| l.strip_prefix("rwsgi: listening on http://"))
        .unwrap()
        .parse()
        .unwrap();
    let get_errors = || addr.get("/errors");
    assert_eq!(get_errors().text(), "logged");
    wait_for(&log, "message to stderr");
    // Both workers serving (so both have their handlers): the signal reaches each.
    answering_workers(&addr, 2, &|| read(&log));
    // Rotate: move the file away, then SIGUSR1; the next lines go to a new file at the same path.
    let rotated = dir.join("rwsgi.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    Command::new("kill")
        .args(["-USR1", &child.id().to_string()])
        .status()
        .unwrap();
    let reopened = wait_for(&log, "SIGUSR1: reopened");
    // Both workers reopen theirs too, so whichever serves the next request writes to the new file.
    let deadline = Instant::now() + IO_TIMEOUT;
    while read(&log).matches("SIGUSR1: reopened").count() < 3 {
        assert!(Instant::now() < deadline, "{}", read(&log));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!reopened.contains("message to stderr"));
    for _ in 0..4 {
        assert_eq!(get_errors().text(), "logged");
    }
    wait_for(&log, "message to stderr");
    assert_eq!(read(&rotated).matches("message to stderr").count(), 1);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "rwsgi did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reuse_port_gives_each_worker_its_own_socket() {
    let mut server = Server::start(&[&app("suite.py"), "--processes", "2", "--reuse-port"]);
    // Fresh connections are spread by the kernel over the workers' sockets: both answer.
    answering_workers(&server, 2, &|| server.log());
    // Listening sockets on the port, from the kernel's table (state 0A is LISTEN).
    let port = format!(":{:04X}", server.addr.port());
    let listening = std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1).is_some_and(|local| local.ends_with(&port))
                && fields.get(3) == Some(&"0A")
        })
        .count();
    assert_eq!(listening, 2, "one listening socket per worker");
    assert!(server.signal_and_wait("TERM").success());
}
