//! The module's settings, resolved from mod_wsgi's directives, and Apache's merging of them.
//!
//! Server-wide settings (script aliases, the interpreter's) live in each server's [`ServerConfig`]. The
//! others live in a [`DirConfig`]: a `<Directory>`, `<Location>`, `<Files>` or .htaccess section's, or, at
//! server level, the server's per-directory defaults, which Apache merges under every section. So a
//! request's merged `DirConfig` already holds the directory's value over the server's; unset, mod_wsgi's
//! default applies.
//! This module does not touch Apache: [`crate::ffi`] calls [`apply`] with the directive's split words.

use std::path::PathBuf;

use crate::directives::{Directive, Name};

/// Settings that may be given per server and per directory (each `None` until a directive sets it).
#[derive(Debug, Default, Clone)]
pub(crate) struct Scoped {
    pub(crate) application_group: Option<String>,
    pub(crate) process_group: Option<String>,
    pub(crate) callable_object: Option<String>,
    pub(crate) pass_authorization: Option<bool>,
    pub(crate) script_reloading: Option<bool>,
    pub(crate) error_override: Option<bool>,
    pub(crate) chunked_request: Option<bool>,
    pub(crate) map_head_to_get: Option<MapHeadToGet>,
    pub(crate) enable_sendfile: Option<bool>,
    pub(crate) ignore_activity: Option<bool>,
    pub(crate) pass_apache_request: Option<bool>,
    /// Header names in their environ form (`HTTP_X_FORWARDED_FOR`).
    pub(crate) trusted_proxy_headers: Option<Vec<String>>,
    pub(crate) trusted_proxies: Option<Vec<rwsgi_engine::proxy::Network>>,
    pub(crate) handler_scripts: Vec<HandlerScript>,
    pub(crate) access_script: Option<HookScript>,
    pub(crate) auth_user_script: Option<HookScript>,
    pub(crate) auth_group_script: Option<HookScript>,
    pub(crate) group_authoritative: Option<bool>,
    pub(crate) dispatch_script: Option<HookScript>,
    /// `WSGIRestrictProcess`: the only process groups this section's applications may be sent to.
    pub(crate) restrict_process: Option<Vec<String>>,
}

/// `WSGIAccessScript`, `WSGIAuthUserScript` or `WSGIAuthGroupScript`: a script whose functions Apache's
/// access and authentication phases call.
#[derive(Debug, Clone)]
pub(crate) struct HookScript {
    pub(crate) script: PathBuf,
    pub(crate) options: AliasOptions,
}

impl Scoped {
    /// `add` over `base`, field by field (handler scripts: `add`'s first, then `base`'s).
    fn merge(base: &Self, add: &Self) -> Self {
        fn pick<T: Clone>(base: &Option<T>, add: &Option<T>) -> Option<T> {
            add.clone().or_else(|| base.clone())
        }
        Self {
            application_group: pick(&base.application_group, &add.application_group),
            process_group: pick(&base.process_group, &add.process_group),
            callable_object: pick(&base.callable_object, &add.callable_object),
            pass_authorization: pick(&base.pass_authorization, &add.pass_authorization),
            script_reloading: pick(&base.script_reloading, &add.script_reloading),
            error_override: pick(&base.error_override, &add.error_override),
            chunked_request: pick(&base.chunked_request, &add.chunked_request),
            map_head_to_get: pick(&base.map_head_to_get, &add.map_head_to_get),
            enable_sendfile: pick(&base.enable_sendfile, &add.enable_sendfile),
            ignore_activity: pick(&base.ignore_activity, &add.ignore_activity),
            pass_apache_request: pick(&base.pass_apache_request, &add.pass_apache_request),
            trusted_proxy_headers: pick(&base.trusted_proxy_headers, &add.trusted_proxy_headers),
            trusted_proxies: pick(&base.trusted_proxies, &add.trusted_proxies),
            access_script: pick(&base.access_script, &add.access_script),
            auth_user_script: pick(&base.auth_user_script, &add.auth_user_script),
            auth_group_script: pick(&base.auth_group_script, &add.auth_group_script),
            group_authoritative: pick(&base.group_authoritative, &add.group_authoritative),
            dispatch_script: pick(&base.dispatch_script, &add.dispatch_script),
            restrict_process: pick(&base.restrict_process, &add.restrict_process),
            handler_scripts: add
                .handler_scripts
                .iter()
                .chain(&base.handler_scripts)
                .cloned()
                .collect(),
        }
    }
}

/// `WSGIMapHEADToGET`: Auto (only when an output filter may need the body), On, Off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapHeadToGet {
    Off,
    On,
    Auto,
}

/// `WSGIHandlerScript NAME SCRIPT [options]`: requests whose handler is NAME run SCRIPT's `handle_request`.
#[derive(Debug, Clone)]
pub(crate) struct HandlerScript {
    pub(crate) name: String,
    pub(crate) script: PathBuf,
    pub(crate) options: AliasOptions,
}

/// The `name=value` options of `WSGIScriptAlias` and its kin.
#[derive(Debug, Default, Clone)]
pub(crate) struct AliasOptions {
    pub(crate) process_group: Option<String>,
    pub(crate) application_group: Option<String>,
    pub(crate) callable_object: Option<String>,
    pub(crate) pass_authorization: Option<bool>,
}

/// A URL prefix or pattern mapped to a script.
#[derive(Debug, Clone)]
pub(crate) enum Location {
    /// `WSGIScriptAlias`: a prefix, matched the way mod_alias matches (runs of `/` match each other).
    Prefix(String),
    /// `WSGIScriptAliasMatch`: a regular expression; `$N` in the target takes its groups.
    Pattern(regex::bytes::Regex),
}

/// One `WSGIScriptAlias` or `WSGIScriptAliasMatch`.
#[derive(Debug, Clone)]
pub(crate) struct ScriptAlias {
    pub(crate) location: Location,
    pub(crate) target: String,
    pub(crate) options: AliasOptions,
}

/// The interpreter's settings: global to the Apache server, read from the main server's config.
#[derive(Debug, Default, Clone)]
pub(crate) struct PythonSettings {
    pub(crate) home: Option<PathBuf>,
    pub(crate) path: Vec<PathBuf>,
    pub(crate) optimize: Option<u8>,
    pub(crate) hash_seed: Option<HashSeed>,
    pub(crate) dont_write_bytecode: Option<bool>,
    pub(crate) warnings: Vec<String>,
    pub(crate) switch_interval: Option<f64>,
    pub(crate) destroy_interpreter: Option<bool>,
    pub(crate) restrict_embedded: Option<bool>,
    pub(crate) restrict_stdin: Option<bool>,
    pub(crate) restrict_stdout: Option<bool>,
    pub(crate) restrict_signal: Option<bool>,
    /// `WSGIServerMetrics`: `mod_wsgi.server_metrics()` shows Apache's scoreboard (embedded mode).
    pub(crate) server_metrics: Option<bool>,
}

/// `WSGIPythonHashSeed`: `random` or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HashSeed {
    Random,
    Fixed(u32),
}

/// `WSGIImportScript`: a script executed in an application group when a process starts.
#[derive(Debug, Clone)]
pub(crate) struct ImportScript {
    pub(crate) script: PathBuf,
    /// The daemon process group that runs it (`""`: Apache's own children, embedded mode).
    pub(crate) process_group: String,
    /// The group's name (`""`: the main interpreter).
    pub(crate) application_group: String,
}

/// One server's (or virtual host's) settings.
#[derive(Debug, Default, Clone)]
pub(crate) struct ServerConfig {
    pub(crate) aliases: Vec<ScriptAlias>,
    pub(crate) python: PythonSettings,
    /// This server's own import scripts (each server's are run once, not merged into its vhosts).
    pub(crate) import_scripts: Vec<ImportScript>,
    /// This server's own `WSGIDaemonProcess` groups (names are unique across all servers).
    pub(crate) daemons: Vec<crate::daemon::DaemonGroup>,
    /// `WSGISocketPrefix` (main server only): where the daemons' sockets go.
    pub(crate) socket_prefix: Option<PathBuf>,
    /// `WSGISocketRotation` (main server only).
    pub(crate) socket_rotation: Option<bool>,
}

impl ServerConfig {
    /// A virtual host's config over the main server's: its aliases first, then the main server's.
    pub(crate) fn merge(base: &Self, add: &Self) -> Self {
        Self {
            aliases: add.aliases.iter().chain(&base.aliases).cloned().collect(),
            // Interpreter settings are process-wide: only the main server's count.
            python: base.python.clone(),
            import_scripts: add.import_scripts.clone(),
            daemons: add.daemons.clone(),
            socket_prefix: base.socket_prefix.clone(),
            socket_rotation: base.socket_rotation,
        }
    }
}

/// One `<Directory>`, `<Location>`, `<Files>` or .htaccess section's settings.
#[derive(Debug, Default, Clone)]
pub(crate) struct DirConfig {
    pub(crate) scoped: Scoped,
}

impl DirConfig {
    pub(crate) fn merge(base: &Self, add: &Self) -> Self {
        Self {
            scoped: Scoped::merge(&base.scoped, &add.scoped),
        }
    }
}

/// Applies one directive. The error is the message Apache shows after "Syntax error on line N of FILE:"
/// (the caller puts the directive's name in front).
pub(crate) fn apply(
    directive: &Directive,
    args: &[String],
    server: &mut ServerConfig,
    dir: &mut DirConfig,
) -> Result<(), String> {
    // In server or virtual-host context `dir` is that server's per-directory defaults, which Apache
    // merges into every request's directory config: the request's `DirConfig` is then the whole answer.
    let scoped = &mut dir.scoped;
    let python = &mut server.python;
    match directive.which {
        Name::ScriptAlias | Name::ScriptAliasMatch => {
            let alias = script_alias(args, directive.which == Name::ScriptAliasMatch)?;
            server.aliases.push(alias);
        }
        Name::PythonHome => python.home = Some(PathBuf::from(one(args)?)),
        Name::PythonPath => {
            // Colon-separated, as mod_wsgi takes it; each entry gets site.addsitedir semantics.
            python.path.extend(
                one(args)?
                    .split(':')
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from),
            );
        }
        Name::PythonOptimize => {
            python.optimize = Some(match one(args)? {
                "0" => 0,
                "1" => 1,
                "2" => 2,
                _ => return Err("Invalid Python optimisation level; use 0, 1 or 2.".into()),
            })
        }
        Name::PythonHashSeed => {
            let value = one(args)?;
            python.hash_seed = Some(if value == "random" {
                HashSeed::Random
            } else {
                HashSeed::Fixed(value.parse().map_err(|_| {
                    "Invalid Python hash seed: use 'random' or a number from 0 to 4294967295."
                        .to_owned()
                })?)
            });
        }
        Name::PythonWarnings => python.warnings.push(one(args)?.to_owned()),
        Name::DontWriteBytecode => python.dont_write_bytecode = Some(flag(args)?),
        Name::SwitchInterval => {
            let seconds: f64 = one(args)?
                .parse()
                .ok()
                .filter(|s: &f64| *s > 0.0 && s.is_finite())
                .ok_or("Invalid switch interval: give a positive number of seconds.")?;
            python.switch_interval = Some(seconds);
        }
        Name::DestroyInterpreter => python.destroy_interpreter = Some(flag(args)?),
        Name::RestrictEmbedded => python.restrict_embedded = Some(flag(args)?),
        Name::RestrictStdin => python.restrict_stdin = Some(flag(args)?),
        Name::RestrictStdout => python.restrict_stdout = Some(flag(args)?),
        Name::RestrictSignal => python.restrict_signal = Some(flag(args)?),
        Name::ServerMetrics => python.server_metrics = Some(flag(args)?),
        Name::ApplicationGroup => {
            scoped.application_group = Some(group_name(one(args)?, "application")?)
        }
        Name::ProcessGroup => scoped.process_group = Some(group_name(one(args)?, "process")?),
        Name::CallableObject => scoped.callable_object = Some(one(args)?.to_owned()),
        Name::PassAuthorization => scoped.pass_authorization = Some(flag(args)?),
        Name::ScriptReloading => scoped.script_reloading = Some(flag(args)?),
        Name::ErrorOverride => scoped.error_override = Some(flag(args)?),
        Name::ChunkedRequest => scoped.chunked_request = Some(flag(args)?),
        Name::EnableSendfile => scoped.enable_sendfile = Some(flag(args)?),
        Name::IgnoreActivity => scoped.ignore_activity = Some(flag(args)?),
        Name::PassApacheRequest => scoped.pass_apache_request = Some(flag(args)?),
        Name::MapHeadToGet => {
            scoped.map_head_to_get = Some(match one(args)?.to_ascii_lowercase().as_str() {
                "off" => MapHeadToGet::Off,
                "on" => MapHeadToGet::On,
                "auto" => MapHeadToGet::Auto,
                _ => return Err("WSGIMapHEADToGET must be one of: Off | On | Auto.".into()),
            })
        }
        Name::TrustedProxyHeaders => {
            scoped.trusted_proxy_headers = Some(
                at_least_one(args)?
                    .iter()
                    .map(|h| rwsgi_engine::proxy::env_name(h))
                    .collect(),
            )
        }
        Name::TrustedProxies => {
            scoped.trusted_proxies = Some(
                at_least_one(args)?
                    .iter()
                    .map(|p| rwsgi_engine::proxy::Network::parse(p))
                    .collect::<Result<_, _>>()?,
            )
        }
        Name::HandlerScript => {
            let (name, script, options) = match args {
                [name, script, options @ ..] => (name, script, alias_options(options)?),
                _ => return Err("requires at least two arguments, handler name and script.".into()),
            };
            scoped.handler_scripts.push(HandlerScript {
                name: name.clone(),
                script: PathBuf::from(script),
                options,
            });
        }
        Name::DaemonProcess => {
            let group = crate::daemon::options::parse(args, 0)?;
            // Names are checked now, so a typo fails `apachectl configtest` too; the daemons resolve
            // them again when they start, with Apache's own User and Group as the defaults.
            crate::daemon::resolve_identity(&group, 0, 0)?;
            if server.daemons.iter().any(|g| g.name == group.name) {
                return Err("Name duplicates previous WSGI daemon definition.".into());
            }
            server.daemons.push(group);
        }
        Name::SocketPrefix => server.socket_prefix = Some(PathBuf::from(one(args)?)),
        Name::SocketRotation => {
            server.socket_rotation = Some(
                flag(args).map_err(|_| "WSGISocketRotation must be one of: Off | On".to_owned())?,
            )
        }
        Name::AcceptMutex => {
            // Daemon processes share one listening socket and the kernel hands each connection to
            // one accepting thread, so no accept mutex is needed; the mechanism's name is checked.
            match one(args)? {
                "default" | "flock" | "fcntl" | "sysvsem" | "posixsem" | "pthread" => {}
                other => {
                    return Err(format!(
                        "Accept mutex lock mechanism '{other}' is invalid. Valid accept mutex \
                         mechanisms for this platform are: default, flock, fcntl, sysvsem, posixsem, \
                         pthread."
                    ))
                }
            }
        }
        Name::RestrictProcess => {
            scoped.restrict_process = Some(
                at_least_one(args)?
                    .iter()
                    .map(|g| {
                        if g == "%{GLOBAL}" {
                            String::new()
                        } else {
                            g.clone()
                        }
                    })
                    .collect(),
            )
        }
        Name::AccessScript => scoped.access_script = Some(hook_script(args)?),
        Name::AuthUserScript => scoped.auth_user_script = Some(hook_script(args)?),
        Name::AuthGroupScript => scoped.auth_group_script = Some(hook_script(args)?),
        Name::GroupAuthoritative => scoped.group_authoritative = Some(flag(args)?),
        Name::ImportScript => server.import_scripts.push(import_script(args)?),
        Name::DispatchScript => scoped.dispatch_script = Some(hook_script(args)?),
        Name::VerboseDebugging
        | Name::PythonEggs
        | Name::CaseSensitivity
        | Name::PerInterpreterGil
        | Name::FreeThreading => {
            // Accepted for compatibility; none changes how requests are served here.
            one(args)?;
        }
        Name::InterpreterOptions
        | Name::TelemetryService
        | Name::SlowRequests
        | Name::TelemetryOptions => {
            return Err("is recognised but not supported yet by rwsgi's mod_wsgi.so.".into())
        }
    }
    Ok(())
}

fn one(args: &[String]) -> Result<&str, String> {
    match args {
        [value] => Ok(value),
        _ => Err("takes one argument.".into()),
    }
}

fn at_least_one(args: &[String]) -> Result<&[String], String> {
    if args.is_empty() {
        return Err("requires at least one argument.".into());
    }
    Ok(args)
}

fn flag(args: &[String]) -> Result<bool, String> {
    match one(args)?.to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("must be On or Off.".into()),
    }
}

/// An application or process group name; `%{GLOBAL}` is the empty name, as in mod_wsgi.
fn group_name(value: &str, what: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err(format!("Invalid name for WSGI {what} group."));
    }
    Ok(if value == "%{GLOBAL}" {
        String::new()
    } else {
        value.to_owned()
    })
}

fn import_script(args: &[String]) -> Result<ImportScript, String> {
    let hook = hook_script(args)?;
    let (Some(application_group), Some(process_group)) =
        (hook.options.application_group, hook.options.process_group)
    else {
        return Err("must specify both process-group= and application-group= options.".into());
    };
    if application_group.starts_with("%{") {
        return Err(format!(
            "application-group={application_group} depends on a request; name the group, or use %{{GLOBAL}}."
        ));
    }
    if process_group.starts_with("%{") {
        return Err(format!(
            "process-group={process_group} depends on a request; name the group, or use %{{GLOBAL}}."
        ));
    }
    Ok(ImportScript {
        script: hook.script,
        process_group,
        application_group,
    })
}

fn hook_script(args: &[String]) -> Result<HookScript, String> {
    match args {
        [script, options @ ..] if !script.is_empty() => Ok(HookScript {
            script: PathBuf::from(script),
            options: alias_options(options)?,
        }),
        _ => Err("requires a script file.".into()),
    }
}

fn script_alias(args: &[String], pattern: bool) -> Result<ScriptAlias, String> {
    let (location, target, options) = match args {
        [location, target, options @ ..] if !location.is_empty() && !target.is_empty() => {
            (location, target, options)
        }
        _ => return Err("requires at least two arguments, a URL path and a script file.".into()),
    };
    let location = if pattern {
        Location::Pattern(
            regex::bytes::Regex::new(location)
                .map_err(|err| format!("Regular expression could not be compiled: {err}"))?,
        )
    } else {
        Location::Prefix(location.clone())
    };
    Ok(ScriptAlias {
        location,
        target: target.clone(),
        options: alias_options(options)?,
    })
}

fn alias_options(words: &[String]) -> Result<AliasOptions, String> {
    let mut options = AliasOptions::default();
    for word in words {
        let (name, value) = word
            .split_once('=')
            .ok_or_else(|| format!("Invalid option '{word}' to WSGI script alias definition."))?;
        match name {
            "application-group" => {
                options.application_group = Some(group_name(value, "application")?)
            }
            "process-group" => options.process_group = Some(group_name(value, "process")?),
            "callable-object" if !value.is_empty() => {
                options.callable_object = Some(value.to_owned())
            }
            "callable-object" => return Err("Invalid name for WSGI callable object.".into()),
            "pass-authorization" => {
                options.pass_authorization = Some(match value.to_ascii_lowercase().as_str() {
                    "on" => true,
                    "off" => false,
                    _ => return Err("Invalid value for authorization flag.".into()),
                })
            }
            _ => {
                return Err(format!(
                    "Invalid option '{word}' to WSGI script alias definition."
                ))
            }
        }
    }
    Ok(options)
}

/// How much of `uri` a `WSGIScriptAlias` prefix matches, mod_alias's way: a `/` in the alias matches any
/// run of `/` in the URI, and the match must end at a path segment boundary. `None` if it does not match.
pub(crate) fn prefix_match(uri: &[u8], alias: &str) -> Option<usize> {
    let alias = alias.as_bytes();
    let (mut u, mut a) = (0, 0);
    while a < alias.len() {
        if alias[a] == b'/' {
            if uri.get(u) != Some(&b'/') {
                return None;
            }
            while alias.get(a) == Some(&b'/') {
                a += 1;
            }
            while uri.get(u) == Some(&b'/') {
                u += 1;
            }
        } else {
            if uri.get(u) != Some(&alias[a]) {
                return None;
            }
            u += 1;
            a += 1;
        }
    }
    let ends_in_slash = alias.last() == Some(&b'/');
    if !ends_in_slash && u < uri.len() && uri[u] != b'/' {
        return None;
    }
    (u > 0).then_some(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matches_like_mod_alias() {
        assert_eq!(prefix_match(b"/app/x", "/app"), Some(4));
        assert_eq!(prefix_match(b"/app", "/app"), Some(4));
        assert_eq!(prefix_match(b"/apple", "/app"), None);
        assert_eq!(prefix_match(b"//app//x", "/app/"), Some(7));
        assert_eq!(prefix_match(b"/anything", "/"), Some(1));
        assert_eq!(prefix_match(b"/other", "/app"), None);
    }

    #[test]
    fn alias_options_parse_and_refuse_bad_values() {
        let options = alias_options(&[
            "application-group=%{GLOBAL}".into(),
            "callable-object=app".into(),
            "pass-authorization=On".into(),
        ])
        .unwrap();
        assert_eq!(options.application_group.as_deref(), Some(""));
        assert_eq!(options.callable_object.as_deref(), Some("app"));
        assert_eq!(options.pass_authorization, Some(true));
        assert!(alias_options(&["pass-authorization=maybe".into()]).is_err());
        assert!(alias_options(&["colour=blue".into()]).is_err());
    }
}
