//! The thin unsafe layer between Apache and the rest of the module.
//!
//! It owns the `wsgi_module` record Apache looks up ([`module`]), the hooks and directive callbacks Apache
//! calls, and safe handles over the few Apache objects the module touches: a request ([`Request`]), a
//! table ([`Table`]), a server ([`Server`]). Everything outside `ffi` is safe Rust that works through them;
//! nothing outside it sees a raw pointer.
//!
//! Lifetimes: a [`Request`] borrows its `request_rec` for the duration of one hook call, the only time
//! Apache guarantees it; the engine's I/O handles, which Python code may keep longer, go through
//! [`RequestLease`], which the handler revokes before it returns.

pub(crate) mod bindings;
mod daemons;
mod module;
pub(crate) mod scoreboard;

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Mutex;

use bindings as sys;

pub(crate) use module::{module_index, overrides};

/// Apache's version, `major.minor.patch`, from the headers the module was built with (as mod_wsgi's
/// `apache.version` reports it).
pub(crate) fn apache_version() -> String {
    format!(
        "{}.{}.{}",
        sys::AP_SERVER_MAJORVERSION_NUMBER,
        sys::AP_SERVER_MINORVERSION_NUMBER,
        sys::AP_SERVER_PATCHLEVEL_NUMBER
    )
}

/// HTTP status codes and Apache's hook answers, as handlers return them.
pub(crate) mod status {
    use super::bindings as sys;
    pub(crate) const OK: i32 = sys::OK as i32;
    pub(crate) const DECLINED: i32 = sys::DECLINED;
    pub(crate) const NOT_FOUND: i32 = sys::HTTP_NOT_FOUND as i32;
    pub(crate) const FORBIDDEN: i32 = sys::HTTP_FORBIDDEN as i32;
    pub(crate) const BAD_REQUEST: i32 = sys::HTTP_BAD_REQUEST as i32;
    pub(crate) const LENGTH_REQUIRED: i32 = sys::HTTP_LENGTH_REQUIRED as i32;
    pub(crate) const NOT_IMPLEMENTED: i32 = sys::HTTP_NOT_IMPLEMENTED as i32;
    pub(crate) const INTERNAL_SERVER_ERROR: i32 = sys::HTTP_INTERNAL_SERVER_ERROR as i32;
    pub(crate) const BAD_GATEWAY: i32 = sys::HTTP_BAD_GATEWAY as i32;
    pub(crate) const SERVICE_UNAVAILABLE: i32 = sys::HTTP_SERVICE_UNAVAILABLE as i32;
    pub(crate) const GATEWAY_TIME_OUT: i32 = sys::HTTP_GATEWAY_TIME_OUT as i32;
}

/// Log levels of Apache's error log.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Level {
    Alert,
    Error,
    Info,
}

impl Level {
    fn apache(self) -> c_int {
        (match self {
            Level::Alert => sys::APLOG_ALERT,
            Level::Error => sys::APLOG_ERR,
            Level::Info => sys::APLOG_INFO,
        }) as c_int
    }
}

/// A C string for Apache: interior NUL bytes (which no Apache string can hold) end it early.
fn c_string(text: &str) -> CString {
    let end = text.find('\0').unwrap_or(text.len());
    CString::new(&text[..end]).unwrap_or_default()
}

/// Reads a C string Apache owns, if it is set.
///
/// # Safety
/// `ptr` is null or a NUL-terminated string that outlives `'a`.
unsafe fn opt_str<'a>(ptr: *const c_char) -> Option<&'a str> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated and alive for 'a (the caller's contract).
    unsafe { CStr::from_ptr(ptr) }.to_str().ok()
}

/// Reads a C string Apache owns as bytes (request data need not be UTF-8).
///
/// # Safety
/// As for [`opt_str`].
unsafe fn opt_bytes<'a>(ptr: *const c_char) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: as above.
    Some(unsafe { CStr::from_ptr(ptr) }.to_bytes())
}

/// An APR pool's copy of `bytes`, NUL-terminated (interior NULs end it, as in any C string).
///
/// # Safety
/// `pool` is a live pool.
unsafe fn pool_str(pool: *mut sys::apr_pool_t, bytes: &[u8]) -> *mut c_char {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    // SAFETY: the pool is live (caller's contract); apr_pstrmemdup copies `end` bytes and adds a NUL.
    unsafe { sys::apr_pstrmemdup(pool, bytes.as_ptr().cast(), end) }
}

/// Writes one line to Apache's error log for `server` (the main server when `None`).
pub(crate) fn log_server(server: Option<&Server<'_>>, level: Level, message: &str) {
    let message = c_string(message);
    // SAFETY: Apache's main server once the configuration is read, null before; read, never written.
    let main = unsafe { sys::ap_server_conf }.cast_const();
    let server = server.map_or(main, |s| s.raw.as_ptr().cast_const());
    // SAFETY: the format is a literal "%s" with one NUL-terminated argument; a null server is allowed and
    // means stderr, before the log is open. The main server's log level applies to its messages.
    unsafe {
        sys::ap_log_error_(
            c"mod_wsgi".as_ptr(),
            0,
            module_index(),
            level.apache(),
            0,
            server,
            c"%s".as_ptr(),
            message.as_ptr(),
        );
    }
}

/// The MPM's limits: threads per child process and child processes at most (for `wsgi.multithread`,
/// `wsgi.multiprocess` and the `mod_wsgi` module's figures).
pub(crate) fn mpm_limits() -> (usize, usize) {
    let positive = |n: c_int| usize::try_from(n).unwrap_or(1).max(1);
    (
        positive(mpm_query(sys::AP_MPMQ_MAX_THREADS)),
        positive(mpm_query(sys::AP_MPMQ_MAX_DAEMONS)),
    )
}

/// One of the MPM's figures (`AP_MPMQ_*` codes that answer a number); 0 if it has none.
pub(crate) fn mpm_query(code: u32) -> c_int {
    let mut value: c_int = 0;
    // SAFETY: ap_mpm_query writes one int for these codes; the MPM is loaded once the config is read.
    unsafe { sys::ap_mpm_query(code as c_int, &mut value) };
    value
}

/// An Apache table (`apr_table_t`): ordered, case-insensitive keys, possibly repeated.
pub(crate) struct Table<'a> {
    raw: NonNull<sys::apr_table_t>,
    pool: *mut sys::apr_pool_t,
    _life: PhantomData<&'a sys::apr_table_t>,
}

impl<'a> Table<'a> {
    /// # Safety
    /// `raw` is a live table, `pool` a pool that lives at least as long, both for `'a`.
    unsafe fn new(raw: *mut sys::apr_table_t, pool: *mut sys::apr_pool_t) -> Option<Self> {
        Some(Self {
            raw: NonNull::new(raw)?,
            pool,
            _life: PhantomData,
        })
    }

    /// The first value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&'a [u8]> {
        let key = c_string(key);
        // SAFETY: the table is live for 'a; values it returns live in its pool for 'a as well.
        unsafe { opt_bytes(sys::apr_table_get(self.raw.as_ptr(), key.as_ptr())) }
    }

    /// Replaces every value of `key` with `value` (both copied into the table's pool).
    pub(crate) fn set(&mut self, key: &str, value: &[u8]) {
        // SAFETY: the table and pool are live; apr_table_setn keeps the pool copies made here.
        unsafe {
            let key = pool_str(self.pool, key.as_bytes());
            let value = pool_str(self.pool, value);
            sys::apr_table_setn(self.raw.as_ptr(), key, value);
        }
    }

    /// Removes every value of `key`.
    pub(crate) fn unset(&mut self, key: &str) {
        let key = c_string(key);
        // SAFETY: the table is live.
        unsafe { sys::apr_table_unset(self.raw.as_ptr(), key.as_ptr()) };
    }

    /// The entries in order; keys that are not UTF-8 are skipped (Apache makes none such).
    pub(crate) fn entries(&self) -> Vec<(&'a str, &'a [u8])> {
        // SAFETY: the table is live for 'a; its header array holds `nelts` entries whose strings live in
        // the table's pool (null keys and values are skipped).
        unsafe {
            let array = sys::apr_table_elts(self.raw.as_ptr());
            if array.is_null() {
                return Vec::new();
            }
            let array = &*array;
            let entries = std::slice::from_raw_parts(
                array.elts.cast::<sys::apr_table_entry_t>(),
                usize::try_from(array.nelts).unwrap_or(0),
            );
            entries
                .iter()
                .filter_map(|e| Some((opt_str(e.key)?, opt_bytes(e.val)?)))
                .collect()
        }
    }
}

/// A virtual host (or the main server).
#[derive(Clone, Copy)]
pub(crate) struct Server<'a> {
    raw: NonNull<sys::server_rec>,
    _life: PhantomData<&'a sys::server_rec>,
}

impl<'a> Server<'a> {
    /// # Safety
    /// `raw` is a live `server_rec` for `'a`.
    pub(crate) unsafe fn from_raw(raw: *mut sys::server_rec) -> Option<Self> {
        Some(Self {
            raw: NonNull::new(raw)?,
            _life: PhantomData,
        })
    }

    /// This module's configuration of the server.
    pub(crate) fn config(&self) -> &'a crate::config::ServerConfig {
        // SAFETY: the server is live; every server has this module's config slot, made by
        // `create_server_config` (or its merge), which lives in the configuration pool.
        unsafe { module::server_config(self.raw.as_ptr()) }
    }

    /// The next virtual host after this one (the main server is first).
    pub(crate) fn next(&self) -> Option<Server<'a>> {
        // SAFETY: the server list lives as long as the configuration, which outlives 'a.
        unsafe { Server::from_raw((*self.raw.as_ptr()).next) }
    }

    /// This server (the main one) and every virtual host after it with a module config of its own: a
    /// virtual host with none of this module's directives shares its parent's, and is left out, so
    /// what a config holds is counted or run once.
    pub(crate) fn with_own_configs(&self) -> Vec<Server<'a>> {
        let mut servers: Vec<Server<'a>> = Vec::new();
        let mut server = Some(*self);
        while let Some(current) = server {
            let config = current.config();
            if !servers.iter().any(|s| std::ptr::eq(s.config(), config)) {
                servers.push(current);
            }
            server = current.next();
        }
        servers
    }

    /// The address of this server's module config: a virtual host with directives of its own has a config
    /// of its own, one without shares the main server's. Compared, never followed.
    pub(crate) fn config_id(&self) -> usize {
        std::ptr::from_ref(self.config()) as usize
    }

    /// `ServerName` of this server.
    pub(crate) fn hostname(&self) -> &'a str {
        // SAFETY: the server is live for 'a.
        unsafe { opt_str((*self.raw.as_ptr()).server_hostname) }.unwrap_or("")
    }
}

/// The request being handled, for the duration of one hook call.
pub(crate) struct Request<'r> {
    raw: NonNull<sys::request_rec>,
    _life: PhantomData<&'r mut sys::request_rec>,
}

impl<'r> Request<'r> {
    /// # Safety
    /// `raw` is the live `request_rec` of the hook being run, used only on the hook's thread, for `'r`.
    pub(crate) unsafe fn from_raw(raw: *mut sys::request_rec) -> Option<Self> {
        Some(Self {
            raw: NonNull::new(raw)?,
            _life: PhantomData,
        })
    }

    fn rec(&self) -> &sys::request_rec {
        // SAFETY: live for 'r, and only this thread uses it during the hook.
        unsafe { self.raw.as_ref() }
    }

    fn pool(&self) -> *mut sys::apr_pool_t {
        self.rec().pool
    }

    fn table(&self, raw: *mut sys::apr_table_t) -> Option<Table<'r>> {
        // SAFETY: the request's tables live in its pool, for the request's whole life.
        unsafe { Table::new(raw, self.pool()) }
    }

    pub(crate) fn server(&self) -> Server<'r> {
        Server {
            // SAFETY: every request_rec has a live server.
            raw: unsafe { NonNull::new_unchecked(self.rec().server) },
            _life: PhantomData,
        }
    }

    /// This module's settings for the request's directory (merged by Apache).
    pub(crate) fn dir_config(&self) -> &'r crate::config::DirConfig {
        // SAFETY: per_dir_config is live for the request and holds this module's merged dir config.
        unsafe { module::dir_config(self.rec().per_dir_config) }
    }

    /// The decoded URI path, as bytes: `%E9` arrives as the byte 0xE9, which is no UTF-8.
    pub(crate) fn uri(&self) -> &'r [u8] {
        // SAFETY: strings of a request_rec live in its pool, for 'r.
        unsafe { opt_bytes(self.rec().uri) }.unwrap_or(b"")
    }

    pub(crate) fn handler(&self) -> Option<&'r str> {
        // SAFETY: as above.
        unsafe { opt_str(self.rec().handler) }
    }

    pub(crate) fn filename(&self) -> Option<&'r [u8]> {
        // SAFETY: as above.
        unsafe { opt_bytes(self.rec().filename) }
    }

    pub(crate) fn path_info(&self) -> &'r [u8] {
        // SAFETY: as above.
        unsafe { opt_bytes(self.rec().path_info) }.unwrap_or(b"")
    }

    pub(crate) fn method(&self) -> &'r str {
        // SAFETY: as above.
        unsafe { opt_str(self.rec().method) }.unwrap_or("GET")
    }

    pub(crate) fn is_get(&self) -> bool {
        self.rec().method_number == sys::M_GET as c_int
    }

    pub(crate) fn header_only(&self) -> bool {
        self.rec().header_only != 0
    }

    pub(crate) fn protocol(&self) -> &'r str {
        // SAFETY: as above.
        unsafe { opt_str(self.rec().protocol) }.unwrap_or("HTTP/1.0")
    }

    pub(crate) fn args(&self) -> Option<&'r [u8]> {
        // SAFETY: as above.
        unsafe { opt_bytes(self.rec().args) }
    }

    pub(crate) fn user(&self) -> Option<&'r [u8]> {
        // SAFETY: as above.
        unsafe { opt_bytes(self.rec().user) }
    }

    pub(crate) fn auth_type(&self) -> Option<&'r [u8]> {
        // SAFETY: as above.
        unsafe { opt_bytes(self.rec().ap_auth_type) }
    }

    pub(crate) fn hostname(&self) -> Option<&'r str> {
        // SAFETY: as above.
        unsafe { opt_str(self.rec().hostname) }
    }

    /// The id Apache's logs give the request (`%L`), made now if no module made it yet.
    pub(crate) fn log_id(&mut self) -> Option<&'r str> {
        // SAFETY: the request and its connection are live; ap_run_generate_log_id stores a pool string in
        // the field whose address it is given.
        unsafe {
            let rec = self.raw.as_ptr();
            if (*rec).log_id.is_null() {
                sys::ap_run_generate_log_id((*rec).connection, rec, &mut (*rec).log_id);
            }
            opt_str((*rec).log_id)
        }
    }

    /// The original request line's URI (before internal redirects), as mod_wsgi reports REQUEST_URI.
    pub(crate) fn original_uri(&self) -> &'r [u8] {
        let mut first = self.rec();
        while !first.prev.is_null() {
            // SAFETY: earlier requests of an internal redirect chain live as long as this one.
            first = unsafe { &*first.prev };
        }
        // SAFETY: the_request is the request line, in the request pool.
        let line = unsafe { opt_bytes(first.the_request) }.unwrap_or(b"");
        // "METHOD URI PROTOCOL": the URI is the second word.
        let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
        words.next();
        words
            .next()
            // SAFETY: as above.
            .unwrap_or_else(|| unsafe { opt_bytes(first.unparsed_uri) }.unwrap_or(b""))
    }

    /// When the request arrived, in microseconds since the epoch.
    pub(crate) fn request_time(&self) -> i64 {
        self.rec().request_time
    }

    pub(crate) fn headers_in(&self) -> Option<Table<'r>> {
        self.table(self.rec().headers_in)
    }

    pub(crate) fn subprocess_env(&self) -> Option<Table<'r>> {
        self.table(self.rec().subprocess_env)
    }

    pub(crate) fn notes(&self) -> Option<Table<'r>> {
        self.table(self.rec().notes)
    }

    pub(crate) fn set_filename(&mut self, filename: &[u8]) {
        let pool = self.pool();
        // SAFETY: the request is live and only this thread touches it; the copy lives in its pool.
        unsafe { (*self.raw.as_ptr()).filename = pool_str(pool, filename) };
    }

    /// Sets the authenticated user (`REMOTE_USER`).
    pub(crate) fn set_user(&mut self, user: &str) {
        let pool = self.pool();
        // SAFETY: the request is live and only this thread touches it; the copy lives in its pool.
        unsafe { (*self.raw.as_ptr()).user = pool_str(pool, user.as_bytes()) };
    }

    /// A copy of `bytes` in the request's pool, for Apache to keep.
    pub(super) fn pool_copy(&self, bytes: &[u8]) -> *mut c_char {
        // SAFETY: the request pool is live.
        unsafe { pool_str(self.pool(), bytes) }
    }

    /// Sets the request's handler name (a static string, as Apache keeps the pointer).
    pub(crate) fn set_handler(&mut self, handler: &'static CStr) {
        // SAFETY: as above; the string is static.
        unsafe { (*self.raw.as_ptr()).handler = handler.as_ptr() };
    }

    /// What `stat` found at the request's filename: `None` if nothing.
    pub(crate) fn file_type(&self) -> Option<FileType> {
        match self.rec().finfo.filetype {
            sys::apr_filetype_e_APR_NOFILE => None,
            sys::apr_filetype_e_APR_DIR => Some(FileType::Directory),
            _ => Some(FileType::File),
        }
    }

    /// Whether `Options ExecCGI` is on for the request's directory.
    pub(crate) fn exec_cgi_allowed(&self) -> bool {
        // SAFETY: the request is live.
        let options = unsafe { sys::ap_allow_options(self.raw.as_ptr()) };
        options & sys::OPT_EXECCGI as c_int != 0
    }

    /// `AcceptPathInfo Off` applies and the request has path info.
    pub(crate) fn rejects_path_info(&self) -> bool {
        self.rec().used_path_info == sys::AP_REQ_REJECT_PATH_INFO as c_int
            && !self.path_info().is_empty()
    }

    /// `LimitRequestBody` (0: no limit).
    pub(crate) fn body_limit(&self) -> u64 {
        // SAFETY: the request is live.
        let limit = unsafe { sys::ap_get_limit_req_body(self.raw.as_ptr()) };
        u64::try_from(limit).unwrap_or(0)
    }

    /// Reads and throws away the request body (as Apache does before an error response).
    pub(crate) fn discard_body(&mut self) {
        // SAFETY: the request is live.
        unsafe { sys::ap_discard_request_body(self.raw.as_ptr()) };
    }

    /// The values Apache's own CGI support computes, which mod_wsgi's environ takes as they are.
    pub(crate) fn server_facts(&self) -> ServerFacts<'r> {
        let rec = self.raw.as_ptr();
        // SAFETY: the request, its server and connection are live; every function below only reads them
        // and returns strings in the request pool or static ones.
        unsafe {
            let connection = &*(*rec).connection;
            let server = &*(*rec).server;
            let scheme = opt_str(sys::ap_run_http_scheme(rec)).unwrap_or("http");
            ServerFacts {
                banner: opt_bytes(sys::ap_get_server_banner()).unwrap_or(b""),
                name: opt_bytes(sys::ap_escape_html2(
                    (*rec).pool,
                    sys::ap_get_server_name_for_url(rec),
                    0,
                ))
                .unwrap_or(b""),
                port: sys::ap_get_server_port(rec),
                local_ip: opt_bytes(connection.local_ip).unwrap_or(b""),
                local_host: if connection.local_addr.is_null() {
                    b""
                } else {
                    opt_bytes((*connection.local_addr).hostname).unwrap_or(b"")
                },
                local_port: if connection.local_addr.is_null() {
                    0
                } else {
                    (*connection.local_addr).port
                },
                remote_ip: opt_bytes((*rec).useragent_ip).unwrap_or(b""),
                remote_port: if connection.client_addr.is_null() {
                    0
                } else {
                    (*connection.client_addr).port
                },
                document_root: opt_bytes(sys::ap_document_root(rec)).unwrap_or(b""),
                scheme,
                context_prefix: opt_bytes(sys::ap_context_prefix(rec)).unwrap_or(b""),
                context_document_root: opt_bytes(sys::ap_context_document_root(rec)).unwrap_or(b""),
                server_admin: opt_bytes(server.server_admin),
                connection_id: opt_str(connection.log_id),
            }
        }
    }

    /// Whether the connection is TLS (mod_ssl or another provider), as `ap_ssl_conn_is_ssl` says.
    pub(crate) fn is_https(&self) -> bool {
        // SAFETY: the connection is live for the request.
        unsafe { sys::ap_ssl_conn_is_ssl(self.rec().connection) != 0 }
    }

    /// Whether an output filter below the protocol level (one that may rewrite the body, like
    /// mod_deflate) is in the chain: then HEAD must run as GET for it to see the body (mod_wsgi's "Auto").
    pub(crate) fn has_content_filter(&self) -> bool {
        let filters = self.rec().output_filters;
        // SAFETY: the filter chain and its records live as long as the request.
        unsafe {
            !filters.is_null()
                && !(*filters).frec.is_null()
                && (*(*filters).frec).ftype < sys::ap_filter_type_AP_FTYPE_PROTOCOL
        }
    }

    /// Where the engine's I/O handles reach the request through, until [`RequestLease::revoke`].
    pub(crate) fn lease(&mut self) -> std::sync::Arc<RequestLease> {
        std::sync::Arc::new(RequestLease {
            raw: Mutex::new(self.raw.as_ptr()),
        })
    }

    /// Logs `message` against the request (Apache adds the client and the request's log id).
    pub(crate) fn log(&self, level: Level, message: &str) {
        let message = c_string(message);
        // SAFETY: "%s" with one NUL-terminated argument; the request is live.
        unsafe {
            sys::ap_log_rerror_(
                c"mod_wsgi".as_ptr(),
                0,
                module_index(),
                level.apache(),
                0,
                self.raw.as_ptr(),
                c"%s".as_ptr(),
                message.as_ptr(),
            );
        }
    }
}

/// What a request's filename turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileType {
    File,
    Directory,
}

/// Server and connection facts for the environ.
pub(crate) struct ServerFacts<'r> {
    pub(crate) banner: &'r [u8],
    pub(crate) name: &'r [u8],
    pub(crate) port: u16,
    pub(crate) local_ip: &'r [u8],
    /// The listener's host as the `Listen` directive names it.
    pub(crate) local_host: &'r [u8],
    pub(crate) local_port: u16,
    pub(crate) remote_ip: &'r [u8],
    pub(crate) remote_port: u16,
    pub(crate) document_root: &'r [u8],
    pub(crate) scheme: &'r str,
    pub(crate) context_prefix: &'r [u8],
    pub(crate) context_document_root: &'r [u8],
    pub(crate) server_admin: Option<&'r [u8]>,
    pub(crate) connection_id: Option<&'r str>,
}

/// The request as the engine's I/O handles reach it: from Python threads, possibly after the handler has
/// returned (an app may keep `wsgi.input` or `start_response`). Every use takes the lock, so Apache sees one
/// caller at a time, and finds the request gone once the handler has revoked the lease.
pub(crate) struct RequestLease {
    raw: Mutex<*mut sys::request_rec>,
}

// SAFETY: the pointer is only dereferenced under the mutex, and only while the handler that made the lease is
// still running (it revokes the lease before returning), so the request_rec is live and used by one thread
// at a time; Apache's request I/O functions do not depend on which thread calls them.
unsafe impl Send for RequestLease {}
// SAFETY: as above.
unsafe impl Sync for RequestLease {}

/// The request has finished; its I/O handles no longer reach it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestGone;

/// A response head as Apache takes it.
pub(crate) struct Head<'a> {
    pub(crate) status: u16,
    pub(crate) status_line: &'a str,
    pub(crate) headers: &'a [(String, Vec<u8>)],
}

impl RequestLease {
    fn with<T>(&self, f: impl FnOnce(*mut sys::request_rec) -> T) -> Result<T, RequestGone> {
        let raw = self.raw.lock().unwrap_or_else(|p| p.into_inner());
        if raw.is_null() {
            return Err(RequestGone);
        }
        Ok(f(*raw))
    }

    /// Ends the lease: later I/O finds the request gone. The handler calls this before returning.
    pub(crate) fn revoke(&self) {
        *self.raw.lock().unwrap_or_else(|p| p.into_inner()) = std::ptr::null_mut();
    }

    /// Prepares to read the body (dechunking a chunked one); false if Apache refused the request.
    pub(crate) fn setup_body(&self) -> Result<bool, RequestGone> {
        // SAFETY: the request is live under the lease; these calls only use it.
        self.with(|r| unsafe {
            sys::ap_setup_client_block(r, sys::REQUEST_CHUNKED_DECHUNK as c_int) == sys::OK as c_int
                && {
                    sys::ap_should_client_block(r);
                    true
                }
        })
    }

    /// Reads body bytes into `buf`: 0 at the end of the body, an error if reading failed.
    pub(crate) fn read_body(&self, buf: &mut [u8]) -> Result<std::io::Result<usize>, RequestGone> {
        // SAFETY: the request is live under the lease; `buf` is writable for its length.
        self.with(|r| unsafe {
            let n =
                sys::ap_get_client_block(r, buf.as_mut_ptr().cast(), buf.len() as sys::apr_size_t);
            usize::try_from(n).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "reading the request body failed",
                )
            })
        })
    }

    /// Sets the status and headers of the response (sent with its first body bytes).
    pub(crate) fn set_head(&self, head: &Head<'_>) -> Result<(), RequestGone> {
        // SAFETY: the request is live under the lease; strings are copied into its pool.
        self.with(|r| unsafe {
            let pool = (*r).pool;
            (*r).status = c_int::from(head.status);
            (*r).status_line = pool_str(pool, head.status_line.as_bytes());
            for (name, value) in head.headers {
                if name.eq_ignore_ascii_case("content-type") {
                    sys::ap_set_content_type(r, pool_str(pool, value));
                } else if name.eq_ignore_ascii_case("content-length") {
                    if let Some(length) = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.trim().parse::<sys::apr_off_t>().ok())
                    {
                        sys::ap_set_content_length(r, length);
                    }
                } else {
                    sys::apr_table_addn(
                        (*r).headers_out,
                        pool_str(pool, name.as_bytes()),
                        pool_str(pool, value),
                    );
                }
            }
        })
    }

    /// Writes body bytes; `flush` pushes them to the client now. Err(false) if the client is gone.
    pub(crate) fn write(&self, bytes: &[u8], flush: bool) -> Result<bool, RequestGone> {
        // SAFETY: the request is live under the lease; ap_rwrite copies from `bytes` or sends it at once.
        self.with(|r| unsafe {
            if (*(*r).connection).aborted != 0 {
                return false;
            }
            let len = c_int::try_from(bytes.len()).unwrap_or(c_int::MAX);
            let mut written = 0usize;
            while written < bytes.len() {
                let chunk = &bytes[written..];
                let n = sys::ap_rwrite(
                    chunk.as_ptr().cast(),
                    len.min(c_int::try_from(chunk.len()).unwrap_or(c_int::MAX)),
                    r,
                );
                if n < 0 {
                    return false;
                }
                written += usize::try_from(n).unwrap_or(0);
            }
            !(flush && sys::ap_rflush(r) < 0)
        })
    }

    /// Sends `len` bytes of the open file `fd` from `offset` (the file buckets may be sent after this call
    /// returns, so the descriptor is handed to the request pool, which closes it). Err(false) if gone.
    pub(crate) fn send_file(
        &self,
        fd: std::os::fd::OwnedFd,
        offset: u64,
        len: u64,
    ) -> Result<bool, RequestGone> {
        use std::os::fd::IntoRawFd;
        // SAFETY: the request is live under the lease. The descriptor becomes the request pool's: wrapped in
        // an apr_file_t of that pool and closed by a cleanup of that pool, which outlives every bucket.
        self.with(|r| unsafe {
            let pool = (*r).pool;
            let raw = Box::into_raw(Box::new(fd.into_raw_fd()));
            sys::apr_pool_cleanup_register(
                pool,
                raw.cast(),
                Some(close_fd_cleanup),
                Some(sys::apr_pool_cleanup_null),
            );
            let mut file: *mut sys::apr_file_t = std::ptr::null_mut();
            if sys::apr_os_file_put(&mut file, raw, sys::APR_FOPEN_READ as i32, pool) != 0 {
                return false;
            }
            let mut sent: sys::apr_size_t = 0;
            let offset = sys::apr_off_t::try_from(offset).unwrap_or(sys::apr_off_t::MAX);
            let len = sys::apr_size_t::try_from(len).unwrap_or(sys::apr_size_t::MAX);
            sys::ap_send_fd(file, r, offset, len, &mut sent) == 0
        })
    }

    /// Ends an incomplete response so the client can tell: no final chunk, and the connection closes.
    pub(crate) fn abort(&self) -> Result<(), RequestGone> {
        // SAFETY: the request is live under the lease; the brigade and bucket are made in its pool and
        // connection allocator and passed down the output filters, which take them.
        self.with(|r| unsafe {
            let connection = (*r).connection;
            (*connection).keepalive = sys::ap_conn_keepalive_e_AP_CONN_CLOSE;
            let alloc = (*connection).bucket_alloc;
            let brigade = sys::apr_brigade_create((*r).pool, alloc);
            let error = sys::ap_bucket_error_create(
                sys::HTTP_BAD_GATEWAY as c_int,
                std::ptr::null(),
                (*r).pool,
                alloc,
            );
            brigade_insert_tail(brigade, error);
            sys::ap_pass_brigade((*r).output_filters, brigade);
        })
    }
}

/// APR_BRIGADE_INSERT_TAIL, a macro in C.
///
/// # Safety
/// `brigade` and `bucket` are live, and the bucket is in no brigade.
unsafe fn brigade_insert_tail(brigade: *mut sys::apr_bucket_brigade, bucket: *mut sys::apr_bucket) {
    // SAFETY: the ring macros splice the bucket before the brigade's sentinel; all pointers are live.
    unsafe {
        let sentinel = std::ptr::addr_of_mut!((*brigade).list)
            .cast::<u8>()
            .sub(std::mem::offset_of!(sys::apr_bucket, link))
            .cast::<sys::apr_bucket>();
        (*bucket).link.next = sentinel;
        (*bucket).link.prev = (*sentinel).link.prev;
        (*(*sentinel).link.prev).link.next = bucket;
        (*sentinel).link.prev = bucket;
    }
}

/// Closes a descriptor handed to a request pool by [`RequestLease::send_file`].
unsafe extern "C" fn close_fd_cleanup(data: *mut c_void) -> sys::apr_status_t {
    // SAFETY: `data` is the Box<RawFd> leaked by send_file, and this cleanup runs once.
    let fd = unsafe { Box::from_raw(data.cast::<std::os::fd::RawFd>()) };
    // SAFETY: the descriptor is owned by this cleanup alone.
    drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(*fd) });
    0
}
