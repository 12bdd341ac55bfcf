//! The process lifecycle that `main`, the tests and the examples share: listen, become ready,
//! serve, the separate metrics listener, the audit retry, the systemd watchdog's self-check, drain.
#![forbid(unsafe_code)]

use crate::app::App;
use crate::audit;
use crate::config::{Config, JwksSource, Metrics as MetricsConfig};
use crate::http::{Limits, Server, ServerHandle};
use crate::oidc;
use crate::routes;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

/// A running server: its address and handle, and the thread accepting connections.
pub struct Running {
    pub app: Arc<App>,
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    accept: std::thread::JoinHandle<()>,
}

impl Running {
    /// Blocks until the accept loop ends (after [`ServerHandle::begin_shutdown`]).
    pub fn wait(self) {
        let _ = self.accept.join();
    }
}

/// Opens the listener from the configuration (used when systemd passed none).
pub fn bind(config: &Config) -> io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(config.server_host, config.server_port))
}

/// How a server's start is followed.
pub struct Lifecycle {
    /// Take no connection from the listener until ready, so connections that arrive first wait in
    /// the kernel's backlog and are answered once ready instead of 503 `not ready` (for a socket
    /// passed by systemd, whose first connection is the one that started the service).
    pub hold_until_ready: bool,
    /// Told, whenever it changes, what readiness still waits for (systemd's `STATUS=`).
    pub on_waiting: Box<dyn Fn(&str) + Send>,
    /// Called once ready, with the profile status line.
    pub on_ready: Box<dyn FnOnce(String) + Send>,
}

/// Starts serving on `listener` in a background thread, and a readiness thread that retries what
/// readiness waits for (first after 200 ms, backing off to every 5 s) and then calls `on_ready`
/// with the profile status line.
pub fn start(
    app: App,
    listener: TcpListener,
    on_ready: impl FnOnce(String) + Send + 'static,
) -> io::Result<Running> {
    let lifecycle = Lifecycle {
        hold_until_ready: false,
        on_waiting: Box::new(|_| {}),
        on_ready: Box::new(on_ready),
    };
    start_with(app, listener, lifecycle)
}

/// [`start`], followed as `lifecycle` says.
pub fn start_with(app: App, listener: TcpListener, lifecycle: Lifecycle) -> io::Result<Running> {
    let app = Arc::new(app);
    let mut server = Server::new(listener, routes::router(&app), app.limits())?;
    if lifecycle.hold_until_ready {
        server = server.hold_until_released();
    }
    let addr = server.local_addr()?;
    let handle = server.handle();
    app.readiness.attach(handle.clone());
    let accept = std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || server.run())?;
    if lifecycle.hold_until_ready {
        log::info!(
            "kitebridge {} listening on http://{addr}; connections are taken once ready",
            crate::VERSION
        );
    } else {
        log::info!("kitebridge {} listening on http://{addr}", crate::VERSION);
    }
    let ready_app = Arc::clone(&app);
    let release = handle.clone();
    let Lifecycle {
        on_waiting,
        on_ready,
        ..
    } = lifecycle;
    std::thread::Builder::new()
        .name("readiness".into())
        .spawn(move || {
            let mut wait = Duration::from_millis(200);
            let mut told = String::new();
            while !ready_app.try_become_ready() {
                let waiting = format!("waiting for {}", ready_app.waiting_for().join(", "));
                if waiting != told {
                    log::info!("not ready yet: {waiting}");
                    on_waiting(&waiting);
                    told = waiting;
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            let status = ready_app.profiles.status_line();
            log::info!("ready: {status}");
            release.release();
            on_ready(status);
        })?;
    let retry_app = Arc::clone(&app);
    std::thread::Builder::new()
        .name("audit-retry".into())
        .spawn(move || {
            loop {
                std::thread::sleep(audit::RETRY_INTERVAL);
                retry_app.token.audit().retry_pending();
            }
        })?;
    if matches!(app.config.jwks, JwksSource::Url(_)) {
        oidc::spawn_refresher(Arc::clone(&app.keys))?;
    }
    if let MetricsConfig::Listen(metrics_addr) = app.config.metrics {
        let router = routes::metrics_router(&app);
        let limits = Limits {
            workers: 1,
            max_connections: 16,
            ..app.limits()
        };
        let server = Server::new(TcpListener::bind(metrics_addr)?, router, limits)?;
        log::info!("metrics on http://{}/metrics", server.local_addr()?);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || server.run())?;
    }
    Ok(Running {
        app,
        addr,
        handle,
        accept,
    })
}

/// Calls `ping` every `interval` while the server is healthy: the accept loop is running and it
/// answers its own `/healthcheck` over loopback (any status counts), or every connection slot is
/// taken (then a self-check cannot get in, and a restart would only lose the token cache). A hung
/// server stops pinging, and systemd's watchdog restarts it.
pub fn spawn_watchdog(running: &Running, interval: Duration, ping: impl Fn() + Send + 'static) {
    let addr = match running.addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    };
    let handle = running.handle.clone();
    let max_connections = running.app.config.max_connections;
    let base = running
        .app
        .config
        .server_base_path
        .clone()
        .unwrap_or_default();
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            while !handle.is_draining() {
                let at_cap = handle.open_connections() >= max_connections;
                if at_cap || self_check(addr, &base, interval) {
                    ping();
                } else {
                    log::warn!("watchdog: /healthcheck did not answer; not pinging systemd");
                }
                std::thread::sleep(interval);
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the watchdog thread: {e}");
    }
}

fn self_check(addr: SocketAddr, base: &str, timeout: Duration) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let request =
        format!("GET {base}/healthcheck HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut head = [0u8; 12];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.1 ")
}
