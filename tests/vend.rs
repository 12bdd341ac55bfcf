//! The token routes through the running kitebridge process, against the upstream stand-ins:
//! every status code of `api.md` these routes produce, caused the way production causes it.

mod support;

use support::kitebridge::{Process, Upstreams};

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");

fn world() -> (Upstreams, Process) {
    let up = Upstreams::start();
    let p = Process::spawn(BIN, &up.env());
    (up, p)
}

#[test]
fn token_happy_path() {
    let (up, p) = world();
    let r = p.token("/token", &up.token());
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.stderr());
    let body = r.json();
    assert_eq!(body["repositories"], serde_json::json!(["acme/widgets"]));
    let audit = p.last_audit(1);
    assert_eq!(audit["status"], 200);
    println!("{}", r.text());
    println!("{audit}");
}
