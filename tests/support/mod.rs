//! Test support: the real `rwsgi` binary started on an ephemeral port, and a small raw HTTP/1.1 client that
//! shows exactly what went over the wire (framing, aborts, pipelining). Every wait is bounded.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any single network wait in a test may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn app(name: &str) -> String {
    repo().join("tests/apps").join(name).display().to_string()
}

/// The venv the test command installs Django, Flask and friends into.
pub fn venv() -> PathBuf {
    let venv = repo().join(".venv");
    assert!(
        venv.join("bin/python").exists(),
        "{} is missing: run scripts/test, which creates it",
        venv.display()
    );
    venv
}

/// A running `rwsgi serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        Self::start_in(args, &repo())
    }

    pub fn start_in(args: &[&str], cwd: &Path) -> Server {
        Self::start_with(args, cwd, &[])
    }

    /// Starts with extra environment variables (VIRTUAL_ENV is otherwise removed).
    pub fn start_with(args: &[&str], cwd: &Path, env: &[(&str, &Path)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rwsgi"))
            .arg("serve")
            .args(["--port", "0"])
            .args(args)
            .current_dir(cwd)
            .env_remove("VIRTUAL_ENV")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rwsgi");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        pump(stdout, Arc::clone(&log), None);
        pump(stderr, Arc::clone(&log), Some(tx));
        let addr = match rx.recv_timeout(IO_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("rwsgi did not start: {}", log.lock().unwrap());
            }
        };
        Server { child, addr, log }
    }

    /// Everything the server wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "log never showed {needle:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal and waits (bounded) for the exit status.
    pub fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
        let log = Arc::clone(&self.log);
        signal_and_wait(&mut self.child, signal, &|| log.lock().unwrap().clone())
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let log = Arc::clone(&self.log);
        wait_exit(&mut self.child, &|| log.lock().unwrap().clone())
    }
}

/// Sends `signal` to `child`, then waits for it as [`wait_exit`] does.
pub fn signal_and_wait(
    child: &mut Child,
    signal: &str,
    log: &dyn Fn() -> String,
) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-s", signal, &child.id().to_string()])
        .status()
        .unwrap();
    wait_exit(child, log)
}

/// Waits (bounded) for `child`'s exit status; `log` explains a failure.
pub fn wait_exit(child: &mut Child, log: &dyn Fn() -> String) -> std::process::ExitStatus {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "rwsgi did not exit:\n{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Client for Server {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A server known only by its address (one started by hand, say).
impl Client for SocketAddr {
    fn addr(&self) -> SocketAddr {
        *self
    }
}

/// Waits (bounded) until `count` different worker processes have answered `/whoami` (suite.py) on fresh
/// connections, and returns their pids; `log` explains a failure.
pub fn answering_workers(
    client: &impl Client,
    count: usize,
    log: &dyn Fn() -> String,
) -> std::collections::HashSet<u64> {
    let mut pids = std::collections::HashSet::new();
    let deadline = Instant::now() + IO_TIMEOUT;
    while pids.len() < count {
        assert!(
            Instant::now() < deadline,
            "only workers {pids:?} answered:\n{}",
            log()
        );
        pids.insert(client.get("/whoami").json()["pid"].as_u64().unwrap());
    }
    pids
}

/// A raw HTTP/1.1 client for a server under test (rwsgi or Apache), one connection per request.
pub trait Client {
    fn addr(&self) -> SocketAddr;

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.addr(), IO_TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
    }

    /// One request on a fresh connection.
    fn request(&self, raw: &str) -> Response {
        self.request_bytes(raw.as_bytes())
    }

    fn request_bytes(&self, raw: &[u8]) -> Response {
        let mut stream = self.connect();
        stream.write_all(raw).unwrap();
        let mut reader = BufReader::new(stream);
        read_response(&mut reader, raw.starts_with(b"HEAD")).expect("response")
    }

    fn get(&self, path: &str) -> Response {
        self.request(&format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ))
    }

    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Response {
        let mut raw = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        self.request_bytes(&raw)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pump(
    stream: impl Read + Send + 'static,
    log: Arc<Mutex<String>>,
    ready: Option<std::sync::mpsc::Sender<SocketAddr>>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            // Logged before it is announced: a test that goes on at the announcement finds it in the log.
            log.lock().unwrap().push_str(&line);
            if let (Some(tx), Some(addr)) = (
                &ready,
                line.trim_end().strip_prefix("rwsgi: listening on http://"),
            ) {
                let _ = tx.send(addr.parse().unwrap());
            }
            line.clear();
        }
    });
}

/// A response as it came over the wire.
#[derive(Debug, Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header names as sent, values as raw bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Chunked and ended with the final zero chunk, or exactly Content-Length bytes.
    pub complete: bool,
    pub chunked: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Reads one response; `head_request` means no body follows whatever the headers say.
pub fn read_response(reader: &mut impl BufRead, head_request: bool) -> std::io::Result<Response> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "no status line",
            ));
        }
        let status_line = String::from_utf8_lossy(&line).trim_end().to_owned();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_owned();
        let status: u16 = parts
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(std::io::Error::other)?;
        let reason = parts.next().unwrap_or_default().to_owned();
        let headers = read_headers(reader)?;
        if (100..200).contains(&status) {
            continue;
        }
        let mut response = Response {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
            complete: false,
            chunked: false,
        };
        let no_body = head_request || status == 204 || status == 304;
        if no_body {
            response.complete = true;
        } else if response
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            response.chunked = true;
            read_chunked(reader, &mut response)?;
        } else if let Some(length) = response.header("content-length") {
            let length: usize = length.trim().parse().map_err(std::io::Error::other)?;
            let mut body = vec![0; length];
            let mut read = 0;
            while read < length {
                match reader.read(&mut body[read..])? {
                    0 => break,
                    n => read += n,
                }
            }
            body.truncate(read);
            response.complete = read == length;
            response.body = body;
        } else {
            reader.read_to_end(&mut response.body)?;
            response.complete = true;
        }
        return Ok(response);
    }
}

fn read_headers(reader: &mut impl BufRead) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut headers = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        reader.read_until(b'\n', &mut line)?;
        let trimmed = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(&line);
        if trimmed.is_empty() {
            return Ok(headers);
        }
        let colon = trimmed
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| std::io::Error::other("bad header"))?;
        let name = String::from_utf8_lossy(&trimmed[..colon]).into_owned();
        let value = trimmed[colon + 1..].trim_ascii().to_vec();
        headers.push((name, value));
    }
}

fn read_chunked(reader: &mut impl BufRead, response: &mut Response) -> std::io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(()); // connection closed before the final chunk: incomplete
        }
        let size_text = String::from_utf8_lossy(&line);
        let size = usize::from_str_radix(size_text.trim().split(';').next().unwrap_or(""), 16)
            .map_err(std::io::Error::other)?;
        if size == 0 {
            read_headers(reader)?; // trailers
            response.complete = true;
            return Ok(());
        }
        let mut chunk = vec![0; size + 2];
        if let Err(err) = reader.read_exact(&mut chunk) {
            if err.kind() == std::io::ErrorKind::UnexpectedEof {
                return Ok(());
            }
            return Err(err);
        }
        response.body.extend_from_slice(&chunk[..size]);
    }
}

/// Runs `rwsgi serve` with arguments that must make it fail; returns its stderr.
pub fn serve_must_fail(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_rwsgi"))
        .arg("serve")
        .args(["--port", "0"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "rwsgi serve {args:?} did not fail:\n{stderr}"
    );
    stderr
}

/// Waits (bounded) until `path` exists, then removes it.
pub fn wait_for_file(path: &Path, what: &str) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !path.exists() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(path).unwrap();
}

/// Runs `python3` from the test venv (or the system) with `code`, returning stdout.
pub fn python(code: &str) -> String {
    let out = Command::new("python3").args(["-c", code]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
pub mod apache;
