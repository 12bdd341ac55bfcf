//! `kitebridge`: serve (no arguments), `profiles check`, `profiles explain`, `--version`, `help`.
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kitebridge::{
    App, Config, Generation, Lifecycle, Notifier, Signal, StartError, bind, block_signals,
    check_profile_file, explain_profile_with_source, now_unix, spawn_signal_thread, spawn_watchdog,
    start_with, take_listener, watchdog_interval,
};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

const HELP: &str = "\
kitebridge — short-lived GitHub App installation tokens for Buildkite jobs

USAGE:
    kitebridge                                  serve (configuration from the environment)
    kitebridge profiles check FILE              validate a profile file offline; exit 1 on any problem
    kitebridge profiles explain --profile REF --claims CLAIMS.json [--profiles FILE] [--source IP]
                                                show, rule by rule, whether claims (and a client
                                                address, against the profile's sources) are
                                                admitted; exit 1 unless the verdict is \"admitted\"
    kitebridge profiles --help                  help on the profiles commands
    kitebridge --version                        print the version and the git commit
    kitebridge help | --help                    print this help

Configuration is environment variables only; kitebridge(8) and docs/configuration.md list
every one with its default. Invalid configuration: every problem is printed at once,
exit status 2. Signals: SIGTERM drains in-flight requests, SIGHUP reloads the profile file.
";

const PROFILES_HELP: &str = "\
kitebridge profiles — check and explain profile files offline (no server, no network)

USAGE:
    kitebridge profiles check FILE
        Validates a profile file (JSON or YAML) exactly as the server would load it. Prints a
        summary and exits 0, or prints every problem and exits 1: a JSON file's problems start
        with their JSON path ($.organization.profiles[0].name), a YAML file's with its line and
        column as well.

    kitebridge profiles explain --profile REF --claims CLAIMS.json [--profiles FILE] [--source IP]
        Shows, rule by rule, whether the claims (one JSON object, e.g. a decoded Buildkite OIDC
        token's payload) are admitted to profile REF (org:NAME, pipeline:NAME, or a bare
        pipeline profile name) of FILE (default: the built-in profiles), and with --source
        whether a request from IP is inside the profile's sources. The last line is the
        verdict. Exit 0 when it is \"admitted\", 1 when it is anything else (denied, not found,
        unavailable, a malformed reference), so scripts can gate on it.

Exit status 2: a usage error, an unreadable file, or an explain whose FILE or CLAIMS.json is
invalid. The profile file format: kitebridge-profiles(5).
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => serve(),
        ["--version" | "-V" | "version"] => {
            out(&format!(
                "kitebridge {} (commit {COMMIT})\n",
                kitebridge::VERSION
            ));
            ExitCode::SUCCESS
        }
        ["--help" | "-h" | "help"] => {
            out(HELP);
            ExitCode::SUCCESS
        }
        ["profiles", "--help" | "-h" | "help"]
        | ["help", "profiles"]
        | ["profiles", "check" | "explain", "--help" | "-h"] => {
            out(PROFILES_HELP);
            ExitCode::SUCCESS
        }
        ["profiles", "check", file] => profiles_check(file),
        ["profiles", "explain", rest @ ..] => profiles_explain(rest),
        ["profiles", ..] => profiles_usage_error("unknown profiles command"),
        _ => usage_error("unknown arguments"),
    }
}

/// The git commit the binary was built from, or `unknown` (see `build.rs`).
const COMMIT: &str = env!("KITEBRIDGE_COMMIT");

/// Writes to standard output. A reader that has gone (`kitebridge profiles check F | head`) ends
/// the output; it is not an error worth a panic (`print!` would panic on the broken pipe).
fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

fn usage_error(what: &str) -> ExitCode {
    eprint!("kitebridge: {what}\n\n{HELP}");
    ExitCode::from(2)
}

fn profiles_usage_error(what: &str) -> ExitCode {
    eprint!("kitebridge: {what}\n\n{PROFILES_HELP}");
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
    match check_profile_file(&bytes) {
        Ok(summary) => {
            out(&format!("{file}: {summary}\n"));
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
    let (mut profile, mut claims, mut file, mut source) = (None, None, None, None);
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let slot = match *flag {
            "--profile" => &mut profile,
            "--claims" => &mut claims,
            "--profiles" => &mut file,
            "--source" => &mut source,
            _ => return profiles_usage_error("unknown option for profiles explain"),
        };
        match rest.next() {
            Some(value) => *slot = Some(*value),
            None => return profiles_usage_error("an option of profiles explain lacks its value"),
        }
    }
    let (Some(profile), Some(claims)) = (profile, claims) else {
        return profiles_usage_error("profiles explain needs --profile and --claims");
    };
    let source = match source.map(str::parse::<std::net::IpAddr>) {
        None => None,
        Some(Ok(ip)) => Some(ip),
        Some(Err(_)) => return profiles_usage_error("--source is not an IP address"),
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
                return ExitCode::from(2);
            }
        },
    };
    let explained = explain_profile_with_source(&generation, profile, &claims, source);
    out(&explained);
    // The explanation's last line is the verdict; scripts gate on the exit status.
    let admitted = explained
        .lines()
        .last()
        .is_some_and(|verdict| verdict == "verdict: admitted");
    if admitted {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The operational log at `level` for kitebridge itself; its dependencies (the HTTP client, TLS)
/// at `info` at most, whatever `level` says: their `debug` and `trace` output includes wire dumps
/// of requests and responses, with `authorization` headers and minted tokens in them.
fn logger(level: log::LevelFilter) -> simple_logger::SimpleLogger {
    simple_logger::SimpleLogger::new()
        .with_level(level.min(DEPENDENCY_LOG_CAP))
        .with_module_level("kitebridge", level)
}

/// The most verbose level dependencies may log at (see [`logger`]).
const DEPENDENCY_LOG_CAP: log::LevelFilter = log::LevelFilter::Info;

/// systemd's `STATUS=` line: `status`, and a note while the shared cache is failing.
fn with_cache_note(status: String, cache_down: bool) -> String {
    if cache_down {
        format!("{status}; shared cache unavailable")
    } else {
        status
    }
}

fn serve() -> ExitCode {
    // Before any thread exists: take systemd's socket (this unsets LISTEN_*) and block the
    // signals every later thread must inherit blocked.
    let inherited = take_listener();
    let signals = block_signals();

    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("kitebridge: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = logger(config.log_level).init() {
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
    let inherited_socket = inherited.is_some();
    let listener = match inherited {
        Some(listener) => {
            log::info!("using the socket passed by systemd");
            listener
        }
        None => match bind(&app.config) {
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
    let cache_down = |app: &App| app.token.shared_cache().is_some_and(|c| !c.is_up());
    if let Some(cache) = app.token.shared_cache() {
        // STATUS= says so while the shared cache is failing (once ready; before, it is the
        // readiness status).
        let (notifier, profiles, ready) = (
            Arc::clone(&notifier),
            Arc::clone(&app.profiles),
            Arc::clone(&app.readiness),
        );
        cache.observe(Box::new(move |up: bool| {
            if ready.is_ready() {
                notifier.status(&with_cache_note(profiles.status_line(), !up));
            }
        }));
    }
    let hold_until_ready = inherited_socket;
    let lifecycle = Lifecycle {
        // The connection that started us waits in the backlog until we are ready, instead of
        // being answered 503 (and so does every connection during a restart).
        hold_until_ready,
        on_waiting: Box::new({
            let notifier = Arc::clone(&notifier);
            move |waiting: &str| notifier.status(waiting)
        }),
        on_ready: Box::new({
            let notifier = Arc::clone(&notifier);
            let cache = app.token.shared_cache().cloned();
            move |status: String| {
                let down = cache.as_ref().is_some_and(|c| !c.is_up());
                notifier.status(&with_cache_note(status, down));
                notifier.ready();
            }
        }),
    };
    let running = match start_with(app, listener, lifecycle) {
        Ok(running) => running,
        Err(e) => {
            log::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(interval) = watchdog_interval() {
        spawn_watchdog(&running, interval, {
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
            log::info!("SIGHUP: reopening the audit file and reloading profiles");
            if let Err(e) = app.token.audit().reopen() {
                log::error!("cannot reopen the audit file: {e}");
            }
            let _ = app.profiles.reload_now(now_unix());
            signal_notifier.status(&with_cache_note(
                app.profiles.status_line(),
                cache_down(&app),
            ));
        }
    };
    if let Err(e) = spawn_signal_thread(signals, handler) {
        log::error!("cannot start the signal thread: {e}");
        return ExitCode::FAILURE;
    }
    let (handle, app) = (running.handle.clone(), Arc::clone(&running.app));
    running.wait();
    let deadline = std::time::SystemTime::now() + timeout;
    let drained = handle.wait_idle(timeout);
    let left = app.finish_revocations(deadline);
    if drained {
        log::info!("drained; exiting ({left})");
    } else {
        log::warn!("shutdown timeout: exiting with requests still in flight ({left})");
    }
    ExitCode::SUCCESS
}
