//! The few raw CPython calls made on every request for which PyO3 has no safe form: latin-1 both ways
//! between bytes and `str` (as PEP 3333 has every CGI value, status and header), and a dict made with room
//! for the keys it will get.
//!
//! Everything here is a thin, safe function over one C API call; it must not grow into anything else.
#![allow(unsafe_code)]

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Latin-1, using CPython's own representation: a `str` whose code points all fit in a byte is stored as
/// exactly its latin-1 bytes (PEP 393's one-byte kind), so neither direction goes through UTF-8.
pub(crate) mod latin1 {
    use pyo3::prelude::*;
    use pyo3::types::string::PyStringData;
    use pyo3::types::PyString;

    /// Bytes as the `str` of the same code points, in one pass.
    pub(crate) fn to_str<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
        let len = pyo3::ffi::Py_ssize_t::try_from(bytes.len())
            .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("value too long for a str"))?;
        // SAFETY: the pointer and length describe `bytes`, which CPython only reads (it copies them into
        // the new object); a null `errors` asks for the strict handler, which latin-1 decoding never calls
        // since every byte is a code point. The result is a new reference, or null with an exception set.
        unsafe {
            let text =
                pyo3::ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast(), len, std::ptr::null());
            Bound::from_owned_ptr_or_err(py, text).map(|any| any.cast_into_unchecked())
        }
    }

    /// The latin-1 bytes of `text`, borrowed from the object itself; `None` when some code point is above
    /// U+00FF, so the text has no latin-1 form.
    pub(crate) fn bytes_of<'a>(text: &'a Bound<'_, PyString>) -> Option<&'a [u8]> {
        // SAFETY: `data` reads the string's canonical storage; the slice borrows `text`, which keeps the
        // (immutable) string alive and unchanged for as long as the slice lives.
        match unsafe { text.data() } {
            Ok(PyStringData::Ucs1(bytes)) => Some(bytes),
            _ => None,
        }
    }
}

extern "C" {
    /// Private in name but exported by every CPython the engine supports: Cython, orjson and mypyc call it,
    /// and CPython restored it in 3.13 after removing it. PyO3 leaves it out for being private.
    fn _PyDict_NewPresized(minused: ffi::Py_ssize_t) -> *mut ffi::PyObject;
}

/// An empty dict that takes `keys` keys without growing its table.
pub(crate) fn dict_with_room(py: Python<'_>, keys: usize) -> PyResult<Bound<'_, PyDict>> {
    let keys = ffi::Py_ssize_t::try_from(keys)
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("too many keys for a dict"))?;
    // SAFETY: called with the GIL held (`py`); returns a new reference to an empty dict, or null with an
    // exception set.
    unsafe {
        Bound::from_owned_ptr_or_err(py, _PyDict_NewPresized(keys))
            .map(|any| any.cast_into_unchecked())
    }
}

/// Runs `test` attached to the interpreter, started once for all of a test binary's tests.
#[cfg(test)]
pub(crate) fn with_python(test: impl FnOnce(Python<'_>)) {
    static PYTHON: std::sync::Once = std::sync::Once::new();
    PYTHON.call_once(|| {
        crate::interp::initialize(&crate::interp::InterpreterConfig::default()).unwrap()
    });
    Python::attach(test);
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyo3::types::PyString;

    #[test]
    fn latin1_maps_every_byte_to_its_own_code_point_both_ways() {
        with_python(|py| {
            let all: Vec<u8> = (0..=255).collect();
            let text = latin1::to_str(py, &all).unwrap();
            let expected: String = all.iter().map(|&b| char::from(b)).collect();
            assert_eq!(text.to_cow().unwrap(), expected);
            assert_eq!(latin1::bytes_of(&text), Some(&all[..]));
            assert_eq!(latin1::bytes_of(&PyString::new(py, "")), Some(&b""[..]));
            assert_eq!(latin1::bytes_of(&PyString::new(py, "\u{20ac}")), None);
            assert_eq!(latin1::bytes_of(&PyString::new(py, "a\u{10000}")), None);
        });
    }

    #[test]
    fn a_dict_with_room_is_an_ordinary_empty_dict() {
        with_python(|py| {
            let dict = dict_with_room(py, 40).unwrap();
            assert!(dict.is_empty());
            dict.set_item("a", 1).unwrap();
            let copy = dict.copy().unwrap();
            assert_eq!(copy.len(), 1);
            assert_eq!(
                copy.get_item("a")
                    .unwrap()
                    .unwrap()
                    .extract::<i32>()
                    .unwrap(),
                1
            );
        });
    }
}
