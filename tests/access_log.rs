//! `rwsgi serve --access-log`: Apache's log formats, written as Apache writes them (checked against a real
//! Apache serving the same app), reopened on SIGUSR1, whole lines from every worker.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::apache::Apache;
use crate::support::{answering_workers, app, serve_must_fail, Client, Server, IO_TIMEOUT};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rwsgi-access-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The file's lines once it has `count` of them (bounded wait).
fn wait_for_lines(path: &Path, count: usize) -> Vec<String> {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= count {
            assert!(text.ends_with('\n'), "a partial line in:\n{text}");
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, not {count}:\n{text}",
            path.display(),
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A line with its `[time]` replaced by `[T]`, after checking the time is Apache's `%t` layout.
fn without_time(line: &str) -> String {
    let (start, end) = (line.find('[').unwrap(), line.find(']').unwrap());
    let time = &line[start + 1..end];
    let shape: String = time
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    let month = &shape[3..6];
    assert!(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
            .contains(&month),
        "{time}"
    );
    let shape = shape.replace(month, "Mon").replace('-', "+");
    assert_eq!(shape, "99/Mon/9999:99:99:99 +9999", "{line}");
    format!("{}[T]{}", &line[..start], &line[end + 1..])
}

/// Requests whose every logged field the app decides, so any server must log them alike.
const REQUESTS: &[&[u8]] = &[
    b"GET /stream?n=3 HTTP/1.1\r\nHost: localhost\r\nReferer: http://example.org/?a=\"b\"\r\nUser-Agent: probe/1.0\r\nConnection: close\r\n\r\n",
    b"HEAD /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    b"POST /echo HTTP/1.0\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /nowhere?x=%22&y=1 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: tab\there \xff\\ \"q\"\r\nConnection: close\r\n\r\n",
    b"GET /big?n=100000 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    b"GET /caf%C3%A9/%22q%22?x=%20 HTTP/1.1\r\nHost: localhost\r\nX-Dup: one\r\nX-Dup: two\r\nConnection: close\r\n\r\n",
];

/// Fields beyond `combined`, in a second log of each server.
const PARTS: &str = "%U|%q|%m|%H|%>s|%{X-Dup}i";

#[test]
fn combined_lines_are_the_ones_apache_writes_for_the_same_requests() {
    let dir = scratch("combined");
    let (log, parts) = (dir.join("access.log"), dir.join("parts.log"));
    let server = Server::start(&[&app("suite.py"), "--access-log", log.to_str().unwrap()]);
    let parts_server = Server::start(&[
        &app("suite.py"),
        "--access-log",
        parts.to_str().unwrap(),
        "--access-log-format",
        PARTS,
    ]);
    let apache = Apache::start(&format!(
        "LogFormat \"%h %l %u %t \\\"%r\\\" %>s %b \\\"%{{Referer}}i\\\" \\\"%{{User-Agent}}i\\\"\" combined\n\
         CustomLog combined.log combined\n\
         CustomLog parts.log \"{PARTS}\"\n\
         WSGIScriptAlias / @REPO@/tests/apps/suite.py\n\
         <Directory @REPO@/tests/apps>\n    Require all granted\n</Directory>\n",
    ));
    for raw in REQUESTS {
        let ours = server.request_bytes(raw);
        let theirs = apache.request_bytes(raw);
        assert_eq!(
            ours.status,
            theirs.status,
            "{}",
            String::from_utf8_lossy(raw)
        );
        assert_eq!(parts_server.request_bytes(raw).status, ours.status);
    }
    let ours = wait_for_lines(&log, REQUESTS.len());
    let theirs = wait_for_lines(&apache.dir.join("combined.log"), REQUESTS.len());
    let ours: Vec<String> = ours.iter().map(|l| without_time(l)).collect();
    let theirs: Vec<String> = theirs.iter().map(|l| without_time(l)).collect();
    assert_eq!(ours, theirs);
    let ours_parts = wait_for_lines(&parts, REQUESTS.len());
    let theirs_parts = wait_for_lines(&apache.dir.join("parts.log"), REQUESTS.len());
    assert_eq!(ours_parts, theirs_parts);
    // What the lines say, so the comparison cannot pass on two empty logs.
    assert_eq!(
        ours[0],
        "127.0.0.1 - - [T] \"GET /stream?n=3 HTTP/1.1\" 200 24 \"http://example.org/?a=\\\"b\\\"\" \"probe/1.0\""
    );
    assert_eq!(
        ours[1],
        "127.0.0.1 - - [T] \"HEAD /status HTTP/1.1\" 299 - \"-\" \"-\""
    );
    assert!(
        ours[3].ends_with("404 20 \"-\" \"tab\\there \\xff\\\\ \\\"q\\\"\""),
        "{}",
        ours[3]
    );
    assert!(
        ours[4].contains("\"GET /big?n=100000 HTTP/1.1\" 200 100000 "),
        "{}",
        ours[4]
    );
    assert_eq!(
        ours_parts[5],
        "/caf\\xc3\\xa9/\\\"q\\\"|?x=%20|GET|HTTP/1.1|404|one, two"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_format_of_one_s_own_logs_what_it_names() {
    let server = Server::start(&[
        &app("suite.py"),
        "--access-log",
        "-",
        "--access-log-format",
        "%m %U%q %>s %B %{Content-Type}o %{X-Missing}i %500{User-Agent}i pid=%P us=%D",
    ]);
    let raise = "GET /raise/before HTTP/1.1\r\nHost: localhost\r\nUser-Agent: crasher\r\nConnection: close\r\n\r\n";
    assert_eq!(server.request(raise).status, 500);
    assert_eq!(server.get("/stream?n=2").status, 200);
    // `-` is stdout, which the test reads together with stderr.
    let text = server.wait_for_log("GET /stream?n=2 200 16 text/plain - - pid=");
    let line = |prefix: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{text}"))
            .to_owned()
    };
    let crashed = line("GET /raise/before");
    assert!(crashed.starts_with("GET /raise/before 500 "), "{crashed}");
    assert!(crashed.contains(" - crasher pid="), "{crashed}");
    // The worker's pid, and a duration in microseconds.
    let streamed = line("GET /stream?n=2");
    let (_, tail) = streamed.split_once("pid=").unwrap();
    let (pid, micros) = tail.split_once(" us=").unwrap();
    assert_ne!(
        pid.parse::<u32>().unwrap(),
        server.pid(),
        "the worker's, not the supervisor's"
    );
    assert!(micros.parse::<u64>().unwrap() > 0, "{streamed}");
}

#[test]
fn workers_write_whole_lines_and_sigusr1_reopens_the_file() {
    let dir = scratch("rotate");
    let log = dir.join("access.log");
    let server = Server::start(&[
        &app("suite.py"),
        "--processes",
        "2",
        "--access-log",
        log.to_str().unwrap(),
        "--access-log-format",
        "%>s %U %{X-Fill}i",
    ]);
    answering_workers(&server, 2, &|| server.log());
    let before = wait_for_lines(&log, 1).len();
    // Long lines from many connections at once, from both workers, into one file.
    let fill = "f".repeat(3000);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..25 {
                    let raw = format!(
                        "GET /thread HTTP/1.1\r\nHost: localhost\r\nX-Fill: {fill}\r\nConnection: close\r\n\r\n"
                    );
                    assert_eq!(server.request(&raw).status, 200);
                }
            });
        }
    });
    // A line is written just after its response is sent: wait for the last ones.
    let expected = format!("200 /thread {fill}");
    let whole = |lines: &[String]| lines.iter().filter(|l| **l == expected).count();
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut lines = wait_for_lines(&log, before + 100);
    while whole(&lines) < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        lines = wait_for_lines(&log, before + 100);
    }
    assert_eq!(whole(&lines), 100, "every line whole: {lines:?}");
    // Rotate: move the file away and signal the supervisor, which tells both workers.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    Command::new("kill")
        .args(["-USR1", &server.pid().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    while server.log().matches("SIGUSR1: reopened").count() < 2 {
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each worker's next line goes to the new file, none to the old one.
    answering_workers(&server, 2, &|| server.log());
    let after = wait_for_lines(&log, 2);
    assert!(after.iter().all(|l| l == "200 /whoami -"), "{after:?}");
    let old = wait_for_lines(&rotated, lines.len());
    assert_eq!(old.len(), lines.len(), "nothing more in the rotated file");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_format_or_path_stops_the_server_with_the_reason() {
    let err = serve_must_fail(&["--access-log", "-", "--access-log-format", "%h %Z"]);
    assert!(
        err.contains("--access-log-format: '%Z' at offset 3 is not a directive"),
        "{err}"
    );
    let err = serve_must_fail(&["--access-log", "/nonexistent-dir/access.log"]);
    assert!(
        err.contains("cannot open the access log /nonexistent-dir/access.log"),
        "{err}"
    );
    let err = serve_must_fail(&["--access-log-format", "common"]);
    assert!(err.contains("--access-log <PATH>"), "{err}");
}
