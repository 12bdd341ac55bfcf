//! The local sandbox: stand-ins for GitHub, Buildkite and the Buildkite OIDC key set on loopback,
//! the real kitebridge in front of them, a `/token` and a `/git-credentials` exchange shown in
//! full, then a ready-to-paste `curl` command while it keeps serving (Ctrl-C to stop).
//!
//!     cargo run --release --example sandbox
//!
//! Everything here is fake: the keys are the test fixtures, the GitHub tokens are made up by the
//! stand-in. The stand-ins are the same ones the integration tests use (`tests/support/`).

#[path = "../tests/support/mod.rs"]
mod support;

use kitebridge::{App, Config, start};
use std::net::{SocketAddr, TcpListener};
use support::kitebridge::{AUDIENCE, ORG, PIPELINE, Upstreams, git_post, plugin_post};

fn main() {
    let _ = simple_logger::SimpleLogger::new()
        .with_level(log::LevelFilter::Info)
        .init();
    println!("kitebridge sandbox — everything below runs on 127.0.0.1 with fake keys and tokens\n");

    let up = Upstreams::start();
    println!("stand-ins:");
    println!(
        "  GitHub API      {}   (App {}, installation of account \"acme\")",
        up.github.api_url(),
        support::kitebridge::APP_ID
    );
    println!(
        "  Buildkite API   {}   (pipeline acme/widgets → git@github.com:acme/widgets.git)",
        up.buildkite.api_url()
    );
    println!("  Buildkite JWKS  {}", up.jwks.url());

    let mut env = up.env();
    env.insert("AUDIT_LOG".into(), "stderr".into());
    let config = match Config::from_vars(&env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sandbox configuration is invalid (a bug): {e}");
            std::process::exit(1);
        }
    };
    let listener = TcpListener::bind("127.0.0.1:8080")
        .or_else(|_| TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback port");
    let app = App::new(config).expect("the sandbox app starts");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let running = start(app, listener, move |_status| {
        let _ = ready_tx.send(());
    })
    .expect("kitebridge starts");
    let addr: SocketAddr = running.addr;
    ready_rx.recv().expect("kitebridge becomes ready");
    println!("\nkitebridge is ready on http://{addr} (audit lines go to stderr)\n");

    let jwt = up.token();
    println!(
        "A Buildkite job's OIDC token (signed by the stand-in key; claims as Buildkite sends them):"
    );
    println!(
        "  organization_slug={ORG} pipeline_slug={PIPELINE} aud={AUDIENCE} (expires in 300 s)\n"
    );

    println!("── 1. The token plugin: POST /token ─────────────────────────────────────────────");
    println!(
        "POST /token HTTP/1.1\nAuthorization: Bearer <the OIDC token>\nContent-Type: text/plain\nContent-Length: 0\n"
    );
    let r = plugin_post(addr, "/token", &jwt);
    println!("HTTP/1.1 {}\n{}", r.status, one_member_a_line(&r.text()));

    println!("\n── 2. The git credential helper: POST /git-credentials ──────────────────────────");
    let body = "protocol=https\nhost=github.com\npath=acme/widgets.git";
    println!(
        "POST /git-credentials HTTP/1.1\nAuthorization: Bearer <the OIDC token>\nContent-Type: text/plain\n\n{body}\n"
    );
    let r = git_post(addr, "/git-credentials", &jwt, body);
    println!("HTTP/1.1 {}\n{}", r.status, r.text());

    println!("── 3. Not this pipeline's repository: the empty answer git falls through on ───────");
    let r = git_post(
        addr,
        "/git-credentials",
        &jwt,
        "protocol=https\nhost=github.com\npath=acme/gears.git",
    );
    println!(
        "HTTP/1.1 {} with a body of {} bytes\n",
        r.status,
        r.body.len()
    );

    println!("── 4. No token: 401 ─────────────────────────────────────────────────────────────");
    let r = plugin_post(addr, "/token", "not-a-jwt");
    println!(
        "HTTP/1.1 {} {}\nWWW-Authenticate: {}\n",
        r.status,
        r.text(),
        r.header("www-authenticate").unwrap_or("")
    );

    println!("Try it yourself (a fresh token, valid for 5 minutes):\n");
    println!(
        "  curl -sS -X POST -H 'Authorization: Bearer {}' --data '' http://{addr}/token\n",
        up.token()
    );
    println!("kitebridge keeps serving on http://{addr}; Ctrl-C stops the sandbox.");
    running.wait();
}

/// A JSON object with each top-level member on its own line, in the order it was sent (arrays
/// and strings are left whole).
fn one_member_a_line(json: &str) -> String {
    let (mut out, mut depth, mut in_string, mut escaped) = (String::new(), 0usize, false, false);
    for c in json.chars() {
        out.push(c);
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => {
                depth += 1;
                if depth == 1 {
                    out.push_str("\n  ");
                }
            }
            '}' | ']' => depth = depth.saturating_sub(1),
            ',' if depth == 1 => out.push_str("\n  "),
            _ => {}
        }
    }
    out
}
