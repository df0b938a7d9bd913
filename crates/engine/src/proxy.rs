//! Trusted proxy headers (mod_wsgi's `WSGITrustedProxyHeaders` and `WSGITrustedProxies`, mod_wsgi-express's
//! `--trust-proxy-header` and `--trust-proxy`): what a front-end proxy says of the original request (client
//! address, host, port, scheme, mount point) replaces what the host saw, but only for the headers named,
//! only from proxies trusted, and every other header of the same kind is removed so a client cannot slip in
//! its own. mod_wsgi 6's rules, for both hosts: each edits its own environ through [`Env`].

use std::net::IpAddr;

use crate::CgiVars;

/// The environ as this module edits it (Apache's `subprocess_env`, [`CgiVars`], or a map in tests).
pub trait Env {
    /// The variable's value, if set.
    fn get(&self, key: &str) -> Option<String>;
    /// Sets the variable, replacing any value.
    fn set(&mut self, key: &str, value: &str);
    /// Removes the variable.
    fn unset(&mut self, key: &str);
}

impl Env for CgiVars {
    fn get(&self, key: &str) -> Option<String> {
        CgiVars::get(self, key).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn set(&mut self, key: &str, value: &str) {
        CgiVars::set(self, key.to_owned(), value);
    }

    fn unset(&mut self, key: &str) {
        self.remove(key);
    }
}

/// What a proxy header speaks for; each kind is taken from one header at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Client,
    Host,
    Server,
    Port,
    ScriptName,
    Scheme,
}

/// How a header's value is applied.
#[derive(Debug, Clone, Copy)]
enum Apply {
    ForwardedFor,
    ClientIp,
    Host,
    Server,
    Port,
    ScriptName,
    SchemeName,
    SchemeFlag,
}

const HEADERS: &[(&str, Kind, Apply)] = &[
    ("HTTP_X_FORWARDED_FOR", Kind::Client, Apply::ForwardedFor),
    ("HTTP_X_CLIENT_IP", Kind::Client, Apply::ClientIp),
    ("HTTP_X_REAL_IP", Kind::Client, Apply::ClientIp),
    ("HTTP_X_FORWARDED_HOST", Kind::Host, Apply::Host),
    ("HTTP_X_HOST", Kind::Host, Apply::Host),
    ("HTTP_X_FORWARDED_SERVER", Kind::Server, Apply::Server),
    ("HTTP_X_FORWARDED_PORT", Kind::Port, Apply::Port),
    ("HTTP_X_SCRIPT_NAME", Kind::ScriptName, Apply::ScriptName),
    (
        "HTTP_X_FORWARDED_SCRIPT_NAME",
        Kind::ScriptName,
        Apply::ScriptName,
    ),
    ("HTTP_X_FORWARDED_PROTO", Kind::Scheme, Apply::SchemeName),
    ("HTTP_X_FORWARDED_SCHEME", Kind::Scheme, Apply::SchemeName),
    ("HTTP_X_SCHEME", Kind::Scheme, Apply::SchemeName),
    ("HTTP_X_FORWARDED_HTTPS", Kind::Scheme, Apply::SchemeFlag),
    ("HTTP_X_FORWARDED_SSL", Kind::Scheme, Apply::SchemeFlag),
    ("HTTP_X_HTTPS", Kind::Scheme, Apply::SchemeFlag),
];

/// A trusted proxy address or network (`10.0.0.0/8`, `192.168.1.5`, `::1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// An address, or an address and a prefix length; the error is mod_wsgi's message.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| {
            format!("Unable to parse trusted proxy IP address/subnet of \"{text}\".")
        })?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| {
                    format!("Unable to parse trusted proxy IP address/subnet of \"{text}\".")
                })?,
            None => bits,
        };
        Ok(Self { address, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let (network, ip, bits) = match (self.address, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                (u128::from(u32::from(n)), u128::from(u32::from(a)), 32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
            (IpAddr::V4(n), IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(a) => (u128::from(u32::from(n)), u128::from(u32::from(a)), 32),
                None => return false,
            },
            (IpAddr::V6(_), IpAddr::V4(_)) => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || (network >> shift) == (ip >> shift)
    }
}

fn trusted(networks: &[Network], ip: &str) -> bool {
    ip.trim()
        .parse::<IpAddr>()
        .is_ok_and(|ip| networks.iter().any(|n| n.contains(ip)))
}

/// Whether a header (in its environ form) is one a proxy may be trusted for: the others have no effect.
pub fn is_known(env_name: &str) -> bool {
    HEADERS.iter().any(|&(header, _, _)| header == env_name)
}

/// The headers a proxy may be trusted for, as a client writes them (`X-Forwarded-For`).
pub fn known_headers() -> impl Iterator<Item = String> {
    HEADERS.iter().map(|&(header, _, _)| {
        let name = header.trim_start_matches("HTTP_").to_ascii_lowercase();
        name.split('_')
            .map(|word| {
                let mut chars = word.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect::<Vec<_>>()
            .join("-")
    })
}

/// A header name as the directive gives it (`X-Forwarded-For`) in its environ form.
pub fn env_name(header: &str) -> String {
    let mut name = String::from("HTTP_");
    name.extend(header.chars().map(|c| match c {
        '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    name
}

/// Applies the trusted headers (in their environ form) to `env`; true if a header settled the scheme.
/// Without `proxies`, every client is trusted (mod_wsgi's default when only the headers are named).
pub fn apply(env: &mut impl Env, headers: &[String], proxies: Option<&[Network]>) -> bool {
    let from_trusted_proxy = match proxies {
        None => true,
        Some(networks) => env
            .get("REMOTE_ADDR")
            .is_some_and(|ip| trusted(networks, &ip)),
    };
    let mut matched: Vec<Kind> = Vec::new();
    let mut kept: Vec<(Kind, &str)> = Vec::new();
    for name in headers {
        let Some(&(header, kind, how)) = HEADERS.iter().find(|(h, _, _)| h == name) else {
            continue;
        };
        matched.push(kind);
        if !from_trusted_proxy {
            continue;
        }
        let Some(value) = env.get(header) else {
            continue;
        };
        apply_one(env, how, &value, proxies);
        kept.push((kind, header));
    }
    for &(header, kind, _) in HEADERS {
        let kept_here = kept.iter().any(|&(k, h)| k == kind && h == header);
        if matched.contains(&kind) && !kept_here {
            env.unset(header);
        }
    }
    kept.iter().any(|&(kind, _)| kind == Kind::Scheme)
}

fn apply_one(env: &mut impl Env, how: Apply, value: &str, proxies: Option<&[Network]>) {
    match how {
        Apply::ForwardedFor => forwarded_for(env, value, proxies),
        Apply::ClientIp => env.set("REMOTE_ADDR", value),
        Apply::Host => env.set("HTTP_HOST", value),
        Apply::Server => env.set("SERVER_NAME", value),
        Apply::Port => env.set("SERVER_PORT", value),
        Apply::ScriptName => {
            env.set("mod_wsgi.mount_point", value);
            env.set("SCRIPT_NAME", value);
        }
        Apply::SchemeName => {
            if value.eq_ignore_ascii_case("https") {
                env.set("HTTPS", "1");
            } else if value.eq_ignore_ascii_case("http") {
                env.unset("HTTPS");
            }
        }
        Apply::SchemeFlag => {
            let v = value.to_ascii_lowercase();
            if matches!(v.as_str(), "on" | "true" | "1") {
                env.set("HTTPS", "1");
            } else if matches!(v.as_str(), "off" | "false" | "0") {
                env.unset("HTTPS");
            }
        }
    }
}

/// X-Forwarded-For: without trusted proxies the first address is the client; with them, the client is the
/// address just before the trusted proxies at the end of the list, which is kept from there on.
fn forwarded_for(env: &mut impl Env, value: &str, proxies: Option<&[Network]>) {
    let items: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect();
    let Some(networks) = proxies else {
        if let Some(first) = items.first() {
            env.set("REMOTE_ADDR", first);
        }
        return;
    };
    let Some(last) = items.last() else {
        return;
    };
    let mut first_trusted = None;
    for (i, item) in items.iter().enumerate().rev() {
        if !trusted(networks, item) {
            break;
        }
        first_trusted = Some(i);
    }
    match first_trusted {
        Some(first) => {
            let client = first.saturating_sub(1);
            env.set("REMOTE_ADDR", items[client]);
            env.set("HTTP_X_FORWARDED_FOR", &items[client..].join(", "));
        }
        None => {
            env.set("REMOTE_ADDR", last);
            env.set("HTTP_X_FORWARDED_FOR", last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    impl Env for HashMap<String, String> {
        fn get(&self, key: &str) -> Option<String> {
            HashMap::get(self, key).cloned()
        }
        fn set(&mut self, key: &str, value: &str) {
            self.insert(key.to_owned(), value.to_owned());
        }
        fn unset(&mut self, key: &str) {
            self.remove(key);
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn forwarded_for_without_trusted_proxies_takes_the_first_address() {
        let mut e = env(&[
            ("REMOTE_ADDR", "127.0.0.1"),
            ("HTTP_X_FORWARDED_FOR", "1.2.3.4, 10.0.0.1"),
            ("HTTP_X_REAL_IP", "6.6.6.6"),
        ]);
        apply(&mut e, &[env_name("X-Forwarded-For")], None);
        assert_eq!(e["REMOTE_ADDR"], "1.2.3.4");
        // Another header of the same kind is removed, so it cannot be used to spoof.
        assert!(!e.contains_key("HTTP_X_REAL_IP"));
    }

    #[test]
    fn forwarded_for_with_trusted_proxies_stops_at_the_first_untrusted_address() {
        let proxies = [
            Network::parse("10.0.0.0/8").unwrap(),
            Network::parse("127.0.0.1").unwrap(),
        ];
        let mut e = env(&[
            ("REMOTE_ADDR", "127.0.0.1"),
            ("HTTP_X_FORWARDED_FOR", "9.9.9.9, 1.2.3.4, 10.0.0.7"),
        ]);
        apply(&mut e, &[env_name("X-Forwarded-For")], Some(&proxies));
        assert_eq!(e["REMOTE_ADDR"], "1.2.3.4");
        assert_eq!(e["HTTP_X_FORWARDED_FOR"], "1.2.3.4, 10.0.0.7");
    }

    #[test]
    fn headers_from_an_untrusted_client_are_dropped_not_applied() {
        let proxies = [Network::parse("10.0.0.0/8").unwrap()];
        let mut e = env(&[
            ("REMOTE_ADDR", "127.0.0.1"),
            ("HTTP_X_FORWARDED_PROTO", "https"),
        ]);
        let scheme = apply(&mut e, &[env_name("X-Forwarded-Proto")], Some(&proxies));
        assert!(!scheme);
        assert!(!e.contains_key("HTTPS"));
        assert!(!e.contains_key("HTTP_X_FORWARDED_PROTO"));
    }

    #[test]
    fn scheme_host_port_and_script_name() {
        let mut e = env(&[
            ("HTTP_X_FORWARDED_PROTO", "https"),
            ("HTTP_X_FORWARDED_HOST", "example.com"),
            ("HTTP_X_FORWARDED_PORT", "443"),
            ("HTTP_X_SCRIPT_NAME", "/app"),
        ]);
        let names: Vec<String> = [
            "X-Forwarded-Proto",
            "X-Forwarded-Host",
            "X-Forwarded-Port",
            "X-Script-Name",
        ]
        .iter()
        .map(|h| env_name(h))
        .collect();
        assert!(apply(&mut e, &names, None));
        assert_eq!(e["HTTPS"], "1");
        assert_eq!(e["HTTP_HOST"], "example.com");
        assert_eq!(e["SERVER_PORT"], "443");
        assert_eq!(e["SCRIPT_NAME"], "/app");
    }

    #[test]
    fn known_headers_are_named_as_clients_write_them() {
        let names: Vec<String> = known_headers().collect();
        assert_eq!(names[0], "X-Forwarded-For");
        assert!(names.contains(&"X-Forwarded-Proto".to_owned()));
        assert!(names.iter().all(|n| is_known(&env_name(n))));
        assert!(!is_known(&env_name("X-Custom")));
    }

    #[test]
    fn networks_parse_and_match() {
        assert!(Network::parse("10.0.0.0/8")
            .unwrap()
            .contains("10.200.1.1".parse().unwrap()));
        assert!(!Network::parse("10.0.0.0/8")
            .unwrap()
            .contains("11.0.0.1".parse().unwrap()));
        assert!(Network::parse("::1")
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert!(Network::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("not-an-ip").is_err());
    }
}
