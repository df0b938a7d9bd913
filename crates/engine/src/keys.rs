//! Environ keys as Python strings, made once per engine instead of once per request.
//!
//! The CGI names the hosts produce are interned when the engine loads and looked up afterwards without a
//! lock, with a hash made for short strings. Any other name (an unusual request header, an Apache
//! `SetEnv`) is interned when first seen and kept, up to a bound, under a lock and a hash a client cannot
//! aim collisions at, so a client inventing header names can neither grow the cache without end nor slow
//! its lookups down.

use std::collections::HashMap;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyString;
use rustc_hash::FxHashMap;

/// Bounds the cache of other names.
const MAX_OTHER_KEYS: usize = 512;

/// The engine's environ key strings.
pub(crate) struct EnvironKeys {
    /// Every name of [`crate::environ::known_names`]: fixed at load, so read without a lock.
    known: FxHashMap<&'static str, Py<PyString>>,
    /// Names seen since, which requests may choose.
    other: Mutex<HashMap<Box<str>, Py<PyString>>>,
}

impl EnvironKeys {
    pub(crate) fn new(py: Python<'_>) -> Self {
        let known = crate::environ::known_names()
            .map(|name| (name, PyString::intern(py, name).unbind()))
            .collect();
        Self {
            known,
            other: Mutex::new(HashMap::new()),
        }
    }

    /// The key string for `name`.
    pub(crate) fn get<'py>(&self, py: Python<'py>, name: &str) -> Bound<'py, PyString> {
        if let Some(key) = self.known.get(name) {
            return key.bind(py).clone();
        }
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

    #[test]
    fn known_and_other_names_come_back_as_the_same_interned_strings() {
        crate::cpython::with_python(|py| {
            let keys = EnvironKeys::new(py);
            for name in [
                "PATH_INFO",
                "HTTP_HOST",
                "HTTP_X_MADE_UP",
                "mod_wsgi.path_info",
            ] {
                let first = keys.get(py, name);
                assert_eq!(first.to_str().unwrap(), name);
                assert!(first.is(keys.get(py, name)));
                assert!(first.is(PyString::intern(py, name)));
            }
        });
    }

    #[test]
    fn other_names_are_cached_only_up_to_the_bound() {
        crate::cpython::with_python(|py| {
            let keys = EnvironKeys::new(py);
            for i in 0..MAX_OTHER_KEYS + 10 {
                let name = format!("HTTP_X_{i}");
                assert_eq!(keys.get(py, &name).to_str().unwrap(), name);
            }
            assert_eq!(keys.other.lock().unwrap().len(), MAX_OTHER_KEYS);
        });
    }
}
