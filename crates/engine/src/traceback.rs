//! Formatting Python exceptions for the error log, as Python's `traceback` module prints them.

use pyo3::prelude::*;

/// The full traceback of `err`, ending with its `Type: message` line.
pub(crate) fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        // On Python 3.11 the traceback is kept beside the exception, not always on its __traceback__.
        let lines = tb.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )?;
        lines
            .try_iter()?
            .map(|line| line?.extract::<String>())
            .collect::<PyResult<String>>()
    });
    match formatted {
        Ok(text) => text,
        // Formatting itself failed (a broken traceback module, say): the type and message still help.
        Err(_) => format!("{err}\n"),
    }
}
