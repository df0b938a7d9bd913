//! The Python thread pool and its queue.
//!
//! The queue is GIL-aware: a thread that finishes a request takes the next waiting one while still holding
//! the GIL, and at most one more thread at a time is woken to wait for the GIL (the "standby"). Threads blocked
//! inside the app (a sleep, a database call) have released the GIL, so the standby runs at once; a busy
//! CPU-bound thread keeps going without handing the GIL back and forth. This is what keeps throughput from
//! collapsing when many threads share one GIL.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rwsgi_engine::{Engine, Request, RequestSource};

/// The threads serving requests, and the queue that feeds them.
pub(crate) struct Pool {
    queue: Arc<Queue>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct Queue {
    state: Mutex<State>,
    wake: Condvar,
    /// How many requests are queued, readable without the lock while polling.
    queued: AtomicUsize,
    /// Threads that finished a request and are polling for the next while holding the GIL: one of them
    /// will take a new request sooner than a woken sleeper could get the GIL.
    polling: AtomicUsize,
}

/// How long a thread that just finished a request keeps looking for the next one before it sleeps. Under
/// load the next request arrives within microseconds; sleeping and being woken for it costs two context
/// switches and a futex call each way, which profiling showed to be the largest cost of a small request.
const POLL_BEFORE_SLEEP: Duration = Duration::from_micros(50);

#[derive(Default)]
struct State {
    requests: VecDeque<Request>,
    /// Threads asleep in `next()`.
    sleeping: usize,
    /// A thread has taken a request and is waiting for the GIL.
    standby: bool,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pop(&self) -> Option<Request> {
        Self::pop_locked(&mut self.lock(), &self.queued)
    }

    fn pop_locked(state: &mut State, queued: &AtomicUsize) -> Option<Request> {
        let request = state.requests.pop_front()?;
        queued.fetch_sub(1, Ordering::AcqRel);
        Some(request)
    }
}

impl RequestSource for Queue {
    fn try_next(&self) -> Option<Request> {
        let deadline = Instant::now() + POLL_BEFORE_SLEEP;
        self.polling.fetch_add(1, Ordering::AcqRel);
        let _done = scopeguard(|| self.polling.fetch_sub(1, Ordering::AcqRel));
        loop {
            if self.queued.load(Ordering::Acquire) > 0 {
                if let Some(request) = self.pop() {
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
        let mut state = self.lock();
        state.sleeping += 1;
        loop {
            if !state.standby {
                if let Some(request) = Self::pop_locked(&mut state, &self.queued) {
                    state.standby = true;
                    state.sleeping -= 1;
                    return Some(request);
                }
            }
            if state.closed && state.requests.is_empty() {
                state.sleeping -= 1;
                // Let the other sleepers see the queue is closed too.
                self.wake.notify_all();
                return None;
            }
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn attached(&self) {
        let mut state = self.lock();
        state.standby = false;
        if !state.requests.is_empty() && state.sleeping > 0 {
            self.wake.notify_one();
        }
    }
}

/// Queues requests for the pool's threads.
#[derive(Clone)]
pub(crate) struct Submitter(Arc<Queue>);

impl Submitter {
    /// Queues a request for the next free thread.
    pub(crate) fn submit(&self, request: Request) -> Result<(), Closed> {
        let mut state = self.0.lock();
        if state.closed {
            return Err(Closed);
        }
        state.requests.push_back(request);
        self.0.queued.fetch_add(1, Ordering::AcqRel);
        let poller_will_take_it = self.0.polling.load(Ordering::Acquire) > 0;
        if state.sleeping > 0 && !state.standby && !poller_will_take_it {
            self.0.wake.notify_one();
        }
        Ok(())
    }
}

/// The pool has stopped taking requests.
#[derive(Debug)]
pub(crate) struct Closed;

impl Pool {
    pub(crate) fn start(engine: Arc<Engine>, threads: usize) -> std::io::Result<Self> {
        let queue = Arc::new(Queue::default());
        let threads = (0..threads)
            .map(|i| {
                let engine = Arc::clone(&engine);
                let queue = Arc::clone(&queue);
                std::thread::Builder::new()
                    .name(format!("rwsgi-python-{i}"))
                    .spawn(move || engine.serve(&*queue))
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self { queue, threads })
    }

    /// A handle the HTTP side uses to queue requests.
    pub(crate) fn submitter(&self) -> Submitter {
        Submitter(Arc::clone(&self.queue))
    }

    /// Stops taking requests, lets the threads finish what is queued, and waits for them.
    pub(crate) fn shut_down(self) {
        self.queue.lock().closed = true;
        self.queue.wake.notify_all();
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
