//! HTTP/1.1 with hyper: each request becomes an engine [`Request`] queued to the Python pool, and the
//! engine's response comes back over [`io::ResponseChannel`].
//!
//! Nothing here runs Python or blocks: bodies are read before dispatch (small) or streamed by a task
//! (large), and responses are written by hyper from channels, so slow clients never hold a Python thread.

mod io;
mod stall;

pub(crate) use stall::{Limits, Phase, Stall};

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use rwsgi_engine::{from_http, Engine, HttpRequest, Request, ResponseHead};
use tokio::sync::mpsc;

use crate::access_log::{AccessLog, Arrival, Entry};
use io::{Aborted, RequestBody, ResponseChannel, ResponseStart};
use rwsgi_pool::Submitter;

/// What every connection's requests share.
pub(crate) struct Shared {
    pub(crate) engine: Arc<Engine>,
    pub(crate) pool: Submitter,
    pub(crate) buffer_body: usize,
    /// `--header-timeout` and `--socket-timeout`.
    pub(crate) limits: Limits,
    /// `--trust-proxy-header`: what a proxy in front may say of the request.
    pub(crate) trusted_proxy: Option<crate::settings::TrustedProxy>,
    /// `--access-log`: where each response's line goes.
    pub(crate) access_log: Option<Arc<AccessLog>>,
    /// The process is retiring: every response closes its connection.
    pub(crate) closing: std::sync::atomic::AtomicBool,
}

/// How a connection came: its addresses over TCP, none over a UNIX socket.
pub(crate) type Peer = rwsgi_engine::Transport;

/// A response body, and the access log's entry for its request, written when hyper drops the body.
pub(crate) struct ResponseBody {
    source: Source,
    logged: Option<Box<Entry>>,
    /// The connection's phase, told when the response is done with.
    phase: Option<Arc<Phase>>,
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(phase) = &self.phase {
            phase.end();
        }
    }
}

/// Where a body's bytes come from: all at once, or streamed from a Python thread.
enum Source {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Result<Frame<Bytes>, Aborted>>),
    /// The app aborted the response; what was sent before must reach the client first.
    Aborting,
}

impl ResponseBody {
    fn full(data: Bytes) -> Self {
        Self::from(Source::Full(Some(data)))
    }
}

impl From<Source> for ResponseBody {
    fn from(source: Source) -> Self {
        ResponseBody {
            source,
            logged: None,
            phase: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let this = self.get_mut();
        let polled = match &mut this.source {
            Source::Full(data) => Poll::Ready(
                data.take()
                    .filter(|d| !d.is_empty())
                    .map(|d| Ok(Frame::data(d))),
            ),
            Source::Stream(rx) => match rx.poll_recv(cx) {
                Poll::Ready(Some(Err(Aborted))) => {
                    // hyper drops its unflushed buffer when a body fails; answering Pending once makes it
                    // flush the bytes already given, and the wake-up brings it straight back for the error.
                    this.source = Source::Aborting;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                other => other,
            },
            Source::Aborting => Poll::Ready(Some(Err(Aborted))),
        };
        if let (Some(entry), Poll::Ready(Some(Ok(frame)))) = (&mut this.logged, &polled) {
            entry.bytes += frame.data_ref().map_or(0, |data| data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.source, Source::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Source::Stream(_) | Source::Aborting => SizeHint::default(),
        }
    }
}

/// Serves one request of a connection in `phase`, and gives the access log its entry.
pub(crate) async fn handle(
    request: hyper::Request<Incoming>,
    peer: Peer,
    shared: Arc<Shared>,
    phase: Arc<Phase>,
) -> Result<Response<ResponseBody>, Infallible> {
    phase.begin();
    let arrival = shared.access_log.as_ref().map(|_| Arrival::now());
    let (parts, body) = request.into_parts();
    let mut response = respond(&parts, body, peer, &shared).await;
    if let (Some(log), Some(arrival)) = (&shared.access_log, arrival) {
        let entry = Entry::new(log, arrival, &parts, peer, &response);
        response.body_mut().logged = Some(Box::new(entry));
    }
    response.body_mut().phase = Some(phase);
    Ok(response)
}

/// Hands a request to the pool and waits for the response's start.
async fn respond(
    parts: &http::request::Parts,
    body: Incoming,
    peer: Peer,
    shared: &Shared,
) -> Response<ResponseBody> {
    let target = request_target(&parts.uri);
    let mut vars = from_http(HttpRequest {
        method: parts.method.as_str(),
        target: target.as_bytes(),
        protocol: protocol(parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes())),
        transport: peer,
        scheme: "http",
        script_name: "",
    });
    if let Some(trusted) = &shared.trusted_proxy {
        rwsgi_engine::proxy::apply(&mut vars, &trusted.headers, trusted.proxies.as_deref());
    }
    let body = if http_body::Body::is_end_stream(&body) {
        RequestBody::empty()
    } else {
        match RequestBody::read(body, shared.buffer_body).await {
            Ok(body) => body,
            Err(err) if err.kind() == std::io::ErrorKind::TimedOut => {
                return plain(
                    StatusCode::REQUEST_TIMEOUT,
                    "request body not received in time\n",
                )
            }
            Err(_) => return plain(StatusCode::BAD_REQUEST, "malformed request body\n"),
        }
    };
    let (sink, started) = ResponseChannel::new();
    let complete = body.is_complete();
    let request = Request::new(vars, Box::new(body), Box::new(sink), None);
    // A fast app's request runs right here, saving two thread hand-offs; the pool decides when. Only a
    // body all at hand may: reading the rest would wait for this very thread.
    let queued = match complete {
        true => shared.pool.run_inline(request, |request, deadline| {
            shared.engine.handle_inline(request, deadline)
        }),
        false => Some(request),
    };
    if let Some(Err(_)) = queued.map(|request| shared.pool.submit(request)) {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down\n",
        );
    }
    let mut response = match started.await {
        Ok(ResponseStart::Complete(head, body)) => response(head, ResponseBody::full(body)),
        Ok(ResponseStart::Streaming(head, rx)) => response(head, Source::Stream(rx).into()),
        // The engine dropped the request without a response; it has logged why.
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n"),
    };
    if shared.closing.load(std::sync::atomic::Ordering::Acquire) {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The request target as the client sent it: the origin form (`/a%20b?x=1`) as is, an absolute URI whole.
pub(crate) fn request_target(uri: &http::Uri) -> std::borrow::Cow<'_, str> {
    match uri.path_and_query() {
        Some(pq) if uri.scheme().is_none() => std::borrow::Cow::Borrowed(pq.as_str()),
        _ => std::borrow::Cow::Owned(uri.to_string()),
    }
}

/// The client's own protocol version, as `SERVER_PROTOCOL` and the access log write it.
pub(crate) fn protocol(version: Version) -> &'static str {
    if version == Version::HTTP_10 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    }
}

fn response(head: ResponseHead, body: ResponseBody) -> Response<ResponseBody> {
    let Ok(status) = StatusCode::from_u16(head.status) else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "invalid status from the application\n",
        );
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if status.canonical_reason() != Some(head.reason.as_str()) {
        if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(head.reason.into_bytes()) {
            response.extensions_mut().insert(reason);
        }
    }
    let headers = response.headers_mut();
    headers.reserve(head.headers.len());
    for (name, value) in head.headers {
        // start_response already validated both; a failure here would be our bug, not the app's.
        // The value's own buffer becomes the header's: no copy.
        match (
            header_name(&name),
            HeaderValue::from_maybe_shared(Bytes::from(value)),
        ) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => {
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "invalid header from the application\n",
                )
            }
        }
    }
    response
}

/// The header named `name`. The two names nearly every response has skip `HeaderName::from_bytes`, which
/// lowercases into a scratch buffer and then searches all the standard names.
fn header_name(name: &str) -> Result<HeaderName, http::header::InvalidHeaderName> {
    if name.eq_ignore_ascii_case("content-type") {
        Ok(CONTENT_TYPE)
    } else if name.eq_ignore_ascii_case("content-length") {
        Ok(CONTENT_LENGTH)
    } else {
        HeaderName::from_bytes(name.as_bytes())
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_header_names_are_the_ones_hyper_would_make() {
        for name in [
            "Content-Type",
            "Content-Length",
            "content-type",
            "Content-type",
            "CONTENT-LENGTH",
            "X-Custom",
            "ETag",
        ] {
            assert_eq!(
                header_name(name).unwrap(),
                HeaderName::from_bytes(name.as_bytes()).unwrap()
            );
        }
        assert!(header_name("bad name").is_err());
    }
}
