//! The CGI half of the WSGI environ: the variables a host supplies for a request, and, for hosts that speak
//! HTTP themselves, their derivation from a raw request per PEP 3333 (PATH_INFO percent-decoded to latin-1,
//! HTTP_* keys with repeated headers joined, underscore and `Proxy` headers dropped).
//!
//! It owns no Python objects; turning these into a dict is [`crate::request`]'s job. Apache builds its own CGI
//! variables and never calls [`from_http`].

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;

/// A variable's name.
pub type Key = Cow<'static, str>;

/// The private variables in which hosts give the engine hints about a request. The app never sees them,
/// nor any other `mod_wsgi.x-` variable (mod_wsgi's convention).
pub mod hints {
    /// When the host took the request, in microseconds since the epoch.
    pub const REQUEST_START_US: &str = "mod_wsgi.x-request_start_us";
    /// When a daemon took the request off its socket (microseconds).
    pub const QUEUE_START_US: &str = "mod_wsgi.x-queue_start_us";
    /// When a daemon thread took the request (microseconds).
    pub const DAEMON_START_US: &str = "mod_wsgi.x-daemon_start_us";
    /// Apache's version, `2.4.62`.
    pub const APACHE_VERSION: &str = "mod_wsgi.x-apache_version";
}

/// The CGI variables of one request, in the order the host gave them. Keys are unique.
///
/// Every value lives in one buffer, so a request's few dozen variables cost a couple of allocations
/// rather than one each; a replaced value leaves its old bytes behind until the set is dropped.
#[derive(Clone, Default)]
pub struct CgiVars {
    vars: Vec<(Key, Range<usize>)>,
    text: Vec<u8>,
}

impl CgiVars {
    /// An empty set with room for `n` variables.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            vars: Vec::with_capacity(n),
            text: Vec::with_capacity(n * 16),
        }
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn set(&mut self, key: impl Into<Key>, value: impl AsRef<[u8]>) {
        let key = key.into();
        let value = self.store(value.as_ref());
        match self.vars.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((key, value)),
        }
    }

    /// Adds a variable the caller knows is not set yet: no search for an earlier value, which [`Self::set`]
    /// makes through every variable (a decoder of many variables checks for repeats its own way).
    pub fn push_new(&mut self, key: impl Into<Key>, value: impl AsRef<[u8]>) {
        let key = key.into();
        debug_assert!(self.get(&key).is_none(), "{key} set twice");
        let value = self.store(value.as_ref());
        self.vars.push((key, value));
    }

    /// Adds a variable the caller knows is not set yet, its value written by `write`.
    fn push_new_with(&mut self, key: &'static str, write: impl FnOnce(&mut Vec<u8>)) {
        debug_assert!(self.get(key).is_none(), "{key} set twice");
        let start = self.text.len();
        write(&mut self.text);
        self.vars.push((Cow::Borrowed(key), start..self.text.len()));
    }

    /// Appends `value` to `key`'s value after `separator`, or sets it if absent.
    pub fn append(&mut self, key: impl Into<Key>, separator: &[u8], value: &[u8]) {
        let key = key.into();
        let Some(at) = self.vars.iter().position(|(k, _)| *k == key) else {
            let value = self.store(value);
            self.vars.push((key, value));
            return;
        };
        let old = self.vars[at].1.clone();
        if old.end != self.text.len() {
            // Not the last value written: move it to the end, where it can grow.
            self.text.extend_from_within(old.clone());
        }
        let start = self.text.len() - old.len();
        self.text.extend_from_slice(separator);
        self.text.extend_from_slice(value);
        self.vars[at].1 = start..self.text.len();
    }

    fn store(&mut self, value: &[u8]) -> Range<usize> {
        let start = self.text.len();
        self.text.extend_from_slice(value);
        start..self.text.len()
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| &self.text[v.clone()])
    }

    /// Removes `key`, if set.
    pub fn remove(&mut self, key: &str) {
        self.vars.retain(|(k, _)| k != key);
    }

    /// Every variable, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.vars.iter().map(|(k, v)| (&**k, &self.text[v.clone()]))
    }

    /// How many variables there are.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }
}

impl PartialEq for CgiVars {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for CgiVars {}

impl fmt::Debug for CgiVars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (k, String::from_utf8_lossy(v))))
            .finish()
    }
}

/// A request as an HTTP host received it, borrowed from the host's own types.
#[derive(Debug, Clone)]
pub struct HttpRequest<'a, H> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The request-target exactly as sent: origin form (`/a%20b?x=1`), absolute form or `*`.
    pub target: &'a [u8],
    /// `HTTP/1.0` or `HTTP/1.1`, the client's own version.
    pub protocol: &'static str,
    /// Header names (lowercase, as HTTP/1 parsers give them) and values, repeated names repeated.
    pub headers: H,
    /// How the connection came.
    pub transport: Transport,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Where the app is mounted, without a trailing slash (`""` at the root).
    pub script_name: &'a str,
}

/// How a request's connection came, for its address variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP: the client's address, and the address it connected to.
    Tcp {
        /// The client's address.
        peer: SocketAddr,
        /// The address the connection arrived on.
        local: SocketAddr,
    },
    /// A UNIX socket, from a process on this machine (a proxy): no addresses. As with gunicorn,
    /// `REMOTE_ADDR` is empty and `SERVER_PORT` is the `Host` header's port, else the scheme's.
    Unix,
}

/// Derives the CGI variables of an HTTP request per PEP 3333 and CGI/1.1.
pub fn from_http<'a, H>(request: HttpRequest<'a, H>) -> CgiVars
where
    H: Iterator<Item = (&'a str, &'a [u8])>,
{
    let mut vars = CgiVars::with_capacity(24);
    let (path, query) = split_target(request.target);
    // The variables every request has, each once: pushed without looking for an earlier value.
    vars.push_new("REQUEST_METHOD", request.method);
    vars.push_new("SCRIPT_NAME", request.script_name);
    vars.push_new_with("PATH_INFO", |text| {
        decode_path(text, path, request.script_name.as_bytes())
    });
    vars.push_new("QUERY_STRING", query);
    vars.push_new("REQUEST_URI", request.target);
    vars.push_new("SERVER_PROTOCOL", request.protocol);
    vars.push_new("GATEWAY_INTERFACE", b"CGI/1.1");
    vars.push_new(
        "SERVER_SOFTWARE",
        concat!("rwsgi/", env!("CARGO_PKG_VERSION")),
    );
    match request.transport {
        Transport::Tcp { peer, local } => {
            vars.push_new_with("REMOTE_ADDR", |text| push_ip(text, peer.ip()));
            vars.push_new_with("REMOTE_PORT", |text| push_decimal(text, peer.port()));
            vars.push_new_with("SERVER_ADDR", |text| push_ip(text, local.ip()));
            vars.push_new_with("SERVER_PORT", |text| push_decimal(text, local.port()));
        }
        Transport::Unix => vars.push_new("REMOTE_ADDR", b""),
    }
    if request.scheme == "https" {
        vars.push_new("HTTPS", b"1");
    }
    let mut host = None;
    for (name, value) in request.headers {
        match name {
            "content-type" => vars.set("CONTENT_TYPE", value),
            "content-length" => vars.set("CONTENT_LENGTH", value),
            // httpoxy: a client must not be able to set HTTP_PROXY for the app's HTTP libraries.
            "proxy" => {}
            // `X_Foo` and `X-Foo` would both become HTTP_X_FOO; a spoofed underscore header must not shadow
            // one a proxy set, so names with `_` are dropped (as Apache 2.4 and mod_wsgi do).
            _ if name.contains('_') => {}
            _ => {
                if name == "host" {
                    host = Some(value);
                }
                vars.append(header_key(name), b", ", value);
            }
        }
    }
    match (host, request.transport) {
        (Some(host), _) => vars.push_new("SERVER_NAME", host_without_port(host)),
        (None, Transport::Tcp { local, .. }) => {
            vars.push_new_with("SERVER_NAME", |text| push_ip(text, local.ip()))
        }
        (None, Transport::Unix) => vars.push_new("SERVER_NAME", b"localhost"),
    }
    if request.transport == Transport::Unix {
        let default = if request.scheme == "https" {
            "443"
        } else {
            "80"
        };
        let port = host.and_then(port_of).unwrap_or(default.as_bytes());
        vars.push_new("SERVER_PORT", port);
    }
    vars
}

/// The port of a `Host` header's value, if it names one.
fn port_of(host: &[u8]) -> Option<&[u8]> {
    let name = host_without_port(host);
    host.get(name.len()..)?
        .strip_prefix(b":")
        .filter(|port| !port.is_empty() && port.iter().all(u8::is_ascii_digit))
}

/// Writes an address as text. IPv4, by far the most common, is written directly: `core::fmt` costs more
/// than the rest of a request's CGI variables together.
fn push_ip(text: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            // Written on the stack and added at once: a push per byte, each checking capacity, costs more.
            let mut address = [0u8; 15];
            let mut len = 0;
            let mut put = |byte: u8| {
                address[len] = byte;
                len += 1;
            };
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    put(b'.');
                }
                if octet >= 100 {
                    put(b'0' + octet / 100);
                }
                if octet >= 10 {
                    put(b'0' + octet / 10 % 10);
                }
                put(b'0' + octet % 10);
            }
            text.extend_from_slice(&address[..len]);
        }
        std::net::IpAddr::V6(_) => text.extend_from_slice(ip.to_string().as_bytes()),
    }
}

fn push_decimal(text: &mut Vec<u8>, n: u16) {
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        // A remainder of a division by 10 fits a byte.
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    text.extend_from_slice(&digits[at..]);
}

/// The CGI names hosts give nearly every request, besides [`COMMON_HEADERS`]: the engine makes their
/// Python strings once (see [`crate::keys`]).
const CGI_NAMES: [&str; 39] = [
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "REQUEST_URI",
    "SERVER_PROTOCOL",
    "GATEWAY_INTERFACE",
    "SERVER_SOFTWARE",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "SERVER_ADDR",
    "SERVER_PORT",
    "SERVER_NAME",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    // Apache's own.
    "DOCUMENT_ROOT",
    "REQUEST_SCHEME",
    "CONTEXT_PREFIX",
    "CONTEXT_DOCUMENT_ROOT",
    "SERVER_ADMIN",
    "SERVER_SIGNATURE",
    "SCRIPT_FILENAME",
    "REMOTE_USER",
    "AUTH_TYPE",
    "PATH",
    "PATH_TRANSLATED",
    "UNIQUE_ID",
    "mod_wsgi.script_name",
    "mod_wsgi.path_info",
    "mod_wsgi.process_group",
    "mod_wsgi.application_group",
    "mod_wsgi.callable_object",
    "mod_wsgi.request_handler",
    "mod_wsgi.handler_script",
    "mod_wsgi.listener_host",
    "mod_wsgi.listener_port",
    "mod_wsgi.server_pid",
    "mod_wsgi.request_id",
    "mod_wsgi.connection_id",
];

/// Request headers common enough to have their CGI names written out, by lowercase name.
const COMMON_HEADERS: [(&str, &str); 12] = [
    ("host", "HTTP_HOST"),
    ("user-agent", "HTTP_USER_AGENT"),
    ("accept", "HTTP_ACCEPT"),
    ("accept-encoding", "HTTP_ACCEPT_ENCODING"),
    ("accept-language", "HTTP_ACCEPT_LANGUAGE"),
    ("connection", "HTTP_CONNECTION"),
    ("cookie", "HTTP_COOKIE"),
    ("referer", "HTTP_REFERER"),
    ("cache-control", "HTTP_CACHE_CONTROL"),
    ("x-forwarded-for", "HTTP_X_FORWARDED_FOR"),
    ("authorization", "HTTP_AUTHORIZATION"),
    (
        "upgrade-insecure-requests",
        "HTTP_UPGRADE_INSECURE_REQUESTS",
    ),
];

/// Known names whose values differ from one request to the next: not worth keeping for the next one.
const PER_REQUEST: [&str; 14] = [
    "PATH_INFO",
    "REQUEST_URI",
    "REMOTE_PORT",
    "CONTENT_LENGTH",
    "PATH_TRANSLATED",
    "UNIQUE_ID",
    "mod_wsgi.path_info",
    "mod_wsgi.request_id",
    "mod_wsgi.connection_id",
    "HTTP_COOKIE",
    "HTTP_REFERER",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_AUTHORIZATION",
    "REMOTE_USER",
];

/// The variable names most requests have, whichever host made them, each with whether its value tends
/// to repeat from one request to the next.
pub(crate) fn known_names() -> impl Iterator<Item = (&'static str, bool)> {
    CGI_NAMES
        .into_iter()
        .chain(COMMON_HEADERS.into_iter().map(|(_, key)| key))
        .map(|name| (name, !PER_REQUEST.contains(&name)))
}

/// `HTTP_` followed by the name in upper case with `-` as `_`.
fn header_key(name: &str) -> Key {
    if let Some((_, key)) = COMMON_HEADERS.iter().find(|(n, _)| *n == name) {
        return Cow::Borrowed(key);
    }
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    key.extend(name.chars().map(|c| {
        if c == '-' {
            '_'
        } else {
            c.to_ascii_uppercase()
        }
    }));
    Cow::Owned(key)
}

/// Splits a request-target into its path and query, dropping an absolute form's scheme and authority.
fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    let without_authority = match target.windows(3).position(|w| w == b"://") {
        Some(at) if !target.starts_with(b"/") => {
            let rest = &target[at + 3..];
            rest.iter()
                .position(|&b| b == b'/' || b == b'?')
                .map_or(&b""[..], |slash| &rest[slash..])
        }
        _ => target,
    };
    match without_authority.iter().position(|&b| b == b'?') {
        Some(q) => (&without_authority[..q], &without_authority[q + 1..]),
        None => (without_authority, b""),
    }
}

/// Writes the percent-decoded path, less the mount point, so SCRIPT_NAME + PATH_INFO is the whole path.
fn decode_path(text: &mut Vec<u8>, path: &[u8], script_name: &[u8]) {
    let start = text.len();
    text.extend(percent_encoding::percent_decode(path));
    let decoded = &text[start..];
    if let Some(rest) = decoded.strip_prefix(script_name) {
        if !script_name.is_empty() && (rest.is_empty() || rest.starts_with(b"/")) {
            text.drain(start..start + script_name.len());
        }
    }
}

fn host_without_port(host: &[u8]) -> &[u8] {
    if host.starts_with(b"[") {
        // An IPv6 literal: keep the brackets, drop a trailing :port.
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ports_are_written_as_std_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "10.0.100.9",
            "1.20.3.45",
            "199.99.9.100",
            "::1",
            "fe80::1",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut text = b"x".to_vec();
            push_ip(&mut text, ip);
            assert_eq!(text, format!("x{ip}").into_bytes());
        }
        for port in [0u16, 7, 80, 443, 8000, 65535] {
            let mut text = Vec::new();
            push_decimal(&mut text, port);
            assert_eq!(text, port.to_string().into_bytes());
        }
    }

    fn request<'a>(
        target: &'a [u8],
        headers: &'a [(&'a str, &'a [u8])],
    ) -> HttpRequest<'a, impl Iterator<Item = (&'a str, &'a [u8])>> {
        HttpRequest {
            method: "GET",
            target,
            protocol: "HTTP/1.1",
            headers: headers.iter().copied(),
            transport: Transport::Tcp {
                peer: "10.1.2.3:5555".parse().unwrap(),
                local: "127.0.0.1:8000".parse().unwrap(),
            },
            scheme: "http",
            script_name: "",
        }
    }

    fn get<'v>(vars: &'v CgiVars, key: &str) -> Option<&'v str> {
        vars.get(key).map(|v| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn path_info_is_percent_decoded_and_query_kept_raw() {
        let vars = from_http(request(b"/a%20b/%E2%82%AC?x=%20y&z", &[]));
        assert_eq!(vars.get("PATH_INFO").unwrap(), b"/a b/\xe2\x82\xac");
        assert_eq!(get(&vars, "QUERY_STRING"), Some("x=%20y&z"));
        assert_eq!(get(&vars, "REQUEST_URI"), Some("/a%20b/%E2%82%AC?x=%20y&z"));
        assert_eq!(get(&vars, "SCRIPT_NAME"), Some(""));
    }

    #[test]
    fn a_unix_socket_request_has_no_addresses_and_its_port_from_host() {
        let unix = |headers| {
            let mut req = request(b"/", headers);
            req.transport = Transport::Unix;
            from_http(req)
        };
        let vars = unix(&[("host", b"example.com:8080")]);
        assert_eq!(get(&vars, "REMOTE_ADDR"), Some(""));
        assert_eq!(get(&vars, "REMOTE_PORT"), None);
        assert_eq!(get(&vars, "SERVER_ADDR"), None);
        assert_eq!(get(&vars, "SERVER_NAME"), Some("example.com"));
        assert_eq!(get(&vars, "SERVER_PORT"), Some("8080"));
        let vars = unix(&[("host", b"[::1]")]);
        assert_eq!(get(&vars, "SERVER_NAME"), Some("[::1]"));
        assert_eq!(get(&vars, "SERVER_PORT"), Some("80"));
        let vars = unix(&[]);
        assert_eq!(get(&vars, "SERVER_NAME"), Some("localhost"));
        assert_eq!(get(&vars, "SERVER_PORT"), Some("80"));
    }

    #[test]
    fn absolute_form_drops_scheme_and_authority() {
        let vars = from_http(request(b"http://example.com:81/p?q", &[]));
        assert_eq!(get(&vars, "PATH_INFO"), Some("/p"));
        assert_eq!(get(&vars, "QUERY_STRING"), Some("q"));
    }

    #[test]
    fn script_name_is_removed_from_path_info() {
        let mut req = request(b"/app/x/y", &[]);
        req.script_name = "/app";
        let vars = from_http(req);
        assert_eq!(get(&vars, "SCRIPT_NAME"), Some("/app"));
        assert_eq!(get(&vars, "PATH_INFO"), Some("/x/y"));
    }

    #[test]
    fn headers_map_to_http_keys_joined_and_filtered() {
        let headers: &[(&str, &[u8])] = &[
            ("host", b"example.com:8080"),
            ("x-thing", b"a"),
            ("x-thing", b"b"),
            ("x_thing", b"spoofed"),
            ("proxy", b"http://evil"),
            ("content-type", b"text/plain"),
            ("content-length", b"5"),
        ];
        let vars = from_http(request(b"/", headers));
        assert_eq!(get(&vars, "HTTP_X_THING"), Some("a, b"));
        assert_eq!(get(&vars, "HTTP_PROXY"), None);
        assert_eq!(get(&vars, "CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get(&vars, "CONTENT_LENGTH"), Some("5"));
        assert_eq!(get(&vars, "HTTP_CONTENT_TYPE"), None);
        assert_eq!(get(&vars, "SERVER_NAME"), Some("example.com"));
        assert_eq!(get(&vars, "SERVER_PORT"), Some("8000"));
        assert_eq!(get(&vars, "REMOTE_ADDR"), Some("10.1.2.3"));
        assert_eq!(get(&vars, "REMOTE_PORT"), Some("5555"));
    }

    #[test]
    fn server_name_falls_back_to_local_address_and_keeps_ipv6_brackets() {
        assert_eq!(
            get(&from_http(request(b"/", &[])), "SERVER_NAME"),
            Some("127.0.0.1")
        );
        let headers: &[(&str, &[u8])] = &[("host", b"[::1]:8000")];
        assert_eq!(
            get(&from_http(request(b"/", headers)), "SERVER_NAME"),
            Some("[::1]")
        );
    }

    #[test]
    fn set_replaces_and_append_joins() {
        let mut vars = CgiVars::default();
        vars.set("A", b"1");
        vars.set("A", b"2");
        vars.append("B", b"; ", b"x");
        vars.append("B", b"; ", b"y");
        vars.set("C", b"c");
        // B is no longer the last value written: appending moves it.
        vars.append("B", b"; ", b"z");
        vars.append("A", b"", b"3");
        assert_eq!(vars.len(), 3);
        assert_eq!(vars.get("A"), Some(&b"23"[..]));
        assert_eq!(vars.get("B"), Some(&b"x; y; z"[..]));
        assert_eq!(vars.get("C"), Some(&b"c"[..]));
        let keys: Vec<&str> = vars.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["A", "B", "C"]);
    }
}
