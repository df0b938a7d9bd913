//! `--access-log-format`: Apache's `LogFormat` language (mod_log_config), parsed once at start-up into
//! [`Format`], and the rendering of one response's [`Fields`] by it.
//!
//! Pure: no I/O, no clock. Everything a client sent (the request line, headers) is escaped as Apache
//! escapes it, so a client cannot forge a line or smuggle terminal escapes into the log.

use std::io::Write as _;

use http::{HeaderName, HeaderValue};

/// Apache's `common` format.
pub(crate) const COMMON: &str = r#"%h %l %u %t "%r" %>s %b"#;
/// Apache's `combined` format, which gunicorn's default access log also follows.
pub(crate) const COMBINED: &str = r#"%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i""#;

/// A format that cannot be used, with what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FormatError {
    #[error(
        "'%{directive}' at offset {offset} is not a directive rwsgi knows (supported: {SUPPORTED})"
    )]
    Unknown { directive: char, offset: usize },
    #[error("'%{{' at offset {offset} has no closing '}}'")]
    Unclosed { offset: usize },
    #[error("the format ends in a lone '%'")]
    Trailing,
    #[error(
        "'%{directive}' at offset {offset} needs a name in braces, e.g. %{{User-Agent}}{directive}"
    )]
    NameMissing { directive: char, offset: usize },
    #[error("'%{{{name}}}{directive}' at offset {offset}: rwsgi knows only {allowed}")]
    Parameter {
        name: String,
        directive: char,
        offset: usize,
        allowed: &'static str,
    },
    #[error("'{name}' at offset {offset} is not a header name")]
    BadName { name: String, offset: usize },
    #[error("'{text}' at offset {offset} is not a list of status codes")]
    Condition { text: String, offset: usize },
}

const SUPPORTED: &str =
    "%% %a %A %b %B %D %h %H %{NAME}i %l %m %{NAME}o %p %P %q %r %s %t %T %u %U";

/// A parsed format: literal text and directives, and the headers its directives name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Format {
    items: Vec<Item>,
    /// Request headers named by `%{…}i`; [`Fields::request_headers`] follows this order.
    pub(crate) request_headers: Vec<HeaderName>,
    /// Response headers named by `%{…}o`; [`Fields::response_headers`] follows this order.
    pub(crate) response_headers: Vec<HeaderName>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Text(String),
    Field {
        field: Field,
        condition: Option<Condition>,
    },
}

/// `%400,501{…}i` logs the field only for those statuses; `%!200,304{…}i` for all others.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    negated: bool,
    statuses: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    RemoteIp,
    LocalIp,
    LocalPort,
    RemotePort,
    Bytes { dash_for_zero: bool },
    Duration(Unit),
    Protocol,
    RequestHeader(usize),
    ResponseHeader(usize),
    Dash,
    Method,
    Pid,
    Query,
    RequestLine,
    Status,
    Time,
    Epoch(Unit),
    Path,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Seconds,
    Millis,
    Micros,
}

/// What a rendered line is made of: one response, as the HTTP layer saw it.
pub(crate) struct Fields<'a> {
    /// The client's and the server's addresses; none over a UNIX socket (logged as `-`).
    pub(crate) remote: Option<std::net::SocketAddr>,
    pub(crate) local: Option<std::net::SocketAddr>,
    pub(crate) method: &'a str,
    /// The request target as the client sent it (path and query, or an absolute URI).
    pub(crate) target: &'a str,
    pub(crate) protocol: &'a str,
    pub(crate) status: u16,
    /// Body bytes handed to the connection.
    pub(crate) bytes: u64,
    /// From the request's arrival to the response's end.
    pub(crate) elapsed: std::time::Duration,
    /// When the request arrived, since the epoch.
    pub(crate) arrived: std::time::Duration,
    /// `%t`'s text for the request's arrival: `[25/Nov/2026:03:32:44 +0000]`.
    pub(crate) local_time: &'a str,
    pub(crate) pid: u32,
    /// The first value of each of [`Format::request_headers`], if the request had it.
    pub(crate) request_headers: &'a [Option<HeaderValue>],
    /// The first value of each of [`Format::response_headers`], if the response had it.
    pub(crate) response_headers: &'a [Option<HeaderValue>],
}

impl Format {
    /// A format given as `common`, `combined` or a `LogFormat` string.
    pub(crate) fn parse(format: &str) -> Result<Self, FormatError> {
        let format = match format {
            "common" => COMMON,
            "combined" => COMBINED,
            other => other,
        };
        let mut parsed = Format {
            items: Vec::new(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
        };
        let mut text = String::new();
        let mut rest = format.char_indices().peekable();
        while let Some((offset, c)) = rest.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            let condition = parse_condition(&mut rest, offset)?;
            // `<` and `>` choose the original or the final request of an internal redirect; there is one.
            while rest.next_if(|&(_, c)| c == '<' || c == '>').is_some() {}
            let name = match rest.next_if(|&(_, c)| c == '{') {
                Some(_) => {
                    let mut name = String::new();
                    loop {
                        match rest.next() {
                            Some((_, '}')) => break,
                            Some((_, c)) => name.push(c),
                            None => return Err(FormatError::Unclosed { offset }),
                        }
                    }
                    Some(name)
                }
                None => None,
            };
            let Some((_, directive)) = rest.next() else {
                return Err(FormatError::Trailing);
            };
            if directive == '%' && name.is_none() && condition.is_none() {
                text.push('%');
                continue;
            }
            let field = parsed.field(directive, name, offset)?;
            if !text.is_empty() {
                parsed.items.push(Item::Text(std::mem::take(&mut text)));
            }
            parsed.items.push(Item::Field { field, condition });
        }
        if !text.is_empty() {
            parsed.items.push(Item::Text(text));
        }
        Ok(parsed)
    }

    fn field(
        &mut self,
        directive: char,
        name: Option<String>,
        offset: usize,
    ) -> Result<Field, FormatError> {
        let parameter = |allowed: &'static str| FormatError::Parameter {
            name: name.clone().unwrap_or_default(),
            directive,
            offset,
            allowed,
        };
        let header = |names: &mut Vec<HeaderName>| -> Result<usize, FormatError> {
            let name = name
                .as_deref()
                .filter(|n| !n.is_empty())
                .ok_or(FormatError::NameMissing { directive, offset })?;
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| FormatError::BadName {
                    name: name.to_owned(),
                    offset,
                })?;
            Ok(match names.iter().position(|n| *n == name) {
                Some(index) => index,
                None => {
                    names.push(name);
                    names.len() - 1
                }
            })
        };
        let field = match (directive, name.as_deref()) {
            ('a', None | Some("c")) | ('h', None) => Field::RemoteIp,
            ('A', None) => Field::LocalIp,
            ('p', None | Some("canonical") | Some("local")) => Field::LocalPort,
            ('p', Some("remote")) => Field::RemotePort,
            ('b', None) => Field::Bytes {
                dash_for_zero: true,
            },
            ('B', None) => Field::Bytes {
                dash_for_zero: false,
            },
            ('D', None) => Field::Duration(Unit::Micros),
            ('T', None | Some("s")) => Field::Duration(Unit::Seconds),
            ('T', Some("ms")) => Field::Duration(Unit::Millis),
            ('T', Some("us")) => Field::Duration(Unit::Micros),
            ('H', None) => Field::Protocol,
            ('i', _) => Field::RequestHeader(header(&mut self.request_headers)?),
            ('o', _) => Field::ResponseHeader(header(&mut self.response_headers)?),
            // Ident lookups and authenticated users are Apache's; a standalone server has neither.
            ('l' | 'u', None) => Field::Dash,
            ('m', None) => Field::Method,
            ('P', None | Some("pid")) => Field::Pid,
            ('q', None) => Field::Query,
            ('r', None) => Field::RequestLine,
            ('s', None) => Field::Status,
            ('t', None) => Field::Time,
            ('t', Some("sec")) => Field::Epoch(Unit::Seconds),
            ('t', Some("msec")) => Field::Epoch(Unit::Millis),
            ('t', Some("usec")) => Field::Epoch(Unit::Micros),
            ('U', None) => Field::Path,
            ('a', Some(_)) => return Err(parameter("%a and %{c}a")),
            ('p', Some(_)) => return Err(parameter("%p, %{local}p, %{canonical}p and %{remote}p")),
            ('T', Some(_)) => return Err(parameter("%T, %{s}T, %{ms}T and %{us}T")),
            ('t', Some(_)) => return Err(parameter("%t, %{sec}t, %{msec}t and %{usec}t")),
            ('P', Some(_)) => return Err(parameter("%P and %{pid}P")),
            (
                'h' | 'A' | 'b' | 'B' | 'D' | 'H' | 'l' | 'u' | 'm' | 'q' | 'r' | 's' | 'U',
                Some(_),
            ) => return Err(parameter("this directive without braces")),
            (directive, _) => return Err(FormatError::Unknown { directive, offset }),
        };
        Ok(field)
    }

    /// Whether a line shows how long the response took (`%D`, `%T`): only then is the clock read at its end.
    pub(crate) fn shows_duration(&self) -> bool {
        self.items.iter().any(|item| {
            matches!(
                item,
                Item::Field {
                    field: Field::Duration(_),
                    ..
                }
            )
        })
    }

    /// Appends the line for `fields`, newline included, to `out`.
    pub(crate) fn render(&self, fields: &Fields<'_>, out: &mut Vec<u8>) {
        for item in &self.items {
            match item {
                Item::Text(text) => out.extend_from_slice(text.as_bytes()),
                Item::Field { field, condition } => {
                    if condition.as_ref().is_some_and(|c| !c.holds(fields.status)) {
                        out.push(b'-');
                    } else {
                        render_field(*field, fields, out);
                    }
                }
            }
        }
        out.push(b'\n');
    }
}

fn parse_condition(
    rest: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    offset: usize,
) -> Result<Option<Condition>, FormatError> {
    let mut text = String::new();
    while let Some((_, c)) = rest.next_if(|&(_, c)| c == '!' || c == ',' || c.is_ascii_digit()) {
        text.push(c);
    }
    if text.is_empty() {
        return Ok(None);
    }
    let invalid = || FormatError::Condition {
        text: text.clone(),
        offset: offset + 1,
    };
    let (negated, list) = match text.strip_prefix('!') {
        Some(list) => (true, list),
        None => (false, text.as_str()),
    };
    let statuses = list
        .split(',')
        .map(|code| match code.parse::<u16>() {
            Ok(status) if code.len() == 3 => Ok(status),
            _ => Err(invalid()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Condition { negated, statuses }))
}

impl Condition {
    fn holds(&self, status: u16) -> bool {
        self.statuses.contains(&status) != self.negated
    }
}

fn render_field(field: Field, f: &Fields<'_>, out: &mut Vec<u8>) {
    let mut number = |n: u128| {
        let mut buf = itoa::Buffer::new();
        out.extend_from_slice(buf.format(n).as_bytes());
    };
    match field {
        Field::Bytes { dash_for_zero } if f.bytes == 0 && dash_for_zero => out.push(b'-'),
        Field::Bytes { .. } => number(f.bytes.into()),
        Field::Duration(unit) => number(in_unit(f.elapsed, unit)),
        Field::Epoch(unit) => number(in_unit(f.arrived, unit)),
        Field::LocalPort | Field::RemotePort | Field::RemoteIp | Field::LocalIp => {
            address(field, f.remote, f.local, out)
        }
        Field::Pid => number(f.pid.into()),
        Field::Status => number(f.status.into()),
        Field::Dash => out.push(b'-'),
        Field::Method => escape(f.method.as_bytes(), out),
        Field::Protocol => escape(f.protocol.as_bytes(), out),
        // Decoded, as Apache logs the path it served (`r->uri`).
        Field::Path => escape(&percent_decoded(split_target(f.target).0.as_bytes()), out),
        Field::Query => {
            if let Some(query) = split_target(f.target).1 {
                out.push(b'?');
                escape(query.as_bytes(), out);
            }
        }
        Field::RequestLine => {
            escape(f.method.as_bytes(), out);
            out.push(b' ');
            escape(f.target.as_bytes(), out);
            out.push(b' ');
            escape(f.protocol.as_bytes(), out);
        }
        Field::Time => out.extend_from_slice(f.local_time.as_bytes()),
        Field::RequestHeader(index) => header(f.request_headers.get(index), out),
        Field::ResponseHeader(index) => header(f.response_headers.get(index), out),
    }
}

fn address(
    field: Field,
    remote: Option<std::net::SocketAddr>,
    local: Option<std::net::SocketAddr>,
    out: &mut Vec<u8>,
) {
    let (addr, port) = match field {
        Field::RemoteIp => (remote, false),
        Field::RemotePort => (remote, true),
        Field::LocalIp => (local, false),
        _ => (local, true),
    };
    match addr {
        None => out.push(b'-'),
        Some(addr) if port => {
            out.extend_from_slice(itoa::Buffer::new().format(addr.port()).as_bytes())
        }
        Some(addr) => ip(addr.ip(), out),
    }
}

fn in_unit(duration: std::time::Duration, unit: Unit) -> u128 {
    match unit {
        Unit::Seconds => duration.as_secs().into(),
        Unit::Millis => duration.as_millis(),
        Unit::Micros => duration.as_micros(),
    }
}

fn ip(ip: std::net::IpAddr, out: &mut Vec<u8>) {
    // An IPv4 client of a dual-stack socket is logged as IPv4, as Apache logs it.
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    };
    match ip {
        // The common case, without the formatting machinery (a tenth of the log's cost otherwise).
        std::net::IpAddr::V4(v4) => {
            let mut buf = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(buf.format(octet).as_bytes());
            }
        }
        // Writing to a Vec cannot fail.
        v6 => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn header(value: Option<&Option<HeaderValue>>, out: &mut Vec<u8>) {
    match value.and_then(Option::as_ref) {
        Some(value) => escape(value.as_bytes(), out),
        None => out.push(b'-'),
    }
}

/// `%XX` escapes decoded; a `%` not followed by two hex digits stays as it is.
fn percent_decoded(path: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !path.contains(&b'%') {
        return std::borrow::Cow::Borrowed(path);
    }
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let decoded = match (path.get(i), path.get(i + 1), path.get(i + 2)) {
            (Some(b'%'), Some(&h), Some(&l)) => hex(h).zip(hex(l)),
            _ => None,
        };
        match decoded {
            Some((h, l)) => {
                // Two hex digits make at most 255.
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            None => {
                out.push(path[i]);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The path and the query (without its `?`) of a request target.
fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// Apache's `ap_escape_logitem`: quotes, backslashes, control characters and every byte outside ASCII are
/// written as escapes, so one line is one request and the log stays plain text.
fn escape(bytes: &[u8], out: &mut Vec<u8>) {
    let plain = |byte: u8| (0x20..=0x7e).contains(&byte) && byte != b'"' && byte != b'\\';
    let mut rest = bytes;
    // Runs of plain bytes are copied whole: client text rarely needs an escape at all.
    while let Some(at) = rest.iter().position(|&byte| !plain(byte)) {
        out.extend_from_slice(&rest[..at]);
        escape_byte(rest[at], out);
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

fn escape_byte(byte: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match byte {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\x08' => out.extend_from_slice(b"\\b"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        b'\x0b' => out.extend_from_slice(b"\\v"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'x',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 15)],
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fields<'a>(
        request_headers: &'a [Option<HeaderValue>],
        response_headers: &'a [Option<HeaderValue>],
    ) -> Fields<'a> {
        Fields {
            remote: Some("[::ffff:10.1.2.3]:40000".parse().unwrap()),
            local: Some("127.0.0.1:8000".parse().unwrap()),
            method: "GET",
            target: "/a%20b?x=1&y=\"2\"",
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 12,
            elapsed: Duration::from_micros(1_234_567),
            arrived: Duration::from_micros(1_764_041_564_123_456),
            local_time: "[25/Nov/2026:03:32:44 +0000]",
            pid: 4242,
            request_headers,
            response_headers,
        }
    }

    fn line(format: &str, fields: &Fields<'_>) -> String {
        let mut out = Vec::new();
        Format::parse(format).unwrap().render(fields, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn combined_is_apache_s_and_escapes_what_the_client_sent() {
        let format = Format::parse("combined").unwrap();
        assert_eq!(
            format.request_headers,
            [http::header::REFERER, http::header::USER_AGENT]
        );
        assert!(!format.shows_duration());
        assert!(Format::parse("%h %{ms}T").unwrap().shows_duration());
        let agent = [
            None,
            Some(HeaderValue::from_bytes(b"curl \"x\"\t\xff\\").unwrap()),
        ];
        let f = fields(&agent, &[]);
        assert_eq!(
            line("combined", &f),
            "10.1.2.3 - - [25/Nov/2026:03:32:44 +0000] \"GET /a%20b?x=1&y=\\\"2\\\" HTTP/1.1\" \
             200 12 \"-\" \"curl \\\"x\\\"\\t\\xff\\\\\"\n"
        );
    }

    #[test]
    fn every_directive_renders() {
        let (host, content_type) = (
            [Some(HeaderValue::from_static("example.org"))],
            [Some(HeaderValue::from_static("text/plain"))],
        );
        let f = fields(&host, &content_type);
        assert_eq!(
            line(
                "%a %A %p %{remote}p %b %B %D %T %{ms}T %H %m %U %q %P %s %>s %{sec}t %{msec}t %{Host}i %{content-type}o %% %l %u",
                &f
            ),
            "10.1.2.3 127.0.0.1 8000 40000 12 12 1234567 1 1234 HTTP/1.1 GET /a b ?x=1&y=\\\"2\\\" 4242 \
             200 200 1764041564 1764041564123 example.org text/plain % - -\n"
        );
        let empty = Fields {
            bytes: 0,
            target: "/",
            ..fields(&[None], &[None])
        };
        assert_eq!(line("%b %B [%q] %{Host}i", &empty), "- 0 [] -\n");
        let unix = Fields {
            remote: None,
            local: None,
            ..fields(&[], &[])
        };
        assert_eq!(line("%h %a %{remote}p %A %p", &unix), "- - - - -\n");
    }

    #[test]
    fn status_conditions_choose_when_a_field_is_logged() {
        let agent = [Some(HeaderValue::from_static("agent"))];
        let f = fields(&agent, &[]);
        assert_eq!(line("%200,304{User-Agent}i", &f), "agent\n");
        assert_eq!(line("%!200,304{User-Agent}i", &f), "-\n");
        assert_eq!(line("%404s", &f), "-\n");
    }

    #[test]
    fn a_header_named_twice_is_captured_once() {
        let format = Format::parse("%{Host}i %{host}i %{X-A}o").unwrap();
        assert_eq!(format.request_headers, [http::header::HOST]);
        assert_eq!(format.response_headers, [HeaderName::from_static("x-a")]);
    }

    #[test]
    fn mistakes_are_named_with_their_place() {
        let err = |format| Format::parse(format).unwrap_err();
        assert_eq!(
            err("%h %Z"),
            FormatError::Unknown {
                directive: 'Z',
                offset: 3
            }
        );
        assert_eq!(err("ab %{Referer"), FormatError::Unclosed { offset: 3 });
        assert_eq!(err("%h %"), FormatError::Trailing);
        assert_eq!(
            err("%i"),
            FormatError::NameMissing {
                directive: 'i',
                offset: 0
            }
        );
        assert!(matches!(err("%{%d/%b}t"), FormatError::Parameter { .. }));
        assert!(matches!(err("%{x}s"), FormatError::Parameter { .. }));
        assert!(matches!(err("%{bad name}i"), FormatError::BadName { .. }));
        assert!(matches!(err("%40s"), FormatError::Condition { .. }));
        assert!(err("%h %Z").to_string().contains("%Z"));
    }

    #[test]
    fn the_path_is_logged_decoded_and_escaped() {
        let f = Fields {
            target: "/caf%C3%A9/%22x%22/%zz/100%?q=%20",
            ..fields(&[], &[])
        };
        assert_eq!(
            line("%U %q", &f),
            "/caf\\xc3\\xa9/\\\"x\\\"/%zz/100% ?q=%20\n"
        );
    }

    #[test]
    fn text_around_directives_is_kept() {
        let f = fields(&[], &[]);
        assert_eq!(
            line("status=%s 100%% done é", &f),
            "status=200 100% done é\n"
        );
    }
}
