// Concurrency: --threads N serves N blocking requests at once; slow clients do not hold Python threads.

use crate::support::*;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn threads_serve_blocking_requests_concurrently() {
    let server = Server::start(&[&app("suite.py"), "--threads", "4"]);
    let started = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                stream
                    .write_all(b"GET /sleep?s=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .unwrap();
                read_response(&mut std::io::BufReader::new(stream), false)
                    .unwrap()
                    .json()["thread"]
                    .clone()
            })
        })
        .collect();
    let threads: std::collections::HashSet<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap().to_string())
        .collect();
    let elapsed = started.elapsed();
    assert_eq!(threads.len(), 4, "four distinct Python threads");
    assert!(
        elapsed < Duration::from_millis(2500),
        "4 x 1 s sleeps took {elapsed:?} on 4 threads"
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
