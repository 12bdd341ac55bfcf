//! Audit durability through the real binary: no token leaves without its audit record. On a
//! full filesystem (a small tmpfs this test mounts; it skips, saying so, where mounting is not
//! permitted) and on a file that fails every write (`/dev/full`): no token in any answer while
//! writes fail, the fresh mint revoked at the GitHub stand-in, the failures counted, the health
//! check 503; afterwards no invalid line in the file and no record lost. `AUDIT_ON_FAILURE=serve`
//! sends tokens anyway. A logrotate-style rename (then SIGHUP) or a removal gets a new file.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::kitebridge::{
    AUDIENCE, HttpResponse, NO_RATE_LIMITS, ORG, Process, Upstreams, vended, world,
};
use support::oidc::buildkite_claims;
use support::util::{now, poll_until, signal, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");

/// A token for pipeline `acme/<pipeline>`.
fn token_for(up: &Upstreams, pipeline: &str) -> String {
    let mut claims = buildkite_claims(ORG, pipeline, now());
    claims["aud"] = AUDIENCE.into();
    up.signer.token(&claims)
}

/// Pipelines `p0`… of the widgets repository, each its own cache key (so each vend is a mint).
fn with_pipelines(count: usize) -> Upstreams {
    let up = Upstreams::start();
    for i in 0..count {
        up.buildkite
            .set_pipeline(ORG, &format!("p{i}"), "git@github.com:acme/widgets.git");
    }
    up
}

/// A withheld token's answer: exactly `{"error":"audit unavailable"}`, nothing of a token.
fn assert_withheld(r: &HttpResponse) {
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"error": "audit unavailable"}));
    assert!(!r.text().contains("ghs_"));
    assert_eq!(r.header("retry-after"), Some("1"));
}

/// The value of an unlabelled counter in `/metrics`.
fn counter(p: &Process, name: &str) -> u64 {
    let text = p.get("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

/// Every line of `path` as JSON; panics on a line that is not (a glued or cut record).
fn json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {} is not one JSON record ({e}): {line:?}", i + 1))
        })
        .collect()
}

fn request_id(r: &HttpResponse) -> String {
    r.header("x-request-id").unwrap().to_owned()
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = temp_dir("tmpfs").keep();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Writes to `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let block = [b'x'; 4096];
    while file.write_all(&block).is_ok() {}
    while file.write_all(b"x").is_ok() {}
}

#[test]
fn a_full_filesystem_withholds_tokens_revokes_the_mint_and_loses_no_record() {
    let fs = match Tmpfs::mount("256k") {
        Ok(fs) => fs,
        Err(why) => {
            println!("SKIP: cannot mount a tmpfs here ({why}); the /dev/full test still runs");
            return;
        }
    };
    let up = with_pipelines(40);
    let audit = fs.0.join("audit.log");
    let mut env = up.env_with(&NO_RATE_LIMITS);
    env.insert("AUDIT_LOG".into(), audit.display().to_string());
    let p = Process::spawn(BIN, &env);
    let mut sent = Vec::new(); // (request id, response) in order
    for i in 0..3 {
        let r = p.token("/token", &token_for(&up, &format!("p{i}")));
        vended(&r);
        sent.push((request_id(&r), r));
    }
    fill(&fs.0.join("filler"));
    // Misses (each pipeline its own key) until the audit file is full too. What room the file's
    // last page had left decides how it goes: a token's record (~1.2 KB) no longer fits, but a
    // shorter record of a withheld answer may, and writing it ends the failure until the next
    // token's record is cut. So: at least three withheld, and on until a write has failed last.
    let mut withheld = 0;
    for i in 3..39 {
        let r = p.token("/token", &token_for(&up, &format!("p{i}")));
        match r.status {
            200 => assert!(
                withheld == 0,
                "a token after one was withheld: {}",
                r.text()
            ),
            _ => {
                assert_withheld(&r);
                withheld += 1;
            }
        }
        sent.push((request_id(&r), r));
        if withheld >= 3 && p.get("/healthcheck").status == 503 {
            break;
        }
    }
    assert!(withheld >= 3, "the audit file never filled up");
    println!(
        "{} tokens sent after the filler, then {withheld} withheld",
        sent.len() - 3 - withheld
    );
    for line in p.stderr().lines().filter(|l| l.contains("audit")) {
        println!("{line}");
    }
    let r = p.get("/healthcheck");
    assert_eq!((r.status, r.text().as_str()), (503, "audit unavailable"));
    // At least the first cut-off token record; the withheld answers' own records may have fit.
    assert!(counter(&p, "kitebridge_audit_write_failures_total") >= 1);
    // Every token GitHub minted either went out in a 200 whose record is written, or was revoked.
    let delivered: BTreeSet<String> = sent
        .iter()
        .filter(|(_, r)| r.status == 200)
        .map(|(_, r)| r.json()["token"].as_str().unwrap().to_owned())
        .collect();
    let unrevoked: BTreeSet<String> = up.github.unrevoked().into_iter().collect();
    assert_eq!(unrevoked, delivered, "undelivered mints are revoked");
    assert!(
        up.github.issued().iter().any(|i| i.revoked),
        "the first withheld request had minted, and its token was revoked"
    );

    // Room again: the waiting records are written without new traffic, in order.
    std::fs::remove_file(fs.0.join("filler")).unwrap();
    assert!(
        poll_until(Duration::from_secs(5), || p.get("/healthcheck").status
            == 200),
        "healthy again once records are written; stderr:\n{}",
        p.stderr()
    );
    let lines = json_lines(&audit);
    let records: Vec<&Value> = lines.iter().filter(|l| l["type"] == "audit").collect();
    let mut ids: Vec<&str> = records
        .iter()
        .map(|l| l["requestId"].as_str().unwrap())
        .collect();
    // The withheld requests' records waited in a queue and were written in order.
    let withheld_ids: Vec<&str> = records
        .iter()
        .filter(|l| l["status"] == 503)
        .map(|l| l["requestId"].as_str().unwrap())
        .collect();
    let sent_withheld: Vec<&str> = sent
        .iter()
        .filter(|(_, r)| r.status == 503)
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(withheld_ids, sent_withheld, "in order");
    let mut expected: Vec<&str> = sent.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    expected.sort_unstable();
    assert_eq!(ids, expected, "every request's record, once");
    for (id, r) in &sent {
        let line = records
            .iter()
            .find(|l| l["requestId"] == id.as_str())
            .unwrap();
        assert_eq!(line["status"], r.status);
        if r.status == 503 {
            assert!(
                line["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("audit unavailable")
            );
            assert_eq!(line["vended"], Value::Null);
        } else {
            assert_eq!(line["vended"]["hashedToken"], r.json()["hashedToken"]);
        }
    }
    let first_withheld = lines.iter().find(|l| l["status"] == 503).unwrap();
    assert!(
        first_withheld["error"]
            .as_str()
            .unwrap()
            .contains("was revoked"),
        "{first_withheld}"
    );
    vended(&p.token("/token", &token_for(&up, "p39")));
}

#[test]
fn a_file_that_fails_every_write_withholds_tokens_and_revokes_the_mint() {
    let up = with_pipelines(2);
    let mut env = up.env_with(&NO_RATE_LIMITS);
    env.insert("AUDIT_LOG".into(), "/dev/full".into());
    let p = Process::spawn(BIN, &env);
    assert_eq!(counter(&p, "kitebridge_audit_write_failures_total"), 0);
    let r = p.token("/token", &token_for(&up, "p0"));
    assert_withheld(&r);
    assert_eq!(up.github.mints(), 1);
    assert!(up.github.unrevoked().is_empty(), "the mint was revoked");
    // Known to fail now: the next request is refused before any upstream call.
    let r = p.git(
        "/git-credentials",
        &token_for(&up, "p1"),
        support::kitebridge::GIT_BODY,
    );
    assert_eq!((r.status, r.text().as_str()), (503, "audit unavailable\n"));
    assert_eq!(up.github.mints(), 1, "no second mint");
    assert_eq!(p.get("/healthcheck").status, 503);
    // The token's record failed before its answer; the refusals' records are written after
    // theirs were sent, so they are counted a moment later.
    assert!(poll_until(Duration::from_secs(5), || counter(
        &p,
        "kitebridge_audit_write_failures_total"
    ) >= 3));
    assert!(p.stderr().contains("tokens are withheld"), "{}", p.stderr());
}

#[test]
fn audit_on_failure_serve_sends_tokens_and_logs_every_failure() {
    let up = Upstreams::start();
    let mut env = up.env_with(&[("AUDIT_ON_FAILURE", "serve")]);
    env.insert("AUDIT_LOG".into(), "/dev/full".into());
    let p = Process::spawn(BIN, &env);
    vended(&p.token("/token", &up.token()));
    vended(&p.token("/token", &up.token()));
    assert_eq!(p.get("/healthcheck").status, 200, "availability was chosen");
    let logged = p.stderr().matches("AUDIT_ON_FAILURE=serve").count();
    assert!(logged >= 2, "each failure is logged:\n{}", p.stderr());
    assert!(counter(&p, "kitebridge_audit_write_failures_total") >= 2);
}

fn ids_in(path: &Path) -> Vec<String> {
    json_lines(path)
        .iter()
        .map(|l| l["requestId"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_logrotate_style_rename_then_sighup_writes_a_new_file() {
    use std::os::unix::fs::PermissionsExt;
    let (up, p) = world(BIN);
    let audit = p.dir.join("audit.log");
    let before = p.token("/token", &up.token());
    vended(&before);
    assert!(poll_until(Duration::from_secs(2), || ids_in(&audit).len() == 1));
    std::fs::rename(&audit, p.dir.join("audit.log.1")).unwrap();
    signal(p.pid(), "HUP");
    let after = p.token("/token", &up.token());
    vended(&after);
    assert!(
        poll_until(Duration::from_secs(2), || audit.exists()),
        "a new file"
    );
    assert_eq!(ids_in(&p.dir.join("audit.log.1")), [request_id(&before)]);
    assert_eq!(ids_in(&audit), [request_id(&after)]);
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Removed without a signal: the next record re-creates it.
    std::fs::remove_file(&audit).unwrap();
    let third = p.token("/token", &up.token());
    vended(&third);
    assert_eq!(ids_in(&audit), [request_id(&third)]);
}
