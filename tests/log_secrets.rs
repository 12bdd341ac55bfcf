//! At `LOG_LEVEL=trace`, through the real binary: the App JWT, the Buildkite API token, the
//! caller's OIDC token and every minted token are absent from everything written to stderr — also
//! after re-assembling hex dumps (an HTTP client's wire trace prints 16 bytes per line in hex,
//! which a plain search across lines would miss).

mod support;

use support::kitebridge::{BUILDKITE_TOKEN, GIT_BODY, world_with};

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");

/// Every run of 4-hex-digit groups (`--` for padding, as wire dumps print them) decoded, lines
/// joined in order: the bytes a hex dump spread over many lines.
fn reassembled_hex(log: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in log.lines() {
        for word in line.split_whitespace() {
            let groups =
                word.len() == 4 && word.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
            if !groups {
                continue;
            }
            for pair in [&word[..2], &word[2..]] {
                if let Ok(b) = u8::from_str_radix(pair, 16) {
                    bytes.push(b);
                }
            }
        }
    }
    bytes
}

/// The ASCII columns of a dump joined (dots for other bytes), lines in order.
fn joined(log: &str) -> String {
    log.lines().map(str::trim_end).collect()
}

#[test]
fn no_secret_reaches_stderr_at_trace_even_as_a_hex_dump() {
    let (up, p) = world_with(BIN, &[("LOG_LEVEL", "trace")]);
    let jwt = up.token();
    let responses = [
        p.token("/token", &jwt),
        p.git("/git-credentials", &jwt, GIT_BODY),
        p.token("/token/default", &jwt),
    ];
    for r in &responses {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let log = p.stderr();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log is at a verbose level:\n{log}"
    );
    let mut secrets: Vec<(String, String)> = vec![
        ("the Buildkite API token".into(), BUILDKITE_TOKEN.into()),
        ("the caller's OIDC token".into(), jwt.clone()),
    ];
    let app_jwts = up.github.jwts();
    assert!(!app_jwts.is_empty(), "kitebridge called GitHub as the App");
    secrets.extend(app_jwts.into_iter().map(|t| ("an App JWT".into(), t)));
    let minted = up.github.issued();
    assert!(!minted.is_empty());
    secrets.extend(
        minted
            .into_iter()
            .map(|i| ("a minted token".into(), i.token)),
    );
    let hex = String::from_utf8_lossy(&reassembled_hex(&log)).into_owned();
    let columns = joined(&log);
    for (what, secret) in &secrets {
        // A distinctive middle piece: enough to identify the secret, short enough to be found
        // within one reassembled dump.
        let piece = &secret[secret.len() / 3..secret.len() / 3 + 20.min(secret.len() / 3)];
        for (view, text) in [
            ("the log", &log),
            ("the hex dumps", &hex),
            ("the joined lines", &columns),
        ] {
            assert!(
                !text.contains(secret.as_str()) && !text.contains(piece),
                "{what} appears in {view}"
            );
        }
    }
}
