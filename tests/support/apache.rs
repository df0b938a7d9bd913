//! A real Apache httpd (`apache2 -f CONF -DFOREGROUND`) with a generated config: its own ServerRoot, logs and
//! pid file in a temporary directory, one ephemeral port on 127.0.0.1, `User www-data`, and a mod_wsgi.so
//! (ours by default). Stopped with SIGTERM, and waited for, when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{repo, Client, IO_TIMEOUT};

/// Apache's modules, where Debian installs them.
pub const MODULES: &str = "/usr/lib/apache2/modules";

/// Our module, built beside the `rwsgi` binary by `cargo build --workspace`.
pub fn our_module() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_rwsgi"))
        .parent()
        .expect("target dir")
        .to_path_buf();
    let module = dir.join("libmod_wsgi.so");
    assert!(
        module.exists(),
        "{} is missing: build it with `cargo build --release --workspace` (scripts/test does)",
        module.display()
    );
    module
}

/// Which MPM Apache runs with.
#[derive(Debug, Clone, Copy)]
pub enum Mpm {
    Event,
    Worker,
    Prefork,
}

impl Mpm {
    fn name(self) -> &'static str {
        match self {
            Mpm::Event => "event",
            Mpm::Worker => "worker",
            Mpm::Prefork => "prefork",
        }
    }
}

/// What to start Apache with.
pub struct Setup<'a> {
    pub module: PathBuf,
    pub mpm: Mpm,
    /// Config lines after the common preamble (which loads the MPM, authz_core, alias, mime and the module).
    pub body: &'a str,
}

impl<'a> Setup<'a> {
    pub fn new(body: &'a str) -> Self {
        Self {
            module: our_module(),
            mpm: Mpm::Event,
            body,
        }
    }
}

/// A running Apache.
pub struct Apache {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    conf: PathBuf,
}

static SERIAL: AtomicUsize = AtomicUsize::new(0);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Apache {
    pub fn start(body: &str) -> Apache {
        Self::start_with(Setup::new(body))
    }

    pub fn start_with(setup: Setup<'_>) -> Apache {
        let dir = std::env::temp_dir().join(format!(
            "rwsgi-apache-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let conf = dir.join("httpd.conf");
        let config = format!(
            r#"ServerRoot "{dir}"
DefaultRuntimeDir "{dir}"
PidFile "{dir}/httpd.pid"
ErrorLog "{dir}/error.log"
LogLevel info
Listen 127.0.0.1:{port}
ServerName localhost
User www-data
Group www-data
LoadModule mpm_{mpm}_module {modules}/mod_mpm_{mpm}.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule alias_module {modules}/mod_alias.so
LoadModule mime_module {modules}/mod_mime.so
LoadModule env_module {modules}/mod_env.so
LoadModule access_compat_module {modules}/mod_access_compat.so
LoadModule wsgi_module "{module}"
TypesConfig /etc/mime.types
LogFormat "%h %l %u %t \"%r\" %>s %b %{{mod_wsgi.application_group}}e" common
CustomLog "{dir}/access.log" common
{body}
"#,
            dir = dir.display(),
            mpm = setup.mpm.name(),
            modules = MODULES,
            module = setup.module.display(),
            body = setup.body.replace("@REPO@", &repo().display().to_string()),
        );
        std::fs::write(&conf, config).unwrap();
        // Its own process group: prefork signals its whole group when it stops, which must not be ours.
        let child = Command::new("apache2")
            .args(["-f", &conf.display().to_string(), "-DFOREGROUND"])
            .process_group(0)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .expect("apache2 (apt-get install apache2; scripts/test does)");
        let mut apache = Apache {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            conf,
        };
        apache.wait_until_serving();
        apache
    }

    fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "apache2 exited ({status}) at start:\n{}\n{}",
                    self.stderr(),
                    self.error_log()
                );
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "apache2 did not start listening:\n{}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Waits (bounded) until the error log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_more_in_log(needle, 0)
    }

    /// Waits (bounded) until `needle` is in the error log more than `before` times.
    pub fn wait_for_more_in_log(&self, needle: &str, before: usize) -> String {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let log = self.error_log();
            if log.matches(needle).count() > before {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} did not appear in the error log (again):\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `apache2 -k ACTION` against this server's config (graceful, restart, graceful-stop).
    pub fn control(&self, action: &str) {
        let status = Command::new("apache2")
            .args(["-f", &self.conf.display().to_string(), "-k", action])
            .status()
            .unwrap();
        assert!(status.success(), "apache2 -k {action} failed");
    }

    /// The resident memory of Apache's parent process.
    pub fn parent_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS of apache2")
    }

    /// Runs `apache2 -k ACTION` and waits (bounded) until the new generation says it is running.
    pub fn control_and_wait(&self, action: &str) {
        let generations = |log: &str| log.matches("resuming normal operations").count();
        let before = generations(&self.error_log());
        self.control(action);
        let deadline = Instant::now() + IO_TIMEOUT;
        while generations(&self.error_log()) <= before {
            assert!(
                Instant::now() < deadline,
                "no new generation after {action}:\n{}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops Apache with SIGTERM and returns how it exited (bounded). The signal is repeated every two
    /// seconds: Apache drops a SIGTERM that lands while it is still re-reading its config for a restart.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut next_signal = Instant::now();
        loop {
            if Instant::now() >= next_signal {
                let _ = Command::new("kill")
                    .args(["-TERM", &self.child.id().to_string()])
                    .status();
                next_signal = Instant::now() + Duration::from_secs(2);
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let ps = Command::new("ps")
                    .args(["-eLo", "pid,ppid,lwp,stat,wchan:32,cmd"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                let mine: String = ps
                    .lines()
                    .filter(|l| l.contains(&*self.conf.to_string_lossy()))
                    .map(|l| format!("{l}\n"))
                    .collect();
                // Where the parent is, if gdb is at hand.
                let stack = Command::new("gdb")
                    .args([
                        "-p",
                        &self.child.id().to_string(),
                        "-batch",
                        "-ex",
                        "thread apply all bt",
                    ])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                panic!(
                    "apache2 did not stop:\n{mine}\n{stack}\n{}",
                    self.error_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Client for Apache {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Starts apache2 with `body` and expects it to refuse the config; returns what it printed.
pub fn config_must_fail(body: &str) -> String {
    let dir = std::env::temp_dir().join(format!(
        "rwsgi-apache-bad-{}-{}",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("httpd.conf");
    std::fs::write(
        &conf,
        format!(
            "ServerRoot \"{dir}\"\nDefaultRuntimeDir \"{dir}\"\nPidFile \"{dir}/httpd.pid\"\nErrorLog \"{dir}/error.log\"\nListen 127.0.0.1:{port}\nLoadModule mpm_event_module {MODULES}/mod_mpm_event.so\nLoadModule authz_core_module {MODULES}/mod_authz_core.so\nLoadModule wsgi_module \"{module}\"\n{body}\n",
            dir = dir.display(),
            port = free_port(),
            module = our_module().display(),
        ),
    )
    .unwrap();
    let output = Command::new("apache2")
        .args(["-t", "-f", &conf.display().to_string()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!output.status.success(), "apache2 accepted:\n{body}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}
