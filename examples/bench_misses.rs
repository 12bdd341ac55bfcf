//! Permits under misses: 50 different pipelines missing at once, with the GitHub stand-in
//! delaying each mint by 150 ms, against one miss alone — at default settings (only the
//! stand-ins' URLs and the audit sink are configured). The target: all 50 done within 1.5× one
//! miss, so a burst of new pipelines is not served one `SERVER_WORKERS` batch after another.
//!
//!     cargo run --release --example bench_misses [ROUNDS]
//!
//! kitebridge runs in-process against the test stand-ins. Each round uses fresh pipelines (a
//! miss at Buildkite and at GitHub); the median round is reported.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kitebridge::{App, Config, start};
use support::github::Fail;
use support::kitebridge::{Upstreams, plugin_post};
use support::util::all_at_once;

const MINT_DELAY: Duration = Duration::from_millis(150);
const AT_ONCE: usize = 50;

/// CPU seconds used so far by this whole process (kitebridge and the stand-ins), from /proc.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the `)`.
    (ticks(11) + ticks(12)) / 100.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let up = Arc::new(Upstreams::start());
    for round in 0..rounds {
        for i in 0..=AT_ONCE {
            let slug = format!("miss-{round}-{i}");
            up.buildkite
                .set_pipeline("acme", &slug, "git@github.com:acme/widgets.git");
        }
    }
    let mut env = up.env();
    env.insert("AUDIT_LOG".into(), "/dev/null".into());
    env.insert("LOG_LEVEL".into(), "warn".into());
    let config = Config::from_vars(&env).expect("bench configuration");
    let workers = config.server_workers;
    let listener = TcpListener::bind("127.0.0.1:0").expect("port");
    let (tx, rx) = std::sync::mpsc::channel();
    let running = start(App::new(config).expect("app"), listener, move |_| {
        let _ = tx.send(());
    })
    .expect("start");
    rx.recv().expect("ready");
    let addr = running.addr;
    up.github.set_fail(Fail::Delay(MINT_DELAY));

    let mut alone = Vec::new();
    let mut burst = Vec::new();
    for round in 0..rounds {
        let token = up
            .signer
            .token(&up.claims(&format!("miss-{round}-{AT_ONCE}")));
        let t = Instant::now();
        let r = plugin_post(addr, "/token", &token);
        alone.push(t.elapsed());
        assert_eq!(r.status, 200, "one miss: {}", r.text());

        let tokens: Vec<String> = (0..AT_ONCE)
            .map(|i| up.signer.token(&up.claims(&format!("miss-{round}-{i}"))))
            .collect();
        let tokens = Arc::new(std::sync::Mutex::new(tokens));
        let cpu = cpu_secs();
        let t = Instant::now();
        let answers = all_at_once(AT_ONCE, move || {
            let token = tokens.lock().unwrap().pop().expect("a token each");
            let status = plugin_post(addr, "/token", &token).status;
            (status, t.elapsed())
        });
        burst.push(t.elapsed());
        assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
        if std::env::var_os("BENCH_VERBOSE").is_some() {
            let mut done: Vec<u128> = answers.iter().map(|(_, d)| d.as_millis()).collect();
            done.sort();
            let used = (cpu_secs() - cpu) * 1e3;
            eprintln!(
                "round {round}: {used:.0} ms CPU (all threads); answered after (ms) {done:?}"
            );
        }
    }
    let (one, fifty) = (median(alone), median(burst));
    println!(
        "command: cargo run --release --example bench_misses {rounds}   (SERVER_WORKERS={workers}, defaults otherwise)"
    );
    println!(
        "one miss (GitHub mint delayed {} ms), median of {rounds}: {:.0} ms",
        MINT_DELAY.as_millis(),
        one.as_secs_f64() * 1e3
    );
    println!(
        "{AT_ONCE} different pipelines missing at once, median of {rounds}: {:.0} ms",
        fifty.as_secs_f64() * 1e3
    );
    println!(
        "ratio {AT_ONCE} at once / one miss: {:.2}  (target ≤ 1.5)",
        fifty.as_secs_f64() / one.as_secs_f64()
    );
    println!("GitHub mints: {}", up.github.mints());
}
