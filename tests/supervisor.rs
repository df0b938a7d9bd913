// `--processes N`: a supervisor, workers sharing the socket, replacement of dead workers, stopping.

use crate::support::*;
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
