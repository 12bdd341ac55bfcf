//! A whole kitebridge world for tests and the sandbox: the upstream stand-ins (GitHub, Buildkite,
//! the JWKS) and a Buildkite OIDC signer, the configuration that points kitebridge at them, and a
//! running kitebridge process with a tiny HTTP client.
#![forbid(unsafe_code)]
#![allow(dead_code)]

use super::buildkite::BuildkiteStandIn;
use super::github::{GitHubStandIn, app_public_key};
use super::jwks::JwksStandIn;
use super::oidc::{Signer, buildkite_claims, jwks_json};
use super::util::{
    TempDir, command_with_env, fixture, free_port, now, poll_for, poll_until, temp_dir, wait_exit,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::time::Duration;

pub const ORG: &str = "acme";
pub const PIPELINE: &str = "widgets";
pub const AUDIENCE: &str = "chinmina:default";
pub const APP_ID: &str = "12345";
pub const INSTALLATION_ID: u64 = 4242;
pub const ACCOUNT: &str = "acme";
/// The Buildkite stand-in's API token (test value, not a secret).
pub const BUILDKITE_TOKEN: &str = "bkua_test_token_not_a_secret";
/// The git credentials plugin's body for `acme/widgets`: git's input without the trailing
/// newline.
pub const GIT_BODY: &str = "protocol=https\nhost=github.com\npath=acme/widgets.git";
/// Both rate limits off, for tests that send many requests from one pipeline and address.
pub const NO_RATE_LIMITS: [(&str, &str); 2] = [
    ("RATE_LIMIT_PER_PIPELINE", "off"),
    ("RATE_LIMIT_PER_SOURCE", "off"),
];

/// Fresh stand-ins and a ready kitebridge (`bin`) pointed at them.
pub fn world(bin: &str) -> (Upstreams, Process) {
    world_with(bin, &[])
}

/// Fresh stand-ins and a ready kitebridge (`bin`) configured by [`Upstreams::env_with`].
pub fn world_with(bin: &str, extra: &[(&str, &str)]) -> (Upstreams, Process) {
    let up = Upstreams::start();
    let p = Process::spawn(bin, &up.env_with(extra));
    (up, p)
}

/// The GitHub stand-in for installation `INSTALLATION_ID` (account `ACCOUNT`) of App `APP_ID`.
pub fn github_stand_in() -> GitHubStandIn {
    GitHubStandIn::start(APP_ID, INSTALLATION_ID, ACCOUNT, app_public_key())
}

/// The stand-ins and the signer.
pub struct Upstreams {
    pub github: GitHubStandIn,
    pub buildkite: BuildkiteStandIn,
    pub jwks: JwksStandIn,
    pub signer: Signer,
}

impl Upstreams {
    /// GitHub with installation `acme` (repositories `widgets`, `gears`, `cfg`), Buildkite with
    /// pipeline `acme/widgets` → `git@github.com:acme/widgets.git`, the JWKS with test key a.
    pub fn start() -> Upstreams {
        let signer = Signer::a();
        let jwks = JwksStandIn::start(jwks_json(&[&signer]));
        let github = github_stand_in();
        let buildkite = BuildkiteStandIn::start(BUILDKITE_TOKEN);
        buildkite.set_pipeline(ORG, PIPELINE, "git@github.com:acme/widgets.git");
        Upstreams {
            github,
            buildkite,
            jwks,
            signer,
        }
    }

    /// The configuration pointing kitebridge at the stand-ins (port 0 unless overridden).
    pub fn env(&self) -> BTreeMap<String, String> {
        let pairs = [
            ("JWT_BUILDKITE_ORGANIZATION_SLUG", ORG.to_owned()),
            ("JWT_AUDIENCE", AUDIENCE.to_owned()),
            ("JWT_JWKS_URL", self.jwks.url()),
            ("GITHUB_APP_ID", APP_ID.to_owned()),
            (
                "GITHUB_APP_PRIVATE_KEY_FILE",
                fixture("test-github-app-key.pkcs1.pem"),
            ),
            ("GITHUB_APP_INSTALLATION_ID", INSTALLATION_ID.to_string()),
            ("GITHUB_API_URL", self.github.api_url()),
            ("BUILDKITE_API_URL", self.buildkite.api_url()),
            ("BUILDKITE_API_TOKEN", BUILDKITE_TOKEN.to_owned()),
            ("SERVER_PORT", "0".to_owned()),
            ("LOG_LEVEL", "debug".to_owned()),
        ];
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// [`Upstreams::env`] with the variables of `extra` set on top (a later pair wins).
    pub fn env_with(&self, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut env = self.env();
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        env
    }

    /// [`Upstreams::env_with`] after [`NO_RATE_LIMITS`] (`extra` may still set a limit).
    pub fn env_with_no_rate_limits(&self, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        self.env_with(&[&NO_RATE_LIMITS[..], extra].concat())
    }

    /// Realistic Buildkite claims for `acme/<pipeline>` with our audience, issued now.
    pub fn claims(&self, pipeline: &str) -> Value {
        let mut claims = buildkite_claims(ORG, pipeline, now());
        claims["aud"] = Value::from(AUDIENCE);
        claims
    }

    /// A valid token for `acme/widgets`.
    pub fn token(&self) -> String {
        self.signer.token(&self.claims(PIPELINE))
    }

    /// A token for `acme/widgets` with its claims changed by `edit`.
    pub fn token_with(&self, edit: impl FnOnce(&mut Value)) -> String {
        let mut claims = self.claims(PIPELINE);
        edit(&mut claims);
        self.signer.token(&claims)
    }
}

/// A response read off the wire.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The status and headers of a parsed response head, with `body`.
    pub fn from_head(head: &httparse::Response, body: Vec<u8>) -> HttpResponse {
        HttpResponse {
            status: head.code.unwrap(),
            headers: head
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
}

/// Reads one response from the stream (head, then Content-Length bytes). `None` if the connection
/// closed or timed out before a complete response.
pub fn read_response(s: &mut TcpStream) -> Option<HttpResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = resp.parse(&buf) {
            let head = HttpResponse::from_head(&resp, Vec::new());
            let len: usize = head
                .header("content-length")
                .map(|v| v.parse().unwrap())
                .unwrap_or(0);
            if head.status == 100 {
                buf.drain(..n);
                continue;
            }
            while buf.len() < n + len {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return None,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            return Some(HttpResponse {
                body: buf[n..n + len].to_vec(),
                ..head
            });
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

/// A JSON error answer: `status` and exactly `{"error": error}`.
pub fn assert_json_error(r: &HttpResponse, status: u16, error: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json(), json!({ "error": error }), "{}", r.text());
}

/// [`assert_json_error`], and `Cache-Control: no-store`.
pub fn assert_json_error_no_store(r: &HttpResponse, status: u16, error: &str) {
    assert_json_error(r, status, error);
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
}

/// The `token` of a 200 JSON body.
pub fn vended(r: &HttpResponse) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["token"].as_str().unwrap().to_owned()
}

/// The audit line's `error`, which must be set.
pub fn audit_error(audit: &Value) -> String {
    audit["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {audit}"))
        .to_owned()
}

/// Sends raw request bytes on a new connection and reads the response (the request should say
/// `Connection: close`).
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(raw).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "no complete response ({other:?}): {:?}",
            String::from_utf8_lossy(&buf)
        ),
    };
    HttpResponse::from_head(&resp, buf[n..].to_vec())
}

/// A POST as the token plugin sends it: `Authorization: Bearer`, `Content-Type: text/plain`,
/// `Accept: application/json`, empty body.
pub fn plugin_post(addr: SocketAddr, path: &str, jwt: &str) -> HttpResponse {
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/7.88.1\r\nAuthorization: Bearer {jwt}\r\n\
         Content-Type: text/plain\r\nAccept: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    exchange(addr, raw.as_bytes())
}

/// A POST as the git credentials plugin sends it.
pub fn git_post(addr: SocketAddr, path: &str, jwt: &str, body: &str) -> HttpResponse {
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/7.88.1\r\nAuthorization: Bearer {jwt}\r\n\
         Content-Type: text/plain\r\nAccept: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, raw.as_bytes())
}

/// A running `kitebridge` process.
pub struct Process {
    child: Child,
    pub addr: SocketAddr,
    /// Holds `audit.log` and `stderr.log`; removed when the process is dropped.
    pub dir: TempDir,
}

impl Process {
    /// Spawns `bin` with `env` (and nothing else from the environment but `PATH`), audit lines to
    /// a file and stderr to a file, on a free loopback port; waits until `/healthcheck` is 200.
    pub fn spawn(bin: &str, env: &BTreeMap<String, String>) -> Process {
        let p = Process::spawn_unready(bin, env);
        p.wait_ready(Duration::from_secs(15));
        p
    }

    /// Like [`Process::spawn`] without waiting for readiness (only for the port to open). An
    /// `AUDIT_LOG` in `env` is kept (then [`Process::audit`] does not see the records).
    pub fn spawn_unready(bin: &str, env: &BTreeMap<String, String>) -> Process {
        let dir = temp_dir("proc");
        let port = free_port();
        let mut cmd = command_with_env(bin, env);
        cmd.env("SERVER_PORT", port.to_string());
        if !env.contains_key("AUDIT_LOG") {
            cmd.env("AUDIT_LOG", dir.join("audit.log"));
        }
        let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        // A `SERVER_HOST` in `env` (e.g. `::1`) is where the process listens and is talked to.
        let host: std::net::IpAddr = env
            .get("SERVER_HOST")
            .map_or("127.0.0.1", String::as_str)
            .parse()
            .unwrap();
        let addr = SocketAddr::new(host, port);
        let p = Process { child, addr, dir };
        assert!(
            poll_until(Duration::from_secs(15), || TcpStream::connect(addr).is_ok()),
            "kitebridge did not listen; stderr:\n{}",
            p.stderr()
        );
        p
    }

    pub fn wait_ready(&self, within: Duration) {
        self.wait_ready_at("/healthcheck", within);
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        exchange(
            self.addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    }

    pub fn token(&self, path: &str, jwt: &str) -> HttpResponse {
        plugin_post(self.addr, path, jwt)
    }

    pub fn git(&self, path: &str, jwt: &str, body: &str) -> HttpResponse {
        git_post(self.addr, path, jwt, body)
    }

    /// The audit lines so far, waiting up to 2 s for at least `at_least` of them.
    pub fn audit(&self, at_least: usize) -> Vec<Value> {
        let mut lines = Vec::new();
        poll_until(Duration::from_secs(2), || {
            let text = self.audit_text();
            // A read can catch a line while it is being appended: only newline-ended lines count.
            let complete = text.rfind('\n').map_or("", |end| &text[..end]);
            lines = complete
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            lines.len() >= at_least
        });
        lines
    }

    /// The last audit line (waiting for at least `count` lines).
    pub fn last_audit(&self, count: usize) -> Value {
        self.audit(count)
            .pop()
            .unwrap_or_else(|| panic!("no audit line; stderr:\n{}", self.stderr()))
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit, at most `within`; its exit status code (see
    /// [`wait_exit`]: killed if still running then).
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        wait_exit(&mut self.child, within)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The standard padded base64 of the SHA-256 of `token`: what `hashedToken` must be.
pub fn hashed_token(token: &str) -> String {
    use base64::Engine;
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

impl Process {
    /// Waits until `GET path` answers 200 (the health check under a base path).
    pub fn wait_ready_at(&self, path: &str, within: Duration) {
        assert!(
            poll_until(within, || self.get(path).status == 200),
            "kitebridge not ready at {path}; stderr:\n{}",
            self.stderr()
        );
    }

    /// The audit line of response `r` (matched by `X-Request-Id`; lines of consecutive requests
    /// may be written in either order), waiting up to 2 s for it.
    pub fn audit_of(&self, r: &HttpResponse) -> Value {
        let id = r.header("X-Request-Id").expect("X-Request-Id");
        let found = poll_for(Duration::from_secs(2), || {
            self.audit(0)
                .into_iter()
                .find(|line| line["requestId"] == id)
        });
        found.unwrap_or_else(|| panic!("no audit line for {id}; stderr:\n{}", self.stderr()))
    }

    /// A POST to `path` with the given header lines (each without CRLF) and body; adds `Host`,
    /// `Content-Length` and `Connection: close`.
    pub fn post_with(&self, path: &str, header_lines: &[&str], body: &[u8]) -> HttpResponse {
        let mut raw = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for line in header_lines {
            raw.push_str(line);
            raw.push_str("\r\n");
        }
        raw.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(body);
        exchange(self.addr, &raw)
    }
}
