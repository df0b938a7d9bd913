//! Requests: `WSGIScriptAlias` mapping in the translate-name phase, and the response handler that runs
//! the application for `wsgi-script` requests (and `WSGIHandlerScript` handlers).

use std::borrow::Cow;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rwsgi_engine::{HookValue, Request as EngineRequest};

use crate::config::{prefix_match, Location, Scoped, ScriptAlias};
use crate::environ::{self, Resolved};
use crate::ffi::{status, FileType, Level, Request};
use crate::io::{ApacheBody, ApacheResponse};
use crate::python::{self, AppKey};

const WSGI_SCRIPT: &str = "wsgi-script";

/// Maps a URL under a `WSGIScriptAlias` to its script: the script path (plus the rest of the URL, which
/// Apache's directory walk turns into PATH_INFO) becomes the filename, and the handler `wsgi-script`.
pub(crate) fn translate(request: &mut Request<'_>) -> i32 {
    let config = request.server().config();
    let uri = request.uri();
    if config.aliases.is_empty() || (!uri.is_empty() && !uri.starts_with(b"/")) {
        return status::DECLINED;
    }
    for alias in &config.aliases {
        let Some((matched, location_is_root, target)) = match_alias(alias, uri) else {
            continue;
        };
        let rest = if location_is_root {
            uri
        } else {
            &uri[matched..]
        };
        let mut filename = target.as_bytes().to_vec();
        filename.extend_from_slice(rest);
        request.set_filename(&filename);
        request.set_handler(c"wsgi-script");
        if let Some(mut notes) = request.notes() {
            notes.set("alias-forced-type", WSGI_SCRIPT.as_bytes());
            let options = &alias.options;
            if let Some(group) = &options.process_group {
                notes.set("mod_wsgi.process_group", group.as_bytes());
            }
            if let Some(group) = &options.application_group {
                notes.set("mod_wsgi.application_group", group.as_bytes());
            }
            if let Some(callable) = &options.callable_object {
                notes.set("mod_wsgi.callable_object", callable.as_bytes());
            }
            if let Some(pass) = options.pass_authorization {
                notes.set(
                    "mod_wsgi.pass_authorization",
                    if pass { b"1" } else { b"0" },
                );
            }
        }
        return status::OK;
    }
    status::DECLINED
}

/// How much of `uri` the alias matches, whether its location is `/`, and the script it names.
fn match_alias<'a>(alias: &'a ScriptAlias, uri: &[u8]) -> Option<(usize, bool, Cow<'a, str>)> {
    match &alias.location {
        Location::Prefix(location) => {
            let matched = prefix_match(uri, location)?;
            Some((matched, location == "/", Cow::Borrowed(&alias.target)))
        }
        Location::Pattern(pattern) => {
            let captures = pattern.captures(uri)?;
            let matched = captures.get(0)?.end();
            let mut target = Vec::new();
            captures.expand(alias.target.as_bytes(), &mut target);
            let target = String::from_utf8(target).ok()?;
            Some((matched, &uri[..matched] == b"/", Cow::Owned(target)))
        }
    }
}

/// What a request runs: a script's callable, in an application group.
#[derive(Clone)]
struct Target {
    script: PathBuf,
    callable: String,
    handler_script: String,
    application_group: Option<String>,
    process_group: Option<String>,
    pass_authorization: Option<bool>,
}

/// The response handler.
pub(crate) fn handle(request: &mut Request<'_>) -> i32 {
    let Some(handler) = request.handler() else {
        return status::DECLINED;
    };
    let config = request.server().config();
    let mut settings = request.dir_config().scoped.clone();
    let target = if handler == WSGI_SCRIPT || handler == "application/x-httpd-wsgi" {
        match script_target(request, &settings) {
            Ok(target) => target,
            Err(code) => return code,
        }
    } else if let Some(script) = settings.handler_scripts.iter().find(|h| h.name == handler) {
        Target {
            script: script.script.clone(),
            callable: "handle_request".to_owned(),
            handler_script: script.script.display().to_string(),
            application_group: script.options.application_group.clone(),
            process_group: script.options.process_group.clone(),
            pass_authorization: script.options.pass_authorization,
        }
    } else {
        return status::DECLINED;
    };
    if let Some(group) = &target.application_group {
        settings.application_group = Some(group.clone());
    }
    if let Some(group) = &target.process_group {
        settings.process_group = Some(group.clone());
    }
    if let Some(pass) = target.pass_authorization {
        settings.pass_authorization = Some(pass);
    }
    if request.rejects_path_info() {
        request.log(Level::Error, "AcceptPathInfo off disallows user's path.");
        return status::NOT_FOUND;
    }
    if let Err(code) = check_body_headers(request, &settings) {
        return code;
    }
    if body_over_limit(request) {
        request.discard_body();
        return status::OK;
    }
    run(
        request,
        &settings,
        &target,
        config.python.restrict_embedded.unwrap_or(false),
    )
}

/// The script of a `wsgi-script` request, checked as mod_wsgi checks it.
fn script_target(request: &Request<'_>, settings: &Scoped) -> Result<Target, i32> {
    let notes = request.notes();
    let note = |key: &str| {
        notes
            .as_ref()
            .and_then(|n| n.get(key))
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    let aliased = note("alias-forced-type").is_some_and(|t| t.eq_ignore_ascii_case(WSGI_SCRIPT));
    if !aliased && !request.exec_cgi_allowed() {
        request.log(Level::Error, "Options ExecCGI is off in this directory.");
        return Err(status::FORBIDDEN);
    }
    match request.file_type() {
        None => {
            request.log(
                Level::Error,
                "Target WSGI script not found or unable to stat.",
            );
            return Err(status::NOT_FOUND);
        }
        Some(FileType::Directory) => {
            request.log(
                Level::Error,
                "Attempt to invoke directory as WSGI application.",
            );
            return Err(status::FORBIDDEN);
        }
        Some(FileType::File) => {}
    }
    let script = PathBuf::from(std::ffi::OsStr::from_bytes(
        request.filename().unwrap_or(b""),
    ));
    let (callable, application_group, process_group, pass_authorization) = if aliased {
        (
            note("mod_wsgi.callable_object").map(str::to_owned),
            note("mod_wsgi.application_group").map(str::to_owned),
            note("mod_wsgi.process_group").map(str::to_owned),
            note("mod_wsgi.pass_authorization").map(|v| v == "1"),
        )
    } else {
        (None, None, None, None)
    };
    Ok(Target {
        script,
        callable: callable
            .or_else(|| settings.callable_object.clone())
            .unwrap_or_else(|| "application".to_owned()),
        handler_script: String::new(),
        application_group,
        process_group,
        pass_authorization,
    })
}

/// Transfer-Encoding and Content-Length as mod_wsgi accepts them.
fn check_body_headers(request: &Request<'_>, settings: &Scoped) -> Result<(), i32> {
    let Some(headers) = request.headers_in() else {
        return Ok(());
    };
    let length = headers.get("Content-Length");
    if let Some(encoding) = headers.get("Transfer-Encoding") {
        if !encoding.eq_ignore_ascii_case(b"chunked") {
            request.log(
                Level::Error,
                &format!(
                    "Unexpected value for Transfer-Encoding of '{}' supplied. Only 'chunked' supported.",
                    String::from_utf8_lossy(encoding)
                ),
            );
            return Err(status::NOT_IMPLEMENTED);
        }
        if !settings.chunked_request.unwrap_or(false) {
            request.log(
                Level::Error,
                "Request requires chunked transfer encoding, but support for chunked transfer \
                 encoding has not been enabled.",
            );
            return Err(status::LENGTH_REQUIRED);
        }
        if length.is_some() {
            request.log(
                Level::Error,
                "Unexpected Content-Length header supplied where Transfer-Encoding was specified \
                 as 'chunked'.",
            );
            return Err(status::BAD_REQUEST);
        }
    }
    if let Some(length) = length {
        if content_length(length).is_none() {
            request.log(
                Level::Error,
                &format!(
                    "Invalid Content-Length header value of '{}' was supplied.",
                    String::from_utf8_lossy(length)
                ),
            );
            return Err(status::BAD_REQUEST);
        }
    }
    Ok(())
}

fn content_length(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A Content-Length past `LimitRequestBody`: Apache answers 413 once the body is discarded.
fn body_over_limit(request: &Request<'_>) -> bool {
    let limit = request.body_limit();
    let length = request
        .headers_in()
        .and_then(|h| h.get("Content-Length"))
        .and_then(content_length);
    limit > 0 && length.is_some_and(|length| length > limit)
}

/// `WSGIDispatchScript`: its `process_group`, `application_group` and `callable_object` functions, each
/// optional, may override the request's groups and callable (None leaves them be).
fn dispatch(
    request: &mut Request<'_>,
    settings: &mut Scoped,
    callable: &mut String,
) -> Result<(), i32> {
    let Some(script) = settings.dispatch_script.clone() else {
        return Ok(());
    };
    let mut ask = |function: &str| -> Result<Option<String>, i32> {
        match crate::auth::call_optional(request, &script, function, &[]) {
            Err(()) | Ok(Some(HookValue::None)) => Ok(None),
            Ok(Some(HookValue::Text(value))) => Ok(Some(value)),
            Ok(Some(_)) => {
                request.log(
                    Level::Error,
                    &format!(
                        "Result returned from '{function}' in dispatch script '{}' must be a string or None.",
                        script.script.display()
                    ),
                );
                Err(status::INTERNAL_SERVER_ERROR)
            }
            Ok(None) => Err(status::INTERNAL_SERVER_ERROR),
        }
    };
    if let Some(group) = ask("process_group")? {
        settings.process_group = Some(if group == "%{GLOBAL}" {
            String::new()
        } else {
            group
        });
    }
    if let Some(group) = ask("application_group")? {
        settings.application_group = Some(if group == "%{GLOBAL}" {
            String::new()
        } else {
            group
        });
    }
    if let Some(name) = ask("callable_object")? {
        *callable = name;
    }
    Ok(())
}

fn run(
    request: &mut Request<'_>,
    settings: &Scoped,
    target: &Target,
    restrict_embedded: bool,
) -> i32 {
    let mut settings = settings.clone();
    let mut callable = target.callable.clone();
    if let Err(code) = dispatch(request, &mut settings, &mut callable) {
        return code;
    }
    let settings = &settings;
    let target = &Target {
        callable,
        ..target.clone()
    };
    let application_group = group_for(request, settings.application_group.as_deref(), true);
    let process_group = group_for(request, settings.process_group.as_deref(), false);
    let daemon = match daemon_for(request, settings, &process_group, restrict_embedded) {
        Ok(daemon) => daemon,
        Err(code) => return code,
    };
    let vars = environ::build(
        request,
        settings,
        &Resolved {
            process_group: &process_group,
            application_group: &application_group,
            callable_object: &target.callable,
            handler_script: &target.handler_script,
        },
    );
    let error_override = settings
        .error_override
        .unwrap_or(false)
        .then(|| std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0)));
    if let Some(plan) = daemon {
        let mut vars = vars;
        vars.set(
            crate::daemon::process::SCRIPT_KEY,
            target.script.as_os_str().as_encoded_bytes(),
        );
        vars.set(crate::daemon::origin::TOKEN_KEY, plan.secret.to_hex());
        return crate::daemon::client::forward(request, &plan, &vars, error_override);
    }
    let key = AppKey {
        script: target.script.clone(),
        application_group,
        callable: target.callable.clone(),
        script_reloading: settings.script_reloading.unwrap_or(true),
    };
    let app = match python::application(&key, &process_group) {
        Ok(app) => app,
        Err(err) => {
            request.log(Level::Error, &err.to_string());
            return status::INTERNAL_SERVER_ERROR;
        }
    };
    let id = request.log_id().map(str::to_owned);
    let lease = request.lease();
    match lease.setup_body() {
        Ok(true) => {}
        _ => {
            lease.revoke();
            return status::BAD_REQUEST;
        }
    }
    let outcome = python::serve(
        &app,
        EngineRequest::new(
            vars,
            Box::new(ApacheBody::new(std::sync::Arc::clone(&lease))),
            Box::new(ApacheResponse::new(
                std::sync::Arc::clone(&lease),
                error_override.clone(),
            )),
            id,
        ),
    );
    lease.revoke();
    if let Some(status) = error_override {
        let status = status.load(std::sync::atomic::Ordering::Acquire);
        if status != 0 {
            // Apache makes the error page (ErrorDocument), as for any other handler's error.
            return i32::from(status);
        }
    }
    if outcome.status.is_none() && !outcome.client_gone {
        return status::INTERNAL_SERVER_ERROR;
    }
    status::OK
}

/// The daemon group a request goes to (`None`: it runs here, embedded), or the error status mod_wsgi
/// answers: an unknown group, one `WSGIRestrictProcess` forbids, or embedded mode turned off.
fn daemon_for(
    request: &Request<'_>,
    settings: &Scoped,
    process_group: &str,
    restrict_embedded: bool,
) -> Result<Option<std::sync::Arc<crate::daemon::GroupPlan>>, i32> {
    if let Some(allowed) = &settings.restrict_process {
        if !allowed.iter().any(|g| g == process_group) {
            request.log(
                Level::Error,
                &format!(
                    "mod_wsgi (pid={}): Daemon process called '{process_group}' cannot be accessed by \
                     this WSGI application",
                    std::process::id()
                ),
            );
            return Err(status::INTERNAL_SERVER_ERROR);
        }
    }
    if process_group.is_empty() {
        if restrict_embedded {
            request.log(
                Level::Error,
                "Embedded mode of mod_wsgi disabled by runtime configuration.",
            );
            return Err(status::INTERNAL_SERVER_ERROR);
        }
        return Ok(None);
    }
    match crate::daemon::find(process_group) {
        Some(plan) => {
            admit_host(request, &plan)?;
            admit_script(request, &plan)?;
            Ok(Some(plan))
        }
        None => {
            request.log(
                Level::Error,
                &format!(
                    "mod_wsgi (pid={}): No WSGI daemon process called '{process_group}' has been \
                     configured",
                    std::process::id()
                ),
            );
            Err(status::INTERNAL_SERVER_ERROR)
        }
    }
}

/// Refuses (500, as mod_wsgi) a request to a virtual host that may not use the group: one declared inside
/// another `<VirtualHost>` with a different `ServerName`.
fn admit_host(request: &Request<'_>, plan: &crate::daemon::GroupPlan) -> Result<(), i32> {
    let Some(scope) = &plan.group.virtual_host else {
        return Ok(());
    };
    let server = request.server();
    if scope.admits(server.config_id(), server.hostname()) {
        return Ok(());
    }
    request.log(
        Level::Error,
        &format!(
            "mod_wsgi (pid={}): Daemon process called '{}' cannot be accessed by this WSGI application.",
            std::process::id(),
            plan.group.name
        ),
    );
    Err(status::INTERNAL_SERVER_ERROR)
}

/// Refuses (403, as mod_wsgi) a script that the group's `script-user` or `script-group` does not own.
fn admit_script(request: &Request<'_>, plan: &crate::daemon::GroupPlan) -> Result<(), i32> {
    let Some(required) = plan.group.script_owner() else {
        return Ok(());
    };
    let script = std::path::Path::new(std::ffi::OsStr::from_bytes(
        request.filename().unwrap_or(b""),
    ));
    crate::daemon::script_owner::check(script, required).map_err(|refusal| {
        request.log(Level::Error, &refusal);
        status::FORBIDDEN
    })
}

/// The application group's name as mod_wsgi gives it: `%{GLOBAL}` is the empty name; `%{RESOURCE}` is
/// `host[:port]|SCRIPT_NAME`; `%{SERVER}`, `%{HOST}` and `%{ENV:var}` as documented. Unset, it is
/// `%{RESOURCE}` for applications and the main interpreter for access and authentication scripts.
pub(crate) fn group_for(
    request: &Request<'_>,
    configured: Option<&str>,
    default_resource: bool,
) -> String {
    let server_host = request.server().hostname().to_owned();
    let port = request.server_facts().port;
    let with_port = |host: &str| {
        if port == 80 || port == 443 {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        }
    };
    let resource = || format!("{}|{}", with_port(&server_host), script_name(request));
    let Some(value) = configured else {
        return if default_resource {
            resource()
        } else {
            String::new()
        };
    };
    match value {
        "" => String::new(),
        "%{RESOURCE}" => resource(),
        "%{SERVER}" => with_port(&server_host),
        "%{HOST}" => with_port(
            request
                .hostname()
                .filter(|h| !h.is_empty())
                .unwrap_or(&server_host),
        ),
        other => match other
            .strip_prefix("%{ENV:")
            .and_then(|rest| rest.strip_suffix('}'))
        {
            Some(name) => env_value(request, name).unwrap_or_else(|| other.to_owned()),
            None => other.to_owned(),
        },
    }
}

/// A variable for `%{ENV:name}`: request notes, then the request's environment, then the process's.
fn env_value(request: &Request<'_>, name: &str) -> Option<String> {
    let from_table = |table: Option<crate::ffi::Table<'_>>| {
        table.and_then(|t| t.get(name).map(|v| String::from_utf8_lossy(v).into_owned()))
    };
    from_table(request.notes())
        .or_else(|| from_table(request.subprocess_env()))
        .or_else(|| std::env::var(name).ok())
}

/// SCRIPT_NAME as mod_wsgi computes it for group names (runs of `/` collapsed, no trailing `/`).
fn script_name(request: &Request<'_>) -> String {
    let uri = request.uri();
    let path_info = request.path_info();
    let script = String::from_utf8_lossy(if path_info.is_empty() {
        uri
    } else {
        &uri[..environ::path_info_start(uri, path_info)]
    })
    .into_owned();
    let mut collapsed = String::with_capacity(script.len());
    for c in script.chars() {
        if c == '/' && collapsed.ends_with('/') {
            continue;
        }
        collapsed.push(c);
    }
    while collapsed.ends_with('/') {
        collapsed.pop();
    }
    collapsed
}
