// mod_wsgi.so's daemon mode in a real Apache: WSGIDaemonProcess groups, their processes' lives (killed,
// recycled, timed out, replaced on graceful), and the answers Apache gives when a daemon cannot.

use std::time::{Duration, Instant};

use crate::support::apache::*;
use crate::support::*;

const ACCESS: &str = "<Directory @REPO@/tests/apps>\n    Require all granted\n</Directory>\n";

/// One group `site` serving daemon_probe.py at /, with the group's extra options.
fn one_group(options: &str) -> Apache {
    Apache::start(&format!(
        "WSGIDaemonProcess site {options}\n\
         WSGIScriptAlias / @REPO@/tests/apps/daemon_probe.py process-group=site application-group=%{{GLOBAL}}\n\
         {ACCESS}"
    ))
}

fn pid_of(response: &Response) -> u64 {
    response.json()["pid"].as_u64().expect("a pid")
}

fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Asks until a daemon other than `old` answers 200 (bounded), and returns its pid.
fn wait_for_new_daemon(apache: &Apache, old: u64) -> u64 {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let response = apache.get("/");
        if response.status == 200 && pid_of(&response) != old {
            return pid_of(&response);
        }
        assert!(
            Instant::now() < deadline,
            "no new daemon replaced {old}:\n{}",
            apache.error_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_groups_with_their_own_threads_and_python_home_serve_two_apps() {
    let venv = venv();
    let mut apache = Apache::start(&format!(
        "WSGIDaemonProcess one threads=3 display-name=%{{GROUP}}\n\
         WSGIDaemonProcess two processes=1 threads=5 python-home={venv} lang=C.UTF-8 home=/tmp user=nobody group=nogroup\n\
         WSGIScriptAlias /one @REPO@/tests/apps/daemon_probe.py process-group=one application-group=%{{GLOBAL}}\n\
         WSGIScriptAlias /two @REPO@/tests/apps/daemon_probe.py process-group=two\n\
         {ACCESS}",
        venv = venv.display()
    ));
    let one = apache.get("/one").json();
    let two = apache.get("/two").json();
    assert_eq!(one["process_group"], "one", "{}", apache.error_log());
    assert_eq!(two["process_group"], "two");
    assert_eq!(
        (one["threads"].as_u64(), two["threads"].as_u64()),
        (Some(3), Some(5))
    );
    assert_eq!(one["multithread"], true);
    // processes=1 given explicitly makes wsgi.multiprocess true, as mod_wsgi documents.
    assert_eq!(
        (one["multiprocess"].as_bool(), two["multiprocess"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(two["prefix"].as_str(), Some(&*venv.display().to_string()));
    assert_ne!(one["prefix"], two["prefix"]);
    assert_eq!(one["application_group"], "");
    assert!(
        two["application_group"]
            .as_str()
            .unwrap()
            .ends_with("|/two"),
        "{two}"
    );
    assert_eq!(
        (two["cwd"].as_str(), two["lang"].as_str()),
        (Some("/tmp"), Some("C.UTF-8"))
    );
    // Apache's User by default, the group's `user=` when given; never root. Each group in its own
    // process, not an Apache child.
    assert_eq!(one["uid"].as_u64(), Some(33));
    assert_eq!(two["uid"].as_u64(), Some(65534));
    let (one_pid, two_pid) = (one["pid"].as_u64().unwrap(), two["pid"].as_u64().unwrap());
    assert_ne!(one_pid, two_pid);
    let cmdline = std::fs::read(format!("/proc/{one_pid}/cmdline")).unwrap();
    assert!(
        cmdline.starts_with(b"(wsgi:one)"),
        "{}",
        String::from_utf8_lossy(&cmdline)
    );
    let sockets: Vec<_> = std::fs::read_dir(&apache.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sock"))
        .collect();
    assert_eq!(sockets.len(), 2);
    // They stop with Apache, and their sockets go with them.
    assert!(apache.stop().success());
    let deadline = Instant::now() + IO_TIMEOUT;
    while alive(one_pid) || alive(two_pid) {
        assert!(Instant::now() < deadline, "daemons outlived Apache");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sockets.iter().all(|s| !s.path().exists()));
}

#[test]
fn a_killed_daemon_is_replaced_and_broken_responses_answer_as_mod_wsgi() {
    let apache = one_group("threads=2");
    let first = pid_of(&apache.get("/"));
    std::process::Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .unwrap();
    let second = wait_for_new_daemon(&apache, first);
    for _ in 0..20 {
        assert_eq!(apache.get("/").status, 200);
    }
    apache.wait_for_log("Process 'site' has died, deregister and restart it.");

    // A response larger than one frame of the protocol arrives whole.
    let huge = apache.get("/huge");
    assert_eq!(
        (huge.status, huge.body.len(), huge.complete),
        (200, 17 << 20, true)
    );

    // Died before its head: 502. Died after it: the client's response is cut short, never complete.
    assert_eq!(
        apache.get("/die_before_head").status,
        502,
        "{}",
        apache.error_log()
    );
    let third = wait_for_new_daemon(&apache, second);
    let cut = apache.get("/die_mid_body");
    assert_eq!(cut.status, 200);
    assert!(
        !cut.complete,
        "a truncated response must not look complete: {cut:?}"
    );
    assert_eq!(cut.text(), "first part, ");
    wait_for_new_daemon(&apache, third);
}

/// The inode of the (one) group socket in Apache's runtime directory.
fn group_socket(apache: &Apache) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let sockets: Vec<u64> = std::fs::read_dir(&apache.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sock"))
        .map(|e| e.metadata().unwrap().ino())
        .collect();
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    sockets[0]
}

/// The status of a GET, or 0 if the connection ended without a response.
fn try_get(apache: &Apache, path: &str) -> u16 {
    use std::io::Write as _;
    let mut stream = apache.connect();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    read_response(&mut std::io::BufReader::new(stream), false).map_or(0, |r| r.status)
}

#[test]
fn graceful_restart_under_load_fails_no_request() {
    let apache = one_group("processes=2 threads=4");
    let before = pid_of(&apache.get("/"));
    let socket = group_socket(&apache);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let statuses = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut seen = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        seen.push(try_get(&apache, "/"));
                    }
                    seen
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        apache.control_and_wait("graceful");
        std::thread::sleep(Duration::from_millis(500));
        apache.control_and_wait("graceful");
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect::<Vec<u16>>()
    });
    let failed: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(statuses.len() > 50, "only {} requests ran", statuses.len());
    assert!(
        failed.is_empty(),
        "{failed:?} of {}:\n{}",
        statuses.len(),
        apache.error_log()
    );
    // The daemons were replaced, not kept; their socket was kept, so nothing queued in it was lost.
    assert_eq!(
        group_socket(&apache),
        socket,
        "the group's socket was replaced"
    );
    wait_for_new_daemon(&apache, before);
    let deadline = Instant::now() + IO_TIMEOUT;
    while alive(before) {
        assert!(
            Instant::now() < deadline,
            "the old daemon {before} never stopped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn shutdown_timeout_names_what_was_unfinished() {
    let apache = one_group("threads=2 shutdown-timeout=1");
    let first = pid_of(&apache.get("/"));
    std::thread::scope(|scope| {
        let stuck = scope.spawn(|| try_get(&apache, "/sleep?s=30"));
        apache.wait_for_log("daemon_probe called for /sleep");
        apache.control_and_wait("graceful");
        let log = apache.wait_for_log("Aborting process: shutdown timeout reached");
        let report = &log[log.find("Aborting process").unwrap_or_default()..];
        assert!(
            report.contains("request GET /sleep?s=30 running for"),
            "{report}"
        );
        assert!(report.contains("0 requests queued"), "{report}");
        // The thread still in the request is listed with its kernel state (the idle ones have ended).
        assert!(
            report.contains("rwsgi-python-") && report.contains("(tid "),
            "{report}"
        );
        assert!(
            report.contains("daemon_probe.py") && report.contains("time.sleep(seconds)"),
            "the stacks show where the request was:\n{report}"
        );
        assert_ne!(stuck.join().unwrap(), 200);
    });
    wait_for_new_daemon(&apache, first);
}

#[test]
fn maximum_requests_recycles_the_daemon() {
    let apache = one_group("threads=1 maximum-requests=4");
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..13 {
        let response = apache.get("/");
        assert_eq!(response.status, 200, "{}", apache.error_log());
        pids.insert(pid_of(&response));
    }
    assert!(pids.len() >= 3, "{pids:?}");
    apache.wait_for_log("reached maximum-requests (4); recycling");
}

#[test]
fn request_timeout_dumps_stacks_and_replaces_the_process() {
    let apache = one_group("threads=1 request-timeout=1 graceful-timeout=1 shutdown-timeout=1");
    let first = pid_of(&apache.get("/"));
    let stuck = apache.get("/spin?s=30");
    assert_ne!(stuck.status, 200, "the stuck request cannot have finished");
    let log = apache.wait_for_log("past request-timeout");
    assert!(log.contains("Python stacks of daemon process"), "{log}");
    assert!(
        log.contains("daemon_probe.py"),
        "the stack shows the app's frame:\n{log}"
    );
    wait_for_new_daemon(&apache, first);
}

#[test]
fn queue_timeout_answers_504_without_calling_the_app() {
    let apache = one_group("threads=1 queue-timeout=1");
    std::thread::scope(|scope| {
        let busy = scope.spawn(|| apache.get("/sleep?s=3"));
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let queued = apache.get("/queued");
        assert_eq!(queued.status, 504, "{}", apache.error_log());
        assert!(
            started.elapsed() < Duration::from_millis(2900),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(busy.join().unwrap().status, 200);
    });
    let log = apache.error_log();
    assert!(log.contains("daemon_probe called for /sleep"), "{log}");
    assert!(!log.contains("daemon_probe called for /queued"), "{log}");
}

#[test]
fn a_slow_head_is_504_and_an_unreachable_daemon_503() {
    let apache = one_group("threads=1 socket-timeout=1");
    assert_eq!(
        apache.get("/sleep?s=3").status,
        504,
        "{}",
        apache.error_log()
    );
    apache.wait_for_log("Timeout when reading response headers from daemon process 'site'");

    // A group whose processes cannot start: connections fill its small backlog, then cannot connect.
    let apache = one_group(
        "python-home=/nonexistent/python listen-backlog=1 connect-timeout=1 socket-timeout=3",
    );
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..5)
            .map(|_| scope.spawn(|| apache.get("/").status))
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|s| [503, 504].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&503),
        "{statuses:?}\n{}",
        apache.error_log()
    );
    apache.wait_for_log("Unable to connect to WSGI daemon process 'site'");
}

#[test]
fn unknown_or_restricted_groups_are_refused() {
    let apache = Apache::start(&format!(
        "WSGIDaemonProcess allowed threads=1\n\
         WSGIScriptAlias /nowhere @REPO@/tests/apps/daemon_probe.py process-group=missing\n\
         <Location /restricted>\n    WSGIRestrictProcess allowed\n</Location>\n\
         WSGIScriptAlias /restricted @REPO@/tests/apps/daemon_probe.py process-group=%{{GLOBAL}}\n\
         WSGIScriptAlias /allowed @REPO@/tests/apps/daemon_probe.py process-group=allowed\n\
         {ACCESS}"
    ));
    assert_eq!(apache.get("/nowhere").status, 500);
    apache.wait_for_log("No WSGI daemon process called 'missing' has been configured");
    assert_eq!(apache.get("/restricted").status, 500);
    apache.wait_for_log("Daemon process called '' cannot be accessed by this WSGI application");
    assert_eq!(apache.get("/allowed").status, 200);
}

#[test]
fn bad_daemon_options_fail_the_configuration_with_mod_wsgi_s_messages() {
    let error = config_must_fail("WSGIDaemonProcess site threads=lots\n");
    assert!(
        error.contains("Invalid thread count for WSGI daemon process."),
        "{error}"
    );
    assert!(error.contains("line"), "{error}");
    let error = config_must_fail("WSGIDaemonProcess site\nWSGIDaemonProcess site\n");
    assert!(
        error.contains("Name duplicates previous WSGI daemon definition."),
        "{error}"
    );
    let error = config_must_fail("WSGIDaemonProcess site user=nobody-such-user\n");
    assert!(error.contains("Unknown user 'nobody-such-user'"), "{error}");
}

#[test]
fn inactivity_timeout_and_restart_interval_recycle_the_daemon() {
    for options in [
        "threads=1 inactivity-timeout=1",
        "threads=1 restart-interval=1",
    ] {
        let apache = one_group(options);
        let first = pid_of(&apache.get("/"));
        std::thread::sleep(Duration::from_millis(1500));
        wait_for_new_daemon(&apache, first);
        apache.wait_for_log("recycling");
    }
}

#[test]
fn import_scripts_preload_in_their_daemon_group_only() {
    let apache = Apache::start(&format!(
        "WSGIDaemonProcess site threads=2 python-path=@REPO@/tests/apps\n\
         WSGIImportScript @REPO@/tests/apps/preload.wsgi process-group=site application-group=preloaded\n\
         WSGIScriptAlias /p @REPO@/tests/apps/preload.wsgi process-group=site application-group=preloaded\n\
         {ACCESS}"
    ));
    let log = crate::httpd::assert_preloaded(&apache);
    // Only the daemon imported it, not Apache's own children.
    assert_eq!(log.matches("Imported script").count(), 1, "{log}");
}

#[test]
fn deadlock_timeout_replaces_a_process_whose_gil_is_never_released() {
    let apache = one_group("threads=2 deadlock-timeout=2");
    let first = pid_of(&apache.get("/"));
    let started = Instant::now();
    let stuck = apache.get("/hold_gil");
    assert_eq!(stuck.status, 502, "the daemon died before its head");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    apache.wait_for_log("the Python GIL has not been released for 2 s");
    wait_for_new_daemon(&apache, first);
}

#[test]
fn startup_timeout_restarts_a_process_whose_application_cannot_load() {
    let apache = Apache::start(&format!(
        "WSGIDaemonProcess site threads=1 startup-timeout=1\n\
         WSGIScriptAlias / @REPO@/tests/apps/broken.py process-group=site application-group=%{{GLOBAL}}\n\
         {ACCESS}"
    ));
    assert_eq!(apache.get("/").status, 500);
    apache.wait_for_log("Application failed to load within startup-timeout (1 s)");
    let deadline = Instant::now() + IO_TIMEOUT;
    while apache
        .error_log()
        .matches("Starting process 'site'")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "{}", apache.error_log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn script_user_and_script_group_refuse_what_they_do_not_own_as_the_c_mod_wsgi_does() {
    // Scripts in directories of their own: owned by root and written by root only; group-writable; owned
    // by nobody:nogroup; in a world-writable directory.
    let dir = std::env::temp_dir().join(format!("rwsgi-script-owner-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let app = "def application(environ, start_response):\n    \
               start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'served']\n";
    for (name, dir_mode, file_mode) in [
        ("ok", 0o755, 0o644),
        ("group-writable", 0o755, 0o664),
        ("nobody", 0o755, 0o644),
        ("world-dir", 0o757, 0o644),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("app.wsgi"), app).unwrap();
        std::fs::set_permissions(
            sub.join("app.wsgi"),
            std::fs::Permissions::from_mode(file_mode),
        )
        .unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(dir_mode)).unwrap();
    }
    let chown = std::process::Command::new("chown")
        .args(["nobody:nogroup"])
        .arg(dir.join("nobody/app.wsgi"))
        .status()
        .unwrap();
    assert!(chown.success());
    let d = dir.display();
    let body = format!(
        "WSGIDaemonProcess by-user threads=1 script-user=root\n\
         WSGIDaemonProcess by-group threads=1 script-group=root\n\
         WSGIScriptAlias /u/ok {d}/ok/app.wsgi process-group=by-user\n\
         WSGIScriptAlias /u/group-writable {d}/group-writable/app.wsgi process-group=by-user\n\
         WSGIScriptAlias /u/nobody {d}/nobody/app.wsgi process-group=by-user\n\
         WSGIScriptAlias /u/world-dir {d}/world-dir/app.wsgi process-group=by-user\n\
         WSGIScriptAlias /g/ok {d}/ok/app.wsgi process-group=by-group\n\
         WSGIScriptAlias /g/group-writable {d}/group-writable/app.wsgi process-group=by-group\n\
         WSGIScriptAlias /g/nobody {d}/nobody/app.wsgi process-group=by-group\n\
         WSGIScriptAlias /g/world-dir {d}/world-dir/app.wsgi process-group=by-group\n\
         <Directory {d}>\n    Require all granted\n</Directory>\n"
    );
    let expected = [
        ("/u/ok", 200, None),
        ("/u/group-writable", 403, Some("WSGI script file is writable to group.")),
        (
            "/u/nobody",
            403,
            Some("WSGI script file owner 'nobody' does not match user required for daemon process."),
        ),
        (
            "/u/world-dir",
            403,
            Some("Parent directory of WSGI script file is writable to world."),
        ),
        ("/g/ok", 200, None),
        ("/g/group-writable", 200, None),
        (
            "/g/nobody",
            403,
            Some("WSGI script file group 'nogroup' does not match group required for daemon process."),
        ),
        (
            "/g/world-dir",
            403,
            Some("Parent directory of WSGI script file is writable to world."),
        ),
    ];
    for module in [our_module(), crate::httpd_parity::c_module()] {
        let apache = Apache::start_with(Setup {
            module: module.clone(),
            ..Setup::new(&body)
        });
        for (path, status, logged) in expected {
            let before = logged.map_or(0, |message| apache.error_log().matches(message).count());
            let response = apache.get(path);
            assert_eq!(
                response.status,
                status,
                "{path} with {}:\n{}",
                module.display(),
                apache.error_log()
            );
            if status == 200 {
                assert_eq!(response.body, b"served");
            }
            if let Some(message) = logged {
                apache.wait_for_more_in_log(message, before);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_group_declared_in_a_virtual_host_serves_only_hosts_of_its_name_as_the_c_mod_wsgi_does() {
    /// A second port of the same Apache.
    struct At(std::net::SocketAddr);
    impl Client for At {
        fn addr(&self) -> std::net::SocketAddr {
            self.0
        }
    }
    let other = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let probe = "@REPO@/tests/apps/daemon_probe.py";
    // `one` belongs to one.test; `shared` to the main server. two.test has groups of its own, so a config of
    // its own; the host on the second port is one.test again.
    let body = format!(
        "Listen {other}\n\
         WSGIDaemonProcess shared threads=1\n\
         <VirtualHost *:*>\n    ServerName one.test\n    WSGIDaemonProcess one threads=1\n    \
         WSGIScriptAlias /mine {probe} process-group=one\n</VirtualHost>\n\
         <VirtualHost *:*>\n    ServerName two.test\n    WSGIDaemonProcess two threads=1\n    \
         WSGIScriptAlias /steal {probe} process-group=one\n    \
         WSGIScriptAlias /shared {probe} process-group=shared\n</VirtualHost>\n\
         <VirtualHost *:{port}>\n    ServerName one.test\n    \
         WSGIScriptAlias /again {probe} process-group=one\n</VirtualHost>\n\
         {ACCESS}",
        port = other.port()
    );
    let get = |client: &dyn Client, host: &str, path: &str| {
        client
            .request(&format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            ))
            .status
    };
    let refused = "Daemon process called 'one' cannot be accessed by this WSGI application.";
    for module in [our_module(), crate::httpd_parity::c_module()] {
        let apache = Apache::start_with(Setup {
            module: module.clone(),
            ..Setup::new(&body)
        });
        let shown = module.display();
        assert_eq!(get(&apache, "one.test", "/mine"), 200, "{shown}");
        assert_eq!(get(&apache, "two.test", "/shared"), 200, "{shown}");
        assert_eq!(get(&At(other), "one.test", "/again"), 200, "{shown}");
        assert_eq!(
            get(&apache, "two.test", "/steal"),
            500,
            "{shown}:\n{}",
            apache.error_log()
        );
        apache.wait_for_log(refused);
    }
}

/// A fresh directory the daemons (www-data) may write marks into.
fn scratch_dir_for_daemons(name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("rwsgi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

#[test]
fn a_request_that_did_not_come_through_apache_is_refused_by_the_daemon() {
    use std::io::{Read as _, Write as _};
    // A script that would leave a mark if a daemon ran it.
    let dir = scratch_dir_for_daemons("forged");
    let mark = dir.join("ran");
    let script = dir.join("forged.py");
    std::fs::write(
        &script,
        format!(
            "open({:?}, 'w').close()\napplication = None\n",
            mark.display().to_string()
        ),
    )
    .unwrap();
    let apache = one_group("threads=1");
    assert_eq!(apache.get("/").status, 200);
    let socket = std::fs::read_dir(&apache.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
        .expect("the group's socket");
    // What a local process could send: a request frame naming the script, with no token or a guessed one.
    let frame = |token: Option<&str>| {
        let mut vars = vec![
            ("REQUEST_METHOD", "GET".to_owned()),
            ("mod_wsgi.x-script", script.display().to_string()),
            ("mod_wsgi.process_group", "site".to_owned()),
            ("mod_wsgi.application_group", "".to_owned()),
            ("mod_wsgi.callable_object", "application".to_owned()),
        ];
        if let Some(token) = token {
            vars.push(("mod_wsgi.x-magic", token.to_owned()));
        }
        let mut payload = (vars.len() as u32).to_be_bytes().to_vec();
        for (name, value) in &vars {
            for field in [name.as_bytes(), value.as_bytes()] {
                payload.extend_from_slice(&(field.len() as u32).to_be_bytes());
                payload.extend_from_slice(field);
            }
        }
        let mut frame = vec![1u8];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&payload);
        frame.extend_from_slice(&[3, 0, 0, 0, 0]);
        frame
    };
    for (token, logged) in [
        (
            None,
            "Request origin could not be validated; missing magic token.",
        ),
        (
            Some("0123456789abcdef0123456789abcdef"),
            "Request origin could not be validated; magic token mismatch.",
        ),
    ] {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.write_all(&frame(token)).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        assert!(answer.is_empty(), "the daemon answered {answer:?}");
        apache.wait_for_log(logged);
        assert!(!mark.exists(), "the daemon ran the forged request's script");
    }
    assert_eq!(apache.get("/").status, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A chroot jail for daemons: the system's `/usr` and the Python installation bind-mounted, read-only, into
/// a directory of its own. The mounts are made in a mount namespace of the test's thread alone (Apache,
/// started from it, shares it), so no other process ever sees them and they vanish with their last
/// process even if this one is killed. When dropped they are unmounted, and only then are the jail's own
/// directories removed, one by one: never recursively, which would reach through a mount still in place.
struct Jail {
    root: std::path::PathBuf,
    mounts: Vec<std::path::PathBuf>,
}

impl Jail {
    fn new() -> Jail {
        // SAFETY: unshare only changes which mount namespace (and cwd/root/umask block) this thread uses.
        let unshared = unsafe { libc::unshare(libc::CLONE_NEWNS) };
        assert_eq!(
            unshared,
            0,
            "unshare(CLONE_NEWNS) (tests run as root): {}",
            std::io::Error::last_os_error()
        );
        let private = std::process::Command::new("mount")
            .args(["--make-rprivate", "/"])
            .status()
            .unwrap();
        assert!(private.success(), "mount --make-rprivate /");
        let root = std::env::temp_dir().join(format!("rwsgi-jail-{}", std::process::id()));
        assert!(
            !root.exists(),
            "{} is left from an earlier run",
            root.display()
        );
        std::fs::create_dir_all(root.join("app")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib64", root.join("lib64")).unwrap();
        let prefix = python("import sys; print(sys.base_prefix)");
        let mut jail = Jail {
            root,
            mounts: Vec::new(),
        };
        let prefix = prefix.trim();
        assert!(prefix.len() > 1, "Python's prefix is {prefix:?}");
        // A prefix under /usr comes with it.
        let hosts = std::iter::once("/usr").chain((!prefix.starts_with("/usr/")).then_some(prefix));
        for host in hosts {
            let inside = jail.root.join(host.trim_start_matches('/'));
            std::fs::create_dir_all(&inside).unwrap();
            for args in [vec!["--bind", host], vec!["-o", "remount,bind,ro"]] {
                let status = std::process::Command::new("mount")
                    .args(&args)
                    .arg(&inside)
                    .status()
                    .unwrap();
                assert!(
                    status.success(),
                    "mount {args:?} {} failed",
                    inside.display()
                );
            }
            jail.mounts.push(inside);
        }
        jail
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        for inside in self.mounts.iter().rev() {
            // A daemon still on its way out keeps the mount busy for a moment: retry, then detach it.
            let deadline = Instant::now() + Duration::from_secs(5);
            let umount = |lazy: bool| {
                let mut command = std::process::Command::new("umount");
                if lazy {
                    command.arg("-l");
                }
                command.arg(inside).status().is_ok_and(|s| s.success())
            };
            while !umount(false) {
                if Instant::now() > deadline {
                    umount(true);
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        for inside in &self.mounts {
            // Empty once unmounted; `remove_dir` refuses anything else.
            let mut dir = inside.as_path();
            while dir != self.root && std::fs::remove_dir(dir).is_ok() {
                dir = dir.parent().unwrap_or(&self.root);
            }
        }
        let _ = std::fs::remove_file(self.root.join("app/app.wsgi"));
        for name in ["lib", "lib64"] {
            let _ = std::fs::remove_file(self.root.join(name));
        }
        let _ = std::fs::remove_dir(self.root.join("app"));
        let _ = std::fs::remove_dir(&self.root);
    }
}

#[test]
fn a_chrooted_daemon_sees_the_script_and_document_root_from_inside_its_jail() {
    let jail = Jail::new();
    std::fs::write(
        jail.root.join("app/app.wsgi"),
        "import json, os\n\
         def application(environ, start_response):\n    \
         body = json.dumps({'file': __file__, 'script': environ['SCRIPT_FILENAME'],\n        \
         'docroot': environ.get('DOCUMENT_ROOT'), 'top': sorted(os.listdir('/'))}).encode()\n    \
         start_response('200 OK', [('Content-Type', 'application/json')])\n    return [body]\n",
    )
    .unwrap();
    let j = jail.root.display();
    let body = format!(
        "DocumentRoot {j}/app\n\
         WSGIDaemonProcess jailed threads=1 chroot={j}\n\
         WSGIScriptAlias /inside {j}/app/app.wsgi process-group=jailed\n\
         WSGIScriptAlias /outside @REPO@/tests/apps/daemon_probe.py process-group=jailed\n\
         <Directory {j}/app>\n    Require all granted\n</Directory>\n{ACCESS}"
    );
    for module in [our_module(), crate::httpd_parity::c_module()] {
        let shown = module.display();
        let apache = Apache::start_with(Setup {
            module: module.clone(),
            ..Setup::new(&body)
        });
        let inside = apache.get("/inside");
        assert_eq!(inside.status, 200, "{shown}:\n{}", apache.error_log());
        let seen = inside.json();
        assert_eq!(seen["file"], "/app/app.wsgi", "{shown}");
        assert_eq!(seen["script"], "/app/app.wsgi", "{shown}");
        assert_eq!(seen["docroot"], "/app", "{shown}");
        assert!(
            seen["top"].as_array().unwrap().iter().any(|d| d == "app"),
            "{shown}: {seen}"
        );
        // The daemon refuses it without an answer; the child reports a bad gateway.
        assert_eq!(apache.get("/outside").status, 502, "{shown}");
        apache.wait_for_log("is not located within chroot directory");
    }
}

#[test]
fn a_daemon_holds_its_own_group_s_socket_and_no_other() {
    let apache = Apache::start(&format!(
        "WSGIDaemonProcess one threads=1\n\
         WSGIDaemonProcess two threads=1\n\
         WSGIScriptAlias /one @REPO@/tests/apps/held_sockets.py process-group=one\n\
         WSGIScriptAlias /two @REPO@/tests/apps/held_sockets.py process-group=two\n\
         {ACCESS}"
    ));
    let one = apache.get("/one").json();
    let two = apache.get("/two").json();
    let (one, two) = (&one["sockets"], &two["sockets"]);
    assert_eq!(one.as_array().map(Vec::len), Some(1), "{one}");
    assert_eq!(two.as_array().map(Vec::len), Some(1), "{two}");
    assert_ne!(one, two);
}

#[test]
fn a_virtual_host_s_import_script_does_not_run_in_another_host_s_group() {
    let dir = scratch_dir_for_daemons("imports");
    // Each script leaves a mark named after itself when it runs.
    for name in ["own", "foreign"] {
        std::fs::write(
            dir.join(format!("{name}.py")),
            format!(
                "open({:?}, 'w').close()\n",
                dir.join(format!("{name}.ran")).display().to_string()
            ),
        )
        .unwrap();
    }
    let d = dir.display();
    let apache = Apache::start(&format!(
        "<VirtualHost *:*>\n    ServerName one.test\n    WSGIDaemonProcess one threads=1\n    \
         WSGIImportScript {d}/own.py process-group=one application-group=%{{GLOBAL}}\n    \
         WSGIScriptAlias / @REPO@/tests/apps/daemon_probe.py process-group=one application-group=%{{GLOBAL}}\n\
         </VirtualHost>\n\
         <VirtualHost *:*>\n    ServerName two.test\n    WSGIDaemonProcess two threads=1\n    \
         WSGIImportScript {d}/foreign.py process-group=one application-group=%{{GLOBAL}}\n\
         </VirtualHost>\n\
         <Directory {d}>\n    Require all granted\n</Directory>\n{ACCESS}"
    ));
    let response = apache.request("GET / HTTP/1.1\r\nHost: one.test\r\nConnection: close\r\n\r\n");
    assert_eq!(response.status, 200, "{}", apache.error_log());
    wait_for_file(&dir.join("own.ran"), "the group's own import script");
    apache.wait_for_log("WSGI process group 'one' not accessible");
    assert!(
        !dir.join("foreign.ran").exists(),
        "another host's import script ran in group one"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
