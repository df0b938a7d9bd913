//! The `mod_wsgi` Python module that apps import, in the form both hosts share.
//!
//! It is registered in `sys.modules` before the app loads, so `import mod_wsgi` works under `rwsgi serve`
//! as it does under Apache.

use pyo3::prelude::*;
use pyo3::types::{PyModule, PyTuple};

use crate::EngineOptions;

/// The mod_wsgi API level these names follow.
pub const MOD_WSGI_API_VERSION: (u8, u8, u8) = (6, 0, 0);

pub(crate) fn install(py: Python<'_>, options: &EngineOptions) -> PyResult<()> {
    let module = PyModule::new(py, "mod_wsgi")?;
    module.setattr(
        "version",
        PyTuple::new(
            py,
            [
                MOD_WSGI_API_VERSION.0,
                MOD_WSGI_API_VERSION.1,
                MOD_WSGI_API_VERSION.2,
            ],
        )?,
    )?;
    module.setattr("rwsgi_version", env!("CARGO_PKG_VERSION"))?;
    module.setattr("process_group", &options.process_group)?;
    module.setattr("application_group", &options.application_group)?;
    module.setattr("maximum_processes", options.processes)?;
    module.setattr("threads_per_process", options.threads)?;
    module.add_class::<crate::file_wrapper::FileWrapper>()?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("mod_wsgi", module)?;
    Ok(())
}
