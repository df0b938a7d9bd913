//! What a process that serves Python requests needs beyond the engine, whichever host feeds it: the
//! thread pool and its GIL-aware queue ([`Pool`]), and the per-process limits that retire or interrupt
//! it (maximum requests, request and interrupt timeouts, inactivity, a restart interval).
//!
//! `rwsgi serve`'s workers and mod_wsgi.so's daemon processes both run on it, so the two behave alike.
//! It knows no socket, HTTP or Apache: requests arrive as the engine's [`rwsgi_engine::Request`], and a
//! limit that decides the process must go calls the host's `retire` callback.

mod limits;
mod queue;

pub use limits::{
    stacks_within, unfinished_work, watch_gil, watch_inactivity, watch_interrupts, watch_lifetime,
    watch_request_timeouts,
};
pub use queue::{
    Closed, Monitor, Overdue, Pool, PoolOptions, Recycle, Serve, Submitter, FAST, INLINE_BUDGET,
    LEARN_AFTER,
};

/// How the log names the process and its limits, so each host's messages use its users' words.
#[derive(Debug, Clone, Copy)]
pub struct Names {
    /// The prefix of every line (`rwsgi`, `mod_wsgi`).
    pub log: &'static str,
    /// What the process is (`worker`, `daemon process`).
    pub process: &'static str,
    /// The option names, as the user wrote them.
    pub max_requests: &'static str,
    pub request_timeout: &'static str,
    pub interrupt_timeout: &'static str,
    pub inactivity_timeout: &'static str,
    pub restart_interval: &'static str,
}
