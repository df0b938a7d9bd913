//! The engine's own cost per request, without HTTP or threads: loads a WSGI script and serves the same
//! GET to it in a loop on one thread, with a response sink that drops what it is given. For profiling
//! (`perf stat -e instructions:u`, `valgrind --tool=callgrind`) the work no server can avoid.
//!
//! `cargo run --release -p rwsgi-engine --example per_request -- SCRIPT [REQUESTS] [PATH]`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rwsgi_engine::interp::{self, InterpreterConfig};
use rwsgi_engine::{
    from_http, AppSource, AppSpec, BodyChunk, BodyReader, ClientGone, Engine, EngineOptions,
    HttpRequest, Output, Request, ResponseSink, StderrLog, TrySendError,
};

struct NoBody;

impl BodyReader for NoBody {
    fn try_next(&mut self) -> Option<std::io::Result<BodyChunk>> {
        Some(Ok(BodyChunk::End))
    }
    fn next(&mut self) -> std::io::Result<BodyChunk> {
        Ok(BodyChunk::End)
    }
}

struct Discard;

impl ResponseSink for Discard {
    fn try_send(&mut self, _output: Output) -> Result<(), TrySendError> {
        Ok(())
    }
    fn send(&mut self, _output: Output) -> Result<(), ClientGone> {
        Ok(())
    }
}

fn request(path: &str) -> Request {
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("a literal address");
    let local: SocketAddr = "127.0.0.1:8000".parse().expect("a literal address");
    let headers = [
        ("host", b"127.0.0.1:8000".as_slice()),
        ("user-agent", b"wrk"),
        ("accept", b"*/*"),
    ];
    Request::new(
        from_http(HttpRequest {
            method: "GET",
            target: path.as_bytes(),
            protocol: "HTTP/1.1",
            headers: headers.into_iter(),
            transport: rwsgi_engine::Transport::Tcp { peer, local },
            scheme: "http",
            script_name: "",
        }),
        Box::new(NoBody),
        Box::new(Discard),
        None,
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let script = args
        .next()
        .ok_or("usage: per_request SCRIPT [REQUESTS] [PATH]")?;
    let requests: u32 = args.next().map_or(Ok(200_000), |n| n.parse())?;
    let path = args.next().unwrap_or_else(|| "/".into());
    interp::initialize(&InterpreterConfig::default())?;
    let spec = AppSpec {
        source: AppSource::Script(script.into()),
        callable: "application".into(),
    };
    let engine = Engine::load(&spec, &EngineOptions::default(), Arc::new(StderrLog))?;
    interp::keep_thread_state();
    for _ in 0..1000 {
        engine.handle(request(&path));
    }
    let started = Instant::now();
    for _ in 0..requests {
        engine.handle(request(&path));
    }
    let each = started.elapsed() / requests;
    println!(
        "{requests} requests, {:.2} µs each",
        each.as_secs_f64() * 1e6
    );
    Ok(())
}
