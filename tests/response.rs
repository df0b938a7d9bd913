// start_response, write(), the response iterable, Content-Length, aborts, close(), file_wrapper, errors.

use crate::support::*;
use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

#[test]
fn start_response_rejects_bad_status_and_headers_with_clear_errors() {
    let server = Server::start(&[&app("suite.py")]);
    let cases = [
        ("status_bytes", "TypeError", "status must be a str"),
        (
            "status_no_reason",
            "ValueError",
            "no space following status code: b'200'",
        ),
        ("status_crlf", "ValueError", "control character"),
        (
            "headers_tuple",
            "TypeError",
            "argument 2 must be list, not tuple",
        ),
        (
            "header_not_pair",
            "ValueError",
            "each header must be a 2-tuple, got length 3",
        ),
        ("header_name_bytes", "TypeError", "must be str, not bytes"),
        ("header_value_int", "TypeError", "must be str, not int"),
        (
            "header_value_crlf",
            "ValueError",
            "carriage return/line feed character",
        ),
        (
            "header_name_space",
            "ValueError",
            "space character in header name",
        ),
        ("hop_by_hop", "ValueError", "hop-by-hop"),
        ("transfer_encoding", "ValueError", "hop-by-hop"),
        (
            "non_latin1",
            "UnicodeEncodeError",
            "'latin-1' codec can't encode",
        ),
    ];
    for (case, kind, message) in cases {
        let outcome = server.get(&format!("/start_response/{case}")).json();
        assert_eq!(outcome["type"], kind, "{case}: {outcome}");
        assert!(
            outcome["message"].as_str().unwrap().contains(message),
            "{case}: {outcome}"
        );
    }
}

/// As mod_wsgi (more tolerant than PEP 3333): before anything is sent, a second call replaces the first.
#[test]
fn second_call_without_exc_info_replaces_an_unsent_head() {
    let server = Server::start(&[&app("suite.py")]);
    let response = server.get("/twice");
    assert_eq!(response.status, 201);
    assert_eq!(response.json()["second_call"], serde_json::Value::Null);
}

#[test]
fn exc_info_replaces_unsent_headers_and_reraises_after_sending() {
    let server = Server::start(&[&app("suite.py")]);
    let replaced = server.get("/exc_info/before");
    assert_eq!(
        (replaced.status, replaced.reason.as_str()),
        (503, "Replaced")
    );
    assert_eq!(replaced.header("x-replaced").as_deref(), Some("yes"));
    assert_eq!(replaced.text(), "replaced");
    let after = server.get("/exc_info/after");
    assert_eq!(after.status, 200);
    assert_eq!(after.text(), "first part, reraised 'boom after'");
}

#[test]
fn write_callable_sends_before_the_iterable() {
    let server = Server::start(&[&app("suite.py")]);
    assert_eq!(server.get("/write").text(), "written twice, then returned");
}

#[test]
fn generator_is_streamed_as_produced() {
    let server = Server::start(&[&app("suite.py")]);
    let mut stream = server.connect();
    stream
        .write_all(b"GET /stream?n=3&delay=0.7 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("chunk 0") {
        let mut buf = [0; 1024];
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the first chunk");
        seen.extend_from_slice(&buf[..n]);
    }
    let first_at = started.elapsed();
    assert!(
        first_at < Duration::from_millis(600),
        "first chunk waited for the whole body ({first_at:?})"
    );
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1400));
}

#[test]
fn streamed_http11_response_without_length_is_chunked_and_http10_is_close_delimited() {
    let server = Server::start(&[&app("suite.py")]);
    let chunked = server.get("/stream?n=3");
    assert!(chunked.chunked && chunked.complete);
    assert_eq!(chunked.text(), "chunk 0\nchunk 1\nchunk 2\n");
    let old = server.request("GET /stream?n=3 HTTP/1.0\r\n\r\n");
    assert!(!old.chunked);
    assert_eq!(old.text(), "chunk 0\nchunk 1\nchunk 2\n");
}

#[test]
fn late_start_response_inside_the_generator() {
    let server = Server::start(&[&app("suite.py")]);
    let response = server.get("/late_start");
    assert_eq!((response.status, response.text().as_str()), (202, "late"));
}

#[test]
fn content_length_is_never_exceeded_and_a_short_body_closes_the_connection() {
    let server = Server::start(&[&app("suite.py")]);
    let more = server.get("/cl/more");
    assert_eq!(more.text(), "01234");
    assert!(more.complete);
    let mut stream = server.connect();
    stream
        .write_all(b"GET /cl/less HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let less = read_response(&mut reader, false).unwrap();
    assert_eq!(less.header("content-length").as_deref(), Some("10"));
    assert_eq!(less.text(), "01234");
    assert!(!less.complete, "the client can tell the body is short");
    let mut tail = Vec::new();
    assert_eq!(
        reader.read_to_end(&mut tail).unwrap(),
        0,
        "connection closed"
    );
}

#[test]
fn exception_after_bytes_were_sent_aborts_the_response() {
    let server = Server::start(&[&app("suite.py")]);
    let response = server.get("/raise/after");
    assert_eq!(response.status, 200);
    assert!(response.chunked);
    assert!(
        !response.complete,
        "an aborted response must not end with the final chunk"
    );
    assert_eq!(response.text(), "partial");
    server.wait_for_log("RuntimeError: failed after sending");
    assert_eq!(
        server.get("/environ").status,
        200,
        "the server keeps serving"
    );
}

#[test]
fn exception_before_sending_is_a_500_with_traceback_in_log() {
    let server = Server::start(&[&app("suite.py")]);
    let response = server.get("/raise/before");
    assert_eq!(response.status, 500);
    assert!(response.text().contains("Internal Server Error"));
    let log = server.wait_for_log("RuntimeError: failed before sending");
    assert!(log.contains("Traceback (most recent call last)"));
    assert!(log.contains("raise_before_view"));
    assert_eq!(server.get("/environ").status, 200);
}

#[test]
fn seed_hello_with_str_body_is_a_500_explaining_bytes_are_expected() {
    let server = Server::start(&[&app("hello_seed.py")]);
    let response = server.get("/");
    assert_eq!(response.status, 500);
    let log = server.wait_for_log(
        "TypeError: sequence of byte string values expected, value of type str found",
    );
    assert!(log.contains("hello_seed.py"));
    assert_eq!(server.get("/").status, 500, "still serving");
}

#[test]
fn close_is_called_when_the_client_disconnects_mid_response() {
    let server = Server::start(&[&app("suite.py")]);
    let marker = std::env::temp_dir().join(format!("rwsgi-close-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let mut stream = server.connect();
    let request = format!(
        "GET /close?marker={}&n=100000&delay=0.01 HTTP/1.1\r\nHost: x\r\n\r\n",
        marker.display()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut some = [0; 4096];
    stream.read_exact(&mut some).unwrap();
    drop(stream);
    wait_for_file(&marker, "close() was not called after the client left");
}

#[test]
fn a_client_that_shuts_its_side_down_after_the_request_still_gets_the_response() {
    let server = Server::start(&[&app("suite.py")]);
    let mut stream = server.connect();
    stream
        .write_all(b"GET /sleep?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // The end of the client's side reaches the server while the app is still running.
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let response = read_response(&mut BufReader::new(stream), false).unwrap();
    assert_eq!(response.status, 200, "{}", server.log());
}

#[test]
fn close_is_called_after_a_complete_response() {
    let server = Server::start(&[&app("suite.py")]);
    let marker = std::env::temp_dir().join(format!("rwsgi-close-done-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let response = server.get(&format!("/close?marker={}&n=2", marker.display()));
    assert_eq!(response.body.len(), 2 * 65536);
    wait_for_file(&marker, "close() was not called");
}

#[test]
fn header_values_keep_latin1_bytes_and_custom_reasons() {
    let server = Server::start(&[&app("suite.py")]);
    let response = server.get("/latin1");
    assert_eq!(
        response
            .headers
            .iter()
            .find(|(n, _)| n == "X-Latin1")
            .unwrap()
            .1,
        b"caf\xe9 \xff"
    );
    let custom = server.get("/status");
    assert_eq!(
        (custom.status, custom.reason.as_str()),
        (299, "Custom Reason")
    );
}

#[test]
fn wsgi_errors_and_stderr_reach_the_log() {
    let server = Server::start(&[&app("suite.py")]);
    assert_eq!(server.get("/errors").text(), "logged");
    server.wait_for_log("message to wsgi.errors");
    server.wait_for_log("message to stderr");
}

#[test]
fn large_bodies_handed_over_without_a_copy_are_all_freed() {
    let server = Server::start(&[&app("suite.py"), "--threads", "2"]);
    let maxrss = |server: &Server| server.get("/maxrss").json()["maxrss_kib"].as_i64().unwrap();
    // Warm up (the first big body sets the peak a steady server keeps).
    assert_eq!(server.get("/big?n=900000").body.len(), 900_000);
    let before = maxrss(&server);
    for i in 0..300 {
        let size = 900_000 + i;
        // A new bytes object each time (`b'b' * n`), big enough to be shared with the server.
        let body = server.get(&format!("/big?n={size}")).body;
        assert_eq!(body.len(), size);
        assert!(
            body.iter().all(|&b| b == b'b'),
            "response {i} has wrong bytes"
        );
    }
    let growth_kib = maxrss(&server) - before;
    // 270 MB went out; kept, they would all still be in memory.
    assert!(growth_kib < 64 * 1024, "RSS grew by {growth_kib} KiB");
}

#[test]
fn an_unfinished_wsgi_errors_line_is_logged_when_its_request_ends() {
    // One thread, so both requests use the thread's stream.
    let server = Server::start(&[&app("suite.py"), "--threads", "1"]);
    assert_eq!(
        server.get("/errors-partial?first-unfinished").text(),
        "logged"
    );
    server.wait_for_log("first-unfinished\n");
    assert_eq!(
        server.get("/errors-partial?second-unfinished").text(),
        "logged"
    );
    let log = server.wait_for_log("second-unfinished\n");
    assert!(
        !log.contains("first-unfinishedsecond"),
        "a request's unfinished line ran into the next one's:\n{log}"
    );
}

#[test]
fn file_wrapper_sends_a_real_file_without_python_reads() {
    let server = Server::start(&[&app("suite.py")]);
    let path = std::env::temp_dir().join(format!("rwsgi-file-{}", std::process::id()));
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    let response = server.get(&format!("/file?path={}", path.display()));
    assert_eq!(response.body.len(), content.len());
    assert!(response.body == content, "file bytes differ");
    let limited = server.get(&format!("/file?path={}&cl=1000", path.display()));
    assert_eq!(limited.body, content[..1000]);
    assert_eq!(
        server.get("/file_reads").json()["reads"],
        0,
        "the file was read through Python"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn file_wrapper_without_fileno_is_iterated() {
    let server = Server::start(&[&app("suite.py")]);
    let response = server.get("/bytesio");
    assert_eq!(response.body.len(), 32 * 1000);
}

#[test]
fn head_sends_headers_only() {
    let server = Server::start(&[&app("suite.py")]);
    let response =
        server.request("HEAD /big?n=5000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-length").as_deref(), Some("5000"));
    assert!(response.body.is_empty());
}

#[test]
fn keepalive_and_pipelining_answer_in_order() {
    let server = Server::start(&[&app("suite.py"), "--threads", "4"]);
    let mut stream = server.connect();
    stream
        .write_all(b"GET /sleep?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\nGET /environ?n=2 HTTP/1.1\r\nHost: x\r\n\r\nGET /environ?n=3 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    assert!(read_response(&mut reader, false).unwrap().json()["thread"].is_number());
    assert_eq!(
        read_response(&mut reader, false).unwrap().json()["QUERY_STRING"],
        "n=2"
    );
    assert_eq!(
        read_response(&mut reader, false).unwrap().json()["QUERY_STRING"],
        "n=3"
    );
}

#[test]
fn malformed_requests_get_4xx_and_the_server_survives() {
    let server = Server::start(&[&app("suite.py")]);
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\n\r\n",
        b"POST /input/read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let mut stream = server.connect();
        stream.write_all(raw).unwrap();
        let mut reader = BufReader::new(stream);
        if let Ok(response) = read_response(&mut reader, false) {
            assert!(
                (400..500).contains(&response.status),
                "{raw:?} got {}",
                response.status
            );
        }
    }
    assert_eq!(server.get("/environ").status, 200);
}

/// A list whose second item is not bytes: the first item was the response's start, so it reaches the
/// client, and the response is then aborted (never a clean end), as when a generator fails midway.
#[test]
fn a_bad_item_after_good_ones_sends_them_then_aborts() {
    let server = Server::start(&[&app("suite.py")]);
    let response = server.get("/list_bad_item");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "bytes-ok");
    assert!(!response.complete, "{response:?}");
    server.wait_for_log("TypeError");
}
