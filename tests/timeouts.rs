//! `--header-timeout` and `--socket-timeout`: a client that goes quiet loses its connection, and never
//! keeps a Python thread.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::support::*;

/// Reads until the server closes the connection; how long that took.
fn closed_after(stream: &mut std::net::TcpStream) -> Duration {
    let began = Instant::now();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return began.elapsed(),
            Ok(_) => {}
            Err(err) => panic!("no close within {IO_TIMEOUT:?}: {err}"),
        }
    }
}

#[test]
fn an_idle_connection_is_closed_after_the_header_timeout_a_lively_one_is_not() {
    let server = Server::start(&[&app("suite.py"), "--header-timeout", "1"]);
    let mut idle = server.connect();
    let waited = closed_after(&mut idle);
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // Each wait for the next request starts afresh: requests 0.6 s apart keep the connection.
    let mut lively = server.connect();
    let mut reader = std::io::BufReader::new(lively.try_clone().unwrap());
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(600));
        lively
            .write_all(b"GET /stream?n=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut reader, false).unwrap().status, 200);
    }
    // The default leaves a quiet keep-alive connection open a good while.
    let server = Server::start(&[&app("suite.py")]);
    let mut quiet = server.connect();
    quiet
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let err = quiet.read(&mut [0u8; 16]).unwrap_err();
    assert!(matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
}

#[test]
fn a_client_that_stops_reading_frees_its_python_thread_after_the_socket_timeout() {
    let dir = std::env::temp_dir().join(format!("rwsgi-stall-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("closed");
    let server = Server::start(&[&app("suite.py"), "--threads", "1", "--socket-timeout", "1"]);
    // An endless response to a client that reads none of it: its buffers fill, and then nothing moves.
    let mut stalled = server.connect();
    stalled
        .write_all(
            format!(
                "GET /close?marker={}&n=1000000 HTTP/1.1\r\nHost: x\r\n\r\n",
                marker.display()
            )
            .as_bytes(),
        )
        .unwrap();
    server.wait_for_log("the client read nothing for 1 s (--socket-timeout); connection closed");
    wait_for_file(&marker, "the app's close() was never called");
    // The one Python thread is free again.
    assert_eq!(server.get("/stream?n=2").text(), "chunk 0\nchunk 1\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_client_that_stops_sending_its_body_makes_the_app_s_read_fail() {
    let server = Server::start(&[&app("suite.py"), "--socket-timeout", "1"]);
    let mut stream = server.connect();
    // More than --buffer-body, so the app reads it as it comes; then the client goes quiet.
    let mut raw =
        b"POST /input/read HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 400_000));
    stream.write_all(&raw).unwrap();
    let began = Instant::now();
    let response = read_response(&mut std::io::BufReader::new(stream), false).unwrap();
    assert_eq!(response.status, 500);
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    let log = server.wait_for_log("OSError: request body read error");
    assert!(log.contains("for 1 s (--socket-timeout)"), "{log}");
    let err = serve_must_fail(&["--socket-timeout=-1"]);
    assert!(
        err.contains("--socket-timeout must be a positive number of seconds"),
        "{err}"
    );
}

#[test]
fn a_head_that_trickles_in_is_cut_off_at_the_header_timeout() {
    let server = Server::start(&[&app("suite.py"), "--header-timeout", "2"]);
    let mut stream = server.connect();
    let began = Instant::now();
    stream.write_all(b"GET /stream HTTP/1.1\r\n").unwrap();
    // A header line every 0.4 s: progress, but the head never completes.
    let mut closed = false;
    for i in 0..25 {
        std::thread::sleep(Duration::from_millis(400));
        if stream
            .write_all(format!("X-Trickle-{i}: y\r\n").as_bytes())
            .is_err()
        {
            closed = true;
            break;
        }
    }
    if !closed {
        closed_after(&mut stream);
    }
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(1600) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
}

#[test]
fn a_small_body_that_never_arrives_is_answered_408() {
    let server = Server::start(&[&app("suite.py"), "--socket-timeout", "1"]);
    let mut stream = server.connect();
    stream
        .write_all(b"POST /input/read HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly this")
        .unwrap();
    let response = read_response(&mut std::io::BufReader::new(stream), false).unwrap();
    assert_eq!(response.status, 408);
}
