//! The command line, as close to the flags as possible; [`crate::settings`] resolves it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// rwsgi: a WSGI server for Python web applications, and a drop-in mod_wsgi for Apache.
#[derive(Debug, Parser)]
#[command(name = "rwsgi", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve a WSGI application over HTTP/1.1.
    Serve(Box<ServeArgs>),
    /// Print the lines that load rwsgi's mod_wsgi.so into an Apache config (as mod_wsgi-express does).
    ModuleConfig(ModuleArgs),
    /// Copy rwsgi's mod_wsgi.so into Apache's modules directory and print the lines that load it.
    InstallModule(InstallArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ModuleArgs {
    /// The virtualenv (or Python prefix) Apache's Python should use; defaults to $VIRTUAL_ENV.
    #[arg(long, value_name = "DIR", env = "VIRTUAL_ENV")]
    pub(crate) python_home: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    #[command(flatten)]
    pub(crate) module: ModuleArgs,
    /// Where to install it; default: Apache's module directory (`apxs -q LIBEXECDIR`).
    #[arg(long, value_name = "DIR")]
    pub(crate) modules_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// A WSGI script file (hello.py, mysite.wsgi) or module:callable. Default: the bundled examples/hello.py.
    pub(crate) app: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: String,
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 8000)]
    pub(crate) port: u16,
    /// Listen on this UNIX socket instead of --host/--port, for a proxy on the same machine (nginx:
    /// `proxy_pass http://unix:PATH`). A stale socket file is replaced; the file is removed on exit.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["host", "port", "reuse_port"])]
    pub(crate) unix_socket: Option<PathBuf>,
    /// The UNIX socket's permissions, in octal (660: the owner and its group may connect). Default: the
    /// umask's.
    #[arg(long, value_name = "MODE", requires = "unix_socket")]
    pub(crate) unix_socket_mode: Option<String>,
    /// Worker processes, each with its own interpreter, under a supervisor that restarts them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) processes: u16,
    /// Replace a worker after it has served this many requests (0: never). Implies a supervisor.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) max_requests: u64,
    /// Add up to this many to each worker's --max-requests, so workers do not restart together.
    /// Default: a tenth of --max-requests.
    #[arg(long, value_name = "N")]
    pub(crate) max_requests_jitter: Option<u64>,
    /// Write the server's process id (the supervisor's, with workers) to this file; removed on exit.
    #[arg(long, value_name = "PATH")]
    pub(crate) pid_file: Option<PathBuf>,
    /// Give each worker its own SO_REUSEPORT socket, the kernel spreading new connections over them by
    /// hash, instead of one socket whose connections go to whichever worker accepts first (the default,
    /// which also loses nothing when a worker retires). See bench/RESULTS.md for how they compare.
    #[arg(long)]
    pub(crate) reuse_port: bool,
    /// Append the server's log (its messages, the app's tracebacks, output and wsgi.errors) to this file
    /// instead of stderr; SIGUSR1 reopens it, for log rotation.
    #[arg(long, value_name = "PATH")]
    pub(crate) log_file: Option<PathBuf>,
    /// Write a line for each response to this file (`-`: stdout), appended; SIGUSR1 reopens it, for log
    /// rotation. Off by default.
    #[arg(long, value_name = "PATH")]
    pub(crate) access_log: Option<PathBuf>,
    /// The access log's lines: `combined` (the default), `common`, or an Apache `LogFormat` string such as
    /// '%h %t "%r" %>s %b %D'.
    #[arg(long, value_name = "FORMAT", requires = "access_log")]
    pub(crate) access_log_format: Option<String>,
    /// Trust this request header as set by the proxy in front: X-Forwarded-For, X-Forwarded-Proto,
    /// X-Forwarded-Host, X-Forwarded-Port, X-Script-Name and the like; repeatable. Other headers of the same
    /// kind are removed, so clients cannot pass their own (mod_wsgi-express's --trust-proxy-header).
    #[arg(long = "trust-proxy-header", value_name = "HEADER")]
    pub(crate) trust_proxy_header: Vec<String>,
    /// Accept the trusted proxy headers only from this proxy address or network (10.0.0.0/8); repeatable.
    /// Without it, any client may set them.
    #[arg(
        long = "trust-proxy",
        value_name = "ADDR[/BITS]",
        requires = "trust_proxy_header",
        conflicts_with = "unix_socket"
    )]
    pub(crate) trust_proxy: Vec<String>,
    /// Do not reload a WSGI script file when it changes (mod_wsgi's `WSGIScriptReloading Off`).
    #[arg(long)]
    pub(crate) no_script_reloading: bool,
    /// A request running longer than this many seconds is logged with every Python thread's stack, and its
    /// worker is replaced. Implies a supervisor.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) request_timeout: Option<f64>,
    /// A request waiting this many seconds for a free Python thread is answered 503 with Retry-After.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) queue_timeout: Option<f64>,
    /// Replace a worker whose resident memory (checked every second by the supervisor) exceeds this many
    /// MiB. Implies a supervisor.
    #[arg(long, value_name = "MIB")]
    pub(crate) max_memory: Option<u64>,
    /// Kill a worker that is not accepting connections this many seconds after it started.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) startup_timeout: Option<f64>,
    /// Recycle a worker that has served no request for this many seconds (frees what the app holds).
    /// Implies a supervisor.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) inactivity_timeout: Option<f64>,
    /// Run the app as this user (name or id): rwsgi binds as root (ports below 1024 work), then drops to it.
    #[arg(long, value_name = "USER")]
    pub(crate) user: Option<String>,
    /// Run the app with this group (name or id); default: the --user's primary group.
    #[arg(long, value_name = "GROUP")]
    pub(crate) group: Option<String>,
    /// Development: restart workers when the script or any imported module's source file changes.
    #[arg(long)]
    pub(crate) reload: bool,
    /// Raise `mod_wsgi.RequestTimeout` inside a request running longer than this many seconds, so it
    /// unwinds and its client gets 504 (--request-timeout remains the backstop).
    #[arg(long, value_name = "SECONDS")]
    pub(crate) interrupt_timeout: Option<f64>,
    /// Python threads serving requests concurrently.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) threads: u16,
    /// Threads doing HTTP I/O (parsing, sending).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) io_threads: u16,
    /// Never run a request on the I/O thread, even when the app has been answering fast.
    #[arg(long)]
    pub(crate) no_inline: bool,
    /// The name of the WSGI callable in APP.
    #[arg(long, default_value = "application")]
    pub(crate) callable: String,
    /// Directory to add to sys.path (site.addsitedir semantics); repeatable.
    #[arg(long = "python-path", value_name = "DIR")]
    pub(crate) python_path: Vec<PathBuf>,
    /// A virtualenv (or Python prefix) for the interpreter; defaults to $VIRTUAL_ENV.
    #[arg(long, value_name = "DIR", env = "VIRTUAL_ENV")]
    pub(crate) python_home: Option<PathBuf>,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub(crate) graceful_timeout: f64,
    /// Close a connection that does not complete a request's head within this many seconds (a new
    /// connection's first request, or the next on an idle keep-alive connection); 0: never.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub(crate) header_timeout: f64,
    /// Give up on a client that sends none of a request body the app is reading, or takes none of a
    /// response, for this many seconds: the app's read fails, its response is abandoned and the
    /// connection closed (mod_wsgi-express's --socket-timeout); 0: never.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub(crate) socket_timeout: f64,
    /// Request bodies up to this many bytes are read before the app runs; larger ones are streamed.
    #[arg(long, default_value_t = 256 * 1024, value_name = "BYTES")]
    pub(crate) buffer_body: usize,
}
