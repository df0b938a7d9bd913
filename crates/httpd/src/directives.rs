//! mod_wsgi 6's directives: names, where each may appear, and what it is for.
//!
//! Every directive the C module knows is here, so a mod_wsgi configuration never fails on an unknown
//! name; [`crate::config::apply`] gives each its meaning (or, for daemon mode, a clear refusal).

use std::ffi::CStr;

use crate::ffi::overrides;

/// Where a directive may appear, as Apache checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    /// Server config and virtual hosts.
    Server,
    /// Also `<Directory>`, `<Location>` and `<Files>`.
    ServerAndDirectory,
    /// Anywhere, and .htaccess with `AllowOverride FileInfo`.
    FileInfo,
    /// Anywhere, and .htaccess with `AllowOverride AuthConfig`.
    AuthConfig,
}

impl Context {
    pub(crate) const fn overrides(self) -> u32 {
        match self {
            Context::Server => overrides::RSRC_CONF,
            Context::ServerAndDirectory => overrides::RSRC_CONF | overrides::ACCESS_CONF,
            Context::FileInfo => overrides::OR_FILEINFO,
            Context::AuthConfig => overrides::OR_AUTHCFG,
        }
    }
}

/// Which directive, for [`crate::config::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Name {
    ScriptAlias,
    ScriptAliasMatch,
    DaemonProcess,
    SocketPrefix,
    SocketRotation,
    AcceptMutex,
    VerboseDebugging,
    DontWriteBytecode,
    PythonWarnings,
    PythonOptimize,
    PythonHome,
    PythonPath,
    PythonEggs,
    PythonHashSeed,
    SwitchInterval,
    DestroyInterpreter,
    PerInterpreterGil,
    FreeThreading,
    RestrictEmbedded,
    RestrictStdin,
    RestrictStdout,
    RestrictSignal,
    CaseSensitivity,
    RestrictProcess,
    ProcessGroup,
    ApplicationGroup,
    CallableObject,
    ImportScript,
    DispatchScript,
    PassApacheRequest,
    PassAuthorization,
    ScriptReloading,
    ErrorOverride,
    ChunkedRequest,
    MapHeadToGet,
    IgnoreActivity,
    TrustedProxyHeaders,
    TrustedProxies,
    EnableSendfile,
    AccessScript,
    AuthUserScript,
    AuthGroupScript,
    GroupAuthoritative,
    HandlerScript,
    ServerMetrics,
    InterpreterOptions,
    TelemetryService,
    SlowRequests,
    TelemetryOptions,
}

/// One directive.
#[derive(Debug)]
pub(crate) struct Directive {
    pub(crate) name: &'static CStr,
    pub(crate) which: Name,
    pub(crate) context: Context,
    pub(crate) help: &'static CStr,
}

const fn d(name: &'static CStr, which: Name, context: Context, help: &'static CStr) -> Directive {
    Directive {
        name,
        which,
        context,
        help,
    }
}

use Context::{AuthConfig, FileInfo, Server, ServerAndDirectory};

/// Every directive of mod_wsgi 6.
pub(crate) const ALL: [Directive; 49] = [
    d(c"WSGIScriptAlias", Name::ScriptAlias, Server, c"Map location to target WSGI script file."),
    d(c"WSGIScriptAliasMatch", Name::ScriptAliasMatch, Server, c"Map location pattern to target WSGI script file."),
    d(c"WSGIDaemonProcess", Name::DaemonProcess, Server, c"Specify details of daemon processes to start."),
    d(c"WSGISocketPrefix", Name::SocketPrefix, Server, c"Path prefix for the daemon process sockets."),
    d(c"WSGISocketRotation", Name::SocketRotation, Server, c"Enable/Disable rotation of daemon process sockets."),
    d(c"WSGIAcceptMutex", Name::AcceptMutex, Server, c"Set accept mutex type for daemon processes."),
    d(c"WSGIVerboseDebugging", Name::VerboseDebugging, Server, c"Enable/Disable verbose debugging messages."),
    d(c"WSGIDontWriteBytecode", Name::DontWriteBytecode, Server, c"Enable/Disable writing of byte code."),
    d(c"WSGIPythonWarnings", Name::PythonWarnings, Server, c"Control Python warning messages."),
    d(c"WSGIPythonOptimize", Name::PythonOptimize, Server, c"Set level of Python compiler optimisations."),
    d(c"WSGIPythonHome", Name::PythonHome, Server, c"Python prefix/exec_prefix absolute path names."),
    d(c"WSGIPythonPath", Name::PythonPath, Server, c"Python module search path."),
    d(c"WSGIPythonEggs", Name::PythonEggs, Server, c"Python eggs cache directory."),
    d(c"WSGIPythonHashSeed", Name::PythonHashSeed, Server, c"Python hash seed."),
    d(c"WSGISwitchInterval", Name::SwitchInterval, Server, c"Override Python GIL switch interval (seconds)."),
    d(c"WSGIDestroyInterpreter", Name::DestroyInterpreter, Server, c"Enable/Disable destruction of Python interpreter."),
    d(c"WSGIPerInterpreterGIL", Name::PerInterpreterGil, Server, c"Enable/Disable per-interpreter GIL for sub-interpreters (Python 3.12+)."),
    d(c"WSGIFreeThreading", Name::FreeThreading, Server, c"Enable/Disable free-threaded Python (3.13+ free-threaded build)."),
    d(c"WSGIRestrictEmbedded", Name::RestrictEmbedded, Server, c"Enable/Disable use of embedded mode."),
    d(c"WSGIRestrictStdin", Name::RestrictStdin, Server, c"Enable/Disable restrictions on use of STDIN."),
    d(c"WSGIRestrictStdout", Name::RestrictStdout, Server, c"Enable/Disable restrictions on use of STDOUT."),
    d(c"WSGIRestrictSignal", Name::RestrictSignal, Server, c"Enable/Disable restrictions on use of signal()."),
    d(c"WSGICaseSensitivity", Name::CaseSensitivity, Server, c"Define whether file system is case sensitive."),
    d(c"WSGIRestrictProcess", Name::RestrictProcess, ServerAndDirectory, c"Limit selectable WSGI process groups."),
    d(c"WSGIProcessGroup", Name::ProcessGroup, ServerAndDirectory, c"Name of the WSGI process group."),
    d(c"WSGIApplicationGroup", Name::ApplicationGroup, ServerAndDirectory, c"Application interpreter group."),
    d(c"WSGICallableObject", Name::CallableObject, FileInfo, c"Name of entry point in WSGI script file."),
    d(c"WSGIImportScript", Name::ImportScript, Server, c"Location of WSGI import script."),
    d(c"WSGIDispatchScript", Name::DispatchScript, ServerAndDirectory, c"Location of WSGI dispatch script."),
    d(c"WSGIPassApacheRequest", Name::PassApacheRequest, ServerAndDirectory, c"Enable/Disable Apache request object."),
    d(c"WSGIPassAuthorization", Name::PassAuthorization, FileInfo, c"Enable/Disable WSGI authorization."),
    d(c"WSGIScriptReloading", Name::ScriptReloading, FileInfo, c"Enable/Disable script reloading mechanism."),
    d(c"WSGIErrorOverride", Name::ErrorOverride, FileInfo, c"Enable/Disable overriding of error pages."),
    d(c"WSGIChunkedRequest", Name::ChunkedRequest, FileInfo, c"Enable/Disable support for chunked requests."),
    d(c"WSGIMapHEADToGET", Name::MapHeadToGet, FileInfo, c"Enable/Disable mapping of HEAD to GET."),
    d(c"WSGIIgnoreActivity", Name::IgnoreActivity, FileInfo, c"Enable/Disable reset of inactvity timeout."),
    d(c"WSGITrustedProxyHeaders", Name::TrustedProxyHeaders, FileInfo, c"Specify a list of trusted proxy headers."),
    d(c"WSGITrustedProxies", Name::TrustedProxies, FileInfo, c"Specify a list of trusted proxies."),
    d(c"WSGIEnableSendfile", Name::EnableSendfile, FileInfo, c"Enable/Disable support for kernel sendfile."),
    d(c"WSGIAccessScript", Name::AccessScript, AuthConfig, c"Location of WSGI host access script file."),
    d(c"WSGIAuthUserScript", Name::AuthUserScript, AuthConfig, c"Location of WSGI user auth script file."),
    d(c"WSGIAuthGroupScript", Name::AuthGroupScript, AuthConfig, c"Location of WSGI group auth script file."),
    d(c"WSGIGroupAuthoritative", Name::GroupAuthoritative, AuthConfig, c"Enable/Disable as being authoritative on groups."),
    d(c"WSGIHandlerScript", Name::HandlerScript, ServerAndDirectory, c"Location of WSGI handler script file."),
    d(c"WSGIServerMetrics", Name::ServerMetrics, Server, c"Enabled/Disable access to server metrics."),
    d(c"<WSGIInterpreterOptions", Name::InterpreterOptions, Server, c"Container scoping per-interpreter options to a named process-group and/or application-group."),
    d(c"WSGITelemetryService", Name::TelemetryService, Server, c"Push telemetry to a metrics service. Args: unix:/path [interval=N]"),
    d(c"WSGISlowRequests", Name::SlowRequests, Server, c"Enable slow-request reporting. Arg: threshold in seconds."),
    d(c"WSGITelemetryOptions", Name::TelemetryOptions, Server, c"Toggle metrics capture options."),
];
