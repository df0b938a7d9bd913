//! Process-wide request accounting: what `mod_wsgi.start_recording_metrics()`, `request_metrics()` and
//! `process_metrics()` report, and the per-thread facts every request keeps (its thread id, how many
//! requests each thread served, the GIL waits of the request it runs).
//!
//! All of it is Rust state shared by every interpreter of the process, as mod_wsgi's accumulators are: one
//! reporter per process drains `request_metrics()`. No Python objects live here.
//!
//! The request path pays one relaxed atomic load ([`flags`]) to learn whether anything beyond the
//! always-on per-thread counters is wanted: event subscribers, `active_requests`, or recording.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Some interpreter has `subscribe_events` callbacks.
pub(crate) const EVENTS: u8 = 1;
/// `start_recording_metrics()` was called.
pub(crate) const RECORDING: u8 = 2;
/// Some interpreter's `active_requests` dict is in use.
pub(crate) const TRACKING: u8 = 4;

static FLAGS: AtomicU8 = AtomicU8::new(0);

/// Which of [`EVENTS`], [`RECORDING`] and [`TRACKING`] are on: 0 on the fast path.
#[inline]
pub(crate) fn flags() -> u8 {
    FLAGS.load(Ordering::Relaxed)
}

pub(crate) fn enable(flag: u8) {
    FLAGS.fetch_or(flag, Ordering::Relaxed);
}

/// The configured worker-thread ceiling (`request_threads_maximum`): the largest `threads` of any engine.
static THREAD_LIMIT: AtomicUsize = AtomicUsize::new(1);
/// When the process started serving Python, in seconds since the epoch (`restart_time`).
static PROCESS_START: OnceLock<f64> = OnceLock::new();

/// Called when the `mod_wsgi` module is installed.
pub(crate) fn engine_loaded(threads: usize) {
    THREAD_LIMIT.fetch_max(threads.max(1), Ordering::Relaxed);
    PROCESS_START.get_or_init(epoch_now);
}

/// Now, in seconds since the epoch.
pub(crate) fn epoch_now() -> f64 {
    epoch(SystemTime::now())
}

pub(crate) fn epoch(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------------------------------------
// Per-thread state.

/// What every thread that served a request keeps, readable by `process_metrics()` from any thread.
struct ThreadSlot {
    /// mod_wsgi's `thread_id`: 1, 2, … in the order threads first served a request.
    id: u64,
    /// Requests this thread finished. Only this thread writes it.
    served: AtomicU64,
    /// Inside a request now.
    busy: AtomicBool,
}

static THREADS: Mutex<Vec<Arc<ThreadSlot>>> = Mutex::new(Vec::new());

fn threads() -> MutexGuard<'static, Vec<Arc<ThreadSlot>>> {
    THREADS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

thread_local! {
    static THREAD: Arc<ThreadSlot> = {
        let mut all = threads();
        let slot = Arc::new(ThreadSlot {
            id: all.len() as u64 + 1,
            served: AtomicU64::new(0),
            busy: AtomicBool::new(false),
        });
        all.push(Arc::clone(&slot));
        slot
    };
    /// Inside a request on this thread (for `mod_wsgi.request_data()`).
    static IN_REQUEST: Cell<bool> = const { Cell::new(false) };
    /// `request_data()` made this request's dict without the request being tracked.
    static DATA_MADE: Cell<bool> = const { Cell::new(false) };
    /// The current request's GIL re-acquire waits: total microseconds and count.
    static GIL_WAITS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// The calling thread's `mod_wsgi.thread_id`.
pub(crate) fn thread_id() -> u64 {
    THREAD.with(|slot| slot.id)
}

/// Marks the calling thread as serving a request until dropped.
pub(crate) struct RequestTurn {
    thread_id: u64,
    /// Whether ending the turn counts a request served by this thread.
    counted: bool,
}

impl RequestTurn {
    /// `attach_wait` is how long the thread waited for the GIL to start the request, if measured.
    pub(crate) fn begin(attach_wait: Option<Duration>) -> Self {
        let thread_id = THREAD.with(|slot| {
            slot.busy.store(true, Ordering::Relaxed);
            slot.id
        });
        IN_REQUEST.set(true);
        DATA_MADE.set(false);
        GIL_WAITS.set((0, 0));
        if let Some(wait) = attach_wait {
            gil_reacquired(wait);
        }
        Self {
            thread_id,
            counted: true,
        }
    }

    pub(crate) fn thread_id(&self) -> u64 {
        self.thread_id
    }

    /// Ends this thread's turn without counting a request served: another thread finishes it.
    pub(crate) fn hand_over(mut self) {
        self.counted = false;
    }
}

impl Drop for RequestTurn {
    fn drop(&mut self) {
        IN_REQUEST.set(false);
        let counted = self.counted;
        THREAD.with(|slot| {
            if counted {
                // Only this thread writes `served`: a load and a store, no locked instruction.
                slot.served
                    .store(slot.served.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            }
            slot.busy.store(false, Ordering::Relaxed);
        });
    }
}

/// Whether the calling thread is inside a request.
pub(crate) fn in_request() -> bool {
    IN_REQUEST.get()
}

/// Notes that `request_data()` made a dict for the current request, to be dropped at its end.
pub(crate) fn note_data_made() {
    DATA_MADE.set(true);
}

/// Whether `request_data()` made a dict during the current request (and forgets it).
pub(crate) fn take_data_made() -> bool {
    DATA_MADE.replace(false)
}

/// Records a wait to re-acquire the GIL after the engine released it on the request's behalf.
pub(crate) fn gil_reacquired(wait: Duration) {
    let (us, count) = GIL_WAITS.get();
    GIL_WAITS.set((us + wait.as_micros() as u64, count + 1));
}

/// The current request's GIL waits so far: total and count.
pub(crate) fn gil_waits() -> (Duration, u64) {
    let (us, count) = GIL_WAITS.get();
    (Duration::from_micros(us), count)
}

// ---------------------------------------------------------------------------------------------------------
// Resource usage.

/// CPU time (user, system) in seconds of the calling thread, where the platform tells it.
pub(crate) fn thread_cpu() -> Option<(f64, f64)> {
    #[cfg(target_os = "linux")]
    {
        rusage(libc::RUSAGE_THREAD)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// CPU time (user, system) in seconds of the whole process.
fn process_cpu() -> (f64, f64) {
    rusage(libc::RUSAGE_SELF).unwrap_or((0.0, 0.0))
}

fn rusage(who: libc::c_int) -> Option<(f64, f64)> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the valid, writable buffer it is given.
    if unsafe { libc::getrusage(who, usage.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised (zeroed, then filled by a successful getrusage).
    let usage = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some((secs(usage.ru_utime), secs(usage.ru_stime)))
}

/// The process's resident set size now and at its peak, in bytes (`memory_rss`, `memory_max_rss`).
fn memory() -> (u64, u64) {
    // Linux: both from one read, so the peak is never below the current size.
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .map(|kib| kib * 1024)
        };
        if let (Some(rss), Some(peak)) = (kib("VmRSS:"), kib("VmHWM:")) {
            return (rss, peak);
        }
    }
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: as in `rusage`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return (0, 0);
    }
    // SAFETY: as in `rusage`.
    let peak = unsafe { usage.assume_init() }.ru_maxrss;
    // macOS reports bytes, the BSDs KiB; without a current figure the peak stands in for both.
    let factor = if cfg!(target_os = "macos") { 1 } else { 1024 };
    let peak = u64::try_from(peak).unwrap_or(0) * factor;
    (peak, peak)
}

// ---------------------------------------------------------------------------------------------------------
// Recording.

/// Histogram buckets per phase: 16 octaves from 1 ms to 65536 ms, 4 linear sub-buckets each, plus overflow.
pub(crate) const BUCKETS: usize = 65;

/// The phases timed per request, by their index in [`PHASE_NAMES`]. The queue (1) and daemon (2) phases
/// exist only in mod_wsgi's daemon mode, so nothing records them.
#[derive(Clone, Copy)]
enum Phase {
    Server = 0,
    Application = 3,
    Request = 4,
    GilWait = 5,
    InputRead = 6,
    OutputWrite = 7,
}

const PHASES: usize = 8;
const PHASE_NAMES: [&str; PHASES] = [
    "server_time",
    "queue_time",
    "daemon_time",
    "application_time",
    "request_time",
    "gil_wait_time",
    "input_read_time",
    "output_write_time",
];

/// The histogram bucket of a duration in seconds.
pub(crate) fn bucket(seconds: f64) -> usize {
    let ms = seconds * 1000.0;
    if ms.is_nan() || ms < 1.0 {
        return 0;
    }
    if ms >= 65536.0 {
        return BUCKETS - 1;
    }
    // ms = 1.f × 2^octave with octave in 0..16; the fraction splits each octave in four.
    let bits = ms.to_bits();
    let octave = ((bits >> 52) & 0x7ff) as usize - 1023;
    let fraction = ms / (1u64 << octave) as f64 - 1.0;
    octave * 4 + ((fraction * 4.0) as usize).min(3)
}

/// One phase's figures over the current interval.
#[derive(Clone, Copy)]
struct PhaseStats {
    total: f64,
    min_us: u64,
    max_us: u64,
    buckets: [u64; BUCKETS],
}

impl PhaseStats {
    const EMPTY: Self = Self {
        total: 0.0,
        min_us: u64::MAX,
        max_us: 0,
        buckets: [0; BUCKETS],
    };

    fn record(&mut self, duration: Duration) {
        let us = duration.as_micros() as u64;
        self.total += duration.as_secs_f64();
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
        self.buckets[bucket(duration.as_secs_f64())] += 1;
    }
}

/// One worker thread's figures over the current interval, by `thread_id - 1`.
#[derive(Clone, Copy, Default)]
struct SlotStats {
    /// The request in flight: when it started, and since when its busy time was last folded in.
    current: Option<(Instant, Instant)>,
    completed: u64,
    busy: Duration,
    cpu: Duration,
    max_duration: Duration,
}

struct Recorder {
    enabled: bool,
    /// The start of the interval `request_metrics()` reports next.
    start_wall: f64,
    start_busy: f64,
    start_count: u64,
    start_cpu: (f64, f64),
    /// Thread-seconds spent in requests since recording began, accrued up to `last`.
    busy: f64,
    last: Option<Instant>,
    in_flight: u64,
    completed: u64,
    /// Completed requests of the interval.
    requests: u64,
    phases: [PhaseStats; PHASES],
    gil_wait_count: u64,
    input_bytes: u64,
    input_reads: u64,
    output_bytes: u64,
    output_writes: u64,
    /// Responses by class, 1xx to 5xx.
    status: [u64; 5],
    slots: Vec<SlotStats>,
}

impl Recorder {
    const fn new() -> Self {
        Self {
            enabled: false,
            start_wall: 0.0,
            start_busy: 0.0,
            start_count: 0,
            start_cpu: (0.0, 0.0),
            busy: 0.0,
            last: None,
            in_flight: 0,
            completed: 0,
            requests: 0,
            phases: [PhaseStats::EMPTY; PHASES],
            gil_wait_count: 0,
            input_bytes: 0,
            input_reads: 0,
            output_bytes: 0,
            output_writes: 0,
            status: [0; 5],
            slots: Vec::new(),
        }
    }

    /// Accrues busy time up to `now`, then changes the in-flight count; the busy total so far.
    fn accrue(&mut self, now: Instant, change: i64) -> f64 {
        if let Some(last) = self.last {
            self.busy += self.in_flight as f64 * now.saturating_duration_since(last).as_secs_f64();
        }
        self.last = Some(now);
        self.in_flight = self.in_flight.saturating_add_signed(change);
        if change < 0 {
            self.completed += 1;
        }
        self.busy
    }

    fn start(&mut self, now: Instant) {
        if self.enabled {
            return;
        }
        self.enabled = true;
        self.start_wall = epoch_now();
        self.start_busy = self.accrue(now, 0);
        self.start_count = self.completed;
        self.start_cpu = process_cpu();
    }

    fn slot(&mut self, thread_id: u64) -> &mut SlotStats {
        let index = usize::try_from(thread_id.max(1) - 1).unwrap_or(usize::MAX);
        if index >= self.slots.len() {
            self.slots
                .resize(index.saturating_add(1).min(1 << 16), SlotStats::default());
        }
        let last = self.slots.len() - 1;
        &mut self.slots[index.min(last)]
    }

    fn request_started(&mut self, thread_id: u64, now: Instant) -> bool {
        if !self.enabled {
            return false;
        }
        self.accrue(now, 1);
        self.slot(thread_id).current = Some((now, now));
        true
    }

    fn request_finished(&mut self, thread_id: u64, figures: &Finished, now: Instant) {
        let clamp = |seconds: f64| Duration::from_secs_f64(seconds.max(0.0));
        // Outside daemon mode there is no queue or daemon phase: the server phase runs up to the app.
        let server = clamp(figures.application_start - figures.request_start);
        let application = clamp(figures.application_finish - figures.application_start);
        self.requests += 1;
        let phases = [
            (Phase::Server, server),
            (Phase::Application, application),
            (Phase::Request, server + application),
            (Phase::InputRead, figures.input_time),
            (Phase::OutputWrite, figures.output_time),
            (Phase::GilWait, figures.gil_wait_time),
        ];
        for (phase, duration) in phases {
            self.phases[phase as usize].record(duration);
        }
        self.gil_wait_count += figures.gil_wait_count;
        self.input_bytes += figures.input_length;
        self.input_reads += figures.input_reads;
        self.output_bytes += figures.output_length;
        self.output_writes += figures.output_writes;
        // A request that never called start_response was answered 500.
        match figures.status {
            0 => self.status[4] += 1,
            100..=599 => self.status[usize::from(figures.status / 100 - 1)] += 1,
            _ => {}
        }
        let slot = self.slot(thread_id);
        if let Some((started, busy_since)) = slot.current.take() {
            let elapsed = now.saturating_duration_since(started);
            slot.busy += now.saturating_duration_since(busy_since);
            slot.completed += 1;
            slot.max_duration = slot.max_duration.max(elapsed);
            slot.cpu += figures.cpu.map_or(Duration::ZERO, |(user, system)| {
                Duration::from_secs_f64((user + system).max(0.0))
            });
        }
        self.accrue(now, -1);
    }

    /// The `request_metrics()` sample since the last one, draining the interval.
    fn drain(&mut self, now: Instant, limit: usize) -> Vec<(&'static str, Value)> {
        let stop_wall = epoch_now();
        let stop_cpu = process_cpu();
        let stop_busy = self.accrue(now, 0);
        let mut completed = vec![0u64; limit];
        let mut busy = vec![0.0; limit];
        let mut cpu = vec![0.0; limit];
        let mut current_elapsed = vec![0.0; limit];
        let mut max_duration = vec![0.0; limit];
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let mut tail = Duration::ZERO;
            let mut elapsed = Duration::ZERO;
            if let Some((started, busy_since)) = &mut slot.current {
                tail = now.saturating_duration_since(*busy_since);
                *busy_since = now;
                elapsed = now.saturating_duration_since(*started);
            }
            if index < limit {
                completed[index] = slot.completed;
                busy[index] = (slot.busy + tail).as_secs_f64();
                cpu[index] = slot.cpu.as_secs_f64();
                current_elapsed[index] = elapsed.as_secs_f64();
                max_duration[index] = slot.max_duration.as_secs_f64();
            }
            let current = slot.current;
            *slot = SlotStats {
                current,
                ..SlotStats::default()
            };
        }
        let threads_active = (0..limit)
            .filter(|&i| completed[i] > 0 || current_elapsed[i] > 0.0)
            .count();

        let period = (stop_wall - self.start_wall).max(1e-6);
        let request_count = self.completed - self.start_count;
        let capacity = (stop_busy - self.start_busy) / period / limit as f64;
        let cpu_user = (stop_cpu.0 - self.start_cpu.0).max(0.0) / period;
        let cpu_system = (stop_cpu.1 - self.start_cpu.1).max(0.0) / period;
        let requests = self.requests;
        let mean = |stats: &PhaseStats| {
            if requests > 0 {
                stats.total / requests as f64
            } else {
                0.0
            }
        };

        let mut sample = vec![
            ("pid", Value::Int(u64::from(std::process::id()))),
            ("start_time", Value::Float(self.start_wall)),
            ("stop_time", Value::Float(stop_wall)),
            ("sample_period", Value::Float(period)),
            ("request_count", Value::Int(request_count)),
            (
                "request_throughput",
                Value::Float(request_count as f64 / period),
            ),
            ("request_threads_maximum", Value::Int(limit as u64)),
            (
                "request_threads_started",
                Value::Int(threads().len() as u64),
            ),
            ("request_threads_active", Value::Int(threads_active as u64)),
            ("capacity_utilization", Value::Float(capacity)),
            ("request_threads_completed", Value::Ints(completed.clone())),
            ("request_threads_buckets", Value::Ints(completed)),
            ("request_threads_busy_time", Value::Floats(busy)),
            ("request_threads_cpu_time", Value::Floats(cpu)),
            (
                "request_threads_current_elapsed",
                Value::Floats(current_elapsed),
            ),
            ("request_threads_max_duration", Value::Floats(max_duration)),
        ];
        for (i, stats) in self.phases.iter().enumerate() {
            let name = PHASE_NAMES[i];
            let daemon_only = matches!(i, 1 | 2);
            // Every mean is per completed request; queue and daemon phases exist only in daemon mode.
            sample.push((
                name,
                if daemon_only {
                    Value::None
                } else {
                    Value::Float(mean(stats))
                },
            ));
            let (min, max) = if daemon_only || stats.min_us == u64::MAX {
                (Value::None, Value::None)
            } else {
                (Value::Int(stats.min_us), Value::Int(stats.max_us))
            };
            sample.push((MIN_NAMES[i], min));
            sample.push((MAX_NAMES[i], max));
            sample.push((BUCKET_NAMES[i], Value::Ints(stats.buckets.to_vec())));
        }
        sample.extend([
            ("gil_wait_count", Value::Int(self.gil_wait_count)),
            ("input_bytes", Value::Int(self.input_bytes)),
            ("input_reads", Value::Int(self.input_reads)),
            ("output_bytes", Value::Int(self.output_bytes)),
            ("output_writes", Value::Int(self.output_writes)),
            ("status_1xx", Value::Int(self.status[0])),
            ("status_2xx", Value::Int(self.status[1])),
            ("status_3xx", Value::Int(self.status[2])),
            ("status_4xx", Value::Int(self.status[3])),
            ("status_5xx", Value::Int(self.status[4])),
            ("cpu_user_utilization", Value::Float(cpu_user)),
            ("cpu_system_utilization", Value::Float(cpu_system)),
            ("cpu_utilization", Value::Float(cpu_user + cpu_system)),
            // Deprecated aliases of the three above, kept by mod_wsgi for older readers.
            ("cpu_user_time", Value::Float(cpu_user)),
            ("cpu_system_time", Value::Float(cpu_system)),
            ("cpu_time", Value::Float(cpu_user + cpu_system)),
        ]);
        let (rss, peak) = memory();
        sample.extend([
            ("memory_rss", Value::Int(rss)),
            ("memory_max_rss", Value::Int(peak)),
        ]);

        self.start_wall = stop_wall;
        self.start_busy = stop_busy;
        self.start_count = self.completed;
        self.start_cpu = stop_cpu;
        self.requests = 0;
        self.phases = [PhaseStats::EMPTY; PHASES];
        self.gil_wait_count = 0;
        self.input_bytes = 0;
        self.input_reads = 0;
        self.output_bytes = 0;
        self.output_writes = 0;
        self.status = [0; 5];
        sample
    }
}

const MIN_NAMES: [&str; PHASES] = [
    "server_time_min_us",
    "queue_time_min_us",
    "daemon_time_min_us",
    "application_time_min_us",
    "request_time_min_us",
    "gil_wait_time_min_us",
    "input_read_time_min_us",
    "output_write_time_min_us",
];
const MAX_NAMES: [&str; PHASES] = [
    "server_time_max_us",
    "queue_time_max_us",
    "daemon_time_max_us",
    "application_time_max_us",
    "request_time_max_us",
    "gil_wait_time_max_us",
    "input_read_time_max_us",
    "output_write_time_max_us",
];
const BUCKET_NAMES: [&str; PHASES] = [
    "server_time_buckets",
    "queue_time_buckets",
    "daemon_time_buckets",
    "application_time_buckets",
    "request_time_buckets",
    "gil_wait_time_buckets",
    "input_read_time_buckets",
    "output_write_time_buckets",
];

static RECORDER: Mutex<Recorder> = Mutex::new(Recorder::new());

fn recorder() -> MutexGuard<'static, Recorder> {
    RECORDER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A value of a metrics dict.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    None,
    Int(u64),
    Float(f64),
    Ints(Vec<u64>),
    Floats(Vec<f64>),
    /// A list of dicts.
    Dicts(Vec<Vec<(&'static str, Value)>>),
}

/// What a finished request measured, for `request_finished` and the recorder.
#[derive(Debug, Clone, Default)]
pub(crate) struct Finished {
    pub(crate) request_start: f64,
    pub(crate) application_start: f64,
    pub(crate) application_finish: f64,
    pub(crate) input_reads: u64,
    pub(crate) input_length: u64,
    pub(crate) input_time: Duration,
    pub(crate) output_writes: u64,
    pub(crate) output_length: u64,
    pub(crate) output_time: Duration,
    /// The status the app gave (0 if it never called start_response).
    pub(crate) status: u16,
    /// The thread's CPU time (user, system) spent on the request.
    pub(crate) cpu: Option<(f64, f64)>,
    pub(crate) gil_wait_time: Duration,
    pub(crate) gil_wait_count: u64,
}

/// `mod_wsgi.start_recording_metrics()`: idempotent.
pub(crate) fn start_recording() {
    recorder().start(Instant::now());
    enable(RECORDING);
}

/// Notes a request starting on thread `thread_id`; whether it is being recorded.
pub(crate) fn record_start(thread_id: u64) -> bool {
    recorder().request_started(thread_id, Instant::now())
}

/// Folds a request recorded by [`record_start`] into the interval.
pub(crate) fn record_finish(thread_id: u64, figures: &Finished) {
    recorder().request_finished(thread_id, figures, Instant::now());
}

/// `mod_wsgi.request_metrics()`: `None` until recording started.
pub(crate) fn request_metrics() -> Option<Vec<(&'static str, Value)>> {
    let limit = THREAD_LIMIT.load(Ordering::Relaxed);
    let mut recorder = recorder();
    recorder
        .enabled
        .then(|| recorder.drain(Instant::now(), limit))
}

/// `mod_wsgi.process_metrics()`: `None` until recording started.
pub(crate) fn process_metrics() -> Option<Vec<(&'static str, Value)>> {
    let busy_time = {
        let mut recorder = recorder();
        if !recorder.enabled {
            return None;
        }
        recorder.accrue(Instant::now(), 0)
    };
    let (served, active, thread_list) = {
        let all = threads();
        let served: u64 = all.iter().map(|t| t.served.load(Ordering::Relaxed)).sum();
        let active = all
            .iter()
            .filter(|t| t.busy.load(Ordering::Relaxed))
            .count();
        let list = all
            .iter()
            .map(|t| {
                vec![
                    ("thread_id", Value::Int(t.id)),
                    (
                        "request_count",
                        Value::Int(t.served.load(Ordering::Relaxed)),
                    ),
                ]
            })
            .collect::<Vec<_>>();
        (served, active, list)
    };
    let now = epoch_now();
    let restart = *PROCESS_START.get_or_init(epoch_now);
    let (user, system) = process_cpu();
    let (rss, peak) = memory();
    Some(vec![
        ("pid", Value::Int(u64::from(std::process::id()))),
        ("restart_time", Value::Float(restart)),
        ("current_time", Value::Float(now)),
        ("running_time", Value::Int((now - restart).max(0.0) as u64)),
        ("request_count", Value::Int(served)),
        ("request_busy_time", Value::Float(busy_time)),
        ("request_threads", Value::Int(thread_list.len() as u64)),
        ("active_requests", Value::Int(active as u64)),
        ("cpu_user_time", Value::Float(user)),
        ("cpu_system_time", Value::Float(system)),
        ("cpu_time", Value::Float(user + system)),
        ("memory_rss", Value::Int(rss)),
        ("memory_max_rss", Value::Int(peak)),
        ("threads", Value::Dicts(thread_list)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(sample: &'a [(&str, Value)], key: &str) -> &'a Value {
        &sample
            .iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("no {key}"))
            .1
    }

    #[test]
    fn buckets_follow_mod_wsgi_boundaries() {
        assert_eq!(bucket(0.0), 0);
        assert_eq!(bucket(0.0009), 0);
        // [1, 1.25) ms is bucket 0, [1.25, 1.5) bucket 1, [2, 2.5) ms bucket 4.
        assert_eq!(bucket(0.001), 0);
        assert_eq!(bucket(0.00126), 1);
        assert_eq!(bucket(0.0019), 3);
        assert_eq!(bucket(0.002), 4);
        assert_eq!(bucket(0.003), 6);
        // 1000 ms: octave 9 (512 to 1024 ms), last quarter.
        assert_eq!(bucket(1.0), 39);
        assert_eq!(bucket(65.535), 63);
        assert_eq!(bucket(65.536), 64);
        assert_eq!(bucket(1e9), 64);
        assert_eq!(bucket(f64::NAN), 0);
    }

    #[test]
    fn an_interval_counts_its_requests_then_starts_afresh() {
        let mut recorder = Recorder::new();
        let t0 = Instant::now();
        assert!(!recorder.request_started(1, t0), "not recording yet");
        recorder.start(t0);
        assert!(recorder.request_started(2, t0));
        let figures = Finished {
            request_start: 100.0,
            application_start: 100.001,
            application_finish: 100.011,
            input_reads: 2,
            input_length: 10,
            output_writes: 1,
            output_length: 12,
            status: 404,
            cpu: Some((0.002, 0.001)),
            gil_wait_count: 3,
            ..Finished::default()
        };
        let t1 = t0 + Duration::from_millis(10);
        recorder.request_finished(2, &figures, t1);
        let sample = recorder.drain(t1, 4);
        assert_eq!(get(&sample, "request_count"), &Value::Int(1));
        assert_eq!(get(&sample, "status_4xx"), &Value::Int(1));
        assert_eq!(get(&sample, "input_bytes"), &Value::Int(10));
        assert_eq!(get(&sample, "output_writes"), &Value::Int(1));
        assert_eq!(get(&sample, "gil_wait_count"), &Value::Int(3));
        assert_eq!(
            get(&sample, "request_threads_completed"),
            &Value::Ints(vec![0, 1, 0, 0])
        );
        assert_eq!(get(&sample, "request_threads_active"), &Value::Int(1));
        assert_eq!(get(&sample, "application_time_min_us"), &Value::Int(10_000));
        assert_eq!(get(&sample, "server_time_max_us"), &Value::Int(1_000));
        assert_eq!(get(&sample, "queue_time"), &Value::None);
        assert_eq!(get(&sample, "daemon_time_min_us"), &Value::None);
        let Value::Floats(cpu) = get(&sample, "request_threads_cpu_time") else {
            panic!("cpu times are floats");
        };
        assert!((cpu[1] - 0.003).abs() < 1e-9);
        let Value::Ints(buckets) = get(&sample, "application_time_buckets") else {
            panic!("buckets are ints");
        };
        assert_eq!(buckets.len(), BUCKETS);
        assert_eq!(buckets[bucket(0.010)], 1);

        // The next interval is empty, but a request still in flight shows as busy.
        assert!(recorder.request_started(1, t1));
        let sample = recorder.drain(t1 + Duration::from_millis(5), 4);
        assert_eq!(get(&sample, "request_count"), &Value::Int(0));
        assert_eq!(get(&sample, "status_4xx"), &Value::Int(0));
        assert_eq!(get(&sample, "application_time_min_us"), &Value::None);
        assert_eq!(get(&sample, "application_time"), &Value::Float(0.0));
        assert_eq!(get(&sample, "request_threads_active"), &Value::Int(1));
        let Value::Floats(elapsed) = get(&sample, "request_threads_current_elapsed") else {
            panic!("elapsed times are floats");
        };
        assert!((elapsed[0] - 0.005).abs() < 1e-6);
    }

    #[test]
    fn requests_without_start_response_count_as_5xx() {
        let mut recorder = Recorder::new();
        let now = Instant::now();
        recorder.start(now);
        recorder.request_started(1, now);
        recorder.request_finished(1, &Finished::default(), now);
        let sample = recorder.drain(now, 1);
        assert_eq!(get(&sample, "status_5xx"), &Value::Int(1));
    }

    #[test]
    fn busy_time_integrates_requests_in_flight() {
        let mut recorder = Recorder::new();
        let t0 = Instant::now();
        recorder.start(t0);
        recorder.request_started(1, t0);
        recorder.request_started(2, t0);
        let t1 = t0 + Duration::from_secs(1);
        assert!((recorder.accrue(t1, 0) - 2.0).abs() < 1e-9);
    }
}
