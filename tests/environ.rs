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

/// A request through a proxy: the client's address and scheme in headers, plus headers of the same kinds a
/// client slipped in.
const PROXIED: &str = "GET /environ HTTP/1.1\r\nHost: localhost\r\n\
    X-Forwarded-For: 203.0.113.7, 127.0.0.1\r\nX-Forwarded-Proto: https\r\n\
    X-Real-IP: 198.51.100.66\r\nX-Forwarded-Scheme: http\r\nX-Forwarded-Host: elsewhere.example\r\n\
    Connection: close\r\n\r\n";

#[test]
fn trusted_proxy_headers_speak_for_the_client_only_from_trusted_proxies() {
    let trusting = |proxies: &[&str]| {
        let mut args = vec![
            app("suite.py"),
            "--trust-proxy-header".into(),
            "X-Forwarded-For".into(),
            "--trust-proxy-header".into(),
            "x-forwarded-proto".into(),
        ];
        for proxy in proxies {
            args.extend(["--trust-proxy".into(), proxy.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start(&args)
    };
    // We connect from 127.0.0.1, a trusted proxy: the client is the address before it.
    let env = environ(&trusting(&["10.0.0.0/8", "127.0.0.1"]), PROXIED);
    assert_eq!(env["REMOTE_ADDR"], "203.0.113.7");
    assert_eq!(env["HTTP_X_FORWARDED_FOR"], "203.0.113.7, 127.0.0.1");
    assert_eq!(env["wsgi.url_scheme"], "https");
    // Other headers of the trusted kinds are removed; a kind not trusted is left alone.
    assert!(env.get("HTTP_X_REAL_IP").is_none(), "{env}");
    assert!(env.get("HTTP_X_FORWARDED_SCHEME").is_none(), "{env}");
    assert_eq!(env["HTTP_X_FORWARDED_HOST"], "elsewhere.example");
    // Without --trust-proxy every client is believed, and the first address is the client.
    let env = environ(&trusting(&[]), PROXIED);
    assert_eq!(env["REMOTE_ADDR"], "203.0.113.7");
    assert_eq!(env["wsgi.url_scheme"], "https");
    // From an address that is not a trusted proxy, the trusted kinds are dropped, not believed.
    let env = environ(&trusting(&["10.0.0.0/8"]), PROXIED);
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(env["wsgi.url_scheme"], "http");
    for dropped in [
        "HTTP_X_FORWARDED_FOR",
        "HTTP_X_FORWARDED_PROTO",
        "HTTP_X_REAL_IP",
    ] {
        assert!(env.get(dropped).is_none(), "{dropped}: {env}");
    }
    // Without the option, the headers are plain headers.
    let env = environ(&Server::start(&[&app("suite.py")]), PROXIED);
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(env["HTTP_X_REAL_IP"], "198.51.100.66");
    let err = serve_must_fail(&["--trust-proxy-header", "X-Custom"]);
    assert!(
        err.contains("--trust-proxy-header X-Custom: not a proxy header"),
        "{err}"
    );
    let err = serve_must_fail(&[
        "--trust-proxy-header",
        "X-Forwarded-For",
        "--trust-proxy",
        "10.0.0.0/33",
    ]);
    assert!(err.contains("--trust-proxy: Unable to parse"), "{err}");
}
