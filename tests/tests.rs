//! End-to-end tests: the real `rwsgi` binary, real Python apps from tests/apps, real sockets.

mod support;

mod access_log;
mod cli;
mod environ;
mod frameworks;
mod httpd;
mod httpd_daemon;
mod httpd_parity;
mod inline;
mod input;
mod mod_wsgi_api;
mod response;
mod supervisor;
mod threads;
mod timeouts;
mod unix_socket;
