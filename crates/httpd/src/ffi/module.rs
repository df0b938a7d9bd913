//! The `wsgi_module` record Apache looks up, the directive table, and the callbacks Apache makes: config
//! creation and merging, directives, and the hooks. Each callback turns its raw arguments into the safe
//! handles of [`super`] and hands over to safe code; a panic there becomes a 500 (or a config error), never
//! an unwind into Apache.

use std::cell::UnsafeCell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::bindings as sys;
use super::{Request, Server};
use crate::config::{DirConfig, ServerConfig};
use crate::directives::{Directive, ALL};

/// A static that Apache mutates (it fills in the module's index and list links).
#[repr(transparent)]
pub(crate) struct Shared<T>(UnsafeCell<T>);

// SAFETY: Apache writes these records only while it loads modules and reads the config, single-threaded,
// before any request thread exists; afterwards they are only read.
unsafe impl<T> Sync for Shared<T> {}

const COMMAND_COUNT: usize = ALL.len() + 1;

/// Apache's view of [`ALL`]: every directive goes to [`directive`] with its index as `cmd_data`, and its
/// arguments unsplit, to be split by Apache's own rules (quotes, escapes) in [`split_args`].
static COMMANDS: Shared<[sys::command_rec; COMMAND_COUNT]> = Shared(UnsafeCell::new(commands()));

const fn commands() -> [sys::command_rec; COMMAND_COUNT] {
    let mut table = [sys::command_rec {
        name: std::ptr::null(),
        func: sys::cmd_func { raw_args: None },
        cmd_data: std::ptr::null_mut(),
        req_override: 0,
        args_how: 0,
        errmsg: std::ptr::null(),
    }; COMMAND_COUNT];
    let mut i = 0;
    while i < ALL.len() {
        let d: &Directive = &ALL[i];
        table[i] = sys::command_rec {
            name: d.name.as_ptr(),
            func: sys::cmd_func {
                raw_args: Some(directive),
            },
            cmd_data: std::ptr::without_provenance_mut(i),
            req_override: d.context.overrides() as c_int,
            args_how: sys::cmd_how_RAW_ARGS,
            errmsg: d.help.as_ptr(),
        };
        i += 1;
    }
    table
}

/// The record `LoadModule wsgi_module …` finds (its name is the C module's, for `<IfModule mod_wsgi.c>`).
// Exported only from the module itself: the unit-test harness must not keep Apache's callbacks alive, as
// they need symbols that exist only inside httpd.
#[cfg_attr(not(test), no_mangle, used)]
#[allow(non_upper_case_globals)] // Apache looks it up by this name.
pub(crate) static wsgi_module: Shared<sys::module> = Shared(UnsafeCell::new(sys::module {
    version: sys::MODULE_MAGIC_NUMBER_MAJOR as c_int,
    minor_version: sys::MODULE_MAGIC_NUMBER_MINOR as c_int,
    module_index: -1,
    name: c"mod_wsgi.c".as_ptr(),
    dynamic_load_handle: std::ptr::null_mut(),
    next: std::ptr::null_mut(),
    magic: sys::MODULE_MAGIC_COOKIE as _,
    rewrite_args: None,
    create_dir_config: Some(create_dir_config),
    merge_dir_config: Some(merge_dir_config),
    create_server_config: Some(create_server_config),
    merge_server_config: Some(merge_server_config),
    cmds: COMMANDS.0.get().cast_const().cast(),
    register_hooks: Some(register_hooks),
    flags: 0,
}));

/// The module's index in Apache's per-module config vectors.
pub(crate) fn module_index() -> c_int {
    // SAFETY: the index is written by Apache before any callback runs, and only read afterwards.
    unsafe { (*wsgi_module.0.get()).module_index }
}

/// ap_get_module_config, a macro in C.
///
/// # Safety
/// `vector` is a live config vector Apache made (it has a slot for every loaded module).
unsafe fn module_config(vector: *mut sys::ap_conf_vector_t) -> *mut c_void {
    let index = usize::try_from(module_index()).unwrap_or(0);
    // SAFETY: config vectors are arrays of one pointer per module, indexed by module_index.
    unsafe { *vector.cast::<*mut c_void>().add(index) }
}

/// # Safety
/// `server` is live; its config vector holds this module's ServerConfig.
pub(super) unsafe fn server_config<'a>(server: *mut sys::server_rec) -> &'a ServerConfig {
    // SAFETY: create/merge_server_config put a ServerConfig in every server's slot; it lives in the
    // configuration pool, longer than any request or hook that asks.
    unsafe { &*module_config((*server).module_config).cast::<ServerConfig>() }
}

/// # Safety
/// `vector` is a request's live per-dir config vector.
pub(super) unsafe fn dir_config<'a>(vector: *mut sys::ap_conf_vector_t) -> &'a DirConfig {
    // SAFETY: create/merge_dir_config put a DirConfig in every per-dir slot; merged ones live in the
    // request pool, the others in the configuration pool.
    unsafe { &*module_config(vector).cast::<DirConfig>() }
}

/// Moves `value` into memory that `pool`'s destruction frees (running its Drop).
///
/// # Safety
/// `pool` is live.
unsafe fn pool_owned<T>(pool: *mut sys::apr_pool_t, value: T) -> *mut c_void {
    unsafe extern "C" fn drop_box<T>(data: *mut c_void) -> sys::apr_status_t {
        // SAFETY: `data` is the Box<T> leaked below, and the pool runs this cleanup once.
        drop(unsafe { Box::from_raw(data.cast::<T>()) });
        0
    }
    let raw = Box::into_raw(Box::new(value)).cast::<c_void>();
    // SAFETY: the pool is live; the cleanup frees exactly the box leaked here.
    unsafe {
        sys::apr_pool_cleanup_register(
            pool,
            raw,
            Some(drop_box::<T>),
            Some(sys::apr_pool_cleanup_null),
        );
    }
    raw
}

unsafe extern "C" fn create_dir_config(
    pool: *mut sys::apr_pool_t,
    _dir: *mut c_char,
) -> *mut c_void {
    // SAFETY: Apache passes a live pool.
    unsafe { pool_owned(pool, DirConfig::default()) }
}

unsafe extern "C" fn merge_dir_config(
    pool: *mut sys::apr_pool_t,
    base: *mut c_void,
    add: *mut c_void,
) -> *mut c_void {
    // SAFETY: both are DirConfigs this module made, live for the call.
    let (base, add) = unsafe { (&*base.cast::<DirConfig>(), &*add.cast::<DirConfig>()) };
    let merged = DirConfig::merge(base, add);
    // SAFETY: Apache passes a live pool.
    unsafe { pool_owned(pool, merged) }
}

unsafe extern "C" fn create_server_config(
    pool: *mut sys::apr_pool_t,
    _server: *mut sys::server_rec,
) -> *mut c_void {
    // SAFETY: Apache passes a live pool.
    unsafe { pool_owned(pool, ServerConfig::default()) }
}

unsafe extern "C" fn merge_server_config(
    pool: *mut sys::apr_pool_t,
    base: *mut c_void,
    add: *mut c_void,
) -> *mut c_void {
    // SAFETY: both are ServerConfigs this module made, live for the call.
    let (base, add) = unsafe { (&*base.cast::<ServerConfig>(), &*add.cast::<ServerConfig>()) };
    let merged = ServerConfig::merge(base, add);
    // SAFETY: Apache passes a live pool.
    unsafe { pool_owned(pool, merged) }
}

/// Apache's callback for every directive of [`ALL`].
unsafe extern "C" fn directive(
    cmd: *mut sys::cmd_parms,
    mconfig: *mut c_void,
    args: *const c_char,
) -> *const c_char {
    // SAFETY: Apache passes live cmd_parms; `info` is the directive's index (set in `commands`); the server's
    // config slot and `mconfig` hold this module's configs, which only this single-threaded config pass
    // mutates.
    let (definition, words, server, dir, pool) = unsafe {
        let cmd = &mut *cmd;
        let definition = &ALL[cmd.info as usize];
        let words = crate::words::split(&CStr::from_ptr(args).to_string_lossy());
        let server = &mut *module_config((*cmd.server).module_config).cast::<ServerConfig>();
        let dir = &mut *mconfig.cast::<DirConfig>();
        (definition, words, server, dir, cmd.pool)
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        crate::config::apply(definition, &words, server, dir)
    }));
    let message = match result {
        Ok(Ok(())) => return std::ptr::null(),
        Ok(Err(message)) => format!("{}: {message}", definition.name.to_string_lossy()),
        Err(_) => format!("{}: internal error", definition.name.to_string_lossy()),
    };
    // SAFETY: the pool is live; Apache reports the returned string with the file and line.
    unsafe { super::pool_str(pool, message.as_bytes()) }
}

/// The `wsgi` authentication provider (`AuthBasicProvider wsgi`, `AuthDigestProvider wsgi`).
static AUTHN_PROVIDER: Shared<sys::authn_provider> = Shared(UnsafeCell::new(sys::authn_provider {
    check_password: Some(check_password),
    get_realm_hash: Some(get_realm_hash),
}));

/// The `wsgi-group` authorization provider (`Require wsgi-group NAME…`).
static AUTHZ_PROVIDER: Shared<sys::authz_provider> = Shared(UnsafeCell::new(sys::authz_provider {
    check_authorization: Some(check_authorization),
    parse_require_line: None,
}));

unsafe extern "C" fn register_hooks(pool: *mut sys::apr_pool_t) {
    // SAFETY: the providers are 'static records Apache only reads; names and versions are C literals.
    unsafe {
        sys::ap_register_auth_provider(
            pool,
            c"authn".as_ptr(),
            c"wsgi".as_ptr(),
            c"0".as_ptr(),
            AUTHN_PROVIDER.0.get().cast(),
            sys::AP_AUTH_INTERNAL_PER_CONF as c_int,
        );
        sys::ap_register_auth_provider(
            pool,
            c"authz".as_ptr(),
            c"wsgi-group".as_ptr(),
            c"0".as_ptr(),
            AUTHZ_PROVIDER.0.get().cast(),
            sys::AP_AUTH_INTERNAL_PER_CONF as c_int,
        );
        sys::ap_hook_access_checker(
            Some(access_checker),
            std::ptr::null(),
            std::ptr::null(),
            sys::APR_HOOK_MIDDLE as c_int,
        );
    }
    // After mod_alias, so an `Alias /static/ …` beside `WSGIScriptAlias /` serves its files, and before
    // mod_userdir and mod_vhost_alias: the order mod_wsgi registers.
    static AFTER: Shared<[*const c_char; 2]> =
        Shared(UnsafeCell::new([c"mod_alias.c".as_ptr(), std::ptr::null()]));
    static BEFORE: Shared<[*const c_char; 3]> = Shared(UnsafeCell::new([
        c"mod_userdir.c".as_ptr(),
        c"mod_vhost_alias.c".as_ptr(),
        std::ptr::null(),
    ]));
    // SAFETY: registering hooks is what this callback is for; the functions and name lists are 'static.
    unsafe {
        sys::ap_hook_translate_name(
            Some(translate_name),
            AFTER.0.get().cast::<*const c_char>().cast_const(),
            BEFORE.0.get().cast::<*const c_char>().cast_const(),
            sys::APR_HOOK_MIDDLE as c_int,
        );
        sys::ap_hook_handler(
            Some(handler),
            std::ptr::null(),
            std::ptr::null(),
            sys::APR_HOOK_MIDDLE as c_int,
        );
        sys::ap_hook_post_config(
            Some(post_config),
            std::ptr::null(),
            std::ptr::null(),
            sys::APR_HOOK_MIDDLE as c_int,
        );
        sys::ap_hook_child_init(
            Some(child_init),
            std::ptr::null(),
            std::ptr::null(),
            sys::APR_HOOK_MIDDLE as c_int,
        );
    }
}

unsafe extern "C" fn translate_name(r: *mut sys::request_rec) -> c_int {
    // SAFETY: Apache passes the live request of this hook, on this thread.
    let Some(mut request) = (unsafe { Request::from_raw(r) }) else {
        return sys::DECLINED;
    };
    catch_unwind(AssertUnwindSafe(|| crate::handler::translate(&mut request)))
        .unwrap_or(sys::DECLINED)
}

unsafe extern "C" fn handler(r: *mut sys::request_rec) -> c_int {
    // SAFETY: as above.
    let Some(mut request) = (unsafe { Request::from_raw(r) }) else {
        return sys::DECLINED;
    };
    catch_unwind(AssertUnwindSafe(|| crate::handler::handle(&mut request)))
        .unwrap_or(sys::HTTP_INTERNAL_SERVER_ERROR as c_int)
}

unsafe extern "C" fn access_checker(r: *mut sys::request_rec) -> c_int {
    // SAFETY: Apache passes the live request of this hook, on this thread.
    let Some(mut request) = (unsafe { Request::from_raw(r) }) else {
        return sys::DECLINED;
    };
    catch_unwind(AssertUnwindSafe(|| crate::auth::allow_access(&mut request)))
        .unwrap_or(sys::HTTP_INTERNAL_SERVER_ERROR as c_int)
}

/// # Safety
/// `ptr` is null or a NUL-terminated string alive for the call.
unsafe fn bytes<'a>(ptr: *const c_char) -> &'a [u8] {
    // SAFETY: the caller's contract.
    unsafe { super::opt_bytes(ptr) }.unwrap_or(b"")
}

unsafe extern "C" fn check_password(
    r: *mut sys::request_rec,
    user: *const c_char,
    password: *const c_char,
) -> sys::authn_status {
    use crate::auth::Authn;
    // SAFETY: Apache passes the live request and NUL-terminated credentials for this call.
    let (Some(mut request), user, password) =
        (unsafe { (Request::from_raw(r), bytes(user), bytes(password)) })
    else {
        return sys::authn_status_AUTH_GENERAL_ERROR;
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        crate::auth::check_password(&mut request, user, password)
    }))
    .unwrap_or(Authn::Error);
    match outcome {
        Authn::Granted(renamed) => {
            if let Some(name) = renamed {
                request.set_user(&name);
            }
            sys::authn_status_AUTH_GRANTED
        }
        Authn::Denied => sys::authn_status_AUTH_DENIED,
        Authn::UserNotFound => sys::authn_status_AUTH_USER_NOT_FOUND,
        Authn::Found(_) | Authn::Error => sys::authn_status_AUTH_GENERAL_ERROR,
    }
}

unsafe extern "C" fn get_realm_hash(
    r: *mut sys::request_rec,
    user: *const c_char,
    realm: *const c_char,
    rethash: *mut *mut c_char,
) -> sys::authn_status {
    use crate::auth::Authn;
    // SAFETY: as for check_password.
    let (Some(mut request), user, realm) =
        (unsafe { (Request::from_raw(r), bytes(user), bytes(realm)) })
    else {
        return sys::authn_status_AUTH_GENERAL_ERROR;
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        crate::auth::realm_hash(&mut request, user, realm)
    }))
    .unwrap_or(Authn::Error);
    match outcome {
        Authn::Found(hash) => {
            // SAFETY: Apache gives a place for the hash, which it reads from the request pool.
            unsafe { *rethash = request.pool_copy(hash.as_bytes()) };
            sys::authn_status_AUTH_USER_FOUND
        }
        Authn::UserNotFound => sys::authn_status_AUTH_USER_NOT_FOUND,
        Authn::Denied => sys::authn_status_AUTH_DENIED,
        Authn::Granted(_) | Authn::Error => sys::authn_status_AUTH_GENERAL_ERROR,
    }
}

unsafe extern "C" fn check_authorization(
    r: *mut sys::request_rec,
    require_args: *const c_char,
    _parsed: *const c_void,
) -> sys::authz_status {
    use crate::auth::Authz;
    // SAFETY: Apache passes the live request and the Require line's arguments for this call.
    let (Some(mut request), args) = (unsafe { (Request::from_raw(r), bytes(require_args)) }) else {
        return sys::authz_status_AUTHZ_GENERAL_ERROR;
    };
    let args = String::from_utf8_lossy(args).into_owned();
    match catch_unwind(AssertUnwindSafe(|| {
        crate::auth::check_groups(&mut request, &args)
    }))
    .unwrap_or(Authz::Error)
    {
        Authz::Granted => sys::authz_status_AUTHZ_GRANTED,
        Authz::Denied => sys::authz_status_AUTHZ_DENIED,
        Authz::NoUser => sys::authz_status_AUTHZ_DENIED_NO_USER,
        Authz::Error => sys::authz_status_AUTHZ_GENERAL_ERROR,
    }
}

/// Adds `mod_wsgi/VERSION Python/X.Y` to the Server header and SERVER_SOFTWARE, as the C module does,
/// and starts the daemon process groups.
unsafe extern "C" fn post_config(
    pconf: *mut sys::apr_pool_t,
    _plog: *mut sys::apr_pool_t,
    _ptemp: *mut sys::apr_pool_t,
    server: *mut sys::server_rec,
) -> c_int {
    let (major, minor, micro) = rwsgi_engine::MOD_WSGI_API_VERSION;
    let component = format!(
        "mod_wsgi/{major}.{minor}.{micro} Python/{}",
        rwsgi_engine::interp::PYTHON_VERSION
    );
    for word in component.split(' ') {
        // SAFETY: the config pool is live; Apache keeps the pool copy made here.
        unsafe { sys::ap_add_version_component(pconf, super::pool_str(pconf, word.as_bytes())) };
    }
    // SAFETY: Apache's parent, in post_config, with its live pool and main server.
    let started = catch_unwind(AssertUnwindSafe(|| unsafe {
        super::daemons::start(pconf, server)
    }))
    .unwrap_or_else(|_| Err("mod_wsgi: starting the daemon processes failed".into()));
    if let Err(err) = started {
        super::log_server(None, super::Level::Error, &err);
        return sys::HTTP_INTERNAL_SERVER_ERROR as c_int;
    }
    sys::OK as c_int
}

unsafe extern "C" fn child_init(pool: *mut sys::apr_pool_t, server: *mut sys::server_rec) {
    unsafe extern "C" fn child_exit(_data: *mut c_void) -> sys::apr_status_t {
        let _ = catch_unwind(crate::python::child_exit);
        0
    }
    // SAFETY: Apache passes the child's live pool and the main server.
    let Some(server) = (unsafe { Server::from_raw(server) }) else {
        return;
    };
    let _ = catch_unwind(super::daemons::close_in_child);
    let _ = catch_unwind(AssertUnwindSafe(|| crate::python::child_init(&server)));
    // SAFETY: the child pool is live; its destruction (the child exiting) runs the cleanup once.
    unsafe {
        sys::apr_pool_cleanup_register(
            pool,
            std::ptr::null_mut(),
            Some(child_exit),
            Some(sys::apr_pool_cleanup_null),
        );
    }
}

/// Apache's directive contexts, as `req_override` bits.
pub(crate) mod overrides {
    use super::sys;
    pub(crate) const RSRC_CONF: u32 = sys::RSRC_CONF;
    pub(crate) const ACCESS_CONF: u32 = sys::ACCESS_CONF;
    pub(crate) const OR_FILEINFO: u32 = sys::OR_FILEINFO;
    pub(crate) const OR_AUTHCFG: u32 = sys::OR_AUTHCFG;
}
