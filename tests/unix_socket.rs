//! `rwsgi serve --unix-socket`: HTTP over a UNIX socket, for a proxy on the same machine.

use std::io::{BufReader, Write};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{app, read_response, signal_and_wait, Response, IO_TIMEOUT};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rwsgi-unix-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `rwsgi serve` on a UNIX socket, its stderr in a file; killed when dropped.
struct UnixServer {
    child: Child,
    log: PathBuf,
}

impl UnixServer {
    fn start(dir: &Path, args: &[&str]) -> Self {
        let log = dir.join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_rwsgi"))
            .arg("serve")
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = UnixServer { child, log };
        server.wait_for_log("rwsgi: listening on unix:");
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "{needle:?} not in:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        let log = self.log.clone();
        signal_and_wait(&mut self.child, "TERM", &|| {
            std::fs::read_to_string(&log).unwrap_or_default()
        })
    }
}

impl Drop for UnixServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `rwsgi serve` with arguments that must make it fail (no `--port`, which `--unix-socket` refuses);
/// returns its stderr.
fn serve_must_fail(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_rwsgi"))
        .arg("serve")
        .args(args)
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "rwsgi serve {args:?} did not fail"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn request(socket: &Path, raw: &str) -> Response {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    read_response(&mut BufReader::new(stream), false).unwrap()
}

#[test]
fn serves_over_a_unix_socket_with_its_mode_and_removes_it_on_exit() {
    let dir = scratch("serve");
    let socket = dir.join("app.sock");
    let access = dir.join("access.log");
    let mut server = UnixServer::start(
        &dir,
        &[
            &app("suite.py"),
            "--unix-socket",
            socket.to_str().unwrap(),
            "--unix-socket-mode",
            "660",
            "--processes",
            "2",
            "--access-log",
            access.to_str().unwrap(),
        ],
    );
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let env = request(
        &socket,
        "GET /environ HTTP/1.1\r\nHost: app.example:8443\r\nConnection: close\r\n\r\n",
    )
    .json();
    // No addresses on a UNIX socket: an empty client address, the port from Host (as gunicorn).
    assert_eq!(env["REMOTE_ADDR"], "");
    assert!(env.get("REMOTE_PORT").is_none(), "{env}");
    assert!(env.get("SERVER_ADDR").is_none(), "{env}");
    assert_eq!(env["SERVER_NAME"], "app.example");
    assert_eq!(env["SERVER_PORT"], "8443");
    let env = request(&socket, "GET /environ HTTP/1.0\r\n\r\n").json();
    assert_eq!(env["SERVER_NAME"], "localhost");
    assert_eq!(env["SERVER_PORT"], "80");
    // A second server cannot take a socket that is in use.
    let err = serve_must_fail(&[&app("suite.py"), "--unix-socket", socket.to_str().unwrap()]);
    assert!(err.contains("a server is listening on it"), "{err}");
    assert!(server.stop().success());
    assert!(!socket.exists(), "the socket file is removed on exit");
    let lines = std::fs::read_to_string(&access).unwrap();
    assert!(
        lines.starts_with("- - - ["),
        "no client address to log:\n{lines}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stale_socket_is_replaced_and_user_owns_the_socket() {
    let dir = scratch("stale");
    let socket = dir.join("app.sock");
    let path = socket.to_str().unwrap();
    // Killed outright, a server leaves its socket file behind: the next one replaces it.
    let mut first = UnixServer::start(&dir, &[&app("suite.py"), "--unix-socket", path]);
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    // Its workers go with it (their parent-death signal); until then the socket still answers.
    while UnixStream::connect(&socket).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the killed server's workers still answer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(socket.exists());
    // www-data must reach the socket's directory to connect; the socket itself is handed to it.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let second = UnixServer::start(
        &dir,
        &[
            &app("suite.py"),
            "--unix-socket",
            path,
            "--user",
            "www-data",
        ],
    );
    let who = request(&socket, "GET /whoami HTTP/1.0\r\n\r\n").json();
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        (u64::from(meta.uid()), u64::from(meta.gid())),
        (who["uid"].as_u64().unwrap(), who["gid"].as_u64().unwrap()),
        "the socket belongs to --user"
    );
    assert_ne!(meta.uid(), 0);
    drop(second);
    // A path that is not a socket is never replaced.
    let plain = dir.join("plain");
    std::fs::write(&plain, b"keep").unwrap();
    let err = serve_must_fail(&["--unix-socket", plain.to_str().unwrap()]);
    assert!(err.contains("the path exists and is not a socket"), "{err}");
    assert_eq!(std::fs::read(&plain).unwrap(), b"keep");
    let err = serve_must_fail(&["--unix-socket", path, "--unix-socket-mode", "999"]);
    assert!(err.contains("--unix-socket-mode 999"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
