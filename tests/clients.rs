//! Byte-for-byte replays of the real Buildkite plugins and git against the running kitebridge: the
//! token plugin's request, the git credentials plugin's request and git's own credential helper
//! protocol (git itself, with a helper posting to kitebridge the way the plugin does).
#![forbid(unsafe_code)]

mod support;

use std::process::{Command, Stdio};
use support::kitebridge::{GIT_BODY, HttpResponse, Process, Upstreams, world};
use support::util::{fixture, now, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");

/// The helper fixture, and a check that `curl` (which it and the plugins use) is installed.
fn helper_script() -> String {
    let found = Command::new("sh")
        .args(["-c", "command -v curl"])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "these tests need curl, as the real plugins do (Debian: apt-get install curl)"
    );
    fixture("git-credential-helper.sh")
}

/// The one token the stand-in issued.
fn only_token(up: &Upstreams) -> String {
    let issued = up.github.issued();
    assert_eq!(issued.len(), 1, "exactly one mint");
    issued[0].token.clone()
}

fn assert_empty_200(r: &HttpResponse) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Length"), Some("0"));
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert!(r.body.is_empty(), "{:?}", r.text());
}

#[test]
fn the_token_plugin_request_is_served_on_both_url_forms() {
    let (up, p) = world(BIN);
    let jwt = up.token();
    // A configured URL with a trailing slash, joined with `/`, gives `//token/<name>`.
    let doubled = p.token("//token/default", &jwt);
    let prefixed = p.token("/token/pipeline:default", &jwt);
    let token = only_token(&up);
    for r in [&doubled, &prefixed] {
        assert_eq!(r.status, 200, "{}\n{}", r.text(), p.stderr());
        let body = r.json();
        assert_eq!(body["token"].as_str(), Some(token.as_str()));
        assert_eq!(body["profile"], "pipeline:default");
    }
    assert_eq!(p.audit_of(&prefixed)["vended"]["cache"], "hit");
}

#[test]
fn the_token_plugin_curl_command_prints_the_token() {
    helper_script();
    let (up, p) = world(BIN);
    // chinmina_token: curl --retry 3 --retry-delay 1 --retry-connrefused --fail --data "" with
    // the plugin's headers, to "<url>/token/<name>" where <url> was configured with a slash.
    let url = format!("http://{}/", p.addr);
    let out = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--retry",
            "3",
            "--retry-delay",
            "1",
            "--retry-connrefused",
            "--fail",
            "--data",
            "",
        ])
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", up.token()))
        .args(["-H", "Content-Type: text/plain"])
        .args(["-H", "Accept: application/json"])
        .args(["-H", "Content-Length: 0"])
        .arg(format!("{url}/token/default"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["token"].as_str(), Some(only_token(&up).as_str()));
    assert_eq!(p.last_audit(1)["path"], "/token/default");
}

#[test]
fn the_git_plugin_body_gets_the_exact_credential_text() {
    let (up, p) = world(BIN);
    let jwt = up.token();
    let r = p.git("/git-credentials/default", &jwt, GIT_BODY);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.stderr());
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    let token = only_token(&up);
    // The same token from the JSON route (a cache hit) tells its expiry.
    let json = p.token("/token/default", &jwt).json();
    assert_eq!(json["token"].as_str(), Some(token.as_str()));
    let expiry = kitebridge::parse_rfc3339(json["expiresAt"].as_str().unwrap()).unwrap();
    assert!((now() + 3500..=now() + 3600).contains(&expiry));
    let expected = format!(
        "protocol=https\nhost=github.com\npath=acme/widgets.git\nusername=x-access-token\n\
         password={token}\npassword_expiry_utc={expiry}\n\n"
    );
    assert_eq!(r.text(), expected);
    assert_eq!(
        r.header("Content-Length"),
        Some(expected.len().to_string().as_str())
    );
}

#[test]
fn the_repository_matches_case_insensitively() {
    let (up, p) = world(BIN);
    let r = p.git(
        "/git-credentials/default",
        &up.token(),
        "protocol=https\nhost=github.com\npath=acme/Widgets.git",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let token = only_token(&up);
    assert!(
        r.text().starts_with(&format!(
            "protocol=https\nhost=github.com\npath=acme/Widgets.git\nusername=x-access-token\npassword={token}\n"
        )),
        "{}",
        r.text()
    );
}

#[test]
fn another_repository_or_host_gets_an_empty_200() {
    let (up, p) = world(BIN);
    let jwt = up.token();
    for body in [
        "protocol=https\nhost=github.com\npath=acme/other.git",
        "protocol=https\nhost=gitlab.com\npath=acme/widgets.git",
        "protocol=http\nhost=github.com\npath=acme/widgets.git",
    ] {
        let r = p.git("/git-credentials/default", &jwt, body);
        assert_empty_200(&r);
    }
    assert_eq!(
        up.github.mints(),
        0,
        "nothing minted for a request that is not ours"
    );
}

#[test]
fn modern_git_extra_lines_are_ignored() {
    let (up, p) = world(BIN);
    let body = "capability[]=authtype\ncapability[]=state\nprotocol=https\nhost=github.com\n\
                path=acme/widgets.git\nwwwauth[]=Basic realm=\"GitHub\"";
    let r = p.git("/git-credentials/default", &up.token(), body);
    assert_eq!(r.status, 200, "{}", r.text());
    let token = only_token(&up);
    assert!(
        r.text().contains(&format!("\npassword={token}\n")),
        "{}",
        r.text()
    );
}

/// `git credential fill` with kitebridge's helper first and `then` (if any) second; git's
/// stdout and whether it succeeded.
fn git_credential_fill(p: &Process, jwt: &str, input: &str, then: Option<&str>) -> (bool, String) {
    let helper = helper_script();
    let home = temp_dir("git-home");
    let mut cmd = Command::new("git");
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("KB_URL", format!("http://{}", p.addr))
        .env("KB_JWT", jwt)
        .args(["-c", "credential.helper="])
        .arg("-c")
        .arg(format!("credential.helper=!sh {helper}"));
    if let Some(next) = then {
        cmd.arg("-c").arg(format!("credential.helper={next}"));
    }
    let mut child = cmd
        .args(["-c", "credential.useHttpPath=true", "credential", "fill"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    drop(home);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("git stderr: {}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), stdout)
}

#[test]
fn git_itself_gets_the_token_through_the_helper() {
    let (up, p) = world(BIN);
    let input = "protocol=https\nhost=github.com\npath=acme/widgets.git\n\n";
    let (ok, stdout) = git_credential_fill(&p, &up.token(), input, None);
    assert!(ok, "{stdout}");
    let token = only_token(&up);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"username=x-access-token"), "{stdout}");
    assert!(
        lines.contains(&format!("password={token}").as_str()),
        "{stdout}"
    );
    let audit = p.last_audit(1);
    assert_eq!(audit["path"], "/git-credentials/default");
    assert_eq!(audit["requestedRepository"], "acme/widgets");
}

#[test]
fn git_asks_the_next_helper_after_an_empty_answer() {
    let (up, p) = world(BIN);
    let input = "protocol=https\nhost=github.com\npath=acme/other.git\n\n";
    let next = "!f() { echo username=someone; echo password=from-the-next-helper; }; f";
    let (ok, stdout) = git_credential_fill(&p, &up.token(), input, Some(next));
    assert!(ok, "{stdout}");
    assert!(
        stdout.lines().any(|l| l == "password=from-the-next-helper"),
        "{stdout}"
    );
    assert_eq!(p.last_audit(1)["status"], 200, "kitebridge was asked first");
    assert_eq!(up.github.mints(), 0);
}
