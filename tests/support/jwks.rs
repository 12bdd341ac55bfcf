//! A JWKS endpoint stand-in: serves a key set at `/.well-known/jwks` with a configurable
//! `Cache-Control`, a replaceable body (key rotation), and failure modes (down with 503,
//! connection refused, oversized, redirect to another host, slow). Counts fetches.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::server::{Request, Response, Server};

/// The path the key set is served at.
pub const JWKS_PATH: &str = "/.well-known/jwks";

/// How the stand-in answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksMode {
    /// 200 with the body and `Cache-Control`.
    Normal,
    /// 503 for every fetch.
    Down,
    /// Nothing listens on the port (connection refused) until another mode is set.
    Refused,
    /// 200 with a body over 64 KiB.
    Oversized,
    /// 302 to the same path on another host.
    Redirect,
    /// Answers normally after this delay.
    Slow(Duration),
}

struct State {
    body: Mutex<String>,
    cache_control: Mutex<Option<String>>,
    mode: Mutex<JwksMode>,
    fetches: AtomicUsize,
}

/// The running stand-in.
pub struct JwksStandIn {
    addr: SocketAddr,
    state: Arc<State>,
    server: Mutex<Option<Server>>,
}

impl JwksStandIn {
    /// Serves `body` with `Cache-Control: max-age=3600`.
    pub fn start(body: String) -> JwksStandIn {
        let state = Arc::new(State {
            body: Mutex::new(body),
            cache_control: Mutex::new(Some("max-age=3600".to_owned())),
            mode: Mutex::new(JwksMode::Normal),
            fetches: AtomicUsize::new(0),
        });
        let server = Server::start_at("127.0.0.1:0".parse().unwrap(), handler(&state));
        JwksStandIn {
            addr: server.addr(),
            state,
            server: Mutex::new(Some(server)),
        }
    }

    /// The JWKS URL (`http://127.0.0.1:PORT/.well-known/jwks`).
    pub fn url(&self) -> String {
        format!("http://{}{JWKS_PATH}", self.addr)
    }

    /// Replaces the key set (rotation).
    pub fn set_body(&self, body: String) {
        *self.state.body.lock().unwrap() = body;
    }

    /// Sets `Cache-Control` (`None`: header absent).
    pub fn set_cache_control(&self, value: Option<&str>) {
        *self.state.cache_control.lock().unwrap() = value.map(str::to_owned);
    }

    /// Switches mode; `Refused` closes the listener, any other mode reopens it on the same port.
    pub fn set_mode(&self, mode: JwksMode) {
        let mut server = self.server.lock().unwrap();
        if mode == JwksMode::Refused {
            *server = None;
        } else if server.is_none() {
            *server = Some(Server::start_at(self.addr, handler(&self.state)));
        }
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Requests received at the JWKS path.
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }
}

fn handler(state: &Arc<State>) -> Arc<dyn Fn(&Request) -> Response + Send + Sync> {
    let state = Arc::clone(state);
    Arc::new(move |request: &Request| answer(&state, request))
}

fn answer(state: &State, request: &Request) -> Response {
    if request.path != JWKS_PATH {
        return Response::empty(404);
    }
    if request.method != "GET" {
        return Response::empty(405).with_header("Allow", "GET");
    }
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let mode = state.mode.lock().unwrap().clone();
    match mode {
        JwksMode::Down | JwksMode::Refused => Response::message(503, "Service Unavailable"),
        JwksMode::Oversized => key_set(state, oversized_body()),
        JwksMode::Redirect => Response::empty(302)
            .with_header("Location", "https://evil.example.com/.well-known/jwks"),
        JwksMode::Slow(delay) => {
            std::thread::sleep(delay);
            key_set(state, state.body.lock().unwrap().clone())
        }
        JwksMode::Normal => key_set(state, state.body.lock().unwrap().clone()),
    }
}

fn key_set(state: &State, body: String) -> Response {
    let response = Response::bytes(200, "application/json; charset=utf-8", body.into_bytes());
    match state.cache_control.lock().unwrap().as_deref() {
        Some(value) => response.with_header("Cache-Control", value),
        None => response,
    }
}

/// A syntactically valid key set just over 64 KiB.
fn oversized_body() -> String {
    let padding = "A".repeat(70 * 1024);
    format!(r#"{{"keys":[],"padding":"{padding}"}}"#)
}
