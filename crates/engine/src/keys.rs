//! The invariant parts of every request's environ: its keys as Python strings, made once per engine, and a
//! warm template holding the values that repeat from one request to the next.
//!
//! The CGI names the hosts produce are interned when the engine loads and looked up afterwards without a
//! lock, with a hash made for short strings. The same one lookup tells the engine's private names (the
//! hosts' `mod_wsgi.x-` hints, `HTTPS`) from the app's. Any other name (an unusual request header, an
//! Apache `SetEnv`) is interned when first seen and kept, up to a bound, under a lock and a hash a client
//! cannot aim collisions at, so a client inventing header names can neither grow the cache without end nor
//! slow its lookups down.
//!
//! Most of a request's values are the same as the last request's (the method, the protocol, the server's
//! name and address, a client's Host and User-Agent). For the names whose values are few, the warm template
//! is the engine's template plus the last request's values: a request's environ starts as a copy of it,
//! and a value whose bytes match the kept one costs neither a new `str` nor a dict insertion (Python
//! strings are immutable, so sharing one is indistinguishable from making a new one). A kept value the
//! request does not have is taken out of its environ again. Per-request values (path, URI, ports,
//! cookies) are never kept. The warm template also holds the `wsgi.errors` and `mod_wsgi.thread_id` of
//! the thread that serves most requests.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use rustc_hash::FxHashMap;

use crate::cpython::latin1;
use crate::environ::hints;

/// Bounds the cache of other names.
const MAX_OTHER_KEYS: usize = 512;

/// Longer values are not kept for the next request.
const MAX_KEPT_VALUE: usize = 256;

/// Names a host gives the engine that the app never sees (mod_wsgi's convention).
const PRIVATE_PREFIX: &str = "mod_wsgi.x-";

/// The hints hosts give the engine in private variables.
const HINTS: [(&str, Hint); 4] = [
    (hints::REQUEST_START_US, Hint::RequestStart),
    (hints::QUEUE_START_US, Hint::QueueStart),
    (hints::DAEMON_START_US, Hint::DaemonStart),
    (hints::APACHE_VERSION, Hint::ApacheVersion),
];

/// The environ keys of [`EnvironBuilder::set_thread`]'s values.
const THREAD_NAMES: [&str; 2] = ["wsgi.errors", "mod_wsgi.thread_id"];

/// Names with a slot in the warm template: one bit each in a request's set of kept names.
const MAX_SLOTS: usize = u64::BITS as usize;

/// Deleted entries a warm template may carry before it is made afresh. A deletion leaves its entry behind
/// in a dict's table, and every copy inherits it, with that much less room for a request's own keys.
const MAX_DEAD_ENTRIES: usize = 8;

/// A host's hint to the engine, read from the private variable of [`hints`] of the same name.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Hint {
    RequestStart,
    QueueStart,
    DaemonStart,
    ApacheVersion,
}

/// A variable the app does not see as itself.
#[derive(Debug)]
pub(crate) enum Withheld {
    /// A hint to the engine.
    Hint(Hint),
    /// `HTTPS`, which becomes `wsgi.url_scheme` and is not itself shown (as mod_wsgi).
    Https,
    /// Another private variable of the host's.
    Private,
}

/// What the engine knows of a name it made at load.
enum Known {
    /// An environ key, and for names with few values, its slot in the warm template.
    Key {
        key: Py<PyString>,
        slot: Option<usize>,
    },
    Hint(Hint),
    Https,
}

/// The template a request's environ starts from, with the last requests' repeating values.
struct Warm {
    dict: Py<PyDict>,
    /// Per slot, the bytes of the value (a `str` made of them) that `dict` holds beyond the engine's
    /// template.
    kept: Vec<Option<Box<[u8]>>>,
    /// The slots with a kept value, one bit each.
    present: u64,
    /// Entries deleted from `dict` since it was made.
    dead: usize,
    /// The thread whose `wsgi.errors` and `mod_wsgi.thread_id` `dict` holds, with that `wsgi.errors`.
    thread: Option<(u64, Py<PyAny>)>,
    /// The thread that made the last environ.
    last_thread: Option<u64>,
}

/// The engine's environ keys and templates.
pub(crate) struct EnvironKeys {
    /// Every name of [`crate::environ::known_names`] and the private ones: fixed at load, so read without
    /// a lock.
    known: FxHashMap<&'static str, Known>,
    /// The key of each warm slot.
    slot_keys: Vec<Py<PyString>>,
    /// Names seen since, which requests may choose.
    other: Mutex<HashMap<Box<str>, Py<PyString>>>,
    /// The keys and values the same for every request.
    template: Py<PyDict>,
    /// `template` and the repeating values. Behind a lock only for the type system: the GIL serialises
    /// the requests that build an environ, and one that finds it taken builds its environ cold.
    warm: Mutex<Warm>,
}

impl EnvironKeys {
    /// The keys of the known names, and a warm template that starts as `template`.
    pub(crate) fn new(py: Python<'_>, template: Bound<'_, PyDict>) -> PyResult<Self> {
        let mut slot_keys = Vec::new();
        let mut keys = Vec::new();
        for (name, repeats) in crate::environ::known_names() {
            let key = PyString::intern(py, name).unbind();
            let slot = (repeats && slot_keys.len() < MAX_SLOTS).then(|| {
                slot_keys.push(key.clone_ref(py));
                slot_keys.len() - 1
            });
            keys.push((name, Known::Key { key, slot }));
        }
        let hints = HINTS
            .into_iter()
            .map(|(name, hint)| (name, Known::Hint(hint)));
        let known = keys
            .into_iter()
            .chain(hints)
            .chain([("HTTPS", Known::Https)])
            .collect();
        let warm = Warm {
            dict: template.copy()?.unbind(),
            kept: slot_keys.iter().map(|_| None).collect(),
            present: 0,
            dead: 0,
            thread: None,
            last_thread: None,
        };
        Ok(Self {
            known,
            slot_keys,
            other: Mutex::new(HashMap::new()),
            template: template.unbind(),
            warm: Mutex::new(warm),
        })
    }

    /// Starts a request's environ from the warm template (or, if another thread holds it, the cold one).
    pub(crate) fn environ<'py>(&self, py: Python<'py>) -> PyResult<EnvironBuilder<'py, '_>> {
        let warm = self.warm.try_lock().ok();
        let environ = match &warm {
            Some(warm) => warm.dict.bind(py).copy()?,
            None => self.template.bind(py).copy()?,
        };
        Ok(EnvironBuilder {
            keys: self,
            environ,
            warm,
            seen: 0,
            thread_names_given: false,
        })
    }

    /// The key string for a name that is not a known one.
    fn other_key<'py>(&self, py: Python<'py>, name: &str) -> Bound<'py, PyString> {
        let mut other = self
            .other
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(key) = other.get(name) {
            return key.bind(py).clone();
        }
        let key = PyString::intern(py, name);
        if other.len() < MAX_OTHER_KEYS {
            other.insert(name.into(), key.clone().unbind());
        }
        key
    }
}

/// A request's environ while its CGI variables go in.
pub(crate) struct EnvironBuilder<'py, 'k> {
    keys: &'k EnvironKeys,
    environ: Bound<'py, PyDict>,
    warm: Option<MutexGuard<'k, Warm>>,
    /// The slots this request has a value for.
    seen: u64,
    /// The host gave a variable of the name of a thread value, which the engine's own must replace.
    thread_names_given: bool,
}

impl<'py> EnvironBuilder<'py, '_> {
    /// Adds the variable `name` = `value` to the environ, or says what else it is.
    pub(crate) fn add(&mut self, name: &str, value: &[u8]) -> PyResult<Option<Withheld>> {
        let py = self.environ.py();
        let (key, slot) = match self.keys.known.get(name) {
            Some(Known::Key { key, slot }) => (key.bind(py), *slot),
            Some(Known::Hint(hint)) => return Ok(Some(Withheld::Hint(*hint))),
            Some(Known::Https) => return Ok(Some(Withheld::Https)),
            None if name.starts_with(PRIVATE_PREFIX) => return Ok(Some(Withheld::Private)),
            None => {
                self.thread_names_given |= THREAD_NAMES.contains(&name);
                let key = self.keys.other_key(py, name);
                self.environ.set_item(key, latin1::to_str(py, value)?)?;
                return Ok(None);
            }
        };
        let (Some(slot), Some(warm)) = (slot, self.warm.as_deref_mut()) else {
            self.environ.set_item(key, latin1::to_str(py, value)?)?;
            return Ok(None);
        };
        self.seen |= 1 << slot;
        if warm.kept[slot].as_deref() == Some(value) {
            // The copy of the warm template already holds this very value.
            return Ok(None);
        }
        let text = latin1::to_str(py, value)?;
        self.environ.set_item(key, &text)?;
        if value.len() <= MAX_KEPT_VALUE {
            warm.keep(key, slot, value, text)?;
        } else {
            warm.forget(self.keys.template.bind(py), key, slot)?;
        }
        Ok(None)
    }

    /// Gives the environ the serving thread's `wsgi.errors` and `mod_wsgi.thread_id`. The warm template
    /// takes them once a thread made two environs in a row: one thread serves most requests (an HTTP
    /// host's I/O thread, running them inline), and its values then cost nothing.
    pub(crate) fn set_thread(&mut self, thread: u64, errors: &Bound<'py, PyAny>) -> PyResult<()> {
        let py = self.environ.py();
        let (errors_key, thread_key) = (
            pyo3::intern!(py, "wsgi.errors"),
            pyo3::intern!(py, "mod_wsgi.thread_id"),
        );
        let warm = self.warm.as_deref_mut();
        if let Some(Warm {
            thread: Some((id, kept)),
            ..
        }) = &warm
        {
            if *id == thread && kept.is(errors) && !self.thread_names_given {
                return Ok(());
            }
        }
        self.environ.set_item(errors_key, errors)?;
        self.environ.set_item(thread_key, thread)?;
        if let Some(warm) = warm {
            if warm.last_thread == Some(thread) {
                let dict = warm.dict.bind(py);
                dict.set_item(errors_key, errors)?;
                dict.set_item(thread_key, thread)?;
                warm.thread = Some((thread, errors.clone().unbind()));
            }
            warm.last_thread = Some(thread);
        }
        Ok(())
    }

    /// The environ, less the kept values this request did not have.
    pub(crate) fn finish(mut self) -> PyResult<Bound<'py, PyDict>> {
        let Some(warm) = self.warm.as_deref_mut() else {
            return Ok(self.environ);
        };
        let py = self.environ.py();
        let template = self.keys.template.bind(py);
        let mut stale = warm.present & !self.seen;
        while stale != 0 {
            let slot = stale.trailing_zeros() as usize;
            stale &= stale - 1;
            let key = self.keys.slot_keys[slot].bind(py);
            restore(&self.environ, template, key)?;
            warm.forget(template, key, slot)?;
        }
        if warm.dead > MAX_DEAD_ENTRIES {
            warm.remake(py, template, &self.keys.slot_keys)?;
        }
        Ok(self.environ)
    }
}

impl Warm {
    fn keep(
        &mut self,
        key: &Bound<'_, PyString>,
        slot: usize,
        bytes: &[u8],
        text: Bound<'_, PyString>,
    ) -> PyResult<()> {
        self.dict.bind(key.py()).set_item(key, text)?;
        self.kept[slot] = Some(bytes.into());
        self.present |= 1 << slot;
        Ok(())
    }

    /// Gives `slot`'s key its template value again, if it had a kept one.
    fn forget(
        &mut self,
        template: &Bound<'_, PyDict>,
        key: &Bound<'_, PyString>,
        slot: usize,
    ) -> PyResult<()> {
        if self.kept[slot].take().is_some() {
            self.present &= !(1 << slot);
            if !restore(self.dict.bind(key.py()), template, key)? {
                self.dead += 1;
            }
        }
        Ok(())
    }

    /// Makes the dict afresh from the template and the kept values, without deleted entries (a copy of the
    /// dict itself would keep them, or lose the template's room).
    fn remake(
        &mut self,
        py: Python<'_>,
        template: &Bound<'_, PyDict>,
        slot_keys: &[Py<PyString>],
    ) -> PyResult<()> {
        let (old, dict) = (self.dict.bind(py), template.copy()?);
        for (kept, key) in self.kept.iter().zip(slot_keys) {
            if let (Some(_), Some(text)) = (kept, old.get_item(key)?) {
                dict.set_item(key, text)?;
            }
        }
        self.dict = dict.unbind();
        self.dead = 0;
        // The thread's values go in again when it next makes two environs in a row.
        self.thread = None;
        Ok(())
    }
}

/// Gives `key` in `dict` its value in `template`, or deletes it if the template has none; true if restored.
fn restore(
    dict: &Bound<'_, PyDict>,
    template: &Bound<'_, PyDict>,
    key: &Bound<'_, PyString>,
) -> PyResult<bool> {
    match template.get_item(key)? {
        Some(value) => dict.set_item(key, value).map(|()| true),
        None => dict.del_item(key).map(|()| false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A template with one key a host may also set.
    fn keys(py: Python<'_>) -> EnvironKeys {
        let template = PyDict::new(py);
        template.set_item("SCRIPT_FILENAME", "/t.wsgi").unwrap();
        template.set_item("wsgi.run_once", false).unwrap();
        EnvironKeys::new(py, template).unwrap()
    }

    /// The environ of a request with `vars`.
    fn environ<'py>(
        keys: &EnvironKeys,
        py: Python<'py>,
        vars: &[(&str, &[u8])],
    ) -> Bound<'py, PyDict> {
        environ_on(keys, py, vars, None)
    }

    /// The environ of a request with `vars`, served by `thread` (its id and `wsgi.errors`) if given.
    fn environ_on<'py>(
        keys: &EnvironKeys,
        py: Python<'py>,
        vars: &[(&str, &[u8])],
        thread: Option<(u64, &Bound<'py, PyAny>)>,
    ) -> Bound<'py, PyDict> {
        let mut environ = keys.environ(py).unwrap();
        for (name, value) in vars {
            assert!(environ.add(name, value).unwrap().is_none(), "{name}");
        }
        if let Some((id, errors)) = thread {
            environ.set_thread(id, errors).unwrap();
        }
        environ.finish().unwrap()
    }

    /// What the environ of a request with `vars` must be: the template and the variables, nothing kept.
    fn expected<'py>(
        keys: &EnvironKeys,
        py: Python<'py>,
        vars: &[(&str, &[u8])],
    ) -> Bound<'py, PyDict> {
        let environ = keys.template.bind(py).copy().unwrap();
        for (name, value) in vars {
            environ
                .set_item(name, latin1::to_str(py, value).unwrap())
                .unwrap();
        }
        environ
    }

    fn value<'py>(environ: &Bound<'py, PyDict>, name: &str) -> Bound<'py, PyAny> {
        environ.get_item(name).unwrap().unwrap()
    }

    #[test]
    fn known_and_other_names_come_back_as_the_same_interned_strings() {
        crate::cpython::with_python(|py| {
            let keys = keys(py);
            let names = [
                "PATH_INFO",
                "HTTP_HOST",
                "HTTP_X_MADE_UP",
                "mod_wsgi.path_info",
            ];
            for _ in 0..2 {
                let vars: Vec<_> = names.iter().map(|name| (*name, &b"v"[..])).collect();
                let environ = environ(&keys, py, &vars);
                for name in names {
                    let key = environ
                        .keys()
                        .into_iter()
                        .find(|key| key.extract::<String>().unwrap() == name)
                        .unwrap();
                    assert!(key.is(PyString::intern(py, name)), "{name}");
                }
            }
        });
    }

    #[test]
    fn repeated_values_are_shared_and_per_request_ones_are_not() {
        crate::cpython::with_python(|py| {
            let keys = keys(py);
            let long = vec![b'x'; MAX_KEPT_VALUE + 1];
            let vars = |method: &'static [u8]| -> Vec<(&str, &[u8])> {
                vec![
                    ("REQUEST_METHOD", method),
                    ("PATH_INFO", b"/a"),
                    ("HTTP_HOST", b"caf\xe9"),
                    ("HTTP_USER_AGENT", &long),
                ]
            };
            let first = environ(&keys, py, &vars(b"GET"));
            let second = environ(&keys, py, &vars(b"GET"));
            assert!(first.eq(expected(&keys, py, &vars(b"GET"))).unwrap());
            assert!(second.eq(&first).unwrap());
            assert!(value(&first, "REQUEST_METHOD").is(value(&second, "REQUEST_METHOD")));
            assert!(value(&first, "HTTP_HOST").is(value(&second, "HTTP_HOST")));
            assert_eq!(
                value(&first, "HTTP_HOST").extract::<String>().unwrap(),
                "caf\u{e9}"
            );
            assert!(!value(&first, "PATH_INFO").is(value(&second, "PATH_INFO")));
            assert!(!value(&first, "HTTP_USER_AGENT").is(value(&second, "HTTP_USER_AGENT")));
            let post = environ(&keys, py, &vars(b"POST"));
            assert_eq!(
                value(&post, "REQUEST_METHOD").extract::<String>().unwrap(),
                "POST"
            );
            // Environs already made keep their own values.
            assert_eq!(
                value(&first, "REQUEST_METHOD").extract::<String>().unwrap(),
                "GET"
            );
        });
    }

    #[test]
    fn a_kept_value_is_not_in_the_environ_of_a_request_without_it() {
        crate::cpython::with_python(|py| {
            let keys = keys(py);
            let full: &[(&str, &[u8])] = &[
                ("HTTP_USER_AGENT", b"curl"),
                ("SCRIPT_FILENAME", b"/other.wsgi"),
            ];
            environ(&keys, py, full);
            let bare = environ(&keys, py, &[]);
            assert!(bare.eq(expected(&keys, py, &[])).unwrap());
            assert!(!bare.contains("HTTP_USER_AGENT").unwrap());
            assert_eq!(
                value(&bare, "SCRIPT_FILENAME").extract::<String>().unwrap(),
                "/t.wsgi"
            );
            assert!(environ(&keys, py, full)
                .eq(expected(&keys, py, full))
                .unwrap());
        });
    }

    #[test]
    fn any_sequence_of_requests_gets_the_environs_a_cold_start_would_make() {
        crate::cpython::with_python(|py| {
            let keys = keys(py);
            let names = [
                "REQUEST_METHOD",
                "SCRIPT_FILENAME",
                "HTTP_USER_AGENT",
                "HTTP_ACCEPT",
                "SERVER_NAME",
                "PATH_INFO",
                "HTTP_X_OTHER",
                // A host's variable of the name of an engine's own value, which the engine's replaces.
                "wsgi.errors",
            ];
            let long = vec![b'y'; MAX_KEPT_VALUE + 1];
            let values: [&[u8]; 3] = [b"a", b"b", &long];
            let streams = [PyString::new(py, "first"), PyString::new(py, "second")];
            let mut seed = 0x2545_f491_u64;
            let mut next = || {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (seed >> 33) as usize
            };
            for _ in 0..2000 {
                let mut vars: Vec<(&str, &[u8])> = Vec::new();
                for name in names {
                    let draw = next();
                    if draw % 3 != 0 && (name != "wsgi.errors" || draw % 11 == 1) {
                        vars.push((name, values[(draw / 3) % values.len()]));
                    }
                    // A name given twice: the later value wins, as in a dict.
                    if draw % 13 == 0 {
                        vars.push((name, values[(draw / 13) % values.len()]));
                    }
                }
                let thread = 1 + next() % 2;
                let errors = streams[thread - 1].as_any();
                // Now and then another thread holds the warm template: this environ is built cold.
                let taken = (next() % 10 == 0).then(|| keys.warm.lock().unwrap());
                let made = environ_on(&keys, py, &vars, Some((thread as u64, errors)));
                drop(taken);
                let expected = expected(&keys, py, &vars);
                expected.set_item("wsgi.errors", errors).unwrap();
                expected.set_item("mod_wsgi.thread_id", thread).unwrap();
                assert!(made.eq(&expected).unwrap(), "{vars:?} on {thread}");
                assert!(value(&made, "wsgi.errors").is(errors));
                assert!(keys.warm.lock().unwrap().dead <= MAX_DEAD_ENTRIES);
            }
        });
    }

    #[test]
    fn every_environ_has_its_own_threads_values_whichever_thread_made_the_last() {
        crate::cpython::with_python(|py| {
            let keys = keys(py);
            let (first, second) = (PyString::new(py, "first"), PyString::new(py, "second"));
            let renewed = PyString::new(py, "renewed");
            let threads = [
                (1, &first),
                (1, &first),
                (1, &first),
                (2, &second),
                (1, &first),
                (2, &second),
                (2, &second),
                (2, &second),
                (1, &first),
                (2, &renewed),
                (2, &renewed),
                (2, &renewed),
                (1, &first),
            ];
            for (thread, errors) in threads {
                let vars: &[(&str, &[u8])] = &[("REQUEST_METHOD", b"GET")];
                let environ = environ_on(&keys, py, vars, Some((thread, errors.as_any())));
                assert!(value(&environ, "wsgi.errors").is(errors));
                assert_eq!(
                    value(&environ, "mod_wsgi.thread_id")
                        .extract::<u64>()
                        .unwrap(),
                    thread
                );
                assert_eq!(environ.len(), 5);
            }
        });
    }

    #[test]
    fn a_request_that_finds_the_warm_template_taken_builds_its_environ_cold() {
        crate::cpython::with_python(|py| {
            let keys = keys(py);
            let vars: &[(&str, &[u8])] = &[("REQUEST_METHOD", b"GET")];
            environ(&keys, py, vars);
            let taken = keys.warm.lock().unwrap();
            assert!(environ(&keys, py, vars)
                .eq(expected(&keys, py, vars))
                .unwrap());
            drop(taken);
        });
    }

    #[test]
    fn other_names_are_cached_only_up_to_the_bound() {
        crate::cpython::with_python(|py| {
            let keys = keys(py);
            for i in 0..MAX_OTHER_KEYS + 10 {
                let name = format!("HTTP_X_{i}");
                let environ = environ(&keys, py, &[(&name, b"")]);
                assert!(environ.contains(&name).unwrap());
            }
            assert_eq!(keys.other.lock().unwrap().len(), MAX_OTHER_KEYS);
        });
    }

    #[test]
    fn private_names_are_told_apart_in_the_same_lookup() {
        crate::cpython::with_python(|py| {
            let keys = keys(py);
            let mut environ = keys.environ(py).unwrap();
            let mut add = |name| environ.add(name, b"1").unwrap();
            assert!(matches!(
                add("mod_wsgi.x-request_start_us"),
                Some(Withheld::Hint(Hint::RequestStart))
            ));
            assert!(matches!(
                add("mod_wsgi.x-apache_version"),
                Some(Withheld::Hint(Hint::ApacheVersion))
            ));
            assert!(matches!(add("HTTPS"), Some(Withheld::Https)));
            assert!(matches!(add("mod_wsgi.x-script"), Some(Withheld::Private)));
            assert!(add("mod_wsgi.path_info").is_none());
            let environ = environ.finish().unwrap();
            assert_eq!(environ.len(), 3);
            assert!(environ.contains("mod_wsgi.path_info").unwrap());
        });
    }
}
