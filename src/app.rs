//! The application: the routes of `api.md` wired to their handlers, and the process lifecycle
//! (listen, serve, drain) that `main` and the tests share.
#![forbid(unsafe_code)]

use crate::audit::AuditLog;
use crate::config::{AuditTarget, Config};
use crate::http::{
    ErrorStyle, Limits, Method, Pool, Request, Response, Router, Server, ServerHandle,
};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Shared state of a running kitebridge.
pub struct App {
    pub config: Config,
    pub audit: AuditLog,
    ready: AtomicBool,
    server: OnceLock<ServerHandle>,
}

impl App {
    /// Builds the application from a validated configuration.
    pub fn new(config: Config) -> io::Result<App> {
        let audit = match &config.audit_log {
            AuditTarget::Stdout => AuditLog::stdout(),
            AuditTarget::Stderr => AuditLog::stderr(),
            AuditTarget::File(path) => AuditLog::file(path)?,
        };
        Ok(App {
            config,
            audit,
            ready: AtomicBool::new(false),
            server: OnceLock::new(),
        })
    }

    /// Ready to vend: configured, listening, and (once profiles exist) the first generation loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.is_draining()
    }

    fn is_draining(&self) -> bool {
        self.server.get().is_some_and(ServerHandle::is_draining)
    }

    /// The edge limits from the configuration.
    pub fn limits(&self) -> Limits {
        let c = &self.config;
        Limits {
            workers: c.server_workers,
            max_connections: c.max_connections,
            timeout_header: Duration::from_secs(c.timeout_header_secs),
            timeout_body: Duration::from_secs(c.timeout_body_secs),
            timeout_idle: Duration::from_secs(c.timeout_idle_secs),
            timeout_write: Duration::from_secs(10),
        }
    }
}

/// The route table of `api.md`.
pub fn router(app: &Arc<App>) -> Router {
    let health = Arc::clone(app);
    Router::new(app.config.server_base_path.clone()).route(
        Method::Get,
        "/healthcheck",
        Pool::Inline,
        ErrorStyle::Json,
        move |_: &Request| healthcheck(&health),
    )
}

/// `GET/HEAD /healthcheck`: 200 `OK` while serving, 503 `not ready` before readiness and while draining.
fn healthcheck(app: &App) -> Response {
    if app.is_ready() {
        Response::text(200, "OK")
    } else {
        Response::text(503, "not ready")
    }
}

/// A running server: its address and handle, and the thread accepting connections.
pub struct Running {
    pub app: Arc<App>,
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    accept: std::thread::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, waits up to the configured shutdown timeout for in-flight requests, and
    /// returns whether they all finished.
    pub fn shutdown(self) -> bool {
        self.handle.begin_shutdown();
        let drained = self
            .handle
            .wait_idle(Duration::from_secs(self.app.config.timeout_shutdown_secs));
        let _ = self.accept.join();
        drained
    }

    /// Blocks until the accept loop ends (after [`ServerHandle::begin_shutdown`]).
    pub fn wait(self) {
        let _ = self.accept.join();
    }
}

/// Opens the listener from the configuration (used when systemd passed none).
pub fn bind(config: &Config) -> io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(config.server_host, config.server_port))
}

/// Starts serving on `listener` in a background thread.
pub fn start(app: App, listener: TcpListener) -> io::Result<Running> {
    let app = Arc::new(app);
    let server = Server::new(listener, router(&app), app.limits())?;
    let addr = server.local_addr()?;
    let handle = server.handle();
    let _ = app.server.set(handle.clone());
    let accept = std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || server.run())?;
    app.ready.store(true, Ordering::SeqCst);
    log::info!("kitebridge {} listening on http://{addr}", crate::VERSION);
    Ok(Running {
        app,
        addr,
        handle,
        accept,
    })
}
