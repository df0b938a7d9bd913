//! `--access-log`: one line per response, in an Apache `LogFormat` ([`format`]), written to a file (or
//! stdout) that SIGUSR1 reopens for log rotation.
//!
//! A request's [`Entry`] is filled in by the HTTP layer and written when hyper drops the response body:
//! once the body is sent, or when the client went away or the app aborted it, with the bytes that left.
//! Lines gather in a buffer that is written, in whole lines, when it would pass `PIPE_BUF` or when the I/O
//! thread goes idle ([`AccessLog::flush`]), so a busy server makes one `write` per many requests, an idle
//! one shows each line at once, and the workers' lines never interleave, even in one pipe. This module
//! never blocks a request on anything but that `write`.

mod clock;
pub(crate) mod format;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use http::HeaderValue;

pub(crate) use format::Format;

/// Writes of up to this many bytes to a pipe are atomic: one worker's lines never split another's.
const PIPE_BUF: usize = 4096;

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Stdout,
    File(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Stdout => f.write_str("stdout"),
            Target::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// `--access-log` and `--access-log-format`, resolved.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) target: Target,
    pub(crate) format: Format,
}

/// A worker's access log.
pub(crate) struct AccessLog {
    settings: Settings,
    state: Mutex<State>,
}

struct State {
    out: File,
    pending: Vec<u8>,
    /// `%t`'s text for the last second rendered: a second's requests share it.
    clock: (u64, String),
    /// The last write failed and said so; the next failure stays quiet.
    failing: bool,
}

impl AccessLog {
    /// Opens the target (creating a file, appending to it).
    pub(crate) fn open(settings: &Settings) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(AccessLog {
            state: Mutex::new(State {
                out: open(&settings.target)?,
                pending: Vec::with_capacity(2 * PIPE_BUF),
                clock: (u64::MAX, String::new()),
                failing: false,
            }),
            settings: settings.clone(),
        }))
    }

    pub(crate) fn format(&self) -> &Format {
        &self.settings.format
    }

    /// Writes the lines gathered so far.
    pub(crate) fn flush(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.pending.is_empty() {
            state.write_pending(&self.settings.target);
        }
    }

    /// On SIGUSR1: writes what is pending to the old file, then opens the path afresh.
    pub(crate) fn reopen(&self) {
        self.flush();
        let Target::File(path) = &self.settings.target else {
            return;
        };
        match open(&self.settings.target) {
            Ok(file) => {
                self.state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .out = file;
                eprintln!(
                    "rwsgi: pid {}: SIGUSR1: reopened {}",
                    std::process::id(),
                    path.display()
                );
            }
            Err(err) => eprintln!("rwsgi: SIGUSR1: {err:#}"),
        }
    }

    fn record(&self, entry: &Entry) {
        let arrived = entry.arrived.duration_since(UNIX_EPOCH).unwrap_or_default();
        let (remote, local) = match entry.peer {
            rwsgi_engine::Transport::Tcp { peer, local } => (Some(peer), Some(local)),
            rwsgi_engine::Transport::Unix => (None, None),
        };
        let target = crate::http::request_target(&entry.uri);
        // The wall clock, as Apache's %D: one clock for both ends, read at the end only if it is shown.
        let elapsed = match self.settings.format.shows_duration() {
            true => SystemTime::now()
                .duration_since(entry.arrived)
                .unwrap_or_default(),
            false => std::time::Duration::ZERO,
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let second = arrived.as_secs();
        if state.clock.0 != second {
            let secs = i64::try_from(second).unwrap_or(i64::MAX);
            state.clock = (second, clock::apache_time(secs));
        }
        let State { pending, clock, .. } = &mut *state;
        let start = pending.len();
        self.settings.format.render(
            &format::Fields {
                remote,
                local,
                method: entry.method.as_str(),
                target: &target,
                protocol: crate::http::protocol(entry.version),
                status: entry.status,
                bytes: entry.bytes,
                elapsed,
                arrived,
                local_time: &clock.1,
                pid: std::process::id(),
                request_headers: &entry.request_headers,
                response_headers: &entry.response_headers,
            },
            pending,
        );
        if pending.len() > PIPE_BUF {
            // Write what came before this line in one piece of at most PIPE_BUF, then the line too if it
            // fills a write alone.
            if start > 0 {
                let line = pending.split_off(start);
                state.write_pending(&self.settings.target);
                state.pending = line;
            }
            if state.pending.len() >= PIPE_BUF {
                state.write_pending(&self.settings.target);
            }
        }
    }
}

impl State {
    /// Writes and empties the buffer; a failure is said once, and its lines are dropped, not kept to grow.
    fn write_pending(&mut self, target: &Target) {
        match self.out.write_all(&self.pending) {
            Ok(()) if self.failing => {
                self.failing = false;
                eprintln!("rwsgi: the access log {target} is written again");
            }
            Ok(()) => {}
            Err(err) if !self.failing => {
                self.failing = true;
                eprintln!(
                    "rwsgi: cannot write the access log {target}: {err}; its lines are lost until it can"
                );
            }
            Err(_) => {}
        }
        self.pending.clear();
    }
}

fn open(target: &Target) -> anyhow::Result<File> {
    match target {
        Target::Stdout => {
            use std::os::fd::AsFd as _;
            let fd = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .context("cannot use stdout for the access log")?;
            Ok(File::from(fd))
        }
        Target::File(path) => OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the access log {}", path.display())),
    }
}

/// One request and its response, as far as the access log needs them; written when dropped.
pub(crate) struct Entry {
    log: Arc<AccessLog>,
    arrived: SystemTime,
    peer: crate::http::Peer,
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    request_headers: Vec<Option<HeaderValue>>,
    status: u16,
    response_headers: Vec<Option<HeaderValue>>,
    /// Body bytes handed to the connection so far.
    pub(crate) bytes: u64,
}

/// When a request arrived, taken before anything else is done with it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival(SystemTime);

impl Arrival {
    pub(crate) fn now() -> Self {
        Arrival(SystemTime::now())
    }
}

impl Entry {
    pub(crate) fn new(
        log: &Arc<AccessLog>,
        arrival: Arrival,
        request: &http::request::Parts,
        peer: crate::http::Peer,
        response: &http::response::Response<impl Sized>,
    ) -> Self {
        let format = log.format();
        let pick = |names: &[http::HeaderName], headers: &http::HeaderMap| {
            names.iter().map(|name| joined(headers, name)).collect()
        };
        Entry {
            arrived: arrival.0,
            peer,
            method: request.method.clone(),
            uri: request.uri.clone(),
            version: request.version,
            request_headers: pick(&format.request_headers, &request.headers),
            status: response.status().as_u16(),
            response_headers: pick(&format.response_headers, response.headers()),
            bytes: 0,
            log: Arc::clone(log),
        }
    }
}

/// A header's value; a repeated header's values joined with ", ", as Apache logs them.
fn joined(headers: &http::HeaderMap, name: &http::HeaderName) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(first.clone());
    };
    let mut all = first.as_bytes().to_vec();
    for value in std::iter::once(second).chain(values) {
        all.extend_from_slice(b", ");
        all.extend_from_slice(value.as_bytes());
    }
    // Made of valid values and ", ": valid too.
    HeaderValue::from_bytes(&all).ok()
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.log.record(self);
    }
}
