//! The upstream stand-ins as a long-running process, for the real-systemd check
//! (`.ci/nspawn-check` runs it as a service inside the container, next to the installed package).
//! They are the integration tests' stand-ins (`tests/support/`): GitHub with App 12345's
//! installation of `acme`, Buildkite with pipeline `acme/widgets`, and the Buildkite OIDC key set
//! — all on 127.0.0.1, with the test fixtures' keys, nothing real.
//!
//!     cargo build --example standins
//!     target/debug/examples/standins DIR
//!
//! Writes to DIR: `upstreams.env` (the kitebridge variables that point at the stand-ins, no
//! secret), `github-app-private-key.pem` and `buildkite-api-token` (the fake secrets, to be
//! loaded as systemd credentials), then `ready`. Then serves, until killed, a control endpoint on
//! 127.0.0.1:9100 (`CONTROL`):
//!   GET /jwt       a fresh Buildkite OIDC token for acme/widgets (5 minutes to live)
//!   POST /stall    make every GitHub mint wait; POST /unstall releases them
//!   GET /stalled   how many mints are waiting; GET /mints: how many were answered
//!
//! The OIDC signing key is read from the source tree's `tests/fixtures/` at start (the path this
//! was compiled in), so the check copies that directory to the same path inside the container.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use support::kitebridge::{BUILDKITE_TOKEN, Upstreams};
use support::server::{Response, Server};

/// Where the control endpoint listens.
const CONTROL: &str = "127.0.0.1:9100";

/// The variables of `Upstreams::env` that go into `upstreams.env`: the secrets go into their own
/// files, and the listener is the socket unit's.
const KEPT: [&str; 7] = [
    "JWT_BUILDKITE_ORGANIZATION_SLUG",
    "JWT_AUDIENCE",
    "JWT_JWKS_URL",
    "GITHUB_APP_ID",
    "GITHUB_APP_INSTALLATION_ID",
    "GITHUB_API_URL",
    "BUILDKITE_API_URL",
];

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: standins DIR");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    let up = Arc::new(Upstreams::start());
    let env = up.env();
    let mut lines = String::new();
    for name in KEPT {
        let value = env.get(name).expect("Upstreams::env names it");
        lines.push_str(&format!("{name}={value}\n"));
    }
    let write = |name: &str, contents: &[u8]| {
        std::fs::write(dir.join(name), contents)
            .unwrap_or_else(|e| panic!("cannot write {name} in {}: {e}", dir.display()));
    };
    write("upstreams.env", lines.as_bytes());
    write(
        "github-app-private-key.pem",
        support::github::APP_KEY_PEM.as_bytes(),
    );
    write("buildkite-api-token", BUILDKITE_TOKEN.as_bytes());

    let control = {
        let up = Arc::clone(&up);
        move |request: &support::server::Request| match (
            request.method.as_str(),
            request.path.as_str(),
        ) {
            ("GET", "/jwt") => Response::bytes(200, "text/plain", up.token().into_bytes()),
            ("POST", "/stall") => {
                up.github.stall_mints(true);
                Response::empty(204)
            }
            ("POST", "/unstall") => {
                up.github.stall_mints(false);
                Response::empty(204)
            }
            ("GET", "/stalled") => Response::bytes(
                200,
                "text/plain",
                up.github.stalled_mints().to_string().into_bytes(),
            ),
            ("GET", "/mints") => Response::bytes(
                200,
                "text/plain",
                up.github.mints().to_string().into_bytes(),
            ),
            _ => Response::empty(404),
        }
    };
    let addr: SocketAddr = CONTROL.parse().expect("a socket address");
    let _server = Server::start_at(addr, Arc::new(control));
    write("ready", b"");
    println!("stand-ins ready; control on http://{CONTROL}");
    loop {
        std::thread::park();
    }
}
