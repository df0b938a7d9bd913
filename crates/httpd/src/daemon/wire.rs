//! The framing between an Apache child and a daemon process, over one UNIX-socket connection per request.
//!
//! Every frame is a kind byte, a big-endian `u32` length and that many bytes. The child sends one
//! `Request` frame (the environ Apache built, with the route in its private `mod_wsgi.x-` keys), then `Body` frames as it reads the client's
//! body and an `End` frame; the daemon answers with a `Head` frame, `Body` frames, and exactly one `End`
//! or `Abort`. Both streams end with an explicit frame, so a connection that closes early is a
//! truncation either side can see, never a response that only looks complete.
//!
//! Pure encoding and decoding over `Read`/`Write`; it knows nothing of Apache or Python.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use rwsgi_engine::{CgiVars, ResponseHead};

/// The largest frame either side accepts: a peer sending more is broken, not just verbose.
pub(crate) const MAX_FRAME: usize = 16 * 1024 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Request = 1,
    Body = 2,
    End = 3,
    Head = 4,
    Abort = 5,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Kind::Request,
            2 => Kind::Body,
            3 => Kind::End,
            4 => Kind::Head,
            5 => Kind::Abort,
            _ => return None,
        })
    }
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed {what} frame"),
    )
}

/// The frame header for a payload of `len` bytes.
fn header(kind: Kind, len: usize) -> io::Result<[u8; 5]> {
    let len = u32::try_from(len)
        .ok()
        .filter(|len| *len as usize <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut header = [0u8; 5];
    header[0] = kind as u8;
    header[1..].copy_from_slice(&len.to_be_bytes());
    Ok(header)
}

/// Appends one frame to `buf`, to go out with others in one write.
pub(crate) fn put_frame(buf: &mut Vec<u8>, kind: Kind, payload: &[u8]) -> io::Result<()> {
    buf.extend_from_slice(&header(kind, payload.len())?);
    buf.extend_from_slice(payload);
    Ok(())
}

/// Writes one frame.
pub(crate) fn write_frame(out: &mut impl Write, kind: Kind, payload: &[u8]) -> io::Result<()> {
    if payload.len() <= 4096 {
        // One write for a small frame: one packet, one wake-up on the other side.
        let mut frame = Vec::with_capacity(5 + payload.len());
        put_frame(&mut frame, kind, payload)?;
        return out.write_all(&frame);
    }
    out.write_all(&header(kind, payload.len())?)?;
    out.write_all(payload)
}

/// Writes body bytes as `Body` frames, as many as their size needs.
pub(crate) fn write_body(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    data.chunks(MAX_FRAME)
        .try_for_each(|chunk| write_frame(out, Kind::Body, chunk))
}

/// Reads one frame. `Ok(None)`: the peer closed the connection between frames.
pub(crate) fn read_frame(input: &mut impl Read) -> io::Result<Option<(Kind, Vec<u8>)>> {
    let mut header = [0u8; 5];
    let mut got = 0;
    while got < header.len() {
        match input.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    let kind = Kind::from_byte(header[0]).ok_or_else(|| malformed("unknown"))?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_FRAME {
        return Err(malformed("oversized"));
    }
    let mut payload = vec![0; len];
    input.read_exact(&mut payload)?;
    Ok(Some((kind, payload)))
}

fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths are bounded by MAX_FRAME when the frame is written.
    buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    buf.extend_from_slice(bytes);
}

/// Reads length-prefixed fields off the front of a payload.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (field, rest) = rest.split_at(len);
        self.0 = rest;
        Some(field)
    }

    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }

    fn u32(&mut self) -> Option<u32> {
        let (value, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*value))
    }
}

/// The `Request` frame's payload: the environ's variables.
pub(crate) fn encode_request(vars: &CgiVars) -> Vec<u8> {
    let mut buf = Vec::with_capacity(2048);
    buf.extend_from_slice(&(vars.len() as u32).to_be_bytes());
    for (key, value) in vars.iter() {
        put(&mut buf, key.as_bytes());
        put(&mut buf, value);
    }
    buf
}

pub(crate) fn decode_request(payload: &[u8]) -> io::Result<CgiVars> {
    let bad = || malformed("request");
    let mut fields = Fields(payload);
    let count = fields.u32().ok_or_else(bad)? as usize;
    // Each variable takes at least 8 bytes, so a count the payload cannot hold is refused up front.
    if count > fields.0.len() / 8 {
        return Err(bad());
    }
    let mut vars = CgiVars::with_capacity(count);
    // The encoder writes each name once; a repeat is refused, found in a set rather than by a search
    // through every variable: a frame holds up to 2M variables of 8 bytes, hours of searching.
    let mut names = HashSet::with_capacity(count);
    for _ in 0..count {
        let name = fields.bytes().ok_or_else(bad)?;
        let name = std::str::from_utf8(name).map_err(|_| bad())?;
        let value = fields.bytes().ok_or_else(bad)?;
        if !names.insert(name) {
            return Err(bad());
        }
        vars.push_new(name.to_owned(), value);
    }
    if !fields.0.is_empty() {
        return Err(bad());
    }
    Ok(vars)
}

/// The `Head` frame's payload.
pub(crate) fn encode_head(head: &ResponseHead) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(&u32::from(head.status).to_be_bytes());
    put(&mut buf, head.reason.as_bytes());
    buf.extend_from_slice(&(head.headers.len() as u32).to_be_bytes());
    for (name, value) in &head.headers {
        put(&mut buf, name.as_bytes());
        put(&mut buf, value);
    }
    buf
}

pub(crate) fn decode_head(payload: &[u8]) -> io::Result<ResponseHead> {
    let bad = || malformed("head");
    let mut fields = Fields(payload);
    let status = u16::try_from(fields.u32().ok_or_else(bad)?)
        .ok()
        .filter(|s| (100..=999).contains(s))
        .ok_or_else(bad)?;
    let reason = fields.text().ok_or_else(bad)?;
    let count = fields.u32().ok_or_else(bad)? as usize;
    if count > fields.0.len() / 8 {
        return Err(bad());
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = fields.text().ok_or_else(bad)?;
        let value = fields.bytes().ok_or_else(bad)?.to_vec();
        headers.push((name, value));
    }
    if !fields.0.is_empty() {
        return Err(bad());
    }
    Ok(ResponseHead {
        status,
        reason,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips() {
        let mut vars = CgiVars::default();
        vars.set("REQUEST_METHOD", b"GET");
        vars.set("PATH_INFO", b"/caf\xe9");
        vars.set("EMPTY", Vec::new());
        assert_eq!(decode_request(&encode_request(&vars)).unwrap(), vars);
    }

    #[test]
    fn a_request_of_many_variables_decodes_at_once_and_a_repeated_name_is_refused() {
        let mut vars = CgiVars::default();
        for i in 0..100_000 {
            vars.push_new(format!("V{i}"), b"");
        }
        let payload = encode_request(&vars);
        let started = std::time::Instant::now();
        assert_eq!(decode_request(&payload).unwrap().len(), 100_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let mut repeated = 2u32.to_be_bytes().to_vec();
        for _ in 0..2 {
            put(&mut repeated, b"NAME");
            put(&mut repeated, b"value");
        }
        assert!(decode_request(&repeated).is_err());
    }

    #[test]
    fn a_head_round_trips() {
        let head = ResponseHead {
            status: 404,
            reason: "Not Found".into(),
            headers: vec![("X-Latin".into(), b"\xff\x01".to_vec())],
        };
        assert_eq!(decode_head(&encode_head(&head)).unwrap(), head);
    }

    #[test]
    fn frames_round_trip_and_truncation_is_an_error() {
        let mut wire = Vec::new();
        write_frame(&mut wire, Kind::Body, b"hello").unwrap();
        write_frame(&mut wire, Kind::Body, &vec![7; 10_000]).unwrap();
        write_frame(&mut wire, Kind::End, b"").unwrap();
        let mut input = &wire[..];
        assert_eq!(
            read_frame(&mut input).unwrap(),
            Some((Kind::Body, b"hello".to_vec()))
        );
        assert_eq!(read_frame(&mut input).unwrap().unwrap().1.len(), 10_000);
        assert_eq!(
            read_frame(&mut input).unwrap(),
            Some((Kind::End, Vec::new()))
        );
        assert_eq!(read_frame(&mut input).unwrap(), None);
        let mut cut = &wire[..wire.len() - 2];
        read_frame(&mut cut).unwrap();
        read_frame(&mut cut).unwrap();
        assert!(read_frame(&mut cut).is_err());
    }

    #[test]
    fn a_body_larger_than_a_frame_goes_in_several() {
        let mut wire = Vec::new();
        write_body(&mut wire, &vec![1; MAX_FRAME + 10]).unwrap();
        let mut input = &wire[..];
        assert_eq!(read_frame(&mut input).unwrap().unwrap().1.len(), MAX_FRAME);
        assert_eq!(read_frame(&mut input).unwrap().unwrap().1.len(), 10);
        assert_eq!(read_frame(&mut input).unwrap(), None);
    }

    #[test]
    fn garbage_is_refused_not_trusted() {
        assert!(read_frame(&mut &[9u8, 0, 0, 0, 0][..]).is_err());
        assert!(read_frame(&mut &[2u8, 0xff, 0xff, 0xff, 0xff][..]).is_err());
        assert!(decode_request(&[0, 0, 0, 9, 1]).is_err());
        assert!(decode_request(&[0, 0, 0, 0, 1]).is_err());
        assert!(decode_head(&[0, 0, 0, 1]).is_err());
        let mut huge_count = encode_request(&CgiVars::default());
        let n = huge_count.len();
        huge_count[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_request(&huge_count).is_err());
    }
}
