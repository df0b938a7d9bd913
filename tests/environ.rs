// The environ: CGI keys per PEP 3333, HTTP_* headers, wsgi.* keys.

use crate::support::*;

fn environ(server: &Server, raw: &str) -> serde_json::Value {
    let response = server.request(raw);
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

#[test]
fn required_cgi_and_wsgi_keys() {
    let server = Server::start(&[&app("suite.py"), "--threads", "4"]);
    let env = environ(
        &server,
        "GET /environ?a=1&b=%20 HTTP/1.1\r\nHost: example.com:8080\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(env["REQUEST_METHOD"], "GET");
    assert_eq!(env["SCRIPT_NAME"], "");
    assert_eq!(env["PATH_INFO"], "/environ");
    assert_eq!(env["QUERY_STRING"], "a=1&b=%20");
    assert_eq!(env["REQUEST_URI"], "/environ?a=1&b=%20");
    assert_eq!(env["SERVER_NAME"], "example.com");
    assert_eq!(env["SERVER_PORT"], server.addr.port().to_string());
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.1");
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert!(env["REMOTE_PORT"].as_str().unwrap().parse::<u16>().is_ok());
    assert_eq!(env["HTTP_HOST"], "example.com:8080");
    assert_eq!(env["wsgi.version"], serde_json::json!([1, 0]));
    assert_eq!(env["wsgi.url_scheme"], "http");
    assert_eq!(env["wsgi.input"], "<Input>");
    assert_eq!(env["wsgi.errors"], "<TextIOWrapper>");
    assert_eq!(env["wsgi.multithread"], true);
    assert_eq!(env["wsgi.multiprocess"], false);
    assert_eq!(env["wsgi.run_once"], false);
    assert_eq!(env["wsgi.input_terminated"], true);
    assert_eq!(env["wsgi.file_wrapper.is_type"], true);
    assert!(env.get("CONTENT_LENGTH").is_none());
}

#[test]
fn path_info_is_percent_decoded_as_latin1() {
    let server = Server::start(&[&app("suite.py")]);
    let response = server.get("/caf%C3%A9/a%20b%2Fc?x=%C3%A9");
    let env = response.json();
    // UTF-8 bytes of "café", each byte one latin-1 code point, as PEP 3333 requires.
    assert_eq!(env["path"], "/caf\u{c3}\u{a9}/a b/c");
}

#[test]
fn headers_are_joined_filtered_and_never_proxy() {
    let server = Server::start(&[&app("suite.py")]);
    let env = environ(
        &server,
        "POST /environ HTTP/1.1\r\nHost: h\r\nX-Multi: one\r\nX-Multi: two\r\nX_Multi: spoofed\r\nX-Real-Ip: 1.2.3.4\r\n\
         X_Real_Ip: 6.6.6.6\r\nProxy: http://evil:1\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(env["HTTP_X_MULTI"], "one, two");
    assert_eq!(env["HTTP_X_REAL_IP"], "1.2.3.4");
    assert!(env.get("HTTP_PROXY").is_none());
    assert_eq!(env["CONTENT_TYPE"], "text/plain");
    assert_eq!(env["CONTENT_LENGTH"], "3");
    assert!(env.get("HTTP_CONTENT_TYPE").is_none());
    assert!(env.get("HTTP_CONTENT_LENGTH").is_none());
}

#[test]
fn http_10_clients_see_their_own_protocol() {
    let server = Server::start(&[&app("suite.py")]);
    let response = server.request("GET /environ HTTP/1.0\r\n\r\n");
    assert_eq!(response.version, "HTTP/1.0");
    let env = response.json();
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.0");
    assert_eq!(env["SERVER_NAME"], "127.0.0.1");
}

#[test]
fn mod_wsgi_module_is_importable() {
    let server = Server::start(&[&app("suite.py"), "--threads", "3"]);
    let info = server.get("/mod_wsgi").json();
    assert_eq!(info["threads_per_process"], 3);
    assert_eq!(info["process_group"], "");
}

#[test]
fn wsgiref_validator_sees_no_violation() {
    let server = Server::start(&[&app("validated.py")]);
    // (/late_start is left out: the validator forbids even an empty item before start_response, which the
    // PEP itself allows.)
    for path in [
        "/environ",
        "/write",
        "/stream?n=3",
        "/latin1",
        "/bytesio",
        "/status",
    ] {
        let response = server.get(path);
        assert!(
            response.status < 500,
            "{path}: {} {}\n{}",
            response.status,
            response.text(),
            server.log()
        );
        assert!(response.complete, "{path}");
    }
    let response = server.post("/input/readlines", "text/plain", b"a\nb\nc");
    assert_eq!(response.status, 200, "{}", server.log());
    let response = server.post("/input/read_n?n=3", "text/plain", b"body");
    assert_eq!(response.status, 200, "{}", server.log());
    assert!(!server.log().contains("Traceback"), "{}", server.log());
}
