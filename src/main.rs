//! `kitebridge`: serve (no arguments), `profiles check`, `profiles explain`, `--version`, `--help`.
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kitebridge::app::{App, StartError};
use kitebridge::config::Config;
use kitebridge::profiles::{self, Generation};
use kitebridge::serve;
use kitebridge::systemd::{self, Notifier, Signal};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

const HELP: &str = "\
kitebridge — short-lived GitHub App installation tokens for Buildkite jobs

USAGE:
    kitebridge                                  serve (configuration from the environment)
    kitebridge profiles check FILE              validate a profile file offline; exit 1 on any problem
    kitebridge profiles explain --profile REF --claims CLAIMS.json [--profiles FILE]
                                                show, rule by rule, whether claims are admitted
    kitebridge --version                        print the version
    kitebridge --help                           print this help

Configuration is environment variables only; the README's \"Configuration\" table lists every
one with its default. Invalid configuration: every problem is printed at once, exit status 2.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => serve(),
        ["--version" | "-V"] => {
            println!("kitebridge {}", kitebridge::VERSION);
            ExitCode::SUCCESS
        }
        ["--help" | "-h"] => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        ["profiles", "check", file] => profiles_check(file),
        ["profiles", "explain", rest @ ..] => profiles_explain(rest),
        _ => usage_error("unknown arguments"),
    }
}

fn usage_error(what: &str) -> ExitCode {
    eprint!("kitebridge: {what}\n\n{HELP}");
    ExitCode::from(2)
}

fn read(path: &str) -> Result<Vec<u8>, ExitCode> {
    std::fs::read(path).map_err(|e| {
        eprintln!("kitebridge: cannot read {path:?}: {e}");
        ExitCode::from(2)
    })
}

fn profiles_check(file: &str) -> ExitCode {
    let bytes = match read(file) {
        Ok(bytes) => bytes,
        Err(code) => return code,
    };
    match profiles::check(&bytes) {
        Ok(summary) => {
            println!("{file}: {summary}");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{file}: {} problem(s)", problems.len());
            for p in problems {
                eprintln!("  {p}");
            }
            ExitCode::FAILURE
        }
    }
}

fn profiles_explain(args: &[&str]) -> ExitCode {
    let (mut profile, mut claims, mut file) = (None, None, None);
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let slot = match *flag {
            "--profile" => &mut profile,
            "--claims" => &mut claims,
            "--profiles" => &mut file,
            _ => return usage_error("unknown option for profiles explain"),
        };
        match rest.next() {
            Some(value) => *slot = Some(*value),
            None => return usage_error("an option of profiles explain lacks its value"),
        }
    }
    let (Some(profile), Some(claims)) = (profile, claims) else {
        return usage_error("profiles explain needs --profile and --claims");
    };
    let claims = match read(claims).map(|b| serde_json::from_slice::<serde_json::Value>(&b)) {
        Ok(Ok(serde_json::Value::Object(map))) => map,
        Ok(_) => {
            eprintln!("kitebridge: the claims file must hold one JSON object");
            return ExitCode::from(2);
        }
        Err(code) => return code,
    };
    let generation = match file.map(read) {
        None => Generation::builtin(),
        Some(Err(code)) => return code,
        Some(Ok(bytes)) => match Generation::parse(&bytes) {
            Ok(generation) => generation,
            Err(e) => {
                eprintln!("kitebridge: the profile file is invalid:");
                for p in e.problems() {
                    eprintln!("  {p}");
                }
                return ExitCode::FAILURE;
            }
        },
    };
    print!("{}", profiles::explain(&generation, profile, &claims));
    ExitCode::SUCCESS
}

fn serve() -> ExitCode {
    // Before any thread exists: take systemd's socket (this unsets LISTEN_*) and block the
    // signals every later thread must inherit blocked.
    let inherited = systemd::take_listener();
    let signals = systemd::block_signals();

    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("kitebridge: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = simple_logger::SimpleLogger::new()
        .with_level(config.log_level)
        .init()
    {
        eprintln!("kitebridge: cannot start the log: {e}");
    }
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    let (inherited, signals) = match (inherited, signals) {
        (Ok(inherited), Ok(signals)) => (inherited, signals),
        (Err(e), _) | (_, Err(e)) => {
            log::error!("systemd integration failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let notifier = match Notifier::from_env() {
        Ok(notifier) => Arc::new(notifier),
        Err(e) => {
            log::error!("NOTIFY_SOCKET is unusable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let app = match App::new(config) {
        Ok(app) => app,
        Err(e @ StartError::Config(_)) => {
            eprintln!("kitebridge: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            log::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match inherited {
        Some(listener) => {
            log::info!("using the socket passed by systemd");
            listener
        }
        None => match serve::bind(&app.config) {
            Ok(listener) => listener,
            Err(e) => {
                log::error!(
                    "cannot listen on {}:{}: {e}",
                    app.config.server_host,
                    app.config.server_port
                );
                return ExitCode::FAILURE;
            }
        },
    };
    let on_ready = {
        let notifier = Arc::clone(&notifier);
        move |status: String| {
            notifier.status(&status);
            notifier.ready();
        }
    };
    let running = match serve::start(app, listener, on_ready) {
        Ok(running) => running,
        Err(e) => {
            log::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(interval) = systemd::watchdog_interval() {
        serve::spawn_watchdog(&running, interval, {
            let notifier = Arc::clone(&notifier);
            move || notifier.watchdog()
        });
    }
    let timeout = Duration::from_secs(running.app.config.timeout_shutdown_secs);
    let (handle, app) = (running.handle.clone(), Arc::clone(&running.app));
    let signal_notifier = Arc::clone(&notifier);
    let handler = move |signal: Signal| match signal {
        Signal::Terminate | Signal::Interrupt if handle.is_draining() => {
            log::warn!("second {signal:?}: exiting without waiting for in-flight requests");
            std::process::exit(0);
        }
        Signal::Terminate | Signal::Interrupt => {
            log::info!(
                "{signal:?}: stopping; in-flight requests get up to {}s",
                timeout.as_secs()
            );
            signal_notifier.stopping();
            handle.begin_shutdown();
        }
        Signal::Hangup => {
            log::info!("SIGHUP: reloading profiles");
            let _ = app.profiles.reload_now(kitebridge::time::now_unix());
            signal_notifier.status(&app.profiles.status_line());
        }
    };
    if let Err(e) = systemd::spawn_signal_thread(signals, handler) {
        log::error!("cannot start the signal thread: {e}");
        return ExitCode::FAILURE;
    }
    let handle = running.handle.clone();
    running.wait();
    if handle.wait_idle(timeout) {
        log::info!("drained; exiting");
    } else {
        log::warn!("shutdown timeout: exiting with requests still in flight");
    }
    ExitCode::SUCCESS
}
