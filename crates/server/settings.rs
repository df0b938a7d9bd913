//! The resolved settings of `rwsgi serve`: validated once, read by everything else.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use rwsgi_engine::{proxy, AppSource, AppSpec};

use crate::cli::ServeArgs;

/// Everything `rwsgi serve` needs to know.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) app: AppSpec,
    pub(crate) listen: Listen,
    pub(crate) processes: usize,
    /// `--max-requests` and its jitter: each worker recycles after `base + random(0..=jitter)` requests.
    pub(crate) max_requests: Option<(u64, u64)>,
    pub(crate) pid_file: Option<PathBuf>,
    /// `--reuse-port`: each worker listens on a socket of its own.
    pub(crate) reuse_port: bool,
    /// `--log-file`: where stderr goes (reopened on SIGUSR1).
    pub(crate) log_file: Option<PathBuf>,
    /// `--trust-proxy-header` and `--trust-proxy`.
    pub(crate) trusted_proxy: Option<TrustedProxy>,
    /// `--access-log` and its format.
    pub(crate) access_log: Option<crate::access_log::Settings>,
    pub(crate) script_reloading: bool,
    pub(crate) reload: bool,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) queue_timeout: Option<Duration>,
    pub(crate) interrupt_timeout: Option<Duration>,
    /// `--user`/`--group`, resolved: the ids the app runs as.
    pub(crate) run_as: Option<RunAs>,
    pub(crate) startup_timeout: Option<Duration>,
    pub(crate) inactivity_timeout: Option<Duration>,
    /// `--max-memory`, in KiB as /proc reports RSS.
    pub(crate) max_memory_kib: Option<u64>,
    pub(crate) threads: usize,
    pub(crate) io_threads: usize,
    /// Fast requests may run on the I/O thread (see `rwsgi_pool::Submitter::run_inline`).
    pub(crate) inline: bool,
    pub(crate) python_home: Option<PathBuf>,
    pub(crate) python_path: Vec<PathBuf>,
    pub(crate) graceful_timeout: Duration,
    pub(crate) buffer_body: usize,
    /// `--header-timeout`; None: never.
    pub(crate) header_timeout: Option<Duration>,
    /// `--socket-timeout`; None: never.
    pub(crate) socket_timeout: Option<Duration>,
}

/// The example served when no APP is given; the repository's copy, found from where the binary was built.
const BUNDLED_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello.py");

impl Settings {
    /// This worker's own request limit: the base plus a random share of the jitter.
    pub(crate) fn worker_request_limit(&self) -> Option<u64> {
        use std::hash::{BuildHasher, Hasher};
        self.max_requests.map(|(base, jitter)| {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u32(std::process::id());
            base + hasher.finish() % (jitter + 1)
        })
    }

    pub(crate) fn resolve(args: ServeArgs) -> anyhow::Result<Self> {
        let app = resolve_app(args.app.as_deref(), &args.callable)?;
        let listen = match &args.unix_socket {
            Some(path) => Listen::Unix {
                path: absolute(path)?,
                mode: args
                    .unix_socket_mode
                    .as_deref()
                    .map(parse_mode)
                    .transpose()?,
            },
            None => Listen::Tcp(resolve_listen(&args.host, args.port)?),
        };
        if !(args.graceful_timeout.is_finite() && args.graceful_timeout >= 0.0) {
            bail!(
                "--graceful-timeout must be a number of seconds, not {}",
                args.graceful_timeout
            );
        }
        let python_home = args.python_home.filter(|p| !p.as_os_str().is_empty());
        if let Some(home) = &python_home {
            if !home.is_dir() {
                bail!("--python-home {} is not a directory", home.display());
            }
        }
        Ok(Self {
            app,
            listen,
            processes: usize::from(args.processes),
            max_requests: (args.max_requests > 0).then(|| {
                (
                    args.max_requests,
                    args.max_requests_jitter.unwrap_or(args.max_requests / 10),
                )
            }),
            pid_file: args.pid_file.as_deref().map(absolute).transpose()?,
            log_file: args.log_file.as_deref().map(absolute).transpose()?,
            reuse_port: args.reuse_port,
            trusted_proxy: resolve_trusted_proxy(&args.trust_proxy_header, &args.trust_proxy)?,
            access_log: resolve_access_log(
                args.access_log.as_deref(),
                args.access_log_format.as_deref(),
            )?,
            script_reloading: !args.no_script_reloading,
            reload: args.reload,
            interrupt_timeout: args
                .interrupt_timeout
                .map(positive_seconds("--interrupt-timeout"))
                .transpose()?,
            request_timeout: args
                .request_timeout
                .map(positive_seconds("--request-timeout"))
                .transpose()?,
            queue_timeout: args
                .queue_timeout
                .map(positive_seconds("--queue-timeout"))
                .transpose()?,
            max_memory_kib: args.max_memory.filter(|&m| m > 0).map(|m| m * 1024),
            run_as: resolve_run_as(args.user.as_deref(), args.group.as_deref())?,
            startup_timeout: args
                .startup_timeout
                .map(positive_seconds("--startup-timeout"))
                .transpose()?,
            inactivity_timeout: args
                .inactivity_timeout
                .map(positive_seconds("--inactivity-timeout"))
                .transpose()?,
            threads: usize::from(args.threads),
            io_threads: usize::from(args.io_threads),
            inline: !args.no_inline,
            python_home: python_home.map(|p| absolute(&p)).transpose()?,
            python_path: args
                .python_path
                .iter()
                .map(|p| absolute(p))
                .collect::<anyhow::Result<_>>()?,
            graceful_timeout: Duration::from_secs_f64(args.graceful_timeout),
            buffer_body: args.buffer_body,
            header_timeout: seconds_or_never("--header-timeout", args.header_timeout)?,
            socket_timeout: seconds_or_never("--socket-timeout", args.socket_timeout)?,
        })
    }
}

/// The proxy headers to believe, and from whom.
#[derive(Debug, Clone)]
pub(crate) struct TrustedProxy {
    /// In their environ form (`HTTP_X_FORWARDED_FOR`).
    pub(crate) headers: Vec<String>,
    /// None: from any client.
    pub(crate) proxies: Option<Vec<proxy::Network>>,
}

fn resolve_trusted_proxy(
    headers: &[String],
    proxies: &[String],
) -> anyhow::Result<Option<TrustedProxy>> {
    if headers.is_empty() {
        return Ok(None);
    }
    let headers = headers
        .iter()
        .map(|header| {
            let name = proxy::env_name(header);
            if !proxy::is_known(&name) {
                bail!(
                    "--trust-proxy-header {header}: not a proxy header rwsgi knows ({})",
                    proxy::known_headers().collect::<Vec<_>>().join(", ")
                );
            }
            Ok(name)
        })
        .collect::<anyhow::Result<_>>()?;
    let proxies = (!proxies.is_empty())
        .then(|| {
            proxies
                .iter()
                .map(|p| {
                    proxy::Network::parse(p).map_err(|err| anyhow::anyhow!("--trust-proxy: {err}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .transpose()?;
    Ok(Some(TrustedProxy { headers, proxies }))
}

fn resolve_access_log(
    path: Option<&Path>,
    format: Option<&str>,
) -> anyhow::Result<Option<crate::access_log::Settings>> {
    use crate::access_log::{Format, Settings, Target};
    let Some(path) = path else {
        return Ok(None);
    };
    let target = match path.as_os_str().to_str() {
        Some("-") => Target::Stdout,
        _ => Target::File(absolute(path)?),
    };
    let format = Format::parse(format.unwrap_or("combined"))
        .map_err(|err| anyhow::anyhow!("--access-log-format: {err}"))?;
    Ok(Some(Settings { target, format }))
}

/// Where `rwsgi serve` listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Listen {
    Tcp(SocketAddr),
    /// `--unix-socket`, and `--unix-socket-mode` if given.
    Unix {
        path: PathBuf,
        mode: Option<u32>,
    },
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix { path, .. } => write!(f, "unix:{}", path.display()),
        }
    }
}

fn parse_mode(mode: &str) -> anyhow::Result<u32> {
    u32::from_str_radix(mode.trim_start_matches("0o"), 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .with_context(|| format!("--unix-socket-mode {mode}: not permissions in octal, like 660"))
}

/// The user and group the app runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub(crate) uid: nix::unistd::Uid,
    pub(crate) gid: nix::unistd::Gid,
}

fn resolve_run_as(user: Option<&str>, group: Option<&str>) -> anyhow::Result<Option<RunAs>> {
    use nix::unistd::{Gid, Group, Uid, User};
    let Some(user) = user else {
        if group.is_some() {
            bail!("--group needs --user");
        }
        return Ok(None);
    };
    let found = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(user),
    }
    .with_context(|| format!("cannot look up --user {user}"))?
    .with_context(|| format!("--user {user}: no such user"))?;
    let gid = match group {
        None => found.gid,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => Gid::from_raw(gid),
            Err(_) => {
                Group::from_name(group)
                    .with_context(|| format!("cannot look up --group {group}"))?
                    .with_context(|| format!("--group {group}: no such group"))?
                    .gid
            }
        },
    };
    Ok(Some(RunAs {
        uid: found.uid,
        gid,
    }))
}

/// Validates a number of seconds given for `flag`.
fn positive_seconds(flag: &'static str) -> impl Fn(f64) -> anyhow::Result<Duration> {
    move |seconds| match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if seconds > 0.0 => Ok(duration),
        Err(_) if seconds > 0.0 => bail!("{flag} {seconds:e} is too many seconds"),
        _ => bail!("{flag} must be a positive number of seconds, not {seconds}"),
    }
}

/// A number of seconds where 0 means no limit.
fn seconds_or_never(flag: &'static str, seconds: f64) -> anyhow::Result<Option<Duration>> {
    if seconds == 0.0 {
        return Ok(None);
    }
    positive_seconds(flag)(seconds).map(Some)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

fn resolve_app(app: Option<&str>, callable: &str) -> anyhow::Result<AppSpec> {
    let callable = callable.to_owned();
    let Some(app) = app else {
        let path = PathBuf::from(BUNDLED_EXAMPLE);
        if !path.is_file() {
            bail!("the bundled example {BUNDLED_EXAMPLE} is gone; name an APP to serve");
        }
        return Ok(AppSpec {
            source: AppSource::Script(path),
            callable,
        });
    };
    let path = Path::new(app);
    if path.is_file() {
        return Ok(AppSpec {
            source: AppSource::Script(absolute(path)?),
            callable,
        });
    }
    match app.split_once(':') {
        Some((module, name)) if is_dotted_name(module) && is_identifier(name) => Ok(AppSpec {
            source: AppSource::Module(module.to_owned()),
            callable: name.to_owned(),
        }),
        _ if is_dotted_name(app) => Ok(AppSpec {
            source: AppSource::Module(app.to_owned()),
            callable,
        }),
        _ => bail!("APP {app:?} is neither a file nor module:callable"),
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

fn is_dotted_name(s: &str) -> bool {
    s.split('.').all(is_identifier)
}

fn resolve_listen(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve --host {host}"))?
        .next()
        .with_context(|| format!("--host {host} has no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_argument_forms() {
        let spec = resolve_app(Some("pkg.mod:app"), "application").unwrap();
        assert_eq!(spec.source, AppSource::Module("pkg.mod".into()));
        assert_eq!(spec.callable, "app");
        let spec = resolve_app(Some("pkg.mod"), "application").unwrap();
        assert_eq!(spec.callable, "application");
        assert!(resolve_app(Some("no such file.py"), "application").is_err());
        let spec = resolve_app(Some(file!()), "application").unwrap();
        assert!(matches!(spec.source, AppSource::Script(p) if p.is_absolute()));
    }

    #[test]
    fn socket_modes_are_octal() {
        assert_eq!(parse_mode("660").unwrap(), 0o660);
        assert_eq!(parse_mode("0o600").unwrap(), 0o600);
        assert_eq!(parse_mode("0777").unwrap(), 0o777);
        assert!(parse_mode("888").is_err());
        assert!(parse_mode("1777").is_err());
        assert!(parse_mode("rw").is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            resolve_listen("127.0.0.1", 0).unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            resolve_listen("[::1]", 80).unwrap(),
            "[::1]:80".parse().unwrap()
        );
        assert!(resolve_listen("localhost", 1).is_ok());
    }
}
