//! Feeds arbitrary request-targets and headers, as a client could send them, to the CGI variable mapping.
//! Invariants: it never panics; every header variable is `HTTP_` plus upper case, digits and `_`; no header
//! whose name holds `_` or is `Proxy` gets through; PATH_INFO is never longer than the target; over a UNIX
//! socket, SERVER_PORT (taken from the client's Host header) is only digits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rwsgi_engine::{from_http, HttpRequest, Transport};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the transport: the UNIX socket's variables come from the Host header.
    let (unix, data) = match data.split_first() {
        Some((first, rest)) => (first & 1 == 1, rest),
        None => (false, data),
    };
    let transport = match unix {
        true => Transport::Unix,
        false => Transport::Tcp {
            peer: "127.0.0.1:1".parse().unwrap(),
            local: "127.0.0.1:2".parse().unwrap(),
        },
    };
    let mut parts = data.split(|&b| b == 0);
    let target = parts.next().unwrap_or_default();
    let mut headers = Vec::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        if let Ok(name) = std::str::from_utf8(name) {
            // HTTP/1 parsers hand over lowercase token names; anything else never reaches the engine.
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase() && b != b':') {
                headers.push((name, value));
            }
        }
    }
    let vars = from_http(HttpRequest {
        method: "GET",
        target,
        protocol: "HTTP/1.1",
        headers: headers.iter().copied(),
        transport,
        scheme: "http",
        script_name: "",
    });
    let port = vars.get("SERVER_PORT").expect("SERVER_PORT is always set");
    assert!(!port.is_empty() && port.iter().all(u8::is_ascii_digit), "{port:?}");
    for (key, _) in vars.iter() {
        if let Some(rest) = key.strip_prefix("HTTP_") {
            assert!(rest.bytes().all(|b| !b.is_ascii_lowercase() && b != b'-'), "{key}");
            assert_ne!(key, "HTTP_PROXY");
        }
    }
    for (name, _) in &headers {
        // An underscore header may only be visible if a hyphenated twin legitimately set the same key.
        let key = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        let twin = headers.iter().any(|(n, _)| !n.contains('_') && n.replace('-', "_") == name.replace('-', "_"));
        if name.contains('_') && !twin {
            assert!(vars.get(&key).is_none(), "{name} leaked as {key}");
        }
    }
    if let (Some(path), Some(q)) = (vars.get("PATH_INFO"), target.iter().position(|&b| b == b'?')) {
        // Percent-decoding can make a '?', but the raw query never lands in PATH_INFO.
        assert!(path.len() <= target.len() && q <= target.len());
    }
});
