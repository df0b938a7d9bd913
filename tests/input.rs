// wsgi.input: every read form, chunked bodies, 100-continue, streaming of large bodies.

use crate::support::*;
use std::io::{BufReader, Read, Write};
use std::time::Duration;

const BODY: &[u8] = b"first line\nsecond line\n\nfourth \xe9 line\nno newline at end";

fn lines(server: &Server, mode: &str) -> Vec<String> {
    let response = server.post(&format!("/input/{mode}"), "text/plain", BODY);
    assert_eq!(
        response.status,
        200,
        "{mode}: {}\n{}",
        response.text(),
        server.log()
    );
    serde_json::from_slice(&response.body).unwrap()
}

#[test]
fn every_read_form_returns_the_body_exactly() {
    let server = Server::start(&[&app("suite.py")]);
    let body = String::from_utf8(
        BODY.iter()
            .map(|&b| b as char)
            .collect::<String>()
            .into_bytes(),
    )
    .unwrap();
    assert_eq!(lines(&server, "read"), vec![body.clone()]);
    let expected_lines: Vec<String> = body.split_inclusive('\n').map(str::to_owned).collect();
    assert_eq!(lines(&server, "readline"), expected_lines);
    assert_eq!(lines(&server, "readlines"), expected_lines);
    assert_eq!(lines(&server, "iter"), expected_lines);
    assert_eq!(lines(&server, "read_n?n=7").concat(), body);
    assert!(lines(&server, "read_n?n=7")
        .iter()
        .rev()
        .skip(1)
        .all(|p| p.chars().count() == 7));
    let limited = lines(&server, "readline_n?n=5");
    assert!(limited.iter().all(|l| l.chars().count() <= 5));
    assert_eq!(limited.concat(), body);
    assert_eq!(
        lines(&server, "readlines?n=15"),
        expected_lines[..2].to_vec()
    );
}

#[test]
fn chunked_request_body_is_decoded() {
    let server = Server::start(&[&app("suite.py")]);
    let response = server.request(
        "POST /input/read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
    );
    assert_eq!(response.json(), serde_json::json!(["hello, world"]));
}

#[test]
fn reads_never_pass_the_body_into_a_pipelined_request() {
    let server = Server::start(&[&app("suite.py")]);
    let mut stream = server.connect();
    stream
        .write_all(
            b"POST /input/read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /environ HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .unwrap();
    let mut reader = BufReader::new(stream);
    assert_eq!(
        read_response(&mut reader, false).unwrap().json(),
        serde_json::json!(["hello"])
    );
    let second = read_response(&mut reader, false).unwrap();
    assert_eq!(second.json()["PATH_INFO"], "/environ");
}

#[test]
fn expect_100_continue_is_answered() {
    let server = Server::start(&[&app("suite.py")]);
    let mut stream = server.connect();
    stream
        .write_all(b"POST /input/read HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut interim = [0; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"data").unwrap();
    let response = read_response(&mut BufReader::new(stream), false).unwrap();
    assert_eq!(response.json(), serde_json::json!(["data"]));
}

#[test]
fn one_gib_upload_is_streamed_not_buffered() {
    let server = Server::start(&[&app("suite.py")]);
    const SIZE: usize = 1 << 30;
    let mut stream = server.connect();
    stream
        .write_all(format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let block = vec![b'u'; 1 << 20];
    for _ in 0..SIZE / block.len() {
        stream.write_all(&block).unwrap();
    }
    let response = read_response(&mut BufReader::new(stream), false).unwrap();
    let report = response.json();
    assert_eq!(report["bytes"], SIZE);
    let growth_kib = report["maxrss_kib_after"].as_i64().unwrap()
        - report["maxrss_kib_before"].as_i64().unwrap();
    assert!(
        growth_kib < 64 * 1024,
        "RSS grew by {growth_kib} KiB while reading 1 GiB"
    );
}

#[test]
fn slow_body_does_not_hold_a_python_thread() {
    let server = Server::start(&[&app("suite.py"), "--threads", "1"]);
    let mut slow = server.connect();
    slow.write_all(b"POST /input/read HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // With the single Python thread free, another request is served while the first body trickles.
    let started = std::time::Instant::now();
    assert_eq!(server.get("/environ").status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    slow.write_all(b"defghij").unwrap();
    let response = read_response(&mut BufReader::new(slow), false).unwrap();
    assert_eq!(response.json(), serde_json::json!(["abcdefghij"]));
}

#[test]
fn read_without_size_returns_a_streamed_body_whole() {
    let server = Server::start(&[&app("suite.py"), "--buffer-body", "1000"]);
    let body: Vec<u8> = (0..500_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let response = server.post("/input/read", "application/octet-stream", &body);
    let parts: Vec<String> = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(parts.len(), 1);
    assert!(
        parts[0].as_bytes() == body.as_slice(),
        "body differs ({} of {} bytes)",
        parts[0].len(),
        body.len()
    );
    let echoed = server.post("/echo", "application/octet-stream", &body);
    assert!(echoed.body == body, "echo differs");
}
