//! Sub-interpreters: mod_wsgi's application groups, so two applications in one process never share modules
//! or settings.
//!
//! How it works (Python 3.11; all sub-interpreters share the one GIL, as mod_wsgi's do):
//! - [`SubInterpreter::new`] creates one with `Py_NewInterpreter` and sets it up like the main one
//!   (python-path entries, the standard streams); it is never destroyed before the process exits, so
//!   objects it made stay valid for its whole life.
//! - Each thread that serves it gets its own `PyThreadState` for it, made on first use and kept for the
//!   thread's life ([`SubInterpreter::enter`]).
//! - PyO3's safe API attaches through `PyGILState_Ensure`, which only knows one thread state per thread and
//!   so always means the main interpreter. `enter` therefore takes the GIL with the sub-interpreter's thread
//!   state itself, then runs the caller's closure from inside a call to a Rust function exposed to Python:
//!   PyO3 counts the thread as attached there, so every `Python::attach` in the engine (and every drop of a
//!   `Py<T>`) works on the current thread state, the sub-interpreter's, without touching `PyGILState`.
//! - The engine's Python classes (`StartResponse`, `wsgi.input`, …) are made once, in the main interpreter
//!   ([`prepare_shared_types`]), and shared by every interpreter, as the C mod_wsgi's static types are; that
//!   is sound with a shared GIL and interpreters that outlive every object of those types.
//!
//! Limits: extension modules that refuse sub-interpreters (PyO3-based ones, some numerical libraries) fail
//! to import there — the host should advise `WSGIApplicationGroup %{GLOBAL}`; `dump_stacks` sees only the
//! main interpreter's threads; a per-interpreter GIL (3.12+) is not used.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::ffi;
use pyo3::prelude::*;

use crate::error::EngineError;
use crate::host::ErrorLog;

/// A sub-interpreter, alive until the process exits.
pub struct SubInterpreter {
    state: InterpreterPtr,
    name: String,
}

/// A `PyInterpreterState` pointer that may move between threads.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct InterpreterPtr(*mut ffi::PyInterpreterState);

// SAFETY: the pointer names an interpreter that lives until the process exits (never finalised); every use
// goes through the C API with the GIL held, which serialises them.
unsafe impl Send for InterpreterPtr {}
// SAFETY: as above.
unsafe impl Sync for InterpreterPtr {}

impl std::fmt::Debug for SubInterpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubInterpreter")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// This thread's state in each sub-interpreter it has served.
    static THREAD_STATES: RefCell<HashMap<InterpreterPtr, ThreadStatePtr>> = RefCell::new(HashMap::new());
    /// The closure `enter` is running, for `run_entered` to call.
    static ENTERED: Cell<Option<*mut (dyn FnMut() + 'static)>> = const { Cell::new(None) };
}

#[derive(Clone, Copy)]
struct ThreadStatePtr(*mut ffi::PyThreadState);

/// Makes the engine's Python classes in the main interpreter, before any sub-interpreter can make them its
/// own. Hosts that create sub-interpreters call it once after [`crate::interp::initialize`].
pub fn prepare_shared_types() -> Result<(), EngineError> {
    Python::attach(|py| {
        crate::prepare_types(py);
    });
    Ok(())
}

impl SubInterpreter {
    /// Creates a sub-interpreter named `name` (for messages), with `python_path` added as in the main one and
    /// its standard streams going to `log`. The calling thread must not be attached to Python.
    pub fn new(
        name: &str,
        python_path: &[PathBuf],
        log: Arc<dyn ErrorLog>,
    ) -> Result<Self, EngineError> {
        crate::interp::keep_thread_state();
        Python::attach(|_main| {
            // SAFETY: the GIL is held with the main interpreter's thread state current. Py_NewInterpreter makes
            // a new interpreter and switches to its first thread state; the swap back restores the main one.
            // The new thread state is kept as this thread's state in the new interpreter.
            let (state, thread_state) = unsafe {
                let main_state = ffi::PyThreadState_Get();
                let thread_state = ffi::Py_NewInterpreter();
                if thread_state.is_null() {
                    ffi::PyThreadState_Swap(main_state);
                    return Err(EngineError::Interpreter(format!(
                        "could not create the sub-interpreter {name:?}"
                    )));
                }
                let state = InterpreterPtr(ffi::PyInterpreterState_Get());
                ffi::PyThreadState_Swap(main_state);
                (state, thread_state)
            };
            THREAD_STATES.with_borrow_mut(|states| {
                states.insert(state, ThreadStatePtr(thread_state));
            });
            Ok(state)
        })
        .and_then(|state| {
            let interpreter = Self {
                state,
                name: name.to_owned(),
            };
            interpreter.enter(|| {
                Python::attach(|py| -> PyResult<()> {
                    let site = py.import("site")?;
                    for dir in python_path {
                        site.call_method1("addsitedir", (crate::path_str(dir),))?;
                    }
                    Ok(())
                })
                .map_err(|err| EngineError::Interpreter(err.to_string()))
                .and_then(|()| crate::redirect_std_streams(log))
            })?;
            Ok(interpreter)
        })
    }

    /// The name it was created with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on the calling thread inside this interpreter: every engine call `f` makes (loading an app,
    /// serving a request) runs there. The calling thread must not be attached to Python.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        crate::interp::keep_thread_state();
        let thread_state = self.thread_state();
        let mut f = Some(f);
        let mut result = None;
        let mut job = || {
            if let Some(f) = f.take() {
                result = Some(f());
            }
        };
        let job: &mut dyn FnMut() = &mut job;
        // SAFETY: the thread is not attached (our contract), so it takes the GIL with its own state in this
        // interpreter. The job pointer is only used by `run_entered`, called synchronously below while `job`
        // is alive on this stack; the lifetime is erased for the thread-local and restored before it ends.
        // The trampoline is a builtin function object made in this interpreter and released before the GIL.
        let called = unsafe {
            ffi::PyEval_RestoreThread(thread_state.0);
            let erased: *mut (dyn FnMut() + 'static) = std::mem::transmute(job);
            let previous = ENTERED.replace(Some(erased));
            let py = Python::assume_attached();
            let called = match pyo3::wrap_pyfunction!(run_entered, py) {
                Ok(function) => {
                    let out = ffi::PyObject_CallNoArgs(function.as_ptr());
                    if out.is_null() {
                        ffi::PyErr_Print();
                        false
                    } else {
                        ffi::Py_DecRef(out);
                        true
                    }
                }
                Err(err) => {
                    err.restore(py);
                    ffi::PyErr_Print();
                    false
                }
            };
            ENTERED.set(previous);
            ffi::PyEval_SaveThread();
            called
        };
        match result {
            Some(result) if called => result,
            _ => panic!(
                "running inside the sub-interpreter {:?} failed (see the error log)",
                self.name
            ),
        }
    }

    /// This thread's state in the interpreter, made now if it has none yet.
    fn thread_state(&self) -> ThreadStatePtr {
        THREAD_STATES.with_borrow_mut(|states| {
            *states.entry(self.state).or_insert_with(|| {
                // SAFETY: the interpreter is alive (never finalised); PyThreadState_New may be called without
                // the GIL and does not make the new state current.
                ThreadStatePtr(unsafe { ffi::PyThreadState_New(self.state.0) })
            })
        })
    }
}

/// Runs the closure [`SubInterpreter::enter`] put in `ENTERED`; PyO3's call machinery counts the thread as
/// attached while it runs.
#[pyfunction]
fn run_entered() {
    if let Some(job) = ENTERED.get() {
        // SAFETY: `enter` set this pointer to a closure alive on its stack for the duration of this call.
        unsafe { (*job)() };
    }
}
