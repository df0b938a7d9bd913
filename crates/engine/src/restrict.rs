//! mod_wsgi's restrictions on what an application may touch in a host that owns the process:
//! `WSGIRestrictStdin`, `WSGIRestrictStdout` (a `mod_wsgi.Restricted` stream refuses every attribute with
//! `OSError("sys.stdout access restricted by mod_wsgi")`) and `WSGIRestrictSignal` (`signal.signal()`
//! installs nothing: the attempt is logged with the caller's stack, and the current handler is returned,
//! so the app carries on).

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::EngineError;

/// Which restrictions apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restrictions {
    /// Refuse `sys.stdin`.
    pub stdin: bool,
    /// Refuse `sys.stdout`.
    pub stdout: bool,
    /// Ignore `signal.signal()`.
    pub signal: bool,
}

const INSTALL: &str = r#"
import signal, sys, traceback

class Restricted:
    # As mod_wsgi's: any use of any attribute of the stream raises.
    __slots__ = ('_mod_wsgi_name',)
    def __init__(self, name):
        object.__setattr__(self, '_mod_wsgi_name', name)
    def __getattribute__(self, attr):
        if attr.startswith('__') and attr.endswith('__'):
            return object.__getattribute__(self, attr)
        name = object.__getattribute__(self, '_mod_wsgi_name')
        raise OSError('%s access restricted by mod_wsgi' % name)
    def __repr__(self):
        return '<mod_wsgi.Restricted %s>' % object.__getattribute__(self, '_mod_wsgi_name')

Restricted.__module__ = 'mod_wsgi'

if restrict_stdin:
    sys.stdin = Restricted('sys.stdin')
if restrict_stdout:
    sys.stdout = Restricted('sys.stdout')
if restrict_signal and not getattr(signal.signal, '_mod_wsgi_restricted', False):
    def restricted_signal(signalnum, handler):
        sys.stderr.write('Callback registration for signal %d ignored.\n' % signalnum)
        sys.stderr.write(''.join(traceback.format_stack()[:-1]))
        sys.stderr.flush()
        return signal.getsignal(signalnum)
    restricted_signal._mod_wsgi_restricted = True
    signal.signal = restricted_signal
"#;

/// Applies `restrictions` in the interpreter current on this thread.
pub fn apply(restrictions: &Restrictions) -> Result<(), EngineError> {
    Python::attach(|py| -> PyResult<()> {
        let globals = PyDict::new(py);
        globals.set_item("restrict_stdin", restrictions.stdin)?;
        globals.set_item("restrict_stdout", restrictions.stdout)?;
        globals.set_item("restrict_signal", restrictions.signal)?;
        let code = std::ffi::CString::new(INSTALL)?;
        py.run(&code, Some(&globals), None)
    })
    .map_err(|err| EngineError::Interpreter(format!("applying WSGIRestrict* settings: {err}")))
}
