//! A real `redis-server` (Debian's package; Valkey speaks the same protocol) for the shared-cache
//! tests: started on a free loopback port with no persistence (`--save "" --appendonly no`) in a
//! temporary directory, stopped and started again on the same port, and a small client of its
//! own (its own reply reader, independent of kitebridge's) to look at and change what is stored.
#![forbid(unsafe_code)]
#![allow(dead_code)]

use super::util::{TempDir, free_port, poll_until, temp_dir};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Whether `redis-server` can be run; prints why not (the caller then prints SKIP).
pub fn available() -> bool {
    match Command::new("redis-server").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            println!(
                "SKIP: redis-server is not installed (Debian package redis-server; .ci/run installs it)"
            );
            false
        }
    }
}

/// A running (or stopped) `redis-server`.
pub struct Redis {
    pub port: u16,
    dir: TempDir,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Redis {
    /// Started on a free port, or `None` (with SKIP printed) when the binary is missing.
    pub fn start() -> Option<Redis> {
        Redis::start_with(&[])
    }

    /// Started with extra arguments (`--requirepass x`, TLS options…); `PORT` in them is
    /// replaced by the port.
    pub fn start_with(extra: &[&str]) -> Option<Redis> {
        if !available() {
            return None;
        }
        let mut redis = Redis {
            port: free_port(),
            dir: temp_dir("redis"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        redis.start_again();
        Some(redis)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn tls(&self) -> bool {
        self.extra.iter().any(|a| a == "--tls-port")
    }

    /// Starts the server again on the same port (empty: nothing is persisted).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let port = self.port.to_string();
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.clone(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            self.dir.display().to_string(),
            "--daemonize".into(),
            "no".into(),
        ];
        if self.tls() {
            args[1] = "0".into(); // TLS only
        }
        args.extend(self.extra.iter().map(|a| a.replace("PORT", &port)));
        let log = std::fs::File::create(self.dir.join("redis.log")).unwrap();
        let child = Command::new("redis-server")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        assert!(
            poll_until(Duration::from_secs(10), || TcpStream::connect(addr).is_ok()),
            "redis-server did not listen:\n{}",
            std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
        );
    }

    /// Stops the server (SIGKILL: like a crash, nothing is kept).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A plain connection (not for TLS servers), after `AUTH` when `password` is given.
    pub fn client(&self) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            stream,
            buffer: Vec::new(),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A reply, as this client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Value>),
}

impl Value {
    pub fn bulk(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b) => Some(b),
            _ => None,
        }
    }
}

/// A minimal blocking RESP2 client.
pub struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Client {
    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Value {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&out).unwrap();
        self.value()
    }

    /// A command of text arguments.
    pub fn cmd(&mut self, args: &[&str]) -> Value {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.call(&args)
    }

    /// Every key, by `SCAN`.
    pub fn keys(&mut self) -> Vec<String> {
        let mut cursor = "0".to_string();
        let mut keys = Vec::new();
        loop {
            let Value::Array(parts) = self.cmd(&["SCAN", &cursor, "COUNT", "1000"]) else {
                panic!("SCAN");
            };
            let [Value::Bulk(next), Value::Array(batch)] = &parts[..] else {
                panic!("SCAN reply {parts:?}");
            };
            for key in batch {
                keys.push(String::from_utf8(key.bulk().unwrap().to_vec()).unwrap());
            }
            cursor = String::from_utf8(next.clone()).unwrap();
            if cursor == "0" {
                break;
            }
        }
        keys.sort();
        keys
    }

    /// The value of a string key.
    pub fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        match self.cmd(&["GET", key]) {
            Value::Bulk(b) => Some(b),
            Value::Nil => None,
            other => panic!("GET {key}: {other:?}"),
        }
    }

    /// Sets a string key (keeping its expiry).
    pub fn set(&mut self, key: &str, value: &[u8]) {
        let reply = self.call(&[b"SET", key.as_bytes(), value, b"KEEPTTL"]);
        assert_eq!(reply, Value::Status("OK".into()));
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).unwrap();
        assert!(n > 0, "redis closed the connection");
        self.buffer.extend_from_slice(&chunk[..n]);
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(at) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buffer[..at]).into_owned();
                self.buffer.drain(..at + 2);
                return line;
            }
            self.fill();
        }
    }

    fn value(&mut self) -> Value {
        let line = self.line();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Value::Status(rest.into()),
            "-" => Value::Error(rest.into()),
            ":" => Value::Int(rest.parse().unwrap()),
            "$" if rest == "-1" => Value::Nil,
            "$" => {
                let len: usize = rest.parse().unwrap();
                while self.buffer.len() < len + 2 {
                    self.fill();
                }
                let bytes = self.buffer[..len].to_vec();
                self.buffer.drain(..len + 2);
                Value::Bulk(bytes)
            }
            "*" if rest == "-1" => Value::Nil,
            "*" => {
                let count: usize = rest.parse().unwrap();
                Value::Array((0..count).map(|_| self.value()).collect())
            }
            _ => panic!("unknown reply {line:?}"),
        }
    }
}
