//! Socket activation end to end: `kitebridge::take_listener` in a process started by
//! `systemd-socket-activate` (Debian package `systemd`), the tool systemd ships for testing
//! activation without PID 1.
//!
//! `take_listener` needs the socket at descriptor 3 and `LISTEN_PID` equal to its own pid, so each
//! test re-executes this test binary as a child running only [`socket_activation_child`], which
//! reports what it got as `child: key=value` lines on stdout; the parent test asserts on them.
#![forbid(unsafe_code)]

mod support;

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::util::{free_port, temp_dir};

/// Set in the child's environment; without it the child entry point does nothing.
const CHILD_MARKER: &str = "KITEBRIDGE_SYSTEMD_TEST_CHILD";

/// `O_CLOEXEC` as shown in the octal `flags:` line of `/proc/self/fdinfo/N` (x86-64, aarch64).
const O_CLOEXEC_FDINFO: u32 = 0o2_000_000;

/// The child side: adopts the passed socket and reports on it. Ignored in normal runs; the tests
/// below run it with `--ignored --exact` in a child process.
#[test]
#[ignore = "child process entry point of the socket activation tests"]
fn socket_activation_child() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    match kitebridge::take_listener() {
        Ok(Some(listener)) => report_listener(&listener),
        Ok(None) => println!("child: listener=none"),
        Err(e) => println!("child: error={e}"),
    }
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        println!("child: {name}={}", std::env::var_os(name).is_some());
    }
}

/// Reports the listener's address, descriptor and close-on-exec flag, then accepts one connection
/// (the parent's, which made systemd-socket-activate start this child) and reports its peer.
fn report_listener(listener: &TcpListener) {
    let fd = listener.as_raw_fd();
    println!("child: listener={}", listener.local_addr().unwrap());
    println!("child: fd={fd}");
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap();
    let flags = u32::from_str_radix(flags.trim(), 8).unwrap();
    println!("child: cloexec={}", flags & O_CLOEXEC_FDINFO != 0);
    let (_connection, peer) = listener.accept().unwrap();
    println!("child: peer={peer}");
}

/// Arguments that make this test binary run only the child entry point.
fn child_args() -> [&'static str; 5] {
    [
        "--ignored",
        "--exact",
        "socket_activation_child",
        "--nocapture",
        "--test-threads=1",
    ]
}

/// Runs the child under `systemd-socket-activate` with `options` (listen address and flags).
/// systemd-socket-activate starts its program only when a first connection arrives, so this
/// keeps trying `connect` until it succeeds, and returns that connection with the child's output.
fn run_activated_child<C>(
    options: &[&str],
    mut connect: impl FnMut() -> std::io::Result<C>,
) -> (C, Output) {
    let mut child = Command::new("systemd-socket-activate")
        .args(options)
        .arg(format!("--setenv={CHILD_MARKER}=1"))
        .arg(std::env::current_exe().unwrap())
        .args(child_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate must be installed (Debian package systemd)");
    let deadline = Instant::now() + Duration::from_secs(10);
    let connection = loop {
        match connect() {
            Ok(connection) => break connection,
            Err(_) if Instant::now() < deadline && child.try_wait().unwrap().is_none() => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "no connection to systemd-socket-activate: {e}; {:?}",
                    child.wait_with_output()
                );
            }
        }
    };
    // If the connection reached something else on that port, the child never gets one: end it
    // after a deadline rather than wait for ever.
    let pid = child.id().to_string();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    });
    let output = child.wait_with_output().unwrap();
    let _ = done.send(());
    let _ = watchdog.join();
    assert!(
        output.status.success(),
        "child failed (or timed out after 30 s): {output:?}"
    );
    (connection, output)
}

/// The child's `child: key=value` report.
fn report(output: &Output) -> HashMap<String, String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter_map(|line| line.split_once("child: ").map(|(_, kv)| kv)) // may follow "test … ... "
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn assert_variables_removed(report: &HashMap<String, String>) {
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        assert_eq!(
            report.get(name).map(String::as_str),
            Some("false"),
            "{name}: {report:?}"
        );
    }
}

#[test]
fn take_listener_adopts_the_socket_passed_by_systemd() {
    let address = format!("127.0.0.1:{}", free_port());
    let options = ["--listen", &address, "--fdname=kitebridge"];
    let (connection, output) = run_activated_child(&options, || TcpStream::connect(&address));
    let report = report(&output);
    assert_eq!(report.get("listener"), Some(&address), "{output:?}");
    assert_eq!(report.get("fd").map(String::as_str), Some("3"));
    assert_eq!(report.get("cloexec").map(String::as_str), Some("true"));
    let ours = connection.local_addr().unwrap().to_string();
    assert_eq!(
        report.get("peer"),
        Some(&ours),
        "the child accepted our connection"
    );
    assert_variables_removed(&report);
}

#[test]
fn take_listener_rejects_a_unix_socket() {
    let dir = temp_dir("activate");
    let path = dir.join("listen.sock");
    let options = ["--listen", path.to_str().unwrap()];
    let (_connection, output) = run_activated_child(&options, || UnixStream::connect(&path));
    let report = report(&output);
    let expected = "passed fd 3 is not an ipv4/ipv6 socket (family 1)"; // 1 = AF_UNIX
    assert_eq!(
        report.get("error").map(String::as_str),
        Some(expected),
        "{output:?}"
    );
    assert_variables_removed(&report);
    dir.close().unwrap();
}

#[test]
fn take_listener_ignores_variables_meant_for_another_process() {
    // PID 1 is never this test's child; its socket variables are not for us and must not be
    // inherited further either.
    let output = Command::new(std::env::current_exe().unwrap())
        .args(child_args())
        .env(CHILD_MARKER, "1")
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "kitebridge")
        .output()
        .unwrap();
    assert!(output.status.success(), "child failed: {output:?}");
    let report = report(&output);
    assert_eq!(
        report.get("listener").map(String::as_str),
        Some("none"),
        "{output:?}"
    );
    assert_variables_removed(&report);
}

#[test]
fn take_listener_rejects_a_malformed_listen_pid() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(child_args())
        .env(CHILD_MARKER, "1")
        .env("LISTEN_PID", "12x")
        .env("LISTEN_FDS", "1")
        .output()
        .unwrap();
    assert!(output.status.success(), "child failed: {output:?}");
    let report = report(&output);
    let expected = r#"LISTEN_PID "12x" is not a pid"#;
    assert_eq!(
        report.get("error").map(String::as_str),
        Some(expected),
        "{output:?}"
    );
    assert_variables_removed(&report);
}
