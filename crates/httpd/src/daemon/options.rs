//! `WSGIDaemonProcess NAME [option=value ...]`: every option of mod_wsgi 6, with its default and its
//! validation (the messages are the C module's, so a configuration that fails fails the same way).
//!
//! Pure parsing: users and groups are resolved to ids when the daemons start, because Apache's own
//! `User`/`Group` (the defaults) may come later in the configuration than this directive.

use std::path::PathBuf;
use std::time::Duration;

use super::script_owner::Required;

/// One daemon process group, as configured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DaemonGroup {
    pub(crate) name: String,
    /// Its position among the server's groups, from 1 (the socket's name carries it).
    pub(crate) id: usize,
    pub(crate) processes: usize,
    /// `processes=` was given, even as 1: `wsgi.multiprocess` is then true.
    pub(crate) multiprocess: bool,
    pub(crate) threads: usize,
    pub(crate) display_name: Option<String>,
    pub(crate) home: Option<PathBuf>,
    pub(crate) chroot: Option<PathBuf>,
    /// `None`: Apache's `User`.
    pub(crate) user: Option<String>,
    /// `None`: Apache's `Group`.
    pub(crate) group: Option<String>,
    pub(crate) supplementary_groups: Vec<String>,
    pub(crate) umask: Option<u32>,
    pub(crate) lang: Option<String>,
    pub(crate) locale: Option<String>,
    pub(crate) python_home: Option<PathBuf>,
    pub(crate) python_path: Vec<PathBuf>,
    pub(crate) python_eggs: Option<PathBuf>,
    pub(crate) switch_interval: Option<f64>,
    pub(crate) stack_size: Option<usize>,
    pub(crate) maximum_requests: u64,
    pub(crate) startup_timeout: Option<Duration>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) deadlock_timeout: Option<Duration>,
    pub(crate) inactivity_timeout: Option<Duration>,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) interrupt_timeout: Option<Duration>,
    pub(crate) graceful_timeout: Option<Duration>,
    pub(crate) eviction_timeout: Option<Duration>,
    pub(crate) restart_interval: Option<Duration>,
    pub(crate) connect_timeout: Duration,
    /// `None`: Apache's `Timeout`.
    pub(crate) socket_timeout: Option<Duration>,
    pub(crate) queue_timeout: Option<Duration>,
    pub(crate) listen_backlog: u32,
    /// `None`: Apache's `User`, so Apache's children can connect.
    pub(crate) socket_user: Option<String>,
    pub(crate) script_user: Option<String>,
    pub(crate) script_group: Option<String>,
    pub(crate) cpu_time_limit: Option<Duration>,
    pub(crate) cpu_priority: i32,
    pub(crate) memory_limit: Option<u64>,
    pub(crate) virtual_memory_limit: Option<u64>,
    pub(crate) send_buffer_size: Option<usize>,
    pub(crate) receive_buffer_size: Option<usize>,
    pub(crate) header_buffer_size: usize,
    pub(crate) response_buffer_size: usize,
    /// `None`: the socket timeout.
    pub(crate) response_socket_timeout: Option<Duration>,
    pub(crate) response_flush_delay: Duration,
    pub(crate) server_metrics: bool,
    /// Where the directive was given: `None` for the main server, whose groups every host may use.
    pub(crate) virtual_host: Option<VirtualHostScope>,
}

/// A group declared inside a `<VirtualHost>`: only requests to that host, or to another with the same
/// `ServerName`, may use it (mod_wsgi's rule: a tenant's `WSGIProcessGroup` cannot reach another's daemons).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VirtualHostScope {
    /// The identity of the host's own module config (its address, compared, never followed): a host with a
    /// `WSGIDaemonProcess` of its own always has a config of its own.
    pub(crate) config: usize,
    pub(crate) server_name: String,
}

impl VirtualHostScope {
    /// Whether a request to the host with `config` and `server_name` may use the group.
    pub(crate) fn admits(&self, config: usize, server_name: &str) -> bool {
        self.config == config || self.server_name == server_name
    }
}

impl DaemonGroup {
    /// A group with mod_wsgi's defaults.
    pub(crate) fn new(name: &str, id: usize) -> Self {
        Self {
            name: name.to_owned(),
            id,
            processes: 1,
            multiprocess: false,
            threads: 15,
            display_name: None,
            home: None,
            chroot: None,
            user: None,
            group: None,
            supplementary_groups: Vec::new(),
            umask: None,
            lang: None,
            locale: None,
            python_home: None,
            python_path: Vec::new(),
            python_eggs: None,
            switch_interval: None,
            stack_size: None,
            maximum_requests: 0,
            startup_timeout: None,
            shutdown_timeout: Duration::from_secs(5),
            deadlock_timeout: Some(Duration::from_secs(300)),
            inactivity_timeout: None,
            request_timeout: None,
            interrupt_timeout: None,
            graceful_timeout: Some(Duration::from_secs(15)),
            eviction_timeout: None,
            restart_interval: None,
            connect_timeout: Duration::from_secs(15),
            socket_timeout: None,
            queue_timeout: None,
            listen_backlog: 100,
            socket_user: None,
            script_user: None,
            script_group: None,
            cpu_time_limit: None,
            cpu_priority: 0,
            memory_limit: None,
            virtual_memory_limit: None,
            send_buffer_size: None,
            receive_buffer_size: None,
            header_buffer_size: 32768,
            response_buffer_size: 8 * 1024 * 1024,
            response_socket_timeout: None,
            response_flush_delay: Duration::from_millis(5),
            server_metrics: false,
            virtual_host: None,
        }
    }

    /// The time after which a request counts as timed out: mod_wsgi 6 scales `request-timeout` by
    /// `1 + ln(threads)`, giving more patience to a process with more threads.
    pub(crate) fn request_timeout_fire_point(&self) -> Option<Duration> {
        let limit = self.request_timeout?;
        let threads = self.threads.max(1) as f64;
        Some(limit.mul_f64(1.0 + threads.ln()))
    }

    /// Who must own the scripts this group serves: `script-user` or `script-group` (never both).
    pub(crate) fn script_owner(&self) -> Option<Required<'_>> {
        match (&self.script_user, &self.script_group) {
            (Some(user), _) => Some(Required::User(user)),
            (None, Some(group)) => Some(Required::Group(group)),
            (None, None) => None,
        }
    }

    /// How long a graceful stop (Apache's graceful restart, or a limit reached) waits for requests.
    pub(crate) fn eviction_wait(&self) -> Duration {
        self.eviction_timeout
            .or(self.graceful_timeout)
            .unwrap_or_default()
    }
}

/// Parses the words after `WSGIDaemonProcess`. `id` numbers the group among the server's.
pub(crate) fn parse(args: &[String], id: usize) -> Result<DaemonGroup, String> {
    let (name, options) = match args {
        [name, options @ ..] if !name.is_empty() => (name, options),
        _ => return Err("Name of WSGI daemon process not supplied.".into()),
    };
    let mut group = DaemonGroup::new(name, id);
    for word in options {
        let (option, value) = word
            .split_once('=')
            .ok_or("Invalid option to WSGI daemon process definition.")?;
        apply(&mut group, option, value)?;
    }
    if group.script_user.is_some() && group.script_group.is_some() {
        return Err("Only one of script-user and script-group allowed.".into());
    }
    Ok(group)
}

fn apply(group: &mut DaemonGroup, option: &str, value: &str) -> Result<(), String> {
    let invalid = |what: &str| format!("Invalid {what} for WSGI daemon process.");
    // Seconds, as C's atoi reads them; 0 turns a timeout off.
    let seconds = |what: &str| -> Result<Option<Duration>, String> {
        let n: u64 = value.parse().map_err(|_| invalid(what))?;
        Ok((n > 0).then(|| Duration::from_secs(n)))
    };
    let count = |what: &str| -> Result<u64, String> { value.parse().map_err(|_| invalid(what)) };
    let size = |minimum: usize, message: &str| -> Result<Option<usize>, String> {
        let n: usize = value.parse().map_err(|_| message.to_owned())?;
        match n {
            0 => Ok(None),
            n if n < minimum => Err(message.to_owned()),
            n => Ok(Some(n)),
        }
    };
    let text = || (!value.is_empty()).then(|| value.to_owned());
    match option {
        "user" => {
            if value.is_empty() {
                return Err(invalid("user"));
            }
            if value == "root" || value == "#0" {
                return Err("WSGI process blocked from running as root.".into());
            }
            group.user = Some(value.to_owned());
        }
        "group" => group.group = Some(text().ok_or_else(|| invalid("group"))?),
        "supplementary-groups" => {
            group.supplementary_groups = value
                .split(',')
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect()
        }
        "processes" => {
            group.processes = match count("process count")? {
                0 => return Err(invalid("process count")),
                n => usize::try_from(n).map_err(|_| invalid("process count"))?,
            };
            group.multiprocess = true;
        }
        "threads" => {
            group.threads = usize::try_from(count("thread count")?)
                .ok()
                .filter(|n| *n < 1024)
                .ok_or_else(|| invalid("thread count"))?
        }
        "umask" => group.umask = Some(u32::from_str_radix(value, 8).map_err(|_| invalid("umask"))?),
        "chroot" => {
            if !value.starts_with('/') {
                return Err(invalid("chroot directory"));
            }
            group.chroot = Some(PathBuf::from(value));
        }
        "home" => {
            if !value.starts_with('/') {
                return Err(invalid("home directory"));
            }
            group.home = Some(PathBuf::from(value));
        }
        "lang" => group.lang = text(),
        "locale" => group.locale = text(),
        "python-home" => group.python_home = text().map(PathBuf::from),
        "python-path" => {
            group.python_path = value
                .split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect()
        }
        "python-eggs" => group.python_eggs = text().map(PathBuf::from),
        "switch-interval" => {
            group.switch_interval = Some(
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| *s > 0.0 && s.is_finite())
                    .ok_or_else(|| invalid("switch interval"))?,
            )
        }
        "stack-size" => {
            group.stack_size = Some(
                value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid("stack size"))?,
            )
        }
        "maximum-requests" => group.maximum_requests = count("request count")?,
        "startup-timeout" => group.startup_timeout = seconds("startup timeout")?,
        "shutdown-timeout" => {
            group.shutdown_timeout = seconds("shutdown timeout")?.unwrap_or_default()
        }
        "deadlock-timeout" => group.deadlock_timeout = seconds("deadlock timeout")?,
        "inactivity-timeout" => group.inactivity_timeout = seconds("inactivity timeout")?,
        "request-timeout" => group.request_timeout = seconds("request timeout")?,
        "interrupt-timeout" => group.interrupt_timeout = seconds("interrupt timeout")?,
        "graceful-timeout" => group.graceful_timeout = seconds("graceful timeout")?,
        "eviction-timeout" => group.eviction_timeout = seconds("eviction timeout")?,
        "restart-interval" => group.restart_interval = seconds("restart interval")?,
        "connect-timeout" => {
            group.connect_timeout = seconds("connect timeout")?.unwrap_or_default()
        }
        "socket-timeout" => group.socket_timeout = seconds("socket timeout")?,
        "queue-timeout" => group.queue_timeout = seconds("queue timeout")?,
        "listen-backlog" => {
            group.listen_backlog =
                u32::try_from(count("listen backlog")?).map_err(|_| invalid("listen backlog"))?
        }
        "display-name" => group.display_name = text(),
        "send-buffer-size" => {
            group.send_buffer_size = size(
                512,
                "Send buffer size must be >= 512 bytes, or 0 for system default.",
            )?
        }
        "receive-buffer-size" => {
            group.receive_buffer_size = size(
                512,
                "Receive buffer size must be >= 512 bytes, or 0 for system default.",
            )?
        }
        "header-buffer-size" => {
            group.header_buffer_size = size(
                8192,
                "Header buffer size must be >= 8192 bytes, or 0 for default.",
            )?
            .unwrap_or(32768)
        }
        "response-buffer-size" => {
            group.response_buffer_size = size(
                65536,
                "Response buffer size must be >= 65536 bytes, or 0 for default.",
            )?
            .unwrap_or(8 * 1024 * 1024)
        }
        "response-socket-timeout" => {
            group.response_socket_timeout = seconds("response socket timeout")?
        }
        "response-flush-delay" => {
            group.response_flush_delay = Duration::from_millis(count("response flush delay")?)
        }
        "socket-user" => group.socket_user = Some(text().ok_or_else(|| invalid("socket user"))?),
        "script-user" => group.script_user = Some(text().ok_or_else(|| invalid("script user"))?),
        "script-group" => group.script_group = Some(text().ok_or_else(|| invalid("script group"))?),
        "cpu-time-limit" => group.cpu_time_limit = seconds("CPU time limit")?,
        "cpu-priority" => {
            group.cpu_priority = value.parse().map_err(|_| invalid("CPU priority"))?
        }
        "memory-limit" => group.memory_limit = Some(count("memory limit")?).filter(|n| *n > 0),
        "virtual-memory-limit" => {
            group.virtual_memory_limit = Some(count("virtual memory limit")?).filter(|n| *n > 0)
        }
        "server-metrics" => {
            group.server_metrics = match value.to_ascii_lowercase().as_str() {
                "on" => true,
                "off" => false,
                _ => return Err(invalid("server metrics flag")),
            }
        }
        _ => return Err("Invalid option to WSGI daemon process definition.".into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn defaults_are_mod_wsgi_s() {
        let group = parse(&words("site"), 1).unwrap();
        assert_eq!(group.name, "site");
        assert_eq!(
            (group.processes, group.multiprocess, group.threads),
            (1, false, 15)
        );
        assert_eq!(group.graceful_timeout, Some(Duration::from_secs(15)));
        assert_eq!(group.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(group.connect_timeout, Duration::from_secs(15));
        assert_eq!(group.deadlock_timeout, Some(Duration::from_secs(300)));
        assert_eq!(group.listen_backlog, 100);
        assert_eq!(group.header_buffer_size, 32768);
        assert_eq!(group.response_flush_delay, Duration::from_millis(5));
        assert_eq!(group.request_timeout_fire_point(), None);
    }

    #[test]
    fn an_express_line_parses() {
        let group = parse(
            &words(
                "localhost:8000 display-name=(wsgi:localhost:8000:0) home=/tmp/x threads=5 \
                 maximum-requests=0 python-path=/a:/b python-eggs=/tmp/eggs lang=C.UTF-8 \
                 locale=C.UTF-8 listen-backlog=100 queue-timeout=45 socket-timeout=60 \
                 connect-timeout=15 request-timeout=60 inactivity-timeout=0 startup-timeout=15 \
                 deadlock-timeout=60 graceful-timeout=15 eviction-timeout=0 restart-interval=0 \
                 shutdown-timeout=5 send-buffer-size=0 receive-buffer-size=0 header-buffer-size=0 \
                 response-buffer-size=0 response-socket-timeout=0 server-metrics=Off \
                 processes=1 user=www-data group=www-data",
            ),
            3,
        )
        .unwrap();
        assert_eq!(
            (group.processes, group.multiprocess, group.threads),
            (1, true, 5)
        );
        assert_eq!(
            group.python_path,
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(group.queue_timeout, Some(Duration::from_secs(45)));
        assert_eq!(group.inactivity_timeout, None);
        assert_eq!(group.header_buffer_size, 32768);
        assert_eq!(group.user.as_deref(), Some("www-data"));
        let fire = group.request_timeout_fire_point().unwrap().as_secs_f64();
        assert!((fire - 60.0 * (1.0 + 5f64.ln())).abs() < 0.01, "{fire}");
    }

    #[test]
    fn bad_values_get_mod_wsgi_s_messages() {
        let fails = |line: &str| parse(&words(line), 1).unwrap_err();
        assert_eq!(fails(""), "Name of WSGI daemon process not supplied.");
        assert_eq!(
            fails("g processes=0"),
            "Invalid process count for WSGI daemon process."
        );
        assert_eq!(
            fails("g threads=x"),
            "Invalid thread count for WSGI daemon process."
        );
        assert_eq!(
            fails("g bogus=1"),
            "Invalid option to WSGI daemon process definition."
        );
        assert_eq!(
            fails("g threads"),
            "Invalid option to WSGI daemon process definition."
        );
        assert_eq!(
            fails("g user=root"),
            "WSGI process blocked from running as root."
        );
        assert_eq!(
            fails("g home=rel"),
            "Invalid home directory for WSGI daemon process."
        );
        assert_eq!(
            fails("g send-buffer-size=100"),
            "Send buffer size must be >= 512 bytes, or 0 for system default."
        );
        assert_eq!(
            fails("g script-user=a script-group=b"),
            "Only one of script-user and script-group allowed."
        );
        assert_eq!(fails("g umask=9"), "Invalid umask for WSGI daemon process.");
    }
}
