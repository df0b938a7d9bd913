//! Access control and authentication by Python scripts, as mod_wsgi provides them:
//! - `WSGIAccessScript`: `allow_access(environ, host)` in Apache's access phase (True: allowed, False:
//!   403, None: no opinion);
//! - `WSGIAuthUserScript`, the `wsgi` authentication provider: `check_password(environ, user, password)`
//!   for Basic (True, False, None for an unknown user, or a str: allowed, as that user name) and
//!   `get_realm_hash(environ, user, realm)` for Digest (the hash, or None);
//! - `WSGIAuthGroupScript` with `Require wsgi-group NAME…`: `groups_for_user(environ, user)`.
//!
//! Each script runs in its application group (the main interpreter unless `application-group=` says
//! otherwise, mod_wsgi's default for these), with an environ built as for a request.

use rwsgi_engine::HookValue;

use crate::config::HookScript;
use crate::environ::{self, Resolved};
use crate::ffi::{status, Level, Request};
use crate::handler::group_for;
use crate::python::{self, AppKey};

/// What an authentication provider answers.
pub(crate) enum Authn {
    Granted(Option<String>),
    Denied,
    UserNotFound,
    Found(String),
    Error,
}

/// What an authorization provider answers.
pub(crate) enum Authz {
    Granted,
    Denied,
    NoUser,
    Error,
}

/// Calls `function` of `script` for the request; `None` if it could not be called or raised (logged).
fn call(
    request: &mut Request<'_>,
    script: &HookScript,
    function: &str,
    args: &[&[u8]],
) -> Option<HookValue> {
    call_optional(request, script, function, args).unwrap_or(None)
}

/// As [`call`], but `Err(())` when the script defines no such function (which is not logged).
pub(crate) fn call_optional(
    request: &mut Request<'_>,
    script: &HookScript,
    function: &str,
    args: &[&[u8]],
) -> Result<Option<HookValue>, ()> {
    let settings = &request.dir_config().scoped;
    let group = group_for(request, script.options.application_group.as_deref(), false);
    let key = AppKey {
        script: script.script.clone(),
        application_group: group.clone(),
        callable: function.to_owned(),
        script_reloading: settings.script_reloading.unwrap_or(true),
    };
    let vars = environ::build(
        request,
        settings,
        &Resolved {
            process_group: "",
            application_group: &group,
            callable_object: function,
            handler_script: "",
        },
    );
    let app = match python::application(&key, "") {
        Ok(app) => app,
        Err(python::LoadError::NoCallable { .. }) => return Err(()),
        Err(err) => {
            request.log(Level::Error, &err.to_string());
            return Ok(None);
        }
    };
    let id = request.log_id().map(str::to_owned);
    Ok(python::call_hook(&app, &vars, args, id))
}

fn unexpected(request: &Request<'_>, script: &HookScript, function: &str, what: &str) {
    request.log(
        Level::Error,
        &format!(
            "Result returned from '{function}' in '{}' must be {what}.",
            script.script.display()
        ),
    );
}

/// The access phase.
pub(crate) fn allow_access(request: &mut Request<'_>) -> i32 {
    let Some(script) = request.dir_config().scoped.access_script.clone() else {
        return status::DECLINED;
    };
    let host = request.server_facts().remote_ip.to_vec();
    match call(request, &script, "allow_access", &[&host]) {
        Some(HookValue::Bool(true)) => status::OK,
        Some(HookValue::Bool(false)) => status::FORBIDDEN,
        Some(HookValue::None) => status::DECLINED,
        Some(_) => {
            unexpected(request, &script, "allow_access", "a boolean or None");
            status::INTERNAL_SERVER_ERROR
        }
        None => status::INTERNAL_SERVER_ERROR,
    }
}

fn user_script(request: &Request<'_>) -> Option<HookScript> {
    request.dir_config().scoped.auth_user_script.clone()
}

/// Basic authentication.
pub(crate) fn check_password(request: &mut Request<'_>, user: &[u8], password: &[u8]) -> Authn {
    let Some(script) = user_script(request) else {
        request.log(Level::Error, "No WSGIAuthUserScript is configured here.");
        return Authn::Error;
    };
    match call(request, &script, "check_password", &[user, password]) {
        Some(HookValue::Bool(true)) => Authn::Granted(None),
        Some(HookValue::Bool(false)) => Authn::Denied,
        Some(HookValue::None) => Authn::UserNotFound,
        Some(HookValue::Text(name)) => Authn::Granted(Some(name)),
        Some(_) => {
            unexpected(
                request,
                &script,
                "check_password",
                "a boolean, a string or None",
            );
            Authn::Error
        }
        None => Authn::Error,
    }
}

/// Digest authentication.
pub(crate) fn realm_hash(request: &mut Request<'_>, user: &[u8], realm: &[u8]) -> Authn {
    let Some(script) = user_script(request) else {
        request.log(Level::Error, "No WSGIAuthUserScript is configured here.");
        return Authn::Error;
    };
    match call(request, &script, "get_realm_hash", &[user, realm]) {
        Some(HookValue::Text(hash)) => Authn::Found(hash),
        Some(HookValue::None) => Authn::UserNotFound,
        Some(_) => {
            unexpected(request, &script, "get_realm_hash", "a string or None");
            Authn::Error
        }
        None => Authn::Error,
    }
}

/// `Require wsgi-group NAME…`.
pub(crate) fn check_groups(request: &mut Request<'_>, require_args: &str) -> Authz {
    let Some(user) = request.user().map(<[u8]>::to_vec) else {
        return Authz::NoUser;
    };
    let Some(script) = request.dir_config().scoped.auth_group_script.clone() else {
        request.log(Level::Error, "No WSGIAuthGroupScript is configured here.");
        return Authz::Error;
    };
    let groups = match call(request, &script, "groups_for_user", &[&user]) {
        Some(HookValue::Texts(groups)) => groups,
        Some(HookValue::None) => Vec::new(),
        Some(_) => {
            unexpected(request, &script, "groups_for_user", "a sequence of strings");
            return Authz::Error;
        }
        None => return Authz::Error,
    };
    let wanted = require_args.split_whitespace();
    if wanted.into_iter().any(|w| groups.iter().any(|g| g == w)) {
        Authz::Granted
    } else {
        request.log(
            Level::Info,
            &format!(
                "Authorization of user '{}' to access '{}' failed. User is not a member of designated groups.",
                String::from_utf8_lossy(&user),
                String::from_utf8_lossy(request.uri())
            ),
        );
        Authz::Denied
    }
}
