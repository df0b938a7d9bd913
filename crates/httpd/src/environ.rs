//! The WSGI environ as mod_wsgi builds it in embedded mode, key for key.
//!
//! Apache's view of the request goes into the request's `subprocess_env` (so later phases, such as the
//! access log's `%{VAR}e`, see it too), over whatever SetEnv, PassEnv and mod_rewrite put there; the engine
//! then gets that table, less PATH; it reads mod_wsgi's private `mod_wsgi.x-` keys and hides them.

use rwsgi_engine::CgiVars;

use crate::config::{MapHeadToGet, Scoped};
use crate::ffi::{Request, ServerFacts, Table};

/// What the handler resolved for the request, for the `mod_wsgi.*` keys.
pub(crate) struct Resolved<'a> {
    pub(crate) process_group: &'a str,
    pub(crate) application_group: &'a str,
    pub(crate) callable_object: &'a str,
    pub(crate) handler_script: &'a str,
}

/// Fills the request's `subprocess_env` as mod_wsgi does, and returns the environ's CGI part.
pub(crate) fn build(
    request: &mut Request<'_>,
    settings: &Scoped,
    resolved: &Resolved<'_>,
) -> CgiVars {
    let Some(mut env) = request.subprocess_env() else {
        return CgiVars::default();
    };
    let facts = request.server_facts();
    add_request_vars(request, &facts, &mut env);
    // HEAD becomes GET so output filters see the same body and headers they would for GET; Auto does it
    // only when a filter that may rewrite the body is in the chain, as mod_wsgi does (Apache drops the
    // body either way).
    let map_head = match settings.map_head_to_get.unwrap_or(MapHeadToGet::Auto) {
        MapHeadToGet::On => true,
        MapHeadToGet::Off => false,
        MapHeadToGet::Auto => request.has_content_filter(),
    };
    if request.is_get() && request.header_only() && map_head {
        env.set("REQUEST_METHOD", b"GET");
    }
    if settings.pass_authorization.unwrap_or(false) {
        if let Some(value) = request.headers_in().and_then(|h| h.get("Authorization")) {
            env.set("HTTP_AUTHORIZATION", value);
        }
    }
    for key in ["PATH_INFO", "SCRIPT_NAME"] {
        let value = env.get(key).unwrap_or(b"");
        let collapsed = collapse_slashes(value);
        env.set(key, &collapsed);
    }
    let script_name = env.get("SCRIPT_NAME").unwrap_or(b"").to_vec();
    let path_info = env.get("PATH_INFO").unwrap_or(b"").to_vec();
    env.set("mod_wsgi.script_name", &script_name);
    env.set("mod_wsgi.path_info", &path_info);
    let scheme_from_proxy = match &settings.trusted_proxy_headers {
        Some(headers) => rwsgi_engine::proxy::apply(
            &mut ProxyEnv(&mut env),
            headers,
            settings.trusted_proxies.as_deref(),
        ),
        None => false,
    };
    if !scheme_from_proxy && request.is_https() {
        env.set("HTTPS", b"1");
    }
    env.set("mod_wsgi.process_group", resolved.process_group.as_bytes());
    env.set(
        "mod_wsgi.application_group",
        resolved.application_group.as_bytes(),
    );
    env.set(
        "mod_wsgi.callable_object",
        resolved.callable_object.as_bytes(),
    );
    let handler = request.handler().unwrap_or("").as_bytes();
    env.set("mod_wsgi.request_handler", handler);
    env.set(
        "mod_wsgi.handler_script",
        resolved.handler_script.as_bytes(),
    );
    env.set("mod_wsgi.listener_host", facts.local_host);
    env.set(
        "mod_wsgi.listener_port",
        facts.local_port.to_string().as_bytes(),
    );
    let flag = |on: bool| if on { b"1" } else { b"0" };
    // Settings the engine may read, private to it (the app sees none of the `mod_wsgi.x-` keys).
    env.set(
        "mod_wsgi.x-script_reloading",
        flag(settings.script_reloading.unwrap_or(true)),
    );
    env.set(
        "mod_wsgi.x-enable_sendfile",
        flag(settings.enable_sendfile.unwrap_or(false)),
    );
    env.set(
        "mod_wsgi.x-ignore_activity",
        flag(settings.ignore_activity.unwrap_or(false)),
    );
    env.set(
        rwsgi_engine::hints::REQUEST_START_US,
        request.request_time().to_string().as_bytes(),
    );
    env.set(
        rwsgi_engine::hints::APACHE_VERSION,
        crate::ffi::apache_version().as_bytes(),
    );
    env.set(
        "mod_wsgi.server_pid",
        std::process::id().to_string().as_bytes(),
    );
    if let Some(id) = request.log_id() {
        env.set("mod_wsgi.request_id", id.as_bytes());
    }
    if let Some(id) = facts.connection_id {
        env.set("mod_wsgi.connection_id", id.as_bytes());
    }
    let mut vars = CgiVars::with_capacity(64);
    for (key, value) in env.entries() {
        // PATH is the server's, not the request's; `mod_wsgi.x-` keys go to the engine, which hides them.
        if key == "PATH" {
            continue;
        }
        vars.set(key.to_owned(), value);
    }
    vars
}

/// The request's environment as [`rwsgi_engine::proxy`] edits it.
struct ProxyEnv<'t, 'a>(&'t mut Table<'a>);

impl rwsgi_engine::proxy::Env for ProxyEnv<'_, '_> {
    fn get(&self, key: &str) -> Option<String> {
        self.0
            .get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn set(&mut self, key: &str, value: &str) {
        self.0.set(key, value.as_bytes());
    }

    fn unset(&mut self, key: &str) {
        self.0.unset(key);
    }
}

/// mod_wsgi's `wsgi_add_vars_to_environment`: Apache's CGI variables without the subrequest
/// `ap_add_cgi_vars` makes for PATH_TRANSLATED, nor the variables no WSGI app needs.
fn add_request_vars(request: &Request<'_>, facts: &ServerFacts<'_>, env: &mut Table<'_>) {
    if let Some(headers) = request.headers_in() {
        for (name, value) in headers.entries() {
            if name.eq_ignore_ascii_case("Content-Type") {
                env.set("CONTENT_TYPE", value);
            } else if name.eq_ignore_ascii_case("Content-Length") {
                env.set("CONTENT_LENGTH", value);
            } else if name.eq_ignore_ascii_case("Proxy")
                || name.eq_ignore_ascii_case("Authorization")
                || name.eq_ignore_ascii_case("Proxy-Authorization")
            {
                // Proxy: httpoxy. Credentials only with WSGIPassAuthorization (added by the caller).
            } else if let Some(key) = http_to_env(name) {
                env.set(&key, value);
            }
        }
    }
    env.set("SERVER_SOFTWARE", facts.banner);
    env.set("SERVER_NAME", facts.name);
    env.set("SERVER_ADDR", facts.local_ip);
    env.set("SERVER_PORT", facts.port.to_string().as_bytes());
    env.set("REMOTE_ADDR", facts.remote_ip);
    env.set("DOCUMENT_ROOT", facts.document_root);
    env.set("REQUEST_SCHEME", facts.scheme.as_bytes());
    env.set("CONTEXT_PREFIX", facts.context_prefix);
    env.set("CONTEXT_DOCUMENT_ROOT", facts.context_document_root);
    if let Some(admin) = facts.server_admin {
        env.set("SERVER_ADMIN", admin);
    }
    env.set("SCRIPT_FILENAME", request.filename().unwrap_or(b""));
    env.set("REMOTE_PORT", facts.remote_port.to_string().as_bytes());
    if let Some(user) = request.user() {
        env.set("REMOTE_USER", user);
    }
    if let Some(auth_type) = request.auth_type() {
        env.set("AUTH_TYPE", auth_type);
    }
    env.set("SERVER_PROTOCOL", request.protocol().as_bytes());
    env.set("REQUEST_METHOD", request.method().as_bytes());
    env.set("QUERY_STRING", request.args().unwrap_or(b""));
    env.set("REQUEST_URI", request.original_uri());
    let uri = request.uri();
    let path_info = request.path_info();
    if path_info.is_empty() {
        env.set("SCRIPT_NAME", uri);
    } else {
        let start = path_info_start(uri, path_info);
        env.set("SCRIPT_NAME", &uri[..start]);
        env.set("PATH_INFO", path_info);
    }
}

/// A request header's CGI name (`HTTP_` + upper case, `-` as `_`); `None` for a name with any other
/// character, which could otherwise pass for a different header (Apache 2.4 and mod_wsgi drop them).
fn http_to_env(name: &str) -> Option<String> {
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    for c in name.chars() {
        match c {
            c if c.is_ascii_alphanumeric() => key.push(c.to_ascii_uppercase()),
            '-' => key.push('_'),
            _ => return None,
        }
    }
    Some(key)
}

/// Where the path info starts in `uri`, as Apache's `ap_find_path_info` finds it: walking back from both
/// ends while they agree (a `/` of the path info matching a run of them in the URI), then forward to the
/// next `/`.
pub(crate) fn path_info_start(uri: &[u8], path_info: &[u8]) -> usize {
    let mut lu = uri.len();
    let mut lp = path_info.len();
    let mut exhausted = false;
    loop {
        if lu == 0 {
            exhausted = true;
            break;
        }
        lu -= 1;
        if lp == 0 {
            break;
        }
        lp -= 1;
        if uri[lu] != path_info[lp] {
            break;
        }
        if path_info[lp] == b'/' {
            while lu > 0 && uri[lu - 1] == b'/' {
                lu -= 1;
            }
        }
    }
    if exhausted {
        lu = 0;
    }
    while lu < uri.len() && uri[lu] != b'/' {
        lu += 1;
    }
    lu
}

/// Runs of `/` become one (mod_wsgi does this to SCRIPT_NAME and PATH_INFO).
fn collapse_slashes(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        if b == b'/' && out.last() == Some(&b'/') {
            continue;
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_map_to_cgi_or_are_dropped() {
        assert_eq!(
            http_to_env("X-Custom-1").as_deref(),
            Some("HTTP_X_CUSTOM_1")
        );
        assert_eq!(http_to_env("x_custom"), None);
        assert_eq!(http_to_env("a.b"), None);
    }

    #[test]
    fn path_info_is_found_from_the_end() {
        assert_eq!(path_info_start(b"/app/a/b", b"/a/b"), 4);
        assert_eq!(path_info_start(b"/app//a", b"/a"), 4);
        assert_eq!(path_info_start(b"/a", b"/a"), 0);
    }

    #[test]
    fn slashes_collapse() {
        assert_eq!(collapse_slashes(b"//a///b/"), b"/a/b/");
    }
}
