// Requests of a fast app run on the I/O thread itself: learned from the pool's requests, handed over to a
// pool thread when the response outgrows what the connection takes at once, and stopped for good by the
// first request that runs there too long.
//
// Inline running begins only after 1000 requests in a row each took under 2 ms, and the first request to
// keep the I/O thread 20 ms ends it: timing that the rest of the suite's servers, saturating both cores,
// would decide instead of the code. So the tests that need it are run alone (scripts/test runs them with
// --ignored, one at a time).

use crate::support::*;
use std::io::{BufReader, Write};
use std::net::TcpStream;

/// The pool's LEARN_AFTER: fast requests in a row before any may run inline.
const LEARN_AFTER: usize = 1000;

/// A keep-alive connection sending GETs one after another.
struct Connection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Connection {
    fn open(server: &Server) -> Self {
        let stream = server.connect();
        Self {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn get(&mut self, path: &str) -> Response {
        self.writer
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        read_response(&mut self.reader, false).unwrap()
    }

    fn thread(&mut self) -> String {
        self.get("/thread").json()["thread"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// A server whose fast app has been seen answering fast, so that its requests now run inline. A request
/// slowed by a busy machine starts the count again, so this goes on until one runs inline (bounded).
fn learned_server() -> Server {
    let server = Server::start(&[&app("suite.py"), "--threads", "4"]);
    let mut connection = Connection::open(&server);
    for _ in 0..LEARN_AFTER {
        let thread = connection.thread();
        assert!(
            thread.starts_with("rwsgi-python"),
            "a request ran on {thread} before the app was seen to answer fast"
        );
    }
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while connection.thread() != "rwsgi-io" {
        assert!(
            std::time::Instant::now() < deadline,
            "no request ran inline:\n{}",
            server.log()
        );
    }
    server
}

#[test]
#[ignore = "timing: needs inline running learned; scripts/test runs it alone"]
fn a_fast_app_comes_to_run_on_the_io_thread_and_a_slow_request_turns_that_off() {
    let server = learned_server();
    // 50 ms inline is past the budget: the app could block the I/O thread, so no request runs there again.
    assert_eq!(server.get("/sleep?s=0.05").status, 200);
    server.wait_for_log("GET /sleep?s=0.05 ran");
    assert!(server
        .log()
        .contains("from now on every request runs on the Python threads"));
    let mut connection = Connection::open(&server);
    for _ in 0..LEARN_AFTER + 500 {
        assert!(connection.thread().starts_with("rwsgi-python"));
    }
    // Blocking requests are concurrent again.
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| server.get("/rendezvous?n=3").status))
            .collect();
        for client in clients {
            assert_eq!(client.join().unwrap(), 200);
        }
    });
    assert!(started.elapsed() < IO_TIMEOUT);
}

#[test]
fn no_inline_keeps_every_request_on_the_python_threads() {
    let server = Server::start(&[&app("suite.py"), "--no-inline"]);
    let mut connection = Connection::open(&server);
    for _ in 0..LEARN_AFTER + 500 {
        assert!(connection.thread().starts_with("rwsgi-python"));
    }
}

#[test]
#[ignore = "timing: needs inline running learned; scripts/test runs it alone"]
fn a_response_outgrowing_the_connection_is_handed_over_whole_to_a_python_thread() {
    let server = learned_server();
    // Thousands of chunks while the connection's task (on this very thread) cannot send any: the first
    // ones are made inline, the rest on a pool thread, and every line arrives in order.
    let response = server.get("/stream_threads?n=5000");
    assert!(response.complete, "{}", server.log());
    let lines: Vec<&str> = std::str::from_utf8(&response.body)
        .unwrap()
        .lines()
        .collect();
    assert_eq!(lines.len(), 5000);
    assert_eq!(lines[0], "rwsgi-io");
    let handed = lines
        .iter()
        .position(|l| *l != "rwsgi-io")
        .expect("a handover");
    assert!(lines[handed..]
        .iter()
        .all(|l| l.starts_with("rwsgi-python")));
    // write() cannot be paused: what the connection cannot take yet is held, then handed over.
    let response = server.get("/write_many?n=20000");
    assert!(response.complete);
    let expected: String = (0..20000).map(|i| format!("{i}\n")).collect();
    assert_eq!(response.text(), expected);
    // A file sent by wsgi.file_wrapper is read by a pool thread, never by the I/O thread.
    let path = std::env::temp_dir().join(format!("rwsgi-inline-{}.bin", std::process::id()));
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let response = server.get(&format!("/file?path={}", path.display()));
    std::fs::remove_file(&path).unwrap();
    assert!(response.complete);
    assert!(response.body == data, "file body differs");
    // A large list body, a request body read by the app, an app that fails after starting its response.
    assert_eq!(server.get("/big?n=3000000").body.len(), 3_000_000);
    let body = vec![b'x'; 100_000];
    assert_eq!(
        server.post("/echo", "application/octet-stream", &body).body,
        body
    );
    let aborted = server.get("/raise/after");
    assert!(
        !aborted.complete,
        "an aborted response must not end cleanly"
    );
}

#[test]
#[ignore = "timing: needs inline running learned; scripts/test runs it alone"]
fn a_client_that_reads_slowly_does_not_hold_the_io_thread() {
    let server = learned_server();
    // A streamed response to a client that reads nothing yet: handed over, it waits on a pool thread
    // while the I/O thread keeps answering others.
    let mut stalled = TcpStream::connect(server.addr).unwrap();
    stalled
        .write_all(b"GET /stream_threads?n=200000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    for _ in 0..20 {
        assert_eq!(server.get("/thread").status, 200);
    }
    drop(stalled);
}

#[test]
#[ignore = "timing: needs inline running learned; scripts/test runs it alone"]
fn requests_run_inline_count_towards_max_requests() {
    // Far more than learning takes even on a busy machine, where slowed requests restart the count.
    const LIMIT: usize = 20_000;
    let server = Server::start(&[
        &app("suite.py"),
        "--max-requests",
        &LIMIT.to_string(),
        "--max-requests-jitter",
        "0",
    ]);
    let mut connection = Connection::open(&server);
    let mut sent = 0;
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while connection.thread() != "rwsgi-io" {
        sent += 1;
        assert!(
            sent < LIMIT - 1000 && std::time::Instant::now() < deadline,
            "no request ran inline:\n{}",
            server.log()
        );
    }
    sent += 1;
    // The rest are mostly inline: only if those count does the worker reach its limit and recycle.
    while sent < LIMIT - 1 {
        connection.thread();
        sent += 1;
    }
    assert!(!server.log().contains("reached --max-requests"));
    connection.thread();
    server.wait_for_log(&format!("reached --max-requests ({LIMIT}); recycling"));
}
