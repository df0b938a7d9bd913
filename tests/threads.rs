// Concurrency: --threads N serves N blocking requests at once; slow clients do not hold Python threads.

use crate::support::*;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn threads_serve_blocking_requests_concurrently() {
    let server = Server::start(&[&app("suite.py"), "--threads", "4"]);
    // Each request waits in the app until all four are inside it at once: only four threads running
    // them concurrently lets any of them answer 200.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                stream
                    .write_all(
                        b"GET /rendezvous?n=4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    )
                    .unwrap();
                read_response(&mut std::io::BufReader::new(stream), false).unwrap()
            })
        })
        .collect();
    let mut threads = std::collections::HashSet::new();
    for handle in handles {
        let response = handle.join().unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        threads.insert(response.json()["thread"].to_string());
    }
    assert_eq!(threads.len(), 4, "four distinct Python threads");
}

#[test]
fn a_slow_reload_hook_neither_deadlocks_nor_serialises_requests() {
    let server = Server::start(&[&app("slow_reload_hook.py"), "--threads", "6"]);
    assert_eq!(server.get("/").text(), "ok");
    // Six requests at once, each running the 0.3 s hook: one after another would take 1.8 s; holding
    // the app's lock across the hook deadlocked as soon as two met (the GIL given up inside it).
    let started = Instant::now();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| server.get("/").status))
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    assert_eq!(statuses, [200; 6], "{}", server.log());
    assert!(
        elapsed < Duration::from_millis(1500),
        "six hooks took {elapsed:?}: they ran one after another"
    );
}

#[test]
fn slow_reader_does_not_hold_a_python_thread() {
    let server = Server::start(&[&app("suite.py"), "--threads", "1"]);
    // A 200 KB response the client never reads: it waits in buffers, not in the only Python thread.
    let mut lazy = server.connect();
    lazy.write_all(b"GET /big?n=200000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(server.get("/environ").status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(lazy);
}

// Run alone (scripts/test does, with --ignored): it measures scheduling, which the rest of the suite's
// servers saturating both cores would distort.
#[test]
#[ignore = "scheduling measurement; scripts/test runs it alone"]
fn cpu_bound_requests_run_one_thread_at_a_time() {
    // 16 threads and 8 clients: a pool that gave every waiting request a thread would have ~8 requests
    // fighting over the GIL at once; rwsgi's queue keeps CPU-bound work on one thread at a time.
    let server = Server::start(&[&app("suite.py"), "--threads", "16"]);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                for _ in 0..25 {
                    stream
                        .write_all(b"GET /cpu?ms=2 HTTP/1.1\r\nHost: x\r\n\r\n")
                        .unwrap();
                    assert_eq!(read_response(&mut reader, false).unwrap().status, 200);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let report = server.get("/concurrency").json();
    let requests = report["requests"].as_u64().unwrap();
    let overlapped = report["overlapped"].as_u64().unwrap();
    assert_eq!(requests, 200);
    // A pool that gives each waiting request a thread has nearly every request start while others are
    // still inside Python. The maximum alone is hostage to rare scheduler events on a shared machine, so
    // the test bounds how often it happens: the throughput-relevant property. Measured here: rwsgi 0-12%
    // (the upper end with the machine busy), a naive pool 48%; the bound sits between them.
    assert!(
        overlapped * 4 <= requests,
        "{overlapped} of {requests} CPU-bound requests overlapped in Python ({report})"
    );
}

#[test]
fn queue_timeout_answers_503_with_retry_after_without_running_the_app() {
    let server = Server::start(&[&app("suite.py"), "--threads", "1", "--queue-timeout", "0.5"]);
    let mut busy = server.connect();
    busy.write_all(b"GET /sleep?s=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let waited = server.get("/errors");
    assert_eq!(waited.status, 503);
    assert_eq!(waited.header("retry-after").as_deref(), Some("1"));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "503 took {:?}",
        started.elapsed()
    );
    let first = read_response(&mut std::io::BufReader::new(busy), false).unwrap();
    assert_eq!(first.status, 200, "the running request is unaffected");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !server.log().contains("message to wsgi.errors"),
        "the app ran for a request answered 503"
    );
    assert_eq!(server.get("/environ").status, 200);
}

#[test]
fn interrupt_timeout_unwinds_a_long_request_with_504() {
    let server = Server::start(&[&app("suite.py"), "--interrupt-timeout", "0.5"]);
    let pid_before = server.get("/mod_wsgi").json()["pid"].clone();
    let started = Instant::now();
    let response = server.get("/cpu?ms=10000");
    assert_eq!(response.status, 504, "{}", response.text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // The interrupt is logged when it is injected, where it landed when the request has unwound.
    let log = server.wait_for_log("in cpu_view");
    assert!(
        log.contains("Injected RequestTimeout into thread")
            && log.contains("(request GET /cpu?ms=10000, running for"),
        "{log}"
    );
    assert!(
        log.contains("Request interrupted by RequestTimeout; thread recovered."),
        "the log says where it was interrupted: {log}"
    );
    assert_eq!(
        server.get("/mod_wsgi").json()["pid"],
        pid_before,
        "same process, no restart needed"
    );
}

#[test]
fn several_io_threads_serve_requests_and_stop_cleanly() {
    let mut server = Server::start(&[&app("suite.py"), "--io-threads", "2", "--threads", "4"]);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| server.get("/rendezvous?n=4").status))
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(statuses, [200; 4], "{}", server.log());
    for _ in 0..200 {
        assert_eq!(server.get("/environ").status, 200);
    }
    assert!(server.signal_and_wait("TERM").success(), "{}", server.log());
}
