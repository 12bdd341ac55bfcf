//! `kitebridge`: serve (no arguments), `--version`, `--help`.
#![forbid(unsafe_code)]

use kitebridge::app;
use kitebridge::config::Config;
use std::process::ExitCode;

const HELP: &str = "\
kitebridge — short-lived GitHub App installation tokens for Buildkite jobs

USAGE:
    kitebridge                 serve (configuration from the environment)
    kitebridge --version       print the version
    kitebridge --help          print this help

Configuration is environment variables only; the README's \"Configuration\" table lists every
one with its default. Invalid configuration: every problem is printed at once, exit status 2.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => serve(),
        ["--version" | "-V"] => {
            println!("kitebridge {}", kitebridge::VERSION);
            ExitCode::SUCCESS
        }
        ["--help" | "-h"] => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        _ => {
            eprint!("kitebridge: unknown arguments\n\n{HELP}");
            ExitCode::from(2)
        }
    }
}

fn serve() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("kitebridge: {e}");
            return ExitCode::from(2);
        }
    };
    let logger = simple_logger::SimpleLogger::new()
        .with_level(config.log_level)
        .init();
    if let Err(e) = logger {
        eprintln!("kitebridge: cannot start the log: {e}");
    }
    let listener = match app::bind(&config) {
        Ok(l) => l,
        Err(e) => {
            log::error!(
                "cannot listen on {}:{}: {e}",
                config.server_host,
                config.server_port
            );
            return ExitCode::FAILURE;
        }
    };
    let app = match app::App::new(config) {
        Ok(app) => app,
        Err(e @ app::StartError::Config(_)) => {
            eprintln!("kitebridge: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            log::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match app::start(app, listener, || {}) {
        Ok(running) => {
            running.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("cannot start: {e}");
            ExitCode::FAILURE
        }
    }
}
