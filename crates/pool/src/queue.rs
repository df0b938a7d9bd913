//! The Python thread pool and its queue.
//!
//! Only one thread runs Python at a time, so the queue hands requests out in the way that keeps the GIL
//! with the thread that can use it:
//! - a thread that finishes a request polls briefly for the next one while still holding the GIL, so a
//!   busy server neither hands the GIL back and forth nor pays a futex wake per request;
//! - while a thread is running a request, no other thread is woken for a new one: it would only wait for
//!   the GIL and then force switches. A watchdog looks every millisecond and wakes one more thread (the
//!   "standby") only if every busy thread is off the CPU, blocked inside the app (a database call, a
//!   sleep) with the GIL released: the case where a second thread is what the request needs;
//! - a thread that finishes a request while another is still inside one (or a standby waits) takes no new
//!   request: it releases the GIL and sleeps, so CPU-bound requests run one thread at a time.
//!
//! This is what keeps many threads from costing throughput to GIL contention.
//!
//! Fast apps go further (when the host allows it): once the last [`LEARN_AFTER`] requests each took less
//! than [`FAST`], a request that finds every pool thread idle runs on the host's I/O thread itself
//! ([`Submitter::run_inline`]), which saves two thread hand-offs per request. The app could block that
//! thread, so this stops for good, with a log line, the first time a request runs there longer than
//! [`INLINE_BUDGET`]; the engine hands a response that streams past what the host takes at once, or past
//! the budget, over to a pool thread between two items of its iterable.
//!
//! The queue knows requests only as the engine's [`Request`]; what a thread does with one is the host's
//! (`rwsgi serve` runs one [`rwsgi_engine::Engine`]; a daemon routes each to its application).

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use rwsgi_engine::{Inline, Outcome, Request, RequestSource};

use crate::Names;

/// How long a thread that just finished a request keeps looking for the next one before it sleeps. Under
/// load the next request arrives within microseconds; sleeping and being woken for it costs two context
/// switches and a futex call each way, which profiling showed to be the largest cost of a small request.
const POLL_BEFORE_SLEEP: Duration = Duration::from_micros(50);
/// How often the watchdog checks whether queued requests are stuck behind blocked threads.
const WATCHDOG_TICK: Duration = Duration::from_millis(1);
/// How long the watchdog keeps ticking after the queue was last seen non-empty, before it parks.
const WATCHDOG_LINGER: Duration = Duration::from_millis(100);
/// A request served by a pool thread within this long counts towards running requests inline.
pub const FAST: Duration = Duration::from_millis(2);
/// How many fast requests in a row it takes before requests may run inline.
pub const LEARN_AFTER: u32 = 1000;
/// How long a request may run inline before the engine hands it over, and before a request that ran
/// inline that long stops inline running for good.
pub const INLINE_BUDGET: Duration = Duration::from_millis(20);

/// The threads serving requests, and the queue that feeds them.
pub struct Pool {
    queue: Arc<Queue>,
    threads: Vec<JoinHandle<()>>,
}

struct Queue {
    state: Mutex<State>,
    /// Wakes the parked watchdog.
    watch: Condvar,
    /// How many requests are queued, readable without the lock while polling.
    queued: AtomicUsize,
    /// Threads polling for the next request while holding the GIL.
    polling: AtomicUsize,
    /// Threads running a request.
    busy: AtomicUsize,
    /// Mirrors `State::standby` for the polling loop, which must not take the lock to read it.
    standby_waiting: AtomicBool,
    workers: Vec<Worker>,
    /// Requests finished so far, for `--max-requests`.
    served: AtomicU64,
    /// A request that waited this long is answered by `expired` without running.
    queue_timeout: Option<Duration>,
    expired: fn(Request),
    recycle: Option<Recycle>,
    names: Names,
    /// The worker slot of the request running inline, if the host lets requests run inline.
    inline_slot: Option<usize>,
    /// Requests may run inline: the host allows it and none has yet run too long there.
    inline_allowed: AtomicBool,
    /// Pool requests in a row that took less than [`FAST`].
    fast_streak: AtomicU32,
}

/// Maximum requests: after `after` requests, `notify` tells the host to retire this process.
pub struct Recycle {
    /// Requests this process serves before it retires.
    pub after: u64,
    /// Called once, from the thread that finished the last of them.
    pub notify: Arc<dyn Fn() + Send + Sync>,
}

/// What each pool thread runs: it serves requests from the queue until it closes.
pub type Serve = Arc<dyn Fn(&dyn RequestSource) + Send + Sync>;

/// How a pool runs.
pub struct PoolOptions {
    /// Python threads.
    pub threads: usize,
    /// Their stack size (the platform's default if `None`).
    pub stack_size: Option<usize>,
    /// Retire the process after this many requests.
    pub recycle: Option<Recycle>,
    /// A request that waited longer than this in the queue is not run ...
    pub queue_timeout: Option<Duration>,
    /// ... but answered by this (`rwsgi serve`: 503; a mod_wsgi daemon: 504).
    pub expired: fn(Request),
    /// What the log calls this process and its options.
    pub names: Names,
    /// The host may run requests on its own thread with [`Submitter::run_inline`].
    pub inline: bool,
}

/// What the watchdog and the request-timeout monitor need to know of one pool thread.
#[derive(Default)]
struct Worker {
    /// The kernel's id for the thread, to read its scheduling state.
    tid: AtomicU32,
    busy: AtomicBool,
    /// The request being served.
    current: Mutex<Current>,
    /// The thread's id as Python knows it, to interrupt a request running too long.
    python_ident: AtomicU64,
    /// The current request is the rest of one begun inline: its time says nothing of the app's speed.
    resumed: AtomicBool,
}

/// What a pool thread is serving. The buffer is kept from one request to the next, and made text only when
/// a log line needs it, so naming a request costs neither an allocation nor a UTF-8 check.
#[derive(Default)]
struct Current {
    /// Method and URI of the request, as the client sent them.
    what: Vec<u8>,
    /// When it was taken; `None` while the thread is idle.
    since: Option<Instant>,
}

impl Current {
    fn begin(&mut self, request: &Request, now: Instant) {
        self.what.clear();
        let var = |key| request.vars.get(key).unwrap_or_default();
        self.what.extend_from_slice(var("REQUEST_METHOD"));
        self.what.push(b' ');
        self.what.extend_from_slice(var("REQUEST_URI"));
        self.since = Some(now);
    }

    /// Method and URI, as a log line shows them.
    fn what(&self) -> String {
        String::from_utf8_lossy(&self.what).into_owned()
    }

    /// Ends the request, giving when it began.
    fn end(&mut self) -> Option<Instant> {
        self.since.take()
    }
}

impl Worker {
    fn current(&self) -> MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct State {
    /// Waiting requests, with when each was queued.
    requests: VecDeque<(Request, Instant)>,
    /// Threads asleep in `next()`, the most recent last. Waking the most recent one first keeps work on
    /// threads whose caches and thread-locals are warm instead of rotating it over the whole pool.
    sleepers: Vec<Thread>,
    /// A thread has taken a request and is waiting for the GIL.
    standby: bool,
    watchdog_parked: bool,
    closed: bool,
}

thread_local! {
    /// Which of the pool's workers the current thread is.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
    /// A host thread's kernel and Python ids, once known (reading the kernel's costs a /proc lookup).
    static HOST_THREAD: Cell<Option<(u32, u64)>> = const { Cell::new(None) };
}

impl Queue {
    fn new(options: PoolOptions) -> Self {
        let PoolOptions {
            threads,
            recycle,
            queue_timeout,
            expired,
            names,
            inline,
            ..
        } = options;
        Self {
            state: Mutex::default(),
            watch: Condvar::new(),
            queued: AtomicUsize::new(0),
            polling: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            standby_waiting: AtomicBool::new(false),
            workers: (0..threads + usize::from(inline))
                .map(|_| Worker::default())
                .collect(),
            served: AtomicU64::new(0),
            recycle,
            queue_timeout,
            expired,
            names,
            inline_slot: inline.then_some(threads),
            inline_allowed: AtomicBool::new(inline),
            fast_streak: AtomicU32::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pop_locked(&self, state: &mut State) -> Option<Request> {
        let (request, _) = state.requests.pop_front()?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        self.set_busy(true);
        if let Some(worker) = WORKER.get().and_then(|i| self.workers.get(i)) {
            worker
                .resumed
                .store(request.is_handover(), Ordering::Relaxed);
            worker.current().begin(&request, Instant::now());
        }
        Some(request)
    }

    /// Counts a finished request, and asks the host to retire the process at `--max-requests`.
    fn count_served(&self) {
        let served = self.served.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(recycle) = &self.recycle {
            if served == recycle.after {
                eprintln!(
                    "{}: {} {} reached {} ({served}); recycling",
                    self.names.log,
                    self.names.process,
                    std::process::id(),
                    self.names.max_requests,
                );
                (recycle.notify)();
            }
        }
    }

    /// Learns from a pool request's time whether the app answers fast enough to run inline.
    fn learn(&self, took: Duration) {
        if took < FAST {
            // Saturates well above LEARN_AFTER, so the counter never wraps.
            if self.fast_streak.load(Ordering::Relaxed) < LEARN_AFTER * 2 {
                self.fast_streak.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            self.fast_streak.store(0, Ordering::Relaxed);
        }
    }

    fn set_busy(&self, busy: bool) {
        if let Some(worker) = WORKER.get().and_then(|i| self.workers.get(i)) {
            self.mark_busy(worker, busy);
        }
    }

    /// Marks `worker` busy or not, keeping the count; false if it already was (so only one caller can
    /// take an idle worker's slot).
    fn mark_busy(&self, worker: &Worker, busy: bool) -> bool {
        if worker.busy.swap(busy, Ordering::AcqRel) == busy {
            return false;
        }
        if busy {
            self.busy.fetch_add(1, Ordering::AcqRel);
        } else {
            self.busy.fetch_sub(1, Ordering::AcqRel);
        }
        true
    }

    /// Takes the requests that waited longer than `--queue-timeout` (the oldest are first).
    fn take_expired(&self, state: &mut State) -> Vec<Request> {
        let Some(limit) = self.queue_timeout else {
            return Vec::new();
        };
        let mut expired = Vec::new();
        while state
            .requests
            .front()
            .is_some_and(|(_, queued)| queued.elapsed() > limit)
        {
            if let Some((request, _)) = state.requests.pop_front() {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                expired.push(request);
            }
        }
        expired
    }

    /// Whether any thread running a request is on the CPU (rather than blocked with the GIL released).
    fn busy_thread_running(&self) -> bool {
        self.workers
            .iter()
            .filter(|w| w.busy.load(Ordering::Acquire))
            .any(|w| thread_is_running(w.tid.load(Ordering::Acquire)))
    }

    fn watchdog(&self) {
        let mut linger_until = Instant::now();
        let mut blocked_ticks = 0u32;
        loop {
            {
                let mut state = self.lock();
                loop {
                    if state.closed {
                        return;
                    }
                    if !state.requests.is_empty() || Instant::now() < linger_until {
                        break;
                    }
                    state.watchdog_parked = true;
                    state = self
                        .watch
                        .wait(state)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    state.watchdog_parked = false;
                    linger_until = Instant::now() + WATCHDOG_LINGER;
                }
            }
            std::thread::sleep(WATCHDOG_TICK);
            let mut state = self.lock();
            let expired = self.take_expired(&mut state);
            if !expired.is_empty() {
                drop(state);
                expired.into_iter().for_each(self.expired);
                state = self.lock();
            }
            if state.requests.is_empty() {
                continue;
            }
            linger_until = Instant::now() + WATCHDOG_LINGER;
            if state.sleepers.is_empty()
                || state.standby
                || self.polling.load(Ordering::Acquire) > 0
            {
                blocked_ticks = 0;
                continue;
            }
            if self.busy.load(Ordering::Acquire) == 0 {
                // Nobody is running a request: nothing to contend with.
                wake_one(&mut state);
                continue;
            }
            // Threads handing the GIL over are all briefly off the CPU; only a second look a tick later
            // tells a thread blocked in the app from a handoff. Waking on the first look snowballed into every
            // thread contending for the GIL.
            blocked_ticks = if self.busy_thread_running() {
                0
            } else {
                blocked_ticks + 1
            };
            if blocked_ticks >= 2 {
                blocked_ticks = 0;
                wake_one(&mut state);
            }
        }
    }
}

/// Wakes the thread that went to sleep last.
fn wake_one(state: &mut State) {
    if let Some(sleeper) = state.sleepers.pop() {
        sleeper.unpark();
    }
}

/// Reads the thread's state from /proc: `R` is running or runnable; anything else is waiting.
pub(crate) fn thread_is_running(tid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may itself contain spaces.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        == Some('R')
}

/// The kernel's id of the calling thread, from /proc (no unsafe `gettid` needed).
pub(crate) fn current_tid() -> u32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|link| {
            link.file_name()
                .and_then(|tid| tid.to_str())
                .and_then(|tid| tid.parse().ok())
        })
        .unwrap_or(0)
}

impl RequestSource for Queue {
    fn try_next(&self) -> Option<Request> {
        let deadline = Instant::now() + POLL_BEFORE_SLEEP;
        // Counted as polling before it stops counting as busy, so `submit` never sees an idle pool here.
        self.polling.fetch_add(1, Ordering::AcqRel);
        self.set_busy(false);
        let _done = scopeguard(|| self.polling.fetch_sub(1, Ordering::AcqRel));
        loop {
            // A standby already holds a request and waits for the GIL this thread holds, or another thread
            // is still inside a request (waiting for the GIL, or blocked in the app): let it finish rather
            // than start a second request that would fight it for the GIL. Two threads that both kept taking
            // requests were measured at a third of one thread's throughput on a Django page.
            if self.standby_waiting.load(Ordering::Acquire) || self.busy.load(Ordering::Acquire) > 0
            {
                return None;
            }
            if self.queued.load(Ordering::Acquire) > 0 {
                if let Some(request) = self.pop_locked(&mut self.lock()) {
                    return Some(request);
                }
            }
            if Instant::now() >= deadline {
                // A request queued after this look is not lost: `next()` checks the queue before sleeping.
                return None;
            }
            // Polling holds the GIL but gives the CPU away, so the I/O thread producing the next request runs.
            std::thread::yield_now();
        }
    }

    fn next(&self) -> Option<Request> {
        self.set_busy(false);
        let me = std::thread::current();
        let mut state = self.lock();
        loop {
            if !state.standby {
                if let Some(request) = self.pop_locked(&mut state) {
                    state.standby = true;
                    self.standby_waiting.store(true, Ordering::Release);
                    return Some(request);
                }
            }
            if state.closed && state.requests.is_empty() {
                // Let the other sleepers see the queue is closed too.
                for sleeper in state.sleepers.drain(..) {
                    sleeper.unpark();
                }
                return None;
            }
            state.sleepers.push(me.clone());
            drop(state);
            std::thread::park();
            state = self.lock();
            // Woken spuriously or by shutdown rather than by `wake_one`, which removes the thread itself.
            if let Some(at) = state.sleepers.iter().position(|t| t.id() == me.id()) {
                state.sleepers.remove(at);
            }
        }
    }

    fn finished(&self, _outcome: &Outcome) {
        if let Some(worker) = WORKER.get().and_then(|i| self.workers.get(i)) {
            let began = worker.current().end();
            if let (Some(since), true, false) = (
                began,
                self.inline_slot.is_some(),
                worker.resumed.load(Ordering::Relaxed),
            ) {
                self.learn(since.elapsed());
            }
        }
        self.count_served();
    }

    fn attached(&self) {
        let mut state = self.lock();
        state.standby = false;
        self.standby_waiting.store(false, Ordering::Release);
        // A thread woken for a request queued meanwhile found the standby in its way and went back to
        // sleep; the watchdog must look again, or that request waits for this one to finish.
        if !state.requests.is_empty() && state.watchdog_parked {
            self.watch.notify_one();
        }
    }
}

/// A request running past a limit.
pub struct Overdue {
    /// Method and URI.
    pub what: String,
    /// When it started.
    pub started: Instant,
    /// The Python id of the thread running it.
    pub python_ident: u64,
}

/// Looks at the requests the pool's threads are running.
#[derive(Clone)]
pub struct Monitor(Arc<Queue>);

impl Monitor {
    /// Requests finished so far, and whether any is running now.
    pub fn activity(&self) -> (u64, bool) {
        (
            self.0.served.load(Ordering::Acquire),
            self.0.busy.load(Ordering::Acquire) > 0,
        )
    }

    /// Requests waiting for a thread.
    pub fn queued(&self) -> usize {
        self.0.queued.load(Ordering::Acquire)
    }

    /// The requests that have run longer than `limit`.
    pub fn overdue(&self, limit: Duration) -> Vec<Overdue> {
        self.0
            .workers
            .iter()
            .filter_map(|w| {
                let current = w.current();
                let since = current.since?;
                (since.elapsed() > limit).then(|| Overdue {
                    what: current.what(),
                    started: since,
                    python_ident: w.python_ident.load(Ordering::Acquire),
                })
            })
            .collect()
    }
}

/// Queues requests for the pool's threads.
#[derive(Clone)]
pub struct Submitter(Arc<Queue>);

impl Submitter {
    /// Queues a request for the next free thread.
    pub fn submit(&self, request: Request) -> Result<(), Closed> {
        self.submit_since(request, Instant::now())
    }

    /// Queues a request that has been waiting since `since` (for the queue timeout), e.g. in a socket's
    /// backlog before this process accepted it.
    pub fn submit_since(&self, request: Request, since: Instant) -> Result<(), Closed> {
        let queue = &self.0;
        let mut state = queue.lock();
        if state.closed {
            return Err(Closed);
        }
        state.requests.push_back((request, since));
        queue.queued.fetch_add(1, Ordering::AcqRel);
        // A polling or busy thread will take it; only an idle pool needs a thread woken now.
        let idle =
            queue.polling.load(Ordering::Acquire) == 0 && queue.busy.load(Ordering::Acquire) == 0;
        if idle && !state.sleepers.is_empty() && !state.standby {
            wake_one(&mut state);
        } else if state.watchdog_parked {
            queue.watch.notify_one();
        }
        Ok(())
    }

    /// Runs `request` on the calling thread, by `run` with the instant by which it must hand the response
    /// over, when the pool allows it: inline running is on, the app has been answering fast, and no pool
    /// thread is busy (so the GIL is free). Answers the request to queue with [`Submitter::submit`]
    /// instead: `request` itself when it did not run, or the rest of it when the engine handed it over.
    pub fn run_inline(
        &self,
        request: Request,
        run: impl FnOnce(Request, Instant) -> Inline,
    ) -> Option<Request> {
        let queue = &self.0;
        let Some(worker) = queue.inline_slot.and_then(|i| queue.workers.get(i)) else {
            return Some(request);
        };
        let may = queue.inline_allowed.load(Ordering::Relaxed)
            && queue.fast_streak.load(Ordering::Relaxed) >= LEARN_AFTER
            && queue.busy.load(Ordering::Acquire) == 0
            && queue.polling.load(Ordering::Acquire) == 0
            && queue.queued.load(Ordering::Acquire) == 0
            && !queue.standby_waiting.load(Ordering::Acquire);
        if !may || !queue.mark_busy(worker, true) {
            return Some(request);
        }
        let (tid, ident) = HOST_THREAD.get().unwrap_or_else(|| {
            let ids = (current_tid(), rwsgi_engine::current_thread_ident());
            HOST_THREAD.set(Some(ids));
            ids
        });
        worker.tid.store(tid, Ordering::Release);
        worker.python_ident.store(ident, Ordering::Release);
        let began = Instant::now();
        worker.current().begin(&request, began);
        let result = run(request, began + INLINE_BUDGET);
        let took = began.elapsed();
        worker.current().end();
        queue.mark_busy(worker, false);
        if took > INLINE_BUDGET && queue.inline_allowed.swap(false, Ordering::AcqRel) {
            eprintln!(
                "{}: {} {}: {} ran {} ms on the I/O thread; from now on every request runs on the \
                 Python threads",
                queue.names.log,
                queue.names.process,
                std::process::id(),
                worker.current().what(),
                took.as_millis(),
            );
        }
        match result {
            Inline::Done(_) => {
                queue.count_served();
                None
            }
            Inline::Handover(request) | Inline::Declined(request) => Some(request),
        }
    }
}

/// The pool has stopped taking requests.
#[derive(Debug)]
pub struct Closed;

impl Pool {
    /// Starts the threads; each runs `serve` over the queue (it returns when the queue closes).
    pub fn start(options: PoolOptions, serve: Serve) -> std::io::Result<Self> {
        let (threads, stack_size) = (options.threads, options.stack_size);
        let queue = Arc::new(Queue::new(options));
        let mut handles = (0..threads)
            .map(|i| {
                let serve = Arc::clone(&serve);
                let queue = Arc::clone(&queue);
                let builder = std::thread::Builder::new().name(format!("rwsgi-python-{i}"));
                match stack_size {
                    Some(size) => builder.stack_size(size),
                    None => builder,
                }
                .spawn(move || {
                    WORKER.set(Some(i));
                    let ident = rwsgi_engine::current_thread_ident();
                    queue.workers[i]
                        .python_ident
                        .store(ident, Ordering::Release);
                    queue.workers[i].tid.store(current_tid(), Ordering::Release);
                    serve(&*queue);
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let watchdog = Arc::clone(&queue);
        handles.push(
            std::thread::Builder::new()
                .name("rwsgi-watchdog".into())
                .spawn(move || watchdog.watchdog())?,
        );
        Ok(Self {
            queue,
            threads: handles,
        })
    }

    /// A handle that reports requests running longer than a limit.
    pub fn monitor(&self) -> Monitor {
        Monitor(Arc::clone(&self.queue))
    }

    /// A handle the HTTP side uses to queue requests.
    pub fn submitter(&self) -> Submitter {
        Submitter(Arc::clone(&self.queue))
    }

    /// Stops taking requests, lets the threads finish what is queued, and waits for them.
    pub fn shut_down(self) {
        {
            let mut state = self.queue.lock();
            state.closed = true;
            for sleeper in state.sleepers.drain(..) {
                sleeper.unpark();
            }
        }
        self.queue.watch.notify_all();
        for thread in self.threads {
            // A thread that panicked has already reported it; there is nothing left to clean up.
            let _ = thread.join();
        }
    }
}

/// Runs `f` when dropped, so a counter is restored on every return path.
fn scopeguard<F: FnMut() -> R, R>(f: F) -> impl Drop {
    struct Guard<F: FnMut() -> R, R>(F);
    impl<F: FnMut() -> R, R> Drop for Guard<F, R> {
        fn drop(&mut self) {
            (self.0)();
        }
    }
    Guard(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_thread_reads_as_running() {
        assert!(thread_is_running(current_tid()));
        assert_ne!(current_tid(), 0);
    }

    #[test]
    fn a_sleeping_thread_reads_as_waiting() {
        let (tx, rx) = std::sync::mpsc::channel();
        let sleeper = std::thread::spawn(move || {
            tx.send(current_tid()).unwrap();
            std::thread::sleep(Duration::from_millis(500));
        });
        let tid = rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!thread_is_running(tid));
        sleeper.join().unwrap();
    }
}
