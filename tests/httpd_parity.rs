// Parity with the reference: the C mod_wsgi (PyPI's mod-wsgi, installed into the test venv from
// tests/requirements.txt) and ours, each in its own Apache with the same config, sent the same raw requests;
// the status, the response headers and the WSGI environ are compared key for key.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use crate::support::apache::*;
use crate::support::*;

/// suite.py at /suite (its `/environ/...` routes show the environ), again with pass-authorization=On as an
/// option and as a `<Location>` directive, and environ_any.py at / for HEAD and paths suite.py cannot route.
const BODY: &str = "WSGIScriptAlias /suite @REPO@/tests/apps/suite.py\n\
                    WSGIScriptAlias /passed @REPO@/tests/apps/suite.py pass-authorization=On\n\
                    <Location /dir>\n    WSGIPassAuthorization On\n</Location>\n\
                    WSGIScriptAlias /dir @REPO@/tests/apps/suite.py\n\
                    <Location /trusting>\n    WSGITrustedProxyHeaders X-Forwarded-For X-Forwarded-Proto X-Forwarded-Host X-Forwarded-Port X-Script-Name\n    WSGITrustedProxies 127.0.0.1 10.0.0.0/8\n</Location>\n\
                    WSGIScriptAlias /trusting @REPO@/tests/apps/suite.py\n\
                    <Location /wary>\n    WSGITrustedProxyHeaders X-Forwarded-For X-Forwarded-Proto\n    WSGITrustedProxies 10.0.0.0/8\n</Location>\n\
                    WSGIScriptAlias /wary @REPO@/tests/apps/suite.py\n\
                    <Location /open>\n    WSGITrustedProxyHeaders X-Real-IP X-Forwarded-Ssl\n</Location>\n\
                    WSGIScriptAlias /open @REPO@/tests/apps/suite.py\n\
                    WSGIScriptAlias / @REPO@/tests/apps/environ_any.py\n\
                    <Directory @REPO@/tests/apps>\n    Require all granted\n</Directory>\n";

/// Keys whose values legitimately differ between two servers or two requests: compared by presence and shape
/// (str, int, tuple length, or the `<type>` environ_view shows for other objects) only.
const PRESENCE_ONLY: &[&str] = &[
    // The client's ephemeral port: a new one for every connection.
    "REMOTE_PORT",
    // Apache's log id for the request (random): unique per request.
    "mod_wsgi.request_id",
    // A clock reading taken when the request arrived.
    "mod_wsgi.request_start",
    // The pid of the Apache child that ran the request: each server has its own.
    "mod_wsgi.server_pid",
    // Which of Apache's worker threads ran the request (the C module numbers them in order of first use).
    "mod_wsgi.thread_id",
    // Each implementation reports its own version.
    "mod_wsgi.version",
    // Daemon mode: clock readings taken when the daemon accepted the request and when a thread took it.
    "mod_wsgi.queue_start",
    "mod_wsgi.daemon_start",
];

/// What a chain of proxies adds, with spoofing attempts among it.
const PROXIED: &str = "X-Forwarded-For: 9.9.9.9, 1.2.3.4, 10.1.2.3\r\nX-Forwarded-Proto: https\r\n\
                       X-Forwarded-Host: example.com\r\nX-Forwarded-Port: 8443\r\nX-Script-Name: /mount\r\n\
                       X-Real-IP: 6.6.6.6\r\nX-Client-IP: 7.7.7.7\r\nX-Forwarded-Ssl: on\r\n\
                       X-Scheme: http\r\n";

/// Keys both sides must have, whose objects are of different types by design: compared by presence only.
const DIFFERENT_TYPE: &[&str] = &[];

/// Response headers not compared: the clock, and the length of a body that holds a (different) environ.
const UNCOMPARED_HEADERS: &[&str] = &["date", "content-length", "x-environ"];

/// The C module's .so, as `mod_wsgi-express module-config` prints it: `LoadModule wsgi_module "PATH"`.
pub(crate) fn c_module() -> PathBuf {
    let express = venv().join("bin/mod_wsgi-express");
    assert!(
        express.exists(),
        "{} is missing: scripts/test installs mod-wsgi from tests/requirements.txt",
        express.display()
    );
    let mut child = Command::new(&express)
        .arg("module-config")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mod_wsgi-express module-config did not finish");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // A few hundred bytes: written into the pipe's buffer before the exit, so this read cannot block.
    let mut printed = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    assert!(status.success(), "mod_wsgi-express module-config: {status}");
    let path = printed
        .lines()
        .find_map(|line| line.strip_prefix("LoadModule wsgi_module "))
        .unwrap_or_else(|| panic!("no LoadModule line in:\n{printed}"))
        .trim()
        .trim_matches('"');
    PathBuf::from(path)
}

fn get(target: &str, headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n")
        .into_bytes()
}

fn with_host(host: &str) -> Vec<u8> {
    format!("GET /suite/environ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

const AUTH: &str =
    "Authorization: Basic dXNlcjpwYXNz\r\nProxy-Authorization: Basic cHJveHk6c2VjcmV0\r\n";

fn cases() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("plain", get("/suite/environ", "")),
        ("root_mount", get("/", "")),
        ("script_name_only", get("/suite", "")),
        ("percent_20", get("/suite/environ/a%20b/%41%7e%7E?x=%20", "")),
        ("percent_specials", get("/suite/environ/%3F%23%25%3B/x;p=1", "")),
        ("percent_2f", get("/suite/environ/a%2Fb", "")),
        ("percent_utf8", get("/suite/environ/caf%C3%A9", "")),
        ("percent_latin1", get("/suite/environ/caf%E9/%FF", "")),
        (
            "raw_latin1",
            b"GET /suite/environ/caf\xe9/\xff?q=\xe9 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                .to_vec(),
        ),
        ("slash_runs", get("/suite//environ///a//b//?q=//", "")),
        ("slash_runs_at_root", get("//x//y", "")),
        ("dot_segments", get("/suite/environ/a/../b/./c", "")),
        (
            "query_string",
            get("/suite/environ?a=1&b=%20+x&c=%2F&d=caf%C3%A9&e&&=f&g==?/", ""),
        ),
        ("empty_query", get("/suite/environ?", "")),
        (
            "repeated_headers",
            get(
                "/suite/environ",
                "X-Custom: one\r\nX-Custom: two\r\nCookie: a=1\r\nCookie: b=2\r\nAccept: text/html\r\nAccept: */*\r\n",
            ),
        ),
        (
            "header_names",
            get(
                "/suite/environ",
                "X_Under: dropped\r\nX-Mixed_Case: mixed\r\nX.Dot: dot\r\nx-lower-case: lower\r\nX-Empty:\r\nX-Spaces:   a  b   \r\n",
            ),
        ),
        (
            "proxy_header",
            get("/suite/environ", "Proxy: http://evil.example:3128\r\n"),
        ),
        ("authorization_default", get("/suite/environ", AUTH)),
        ("authorization_pass_option", get("/passed/environ", AUTH)),
        ("authorization_pass_directive", get("/dir/environ", AUTH)),
        ("proxy_trusted", get("/trusting/environ", PROXIED)),
        ("proxy_untrusted_client", get("/wary/environ", PROXIED)),
        ("proxy_no_proxy_list", get("/open/environ", PROXIED)),
        ("http10_no_host", b"GET /suite/environ HTTP/1.0\r\n\r\n".to_vec()),
        (
            "http10_with_host",
            b"GET /suite/environ HTTP/1.0\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        (
            "post_body",
            b"POST /suite/environ?q=1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\nConnection: close\r\n\r\na=1&b=2"
                .to_vec(),
        ),
        (
            "post_chunked",
            b"POST /suite/environ HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "post_empty",
            b"POST /suite/environ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_vec(),
        ),
        (
            "head",
            b"HEAD /head/x?y=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        ("host_with_port", with_host("example.com:8080")),
        ("host_without_port", with_host("example.com")),
        ("host_ipv6", with_host("[::1]:8080")),
        (
            "absolute_uri",
            b"GET http://example.org:8081/suite/environ?a=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                .to_vec(),
        ),
    ]
}

/// What one server answered to one request.
struct Observed {
    status: u16,
    /// Lower-cased names, values in order, less UNCOMPARED_HEADERS.
    headers: BTreeMap<String, Vec<String>>,
    /// The environ, from the X-Environ header or else a JSON object body.
    environ: Option<serde_json::Map<String, Value>>,
    body: String,
}

fn observe(apache: &Apache, raw: &[u8]) -> Result<Observed, String> {
    let mut stream = apache.connect();
    stream.write_all(raw).map_err(|e| e.to_string())?;
    let response = read_response(&mut BufReader::new(stream), raw.starts_with(b"HEAD"))
        .map_err(|e| format!("no response: {e}"))?;
    let normal = |text: &str| normalise(apache, text);
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &response.headers {
        let name = name.to_ascii_lowercase();
        if !UNCOMPARED_HEADERS.contains(&name.as_str()) {
            headers
                .entry(name)
                .or_default()
                .push(normal(&String::from_utf8_lossy(value)));
        }
    }
    let environ = response
        .header("x-environ")
        .map(|text| text.into_bytes())
        .or_else(|| Some(response.body.clone()))
        .and_then(|json| serde_json::from_slice::<Value>(&json).ok())
        .and_then(|value| match value {
            Value::Object(map) => Some(map),
            _ => None,
        })
        .map(|map| {
            map.into_iter()
                .map(|(key, value)| {
                    let value = match value {
                        Value::String(s) => Value::String(normal(&s)),
                        other => other,
                    };
                    (key, value)
                })
                .collect()
        });
    Ok(Observed {
        status: response.status,
        headers,
        environ,
        body: normal(&response.text()),
    })
}

/// Each server's own temporary directory and port, which appear in some values, as placeholders.
fn normalise(apache: &Apache, text: &str) -> String {
    if text == apache.addr.port().to_string() {
        return "@PORT@".into();
    }
    text.replace(&apache.dir.display().to_string(), "@DIR@")
}

/// What a PRESENCE_ONLY value is compared by.
fn shape(value: &Value) -> String {
    match value {
        Value::String(s) if s.starts_with('<') && s.ends_with('>') => s.clone(),
        Value::String(_) => "str".into(),
        Value::Number(_) => "int".into(),
        Value::Bool(_) => "bool".into(),
        Value::Array(items) => format!("tuple of {}", items.len()),
        other => other.to_string(),
    }
}

/// Shown beside "the environ from one side only": the keys that decide routing.
const ROUTING_KEYS: &[&str] = &["REQUEST_URI", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING"];

fn routing(observed: &Observed) -> String {
    match &observed.environ {
        Some(environ) => {
            let keys: BTreeMap<&str, Option<&Value>> =
                ROUTING_KEYS.iter().map(|&k| (k, environ.get(k))).collect();
            format!("{} with environ {keys:?}", observed.status)
        }
        None => format!("{} {:?}", observed.status, observed.body),
    }
}

/// The differences between the C module's answer and ours, each a line.
fn compare(c: &Observed, ours: &Observed) -> Vec<String> {
    let mut differences = Vec::new();
    let mut differ = |what: String| differences.push(what);
    if c.status != ours.status {
        differ(format!("status: C {} | ours {}", c.status, ours.status));
    }
    let names: BTreeSet<&String> = c.headers.keys().chain(ours.headers.keys()).collect();
    for name in names {
        let (a, b) = (c.headers.get(name), ours.headers.get(name));
        if a != b {
            differ(format!("response header {name}: C {a:?} | ours {b:?}"));
        }
    }
    match (&c.environ, &ours.environ) {
        (Some(a), Some(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let presence_only = PRESENCE_ONLY.contains(&key.as_str());
                let typed_differently = DIFFERENT_TYPE.contains(&key.as_str());
                let shown = |v: &Value| {
                    if typed_differently {
                        "present".to_owned()
                    } else if presence_only {
                        shape(v)
                    } else {
                        v.to_string()
                    }
                };
                match (a.get(key), b.get(key)) {
                    (Some(x), None) => differ(format!("{key}: only in C ({})", shown(x))),
                    (None, Some(y)) => differ(format!("{key}: only in ours ({})", shown(y))),
                    (Some(x), Some(y)) if shown(x) != shown(y) => {
                        differ(format!("{key}: C {} | ours {}", shown(x), shown(y)))
                    }
                    _ => {}
                }
            }
        }
        (None, None) => {
            if c.body != ours.body {
                differ(format!("body: C {:?} | ours {:?}", c.body, ours.body));
            }
        }
        _ => differ(format!(
            "the environ from one side only: C {} | ours {}",
            routing(c),
            routing(ours)
        )),
    }
    differences
}

/// One line per distinct difference, with the cases it showed in (most differences show in many).
fn report(differences: &[(&str, String)], cases: &[&str]) -> String {
    let mut grouped: Vec<(&String, Vec<&str>)> = Vec::new();
    for (case, what) in differences {
        match grouped.iter_mut().find(|(w, _)| *w == what) {
            Some((_, in_cases)) => in_cases.push(case),
            None => grouped.push((what, vec![case])),
        }
    }
    let mut lines = Vec::new();
    for (what, in_cases) in grouped {
        let missing: Vec<&str> = cases
            .iter()
            .copied()
            .filter(|c| !in_cases.contains(c))
            .collect();
        let where_ = if missing.is_empty() {
            "every case".to_owned()
        } else if in_cases.len() > cases.len() / 2 {
            format!("every case but {}", missing.join(", "))
        } else {
            in_cases.join(", ")
        };
        lines.push(format!("[{where_}] {what}"));
    }
    lines.join("\n")
}

#[test]
fn environ_matches_the_c_mod_wsgi() {
    assert_same_as_c_module(BODY, "");
}

/// The same requests and config in daemon mode: the environ Apache builds travels to the daemon, which
/// must show the app what the C module's daemon shows it.
#[test]
fn daemon_mode_environ_matches_the_c_mod_wsgi() {
    assert_same_as_c_module(
        &format!(
        "WSGIDaemonProcess parity threads=4 display-name=%{{GROUP}}\nWSGIProcessGroup parity\n{BODY}"
        ),
        "parity",
    );
}

/// Both modules answer every case alike, and the apps ran in `process_group` (`""`: embedded).
fn assert_same_as_c_module(body: &str, process_group: &str) {
    let c_module = c_module();
    let (reference, ours) = std::thread::scope(|scope| {
        let reference = scope.spawn(|| {
            Apache::start_with(Setup {
                module: c_module.clone(),
                ..Setup::new(body)
            })
        });
        let ours = scope.spawn(|| Apache::start(body));
        (reference.join().unwrap(), ours.join().unwrap())
    });
    let cases = cases();
    let mut differences = Vec::new();
    let mut presence_only_values = Vec::new();
    for (case, raw) in &cases {
        match (observe(&reference, raw), observe(&ours, raw)) {
            (Ok(c), Ok(mine)) => {
                if *case == "plain" {
                    for side in [&c, &mine] {
                        let group = side
                            .environ
                            .as_ref()
                            .map(|e| e["mod_wsgi.process_group"].clone());
                        assert_eq!(group, Some(Value::from(process_group)), "the process group");
                    }
                    for key in PRESENCE_ONLY {
                        let value =
                            |o: &Observed| o.environ.as_ref().and_then(|e| e.get(*key)).cloned();
                        presence_only_values.push(format!(
                            "{key}: C {:?} | ours {:?}",
                            value(&c),
                            value(&mine)
                        ));
                    }
                }
                differences.extend(compare(&c, &mine).into_iter().map(|d| (*case, d)));
            }
            (c, mine) => {
                let (c, mine) = (c.map(|o| o.status), mine.map(|o| o.status));
                if c != mine {
                    differences.push((*case, format!("answered: C {c:?} | ours {mine:?}")));
                }
            }
        }
    }
    eprintln!(
        "values compared by presence only (case plain):\n{}\n\nC module's error log:\n{}\nour error log:\n{}",
        presence_only_values.join("\n"),
        reference.error_log(),
        ours.error_log()
    );
    let names: Vec<&str> = cases.iter().map(|(name, _)| *name).collect();
    assert!(
        differences.is_empty(),
        "{} differences from the C mod_wsgi ({}) over {} cases:\n{}",
        differences.len(),
        c_module.display(),
        names.len(),
        report(&differences, &names)
    );
}
