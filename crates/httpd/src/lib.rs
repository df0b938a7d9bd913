//! `mod_wsgi.so`: the Apache httpd host of the rwsgi engine, a drop-in replacement for the C mod_wsgi.
//!
//! Apache loads this library with `LoadModule wsgi_module …/mod_wsgi.so` and finds the `wsgi_module` record
//! in it. Everything Apache calls enters through [`ffi`], the only module with unsafe code: it turns raw
//! `request_rec`s, `cmd_parms` and pools into safe handles and calls into the safe modules below.
//!
//! - [`words`]: splitting a directive's arguments (Apache's quoting, mod_wsgi's `name='value'`).
//! - [`directives`]: mod_wsgi's directives, their contexts and argument rules.
//! - [`config`]: the resolved per-server and per-directory settings, and Apache's merging of them.
//! - [`handler`]: `WSGIScriptAlias` URL mapping, and the response handler that runs a request.
//! - [`environ`]: the WSGI environ, key for key as mod_wsgi builds it from Apache's request.
//! - [`auth`]: access, authentication and group scripts (`WSGIAccessScript`, `WSGIAuthUserScript`, …).
//! - [`io`]: the engine's body reader and response sink over Apache's filters.
//! - [`python`]: the interpreter of each Apache child or daemon process and its loaded applications.
//! - [`daemon`]: daemon mode: `WSGIDaemonProcess` groups, their processes, and handing requests to them.
// The unit-test harness has no Apache to call the module's entry points, so most code is unreachable there.
#![cfg_attr(test, allow(dead_code))]

mod auth;
mod config;
mod daemon;
mod directives;
mod environ;
mod ffi;
mod handler;
mod io;
mod python;
mod words;
