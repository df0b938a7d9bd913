// Starting, loading apps, interpreter settings, stopping.

use crate::support::*;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn serves_bundled_hello_without_app_argument() {
    let server = Server::start(&[]);
    let response = server.get("/");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "Hello World!");
    let listening = server
        .log()
        .lines()
        .filter(|l| l.starts_with("rwsgi: listening on"))
        .count();
    assert_eq!(listening, 1, "exactly one listening line");
    assert!(server
        .log()
        .contains(&format!("rwsgi: listening on http://{}\n", server.addr)));
}

#[test]
fn serves_script_file_with_any_extension_and_custom_callable() {
    let server = Server::start(&[&app("mysite.wsgi"), "--callable", "custom"]);
    let text = server.get("/").text();
    assert!(
        text.starts_with("served by mysite.wsgi as _mod_wsgi_"),
        "{text}"
    );
}

#[test]
fn serves_module_callable_from_python_path() {
    let server = Server::start(&["webapp.main:app", "--python-path", &app("pkg")]);
    assert!(server.get("/").text().starts_with("module app; prefix="));
}

#[test]
fn serves_module_callable_from_working_directory() {
    let server = Server::start_in(&["webapp.main:app"], &repo().join("tests/apps/pkg"));
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn import_failure_exits_nonzero_with_traceback() {
    let stderr = serve_must_fail(&[&app("broken.py")]);
    assert!(
        stderr.contains("Traceback (most recent call last)"),
        "{stderr}"
    );
    assert!(stderr.contains("missing_dependency_for_test"), "{stderr}");
    assert!(stderr.contains("broken.py"), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
}

#[test]
fn missing_callable_is_a_clear_error() {
    let stderr = serve_must_fail(&[&app("mysite.wsgi")]);
    assert!(
        stderr.contains("has no callable named \"application\""),
        "{stderr}"
    );
}

#[test]
fn python_home_uses_the_virtualenv() {
    let venv = venv();
    let server = Server::start(&[
        &app("venv_probe.py"),
        "--python-home",
        venv.to_str().unwrap(),
    ]);
    let probe = server.get("/").json();
    assert_eq!(probe["prefix"], venv.display().to_string());
    assert_ne!(probe["base_prefix"], probe["prefix"]);
    assert!(
        probe["django"].is_string(),
        "django from the venv's site-packages: {probe}"
    );
}

#[test]
fn virtual_env_variable_is_honoured() {
    let venv = venv();
    let server = Server::start_with(&[&app("venv_probe.py")], &repo(), &[("VIRTUAL_ENV", &venv)]);
    assert_eq!(server.get("/").json()["prefix"], venv.display().to_string());
}

/// A connection whose request (two seconds of sleep in the app) is inside the app by now.
fn request_in_the_app(server: &Server) -> std::net::TcpStream {
    let mut stream = server.connect();
    stream
        .write_all(b"GET /sleep?s=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stream
}

#[test]
fn sigterm_finishes_in_flight_request_then_exits_zero() {
    let mut server = Server::start(&[&app("suite.py")]);
    let stream = request_in_the_app(&server);
    let started = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    let response = read_response(&mut std::io::BufReader::new(stream), false).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection").as_deref(), Some("close"));
    let status = server.wait_exit();
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn sigint_with_idle_keepalive_connection_exits_at_once() {
    let mut server = Server::start(&[&app("suite.py")]);
    let mut idle = server.connect();
    idle.write_all(b"GET /environ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reader = std::io::BufReader::new(idle);
    assert_eq!(read_response(&mut reader, false).unwrap().status, 200);
    let started = Instant::now();
    let status = server.signal_and_wait("INT");
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "idle keep-alive delayed the exit"
    );
}

#[test]
fn bad_arguments_name_the_problem() {
    let stderr = serve_must_fail(&["--python-home", "/nonexistent/venv", &app("suite.py")]);
    assert!(
        stderr.contains("--python-home /nonexistent/venv is not a directory"),
        "{stderr}"
    );
}

fn write_script(path: &std::path::Path, body: &str, mtime_offset_s: u64) {
    std::fs::write(
        path,
        format!(
            "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'{body}']\n"
        ),
    )
    .unwrap();
    // Make the change visible even on file systems with coarse timestamps.
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(mtime_offset_s))
        .unwrap();
}

fn wait_for_body(server: &Server, body: &str) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while server.get("/").text() != body {
        assert!(
            Instant::now() < deadline,
            "never served {body:?}:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn touching_the_script_reloads_it_in_place() {
    let dir = std::env::temp_dir().join(format!("rwsgi-touch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("site.wsgi");
    write_script(&script, "first", 0);
    let server = Server::start(&[script.to_str().unwrap()]);
    assert_eq!(server.get("/").text(), "first");
    write_script(&script, "second", 10);
    wait_for_body(&server, "second");
    server.wait_for_log("changed; reloaded it");
    // A change that fails to load keeps the previous code serving.
    std::fs::write(&script, "raise RuntimeError('half-deployed')\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&script)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(20))
        .unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    while !server
        .log()
        .contains("failed to load; still serving the previous code")
    {
        assert_eq!(server.get("/").text(), "second");
        assert!(
            Instant::now() < deadline,
            "the failed reload was never reported:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.get("/").text(), "second");
    assert!(server.log().contains("half-deployed"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn script_reloading_can_be_turned_off() {
    let dir = std::env::temp_dir().join(format!("rwsgi-notouch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("site.wsgi");
    write_script(&script, "first", 0);
    let server = Server::start(&[script.to_str().unwrap(), "--no-script-reloading"]);
    assert_eq!(server.get("/").text(), "first");
    write_script(&script, "second", 10);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(server.get("/").text(), "first");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn systemd_socket_activation_serves_the_passed_socket() {
    // What systemd does: bind, put the socket at fd 3, set LISTEN_FDS=1, exec the service.
    let launcher = format!(
        "import os, socket\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(16)\n\
         if s.fileno() != 3: os.dup2(s.fileno(), 3)\n\
         os.set_inheritable(3, True)\n\
         env = dict(os.environ, LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))\n\
         os.execve({exe:?}, [{exe:?}, 'serve', {app:?}], env)\n",
        exe = env!("CARGO_BIN_EXE_rwsgi"),
        app = app("suite.py"),
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &launcher])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(addr) = line.strip_prefix("rwsgi: listening on http://") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(IO_TIMEOUT);
    let response = addr.as_ref().ok().map(|addr| {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.write_all(b"GET /environ HTTP/1.0\r\n\r\n").unwrap();
        read_response(&mut std::io::BufReader::new(stream), false).unwrap()
    });
    let _ = child.kill();
    let _ = child.wait();
    let response = response.expect("rwsgi never listened on the passed socket");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json()["SERVER_PORT"],
        addr.unwrap().rsplit(':').next().unwrap()
    );
}

#[test]
fn a_request_outliving_the_graceful_timeout_delays_the_exit_only_until_it_ends() {
    for io_threads in ["1", "2"] {
        let mut server = Server::start(&[
            &app("suite.py"),
            "--io-threads",
            io_threads,
            "--graceful-timeout",
            "0.5",
        ]);
        let _stream = request_in_the_app(&server);
        let started = Instant::now();
        let status = server.signal_and_wait("TERM");
        assert!(status.success(), "--io-threads {io_threads}: {status:?}");
        assert!(
            server.log().contains("graceful timeout reached"),
            "--io-threads {io_threads}:\n{}",
            server.log()
        );
        // The Python thread finishes its request before the process exits.
        assert!(started.elapsed() >= Duration::from_millis(1500));
    }
}
