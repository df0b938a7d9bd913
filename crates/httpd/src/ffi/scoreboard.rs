//! Apache's scoreboard, copied out for `mod_wsgi.server_metrics()` as the engine's plain
//! [`Scoreboard`]. Only reads: the records live in memory the MPM shares between Apache's processes and
//! updates while we read, so each record is copied whole with a volatile read (as mod_status and the C
//! module read them, a record may be caught mid-update).

use rwsgi_engine::{ProcessScore, Scoreboard, WorkerScore};

use super::bindings as sys;

/// mod_status's letter for each worker state, indexed by Apache's `SERVER_*` number.
const STATUS_LETTERS: [char; 11] = ['.', 'S', '_', 'R', 'W', 'K', 'L', 'D', 'C', 'G', 'I'];
const _: () = assert!(STATUS_LETTERS.len() == sys::SERVER_IDLE_KILL as usize + 1);
const _: () = assert!(sys::SERVER_DEAD == 0);

/// The scoreboard now, or `None` in a process that has none (a daemon started before Apache made it).
pub(crate) fn snapshot() -> Option<Scoreboard> {
    // SAFETY: plain queries of Apache's state; each returns null when there is no scoreboard.
    let global = unsafe {
        if sys::ap_exists_scoreboard_image() == 0 {
            return None;
        }
        let global = sys::ap_get_scoreboard_global();
        if global.is_null() {
            return None;
        }
        std::ptr::read_volatile(global)
    };
    // SAFETY: a plain query of the clock.
    let now = unsafe { sys::apr_time_now() };
    // The limits come from memory every child may write: the MPM's own hard limits bound them.
    let server_limit = global
        .server_limit
        .min(super::mpm_query(sys::AP_MPMQ_HARD_LIMIT_DAEMONS));
    let thread_limit = global
        .thread_limit
        .min(super::mpm_query(sys::AP_MPMQ_HARD_LIMIT_THREADS));
    let processes = (0..server_limit)
        .filter_map(|slot| process(slot, thread_limit))
        .collect();
    Some(Scoreboard {
        server_limit: global.server_limit.into(),
        thread_limit: global.thread_limit.into(),
        running_generation: global.running_generation.into(),
        restart_time: seconds(global.restart_time),
        current_time: seconds(now),
        running_time: (now - global.restart_time) / 1_000_000,
        processes,
    })
}

/// An APR time (microseconds since the epoch) in seconds.
fn seconds(time: sys::apr_time_t) -> f64 {
    time as f64 / 1e6
}

fn process(slot: i32, thread_limit: i32) -> Option<ProcessScore> {
    // SAFETY: `slot` is below the scoreboard's server limit, so the record exists.
    let record = unsafe {
        let record = sys::ap_get_scoreboard_process(slot);
        if record.is_null() {
            return None;
        }
        std::ptr::read_volatile(record)
    };
    Some(ProcessScore {
        process_num: slot.into(),
        pid: record.pid.into(),
        generation: record.generation.into(),
        quiescing: record.quiescing != 0,
        workers: (0..thread_limit)
            .filter_map(|thread| worker(slot, thread))
            .collect(),
    })
}

fn worker(slot: i32, thread: i32) -> Option<WorkerScore> {
    // SAFETY: both indexes are below the scoreboard's limits, so the record exists.
    let record = unsafe {
        let record = sys::ap_get_scoreboard_worker_from_indexes(slot, thread);
        if record.is_null() {
            return None;
        }
        std::ptr::read_volatile(record)
    };
    Some(WorkerScore {
        thread_num: record.thread_num.into(),
        generation: record.generation.into(),
        status: STATUS_LETTERS
            .get(usize::from(record.status))
            .copied()
            .unwrap_or('?'),
        access_count: record.access_count,
        bytes_served: u64::try_from(record.bytes_served).unwrap_or(0),
        start_time: seconds(record.start_time),
        stop_time: seconds(record.stop_time),
        last_used: seconds(record.last_used),
        client: text(&record.client),
        request: text(&record.request),
        vhost: text(&record.vhost),
    })
}

/// A NUL-terminated C array's bytes.
fn text(field: &[std::ffi::c_char]) -> Vec<u8> {
    field
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect()
}
