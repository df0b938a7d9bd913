//! Environ keys as Python strings, made once per engine instead of once per request, and the values that
//! repeat from one request to the next.
//!
//! The CGI names the hosts produce are interned when the engine loads and looked up afterwards without a
//! lock, with a hash made for short strings. The same one lookup tells the engine's private names (the
//! hosts' `mod_wsgi.x-` hints, `HTTPS`) from the app's. Any other name (an unusual request header, an
//! Apache `SetEnv`) is interned when first seen and kept, up to a bound, under a lock and a hash a client
//! cannot aim collisions at, so a client inventing header names can neither grow the cache without end nor
//! slow its lookups down.
//!
//! Most of a request's values are the same as the last request's (the method, the protocol, the server's
//! name and address, a client's Host and User-Agent). For the names whose values are few, the last value's
//! `str` is kept and handed out again while the bytes match: Python strings are immutable, so sharing one
//! is indistinguishable from making a new one. Per-request values (path, URI, ports, cookies) are never
//! kept.

use std::collections::HashMap;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyString;
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

/// A value's bytes and the `str` made of them.
type Value = (Box<[u8]>, Py<PyString>);

/// A host's hint to the engine, read from the private variable of [`hints`] of the same name.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Hint {
    RequestStart,
    QueueStart,
    DaemonStart,
    ApacheVersion,
}

/// What a variable of a request is to the engine.
#[derive(Debug)]
pub(crate) enum Var<'py> {
    /// An environ item: its key and value strings.
    Item(Bound<'py, PyString>, Bound<'py, PyString>),
    /// A hint to the engine, never shown to the app.
    Hint(Hint),
    /// `HTTPS`, which becomes `wsgi.url_scheme` and is not itself shown (as mod_wsgi).
    Https,
    /// Another private variable of the host's.
    Private,
}

/// What the engine knows of a name it made at load.
enum Known {
    /// An environ key, and for names with few values, the last value made.
    Key {
        key: Py<PyString>,
        last: Option<Mutex<Option<Value>>>,
    },
    Hint(Hint),
    Https,
}

/// The engine's environ key strings.
pub(crate) struct EnvironKeys {
    /// Every name of [`crate::environ::known_names`] and the private ones: fixed at load, so read without
    /// a lock.
    known: FxHashMap<&'static str, Known>,
    /// Names seen since, which requests may choose.
    other: Mutex<HashMap<Box<str>, Py<PyString>>>,
}

impl EnvironKeys {
    pub(crate) fn new(py: Python<'_>) -> Self {
        let keys = crate::environ::known_names().map(|(name, repeats)| {
            let key = PyString::intern(py, name).unbind();
            let last = repeats.then(|| Mutex::new(None));
            (name, Known::Key { key, last })
        });
        let hints = HINTS
            .into_iter()
            .map(|(name, hint)| (name, Known::Hint(hint)));
        let known = keys.chain(hints).chain([("HTTPS", Known::Https)]).collect();
        Self {
            known,
            other: Mutex::new(HashMap::new()),
        }
    }

    /// What the variable `name` = `value` is: for an environ item, its key and value strings.
    pub(crate) fn var<'py>(&self, py: Python<'py>, name: &str, value: &[u8]) -> PyResult<Var<'py>> {
        let (key, last) = match self.known.get(name) {
            Some(Known::Key { key, last }) => (key.bind(py).clone(), last),
            Some(Known::Hint(hint)) => return Ok(Var::Hint(*hint)),
            Some(Known::Https) => return Ok(Var::Https),
            None if name.starts_with(PRIVATE_PREFIX) => return Ok(Var::Private),
            None => {
                return Ok(Var::Item(
                    self.other_key(py, name),
                    latin1::to_str(py, value)?,
                ))
            }
        };
        // The GIL makes the slot uncontended; where threads run Python in parallel, a slot in use is not
        // waited for.
        let Some(mut last) = last.as_ref().and_then(|last| last.try_lock().ok()) else {
            return Ok(Var::Item(key, latin1::to_str(py, value)?));
        };
        if let Some((bytes, text)) = last.as_ref() {
            if **bytes == *value {
                return Ok(Var::Item(key, text.bind(py).clone()));
            }
        }
        let text = latin1::to_str(py, value)?;
        if value.len() <= MAX_KEPT_VALUE {
            *last = Some((value.into(), text.clone().unbind()));
        }
        Ok(Var::Item(key, text))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The key and value strings of an environ item.
    fn item<'py>(
        keys: &EnvironKeys,
        py: Python<'py>,
        name: &str,
        value: &[u8],
    ) -> (Bound<'py, PyString>, Bound<'py, PyString>) {
        match keys.var(py, name, value).unwrap() {
            Var::Item(key, value) => (key, value),
            other => panic!("{name} is not an environ item: {other:?}"),
        }
    }

    #[test]
    fn known_and_other_names_come_back_as_the_same_interned_strings() {
        crate::cpython::with_python(|py| {
            let keys = EnvironKeys::new(py);
            let key = |name| item(&keys, py, name, b"").0;
            for name in [
                "PATH_INFO",
                "HTTP_HOST",
                "HTTP_X_MADE_UP",
                "mod_wsgi.path_info",
            ] {
                let first = key(name);
                assert_eq!(first.to_str().unwrap(), name);
                assert!(first.is(key(name)));
                assert!(first.is(PyString::intern(py, name)));
            }
        });
    }

    #[test]
    fn repeated_values_are_shared_and_per_request_ones_are_not() {
        crate::cpython::with_python(|py| {
            let keys = EnvironKeys::new(py);
            let value = |name, bytes: &[u8]| item(&keys, py, name, bytes).1;
            let get = value("REQUEST_METHOD", b"GET");
            assert_eq!(get.to_str().unwrap(), "GET");
            assert!(get.is(value("REQUEST_METHOD", b"GET")));
            let post = value("REQUEST_METHOD", b"POST");
            assert_eq!(post.to_str().unwrap(), "POST");
            assert!(!post.is(&get));
            // Latin-1, and a value of another name, are never mixed up with a kept one.
            assert_eq!(
                value("HTTP_HOST", b"caf\xe9").to_cow().unwrap(),
                "caf\u{e9}"
            );
            assert_eq!(value("SERVER_NAME", b"POST").to_str().unwrap(), "POST");
            let path = value("PATH_INFO", b"/a");
            assert!(!path.is(value("PATH_INFO", b"/a")));
            let long = vec![b'x'; MAX_KEPT_VALUE + 1];
            let first = value("HTTP_USER_AGENT", &long);
            assert_eq!(first.to_str().unwrap().len(), long.len());
            assert!(!first.is(value("HTTP_USER_AGENT", &long)));
            let (key, other) = item(&keys, py, "HTTP_X_OTHER", b"v");
            assert_eq!(
                (key.to_str().unwrap(), other.to_str().unwrap()),
                ("HTTP_X_OTHER", "v")
            );
        });
    }

    #[test]
    fn other_names_are_cached_only_up_to_the_bound() {
        crate::cpython::with_python(|py| {
            let keys = EnvironKeys::new(py);
            for i in 0..MAX_OTHER_KEYS + 10 {
                let name = format!("HTTP_X_{i}");
                assert_eq!(item(&keys, py, &name, b"").0.to_str().unwrap(), name);
            }
            assert_eq!(keys.other.lock().unwrap().len(), MAX_OTHER_KEYS);
        });
    }

    #[test]
    fn private_names_are_told_apart_in_the_same_lookup() {
        crate::cpython::with_python(|py| {
            let keys = EnvironKeys::new(py);
            let var = |name| keys.var(py, name, b"1").unwrap();
            assert!(matches!(
                var("mod_wsgi.x-request_start_us"),
                Var::Hint(Hint::RequestStart)
            ));
            assert!(matches!(
                var("mod_wsgi.x-apache_version"),
                Var::Hint(Hint::ApacheVersion)
            ));
            assert!(matches!(var("HTTPS"), Var::Https));
            assert!(matches!(var("mod_wsgi.x-script"), Var::Private));
            assert!(matches!(var("mod_wsgi.path_info"), Var::Item(..)));
        });
    }
}
