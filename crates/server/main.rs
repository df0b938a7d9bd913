//! The `rwsgi` binary: parse the command line, run the command, turn errors into messages and exit codes.
#![deny(unsafe_code)]

mod access_log;
mod cli;
mod http;
mod listener;
mod logfile;
mod malloc;
mod module;
mod serve;
mod settings;
mod supervisor;

use clap::Parser;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RWSGI_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Serve(args) => settings::Settings::resolve(*args).and_then(serve::run),
        cli::Command::ModuleConfig(args) => module::print_config(&args),
        cli::Command::InstallModule(args) => module::install(&args),
    };
    if let Err(err) = result {
        match err.downcast_ref::<serve::ServeError>() {
            Some(load) => eprintln!("rwsgi: {load}"),
            None => eprintln!("rwsgi: error: {err:#}"),
        }
        std::process::exit(1);
    }
}

/// Rust's own allocations (hyper's buffers, a request's variables, response heads) go to mimalloc, which
/// serves a request's many small ones several times cheaper than glibc; Python's stay with glibc (see
/// [`malloc`]). Built without transparent huge pages, which cost each process several MiB of resident
/// memory for no measured gain.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
