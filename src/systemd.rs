//! systemd integration: socket activation, readiness and watchdog notification, and signals.
//!
//! - [`take_listener`] adopts the listening socket systemd passes (`LISTEN_PID`/`LISTEN_FDS`,
//!   `sd_listen_fds(3)`), so the socket outlives restarts and upgrades.
//! - [`Notifier`] sends `READY=1`, `STOPPING=1`, `WATCHDOG=1` and `STATUS=` datagrams to
//!   `$NOTIFY_SOCKET` (`sd_notify(3)`); [`watchdog_interval`] says how often to ping.
//! - [`block_signals`] and [`spawn_signal_thread`] turn SIGTERM, SIGINT and SIGHUP into ordinary
//!   function calls on a dedicated thread.
//!
//! Startup order in `main`, before anything else and before any thread exists:
//! [`block_signals`] (so every later thread inherits the mask), then [`take_listener`] (it edits the
//! environment), then [`Notifier::from_env`].
//!
//! This is the only module allowed `unsafe`: file-descriptor checks (`getsockopt`, `fcntl`),
//! adopting the passed descriptor, removing environment variables, and the signal mask calls.
//! Every block carries a `// SAFETY:` line. Parsing of the environment is done by pure functions
//! that take the values as parameters.
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::thread::JoinHandle;
use std::time::Duration;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`); kitebridge uses only this one.
pub const LISTEN_FDS_START: RawFd = 3;

/// How long a notification may block before it is given up (the notify socket is a datagram
/// socket; a full receive queue must not stall the caller, e.g. the watchdog loop).
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(1);

/// Errors of this module. Values quoted are systemd-provided environment values, escaped.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// `LISTEN_PID` is not a positive decimal process id.
    ListenPidInvalid { value: String },
    /// `LISTEN_PID` names this process but `LISTEN_FDS` is unset.
    ListenFdsMissing,
    /// `LISTEN_FDS` is not a decimal descriptor count (or is too large to be one).
    ListenFdsInvalid { value: String },
    /// A passed descriptor could not be inspected or changed (closed, not a socket, …).
    ListenFdUnusable { fd: RawFd, source: io::Error },
    /// The passed socket is not `SOCK_STREAM` (e.g. `ListenDatagram=`).
    ListenFdNotStream { fd: RawFd, socket_type: i32 },
    /// The passed stream socket is not listening.
    ListenFdNotListening { fd: RawFd },
    /// The passed socket is neither `AF_INET` nor `AF_INET6` (e.g. a Unix socket).
    ListenFdNotInet { fd: RawFd, family: i32 },
    /// `NOTIFY_SOCKET` is neither an absolute path nor an `@abstract` name.
    NotifySocketNotAbsolute { value: String },
    /// `NOTIFY_SOCKET` has the right form but is not a valid address (too long, contains NUL).
    NotifySocketAddress { value: String, source: io::Error },
    /// The datagram socket for notifications could not be created.
    NotifySocketOpen(io::Error),
    /// `WATCHDOG_USEC` is not a positive decimal number of microseconds.
    WatchdogUsecInvalid { value: String },
    /// `WATCHDOG_PID` is not a positive decimal process id.
    WatchdogPidInvalid { value: String },
    /// `pthread_sigmask` (or building the signal set) failed.
    SignalMask(io::Error),
    /// The signal thread could not be started.
    SignalThreadSpawn(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ListenPidInvalid { value } => write!(f, "LISTEN_PID {value:?} is not a pid"),
            Error::ListenFdsMissing => write!(f, "LISTEN_PID is ours but LISTEN_FDS is unset"),
            Error::ListenFdsInvalid { value } => {
                write!(f, "LISTEN_FDS {value:?} is not a descriptor count")
            }
            Error::ListenFdUnusable { fd, source } => write!(f, "passed fd {fd}: {source}"),
            Error::ListenFdNotStream { fd, socket_type } => {
                write!(
                    f,
                    "passed fd {fd} is not a stream socket (type {socket_type})"
                )
            }
            Error::ListenFdNotListening { fd } => write!(f, "passed fd {fd} is not listening"),
            Error::ListenFdNotInet { fd, family } => {
                write!(
                    f,
                    "passed fd {fd} is not an ipv4/ipv6 socket (family {family})"
                )
            }
            Error::NotifySocketNotAbsolute { value } => {
                write!(
                    f,
                    "NOTIFY_SOCKET {value:?} is not an absolute path or @name"
                )
            }
            Error::NotifySocketAddress { value, source } => {
                write!(f, "NOTIFY_SOCKET {value:?}: {source}")
            }
            Error::NotifySocketOpen(e) => write!(f, "notify socket: {e}"),
            Error::WatchdogUsecInvalid { value } => {
                write!(
                    f,
                    "WATCHDOG_USEC {value:?} is not a timeout in microseconds"
                )
            }
            Error::WatchdogPidInvalid { value } => write!(f, "WATCHDOG_PID {value:?} is not a pid"),
            Error::SignalMask(e) => write!(f, "blocking signals: {e}"),
            Error::SignalThreadSpawn(e) => write!(f, "starting the signal thread: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ListenFdUnusable { source, .. } | Error::NotifySocketAddress { source, .. } => {
                Some(source)
            }
            Error::NotifySocketOpen(e) | Error::SignalMask(e) | Error::SignalThreadSpawn(e) => {
                Some(e)
            }
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Socket activation
// ---------------------------------------------------------------------------------------------

/// Adopts the listening socket passed by systemd socket activation, if there is one for us.
///
/// When `LISTEN_PID` is this process and `LISTEN_FDS` ≥ 1, descriptor 3 is checked to be a
/// listening `SOCK_STREAM` socket of family `AF_INET`/`AF_INET6`, every passed descriptor gets
/// `FD_CLOEXEC`, and descriptor 3 is returned as a [`TcpListener`] in the blocking mode systemd
/// created it in (blocking unless the socket unit says `NonBlocking=yes`). Further passed sockets
/// are ignored (with a warning). `Ok(None)`: no variables, `LISTEN_FDS=0`, or a `LISTEN_PID` of
/// another process (the variables were meant for a parent). Malformed values are errors.
///
/// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` are removed from the environment in every case,
/// so nothing started later mistakes them for its own and a second call returns `Ok(None)` instead
/// of adopting descriptor 3 twice.
///
/// **Call it first thing in `main`, before any other thread exists** (after [`block_signals`],
/// which starts none): removing environment variables races with any concurrent `getenv` in
/// another thread (Rust or C), which is undefined behaviour.
pub fn take_listener() -> Result<Option<TcpListener>, Error> {
    let pid = env_value("LISTEN_PID");
    let fds = env_value("LISTEN_FDS");
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: the documented contract of this function is that it runs at startup before any
        // other thread exists, so no other thread can read the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
    let Some(count) = parse_listen_env(pid.as_deref(), fds.as_deref(), std::process::id())? else {
        return Ok(None);
    };
    // `count` ≤ RawFd::MAX - LISTEN_FDS_START (parse_listen_env), so the range cannot overflow; a
    // descriptor beyond the ones really passed stops the loop with an EBADF error.
    for fd in (LISTEN_FDS_START..).take(count) {
        set_cloexec(fd).map_err(|source| Error::ListenFdUnusable { fd, source })?;
    }
    check_listener_fd(LISTEN_FDS_START)?;
    if count > 1 {
        log::warn!("socket activation: {count} sockets passed; only fd {LISTEN_FDS_START} is used");
    }
    // SAFETY: descriptor 3 is open (checked just above) and owned by nobody else in this process:
    // systemd passed it to us, and the variables naming it were removed above, so no later call
    // adopts it a second time. TcpListener takes over closing it.
    Ok(Some(unsafe { TcpListener::from_raw_fd(LISTEN_FDS_START) }))
}

/// Parses `LISTEN_PID`/`LISTEN_FDS` (as given, `None` when unset) for process `our_pid`: the
/// number of passed descriptors when there are any for us, `None` when there are none for us.
///
/// Unset or empty `LISTEN_PID`, a `LISTEN_PID` of another process, or `LISTEN_FDS=0` → `None`.
/// `LISTEN_PID` that is not a positive decimal, a matching `LISTEN_PID` without `LISTEN_FDS`, or
/// a `LISTEN_FDS` that is not a decimal count that fits the descriptor space → error.
pub fn parse_listen_env(
    pid: Option<&str>,
    fds: Option<&str>,
    our_pid: u32,
) -> Result<Option<usize>, Error> {
    let Some(pid) = pid.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let listen_pid = parse_pid(pid).ok_or_else(|| Error::ListenPidInvalid { value: pid.into() })?;
    if listen_pid != our_pid {
        return Ok(None);
    }
    let fds = fds
        .filter(|f| !f.is_empty())
        .ok_or(Error::ListenFdsMissing)?;
    let max = usize::try_from(RawFd::MAX - LISTEN_FDS_START).unwrap_or(usize::MAX);
    let count = parse_decimal(fds)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= max)
        .ok_or_else(|| Error::ListenFdsInvalid { value: fds.into() })?;
    Ok((count > 0).then_some(count))
}

/// Checks that `fd` is a listening `SOCK_STREAM` socket of family `AF_INET` or `AF_INET6`.
fn check_listener_fd(fd: RawFd) -> Result<(), Error> {
    let option =
        |name| socket_option(fd, name).map_err(|source| Error::ListenFdUnusable { fd, source });
    let socket_type = option(libc::SO_TYPE)?;
    if socket_type != libc::SOCK_STREAM {
        return Err(Error::ListenFdNotStream { fd, socket_type });
    }
    if option(libc::SO_ACCEPTCONN)? == 0 {
        return Err(Error::ListenFdNotListening { fd });
    }
    let family = option(libc::SO_DOMAIN)?;
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return Err(Error::ListenFdNotInet { fd, family });
    }
    Ok(())
}

/// Reads an integer `SOL_SOCKET` option of `fd` (ENOTSOCK, EBADF, … as errors).
fn socket_option(fd: RawFd, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals valid for writes, and `len` holds the size of
    // `value`, so the kernel writes at most that many bytes into it.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Sets `FD_CLOEXEC` on `fd`, keeping its other descriptor flags.
fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD takes no argument and only reads the descriptor flags (EBADF if not open).
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFD takes one int argument and only changes the descriptor flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Notification
// ---------------------------------------------------------------------------------------------

/// Sends state changes to systemd over `$NOTIFY_SOCKET` (`sd_notify(3)`), best-effort.
///
/// Built when `NOTIFY_SOCKET` is unset or empty (not run by systemd, or not `Type=notify`), it
/// does nothing. `NOTIFY_SOCKET` is left in the environment: kitebridge starts no child processes
/// that could inherit and misuse it. Shareable between threads (`&self` methods).
#[derive(Debug)]
pub struct Notifier {
    target: Option<NotifyTarget>,
}

#[derive(Debug)]
struct NotifyTarget {
    socket: UnixDatagram,
    address: SocketAddr,
}

impl Notifier {
    /// A notifier for `$NOTIFY_SOCKET`: an absolute path or an `@abstract` name.
    pub fn from_env() -> Result<Notifier, Error> {
        Notifier::for_address(env_value("NOTIFY_SOCKET").as_deref())
    }

    /// A notifier for the given `NOTIFY_SOCKET` value (`None` or empty: a no-op notifier).
    fn for_address(value: Option<&str>) -> Result<Notifier, Error> {
        let Some(address) = parse_notify_socket(value)? else {
            return Ok(Notifier { target: None });
        };
        let socket = UnixDatagram::unbound().map_err(Error::NotifySocketOpen)?;
        socket
            .set_write_timeout(Some(NOTIFY_TIMEOUT))
            .map_err(Error::NotifySocketOpen)?;
        Ok(Notifier {
            target: Some(NotifyTarget { socket, address }),
        })
    }

    /// Sends `state` (newline-separated `KEY=VALUE` assignments) as one datagram. Failures are
    /// logged at debug level and otherwise ignored: notification never stops the server.
    pub fn notify(&self, state: &str) {
        let Some(target) = &self.target else {
            return;
        };
        if let Err(e) = target
            .socket
            .send_to_addr(state.as_bytes(), &target.address)
        {
            log::debug!("systemd notify {state:?}: {e}");
        }
    }

    /// `READY=1`: configuration is loaded and requests are being served.
    pub fn ready(&self) {
        self.notify("READY=1");
    }

    /// `STOPPING=1`: shutdown has begun (sent on SIGTERM/SIGINT, before draining).
    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }

    /// `WATCHDOG=1`: the main loop is healthy; send every [`watchdog_interval`].
    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }

    /// `STATUS=text`, shown by `systemctl status`. Line breaks in `text` become spaces, so it
    /// cannot smuggle in another assignment such as `READY=1`.
    pub fn status(&self, text: &str) {
        self.notify(&format!("STATUS={}", text.replace(['\n', '\r'], " ")));
    }
}

/// Parses a `NOTIFY_SOCKET` value: `/path` (a filesystem socket) or `@name` (an abstract one).
/// `None` or empty → `None` (no notification).
fn parse_notify_socket(value: Option<&str>) -> Result<Option<SocketAddr>, Error> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let address = if let Some(name) = value.strip_prefix('@') {
        SocketAddr::from_abstract_name(name)
    } else if value.starts_with('/') {
        SocketAddr::from_pathname(value)
    } else {
        return Err(Error::NotifySocketNotAbsolute {
            value: value.into(),
        });
    };
    address
        .map(Some)
        .map_err(|source| Error::NotifySocketAddress {
            value: value.into(),
            source,
        })
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC` when that is set and `WATCHDOG_PID`
/// is unset or ours (`sd_watchdog_enabled(3)`); `None` when the watchdog is off or not for us.
/// A malformed value is logged as a warning and treated as "off" (systemd will then restart the
/// service when its watchdog expires, which makes the warning visible).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = env_value("WATCHDOG_USEC");
    let pid = env_value("WATCHDOG_PID");
    parse_watchdog_env(usec.as_deref(), pid.as_deref(), std::process::id()).unwrap_or_else(|e| {
        log::warn!("systemd watchdog disabled: {e}");
        None
    })
}

/// Parses `WATCHDOG_USEC`/`WATCHDOG_PID` (as given, `None` when unset) for process `our_pid`:
/// the ping interval, half the timeout. Unset or empty `WATCHDOG_USEC`, or a `WATCHDOG_PID` of
/// another process → `None`. `WATCHDOG_USEC` that is not a positive decimal below `u64::MAX`
/// (systemd's "infinity"), or a malformed `WATCHDOG_PID` → error.
pub fn parse_watchdog_env(
    usec: Option<&str>,
    pid: Option<&str>,
    our_pid: u32,
) -> Result<Option<Duration>, Error> {
    let Some(usec) = usec.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    if let Some(pid) = pid.filter(|p| !p.is_empty()) {
        let watchdog_pid =
            parse_pid(pid).ok_or_else(|| Error::WatchdogPidInvalid { value: pid.into() })?;
        if watchdog_pid != our_pid {
            return Ok(None);
        }
    }
    let micros = parse_decimal(usec)
        .filter(|&n| n > 0 && n < u64::MAX)
        .ok_or_else(|| Error::WatchdogUsecInvalid { value: usec.into() })?;
    Ok(Some(Duration::from_micros(micros / 2)))
}

// ---------------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------------

/// A signal kitebridge reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM (`systemctl stop`): stop accepting, drain, exit 0.
    Terminate,
    /// SIGINT (Ctrl-C): as SIGTERM.
    Interrupt,
    /// SIGHUP (`systemctl reload`): reload the local profile file.
    Hangup,
}

/// The signals kitebridge handles, in the order they are listed in [`SignalSet`].
const HANDLED: [(libc::c_int, Signal); 3] = [
    (libc::SIGTERM, Signal::Terminate),
    (libc::SIGINT, Signal::Interrupt),
    (libc::SIGHUP, Signal::Hangup),
];

/// The set {SIGTERM, SIGINT, SIGHUP}, blocked by [`block_signals`] and waited on by
/// [`spawn_signal_thread`].
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

impl fmt::Debug for SignalSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignalSet(SIGTERM, SIGINT, SIGHUP)")
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and returns the set for
/// [`spawn_signal_thread`].
///
/// Call it first thing in `main`, before any thread is spawned: threads inherit the mask of the
/// thread that creates them, so every thread then has these signals blocked, and the kernel keeps
/// them pending until the signal thread takes them with `sigwait`. A thread created earlier would
/// keep them unblocked and could receive one with its default action (terminate the process).
///
/// Why this is async-signal-safe: no signal handler is ever installed, so no code runs in signal
/// context at all. The signals stay blocked everywhere and are dequeued synchronously by
/// `sigwait` on an ordinary thread, where the handler may lock, allocate and log freely.
/// (Synchronous faults such as SIGSEGV and the unblockable SIGKILL/SIGSTOP are not affected; the
/// mask survives `execve`, which kitebridge never calls.)
pub fn block_signals() -> Result<SignalSet, Error> {
    // SAFETY: sigset_t is a plain C struct of integers; all-zero is a valid value, and
    // sigemptyset below gives it its defined "empty" contents anyway.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live, writable sigset_t.
    if unsafe { libc::sigemptyset(&raw mut set) } != 0 {
        return Err(Error::SignalMask(io::Error::last_os_error()));
    }
    for (signo, _) in HANDLED {
        // SAFETY: `set` is a live, initialised sigset_t and `signo` a valid signal number.
        if unsafe { libc::sigaddset(&raw mut set, signo) } != 0 {
            return Err(Error::SignalMask(io::Error::last_os_error()));
        }
    }
    // SAFETY: `set` is an initialised sigset_t; a null old-set pointer is allowed (not wanted).
    let rc =
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(Error::SignalMask(io::Error::from_raw_os_error(rc)));
    }
    Ok(SignalSet(set))
}

/// Starts the thread named `signals`, which waits for the signals of `set` with `sigwait` and
/// calls `handler` for each, one at a time, for the life of the process.
///
/// A panic in `handler` is caught and logged, so one failed reload cannot stop a later SIGTERM
/// from being handled. If `sigwait` itself fails (only possible with an invalid set), the error is
/// logged and the thread ends rather than spinning.
pub fn spawn_signal_thread(
    set: SignalSet,
    handler: impl Fn(Signal) + Send + 'static,
) -> Result<JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let mut signo: libc::c_int = 0;
                // SAFETY: `set.0` is an initialised sigset_t and `signo` a live writable int.
                let rc = unsafe { libc::sigwait(&raw const set.0, &raw mut signo) };
                if rc != 0 {
                    log::error!("sigwait: {}", io::Error::from_raw_os_error(rc));
                    return;
                }
                let Some(&(_, signal)) = HANDLED.iter().find(|(n, _)| *n == signo) else {
                    log::debug!("sigwait returned unexpected signal {signo}");
                    continue;
                };
                let call = std::panic::AssertUnwindSafe(|| handler(signal));
                if std::panic::catch_unwind(call).is_err() {
                    log::error!("signal handler for {signal:?} panicked");
                }
            }
        })
        .map_err(Error::SignalThreadSpawn)
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// An environment variable as text (`None` if unset; invalid UTF-8 replaced, which no parser
/// here accepts, so it surfaces as a malformed value).
fn env_value(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// A non-empty string of ASCII digits as a number (no sign, space or other characters).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A process id: a positive decimal that fits `u32`.
fn parse_pid(s: &str) -> Option<u32> {
    parse_decimal(s)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpStream, UdpSocket};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;

    const ME: u32 = 4242;

    #[test]
    fn listen_env_parsing() {
        // (LISTEN_PID, LISTEN_FDS, expected)
        let ok: &[(Option<&str>, Option<&str>, Option<usize>)] = &[
            (None, None, None),
            (None, Some("1"), None),
            (Some(""), Some("1"), None),
            (Some("4243"), Some("1"), None),
            (Some("4243"), None, None),
            (Some("4242"), Some("0"), None),
            (Some("4242"), Some("1"), Some(1)),
            (Some("4242"), Some("3"), Some(3)),
            (Some("04242"), Some("01"), Some(1)),
            (Some("4242"), Some("2147483644"), Some(2_147_483_644)),
        ];
        for &(pid, fds, expected) in ok {
            let got = parse_listen_env(pid, fds, ME);
            assert!(
                matches!(got, Ok(ref n) if *n == expected),
                "{pid:?} {fds:?}: {got:?}"
            );
        }
    }

    #[test]
    fn listen_env_rejects_malformed_values() {
        let pid_invalid = [
            "abc",
            "-1",
            "+4242",
            " 4242",
            "4242 ",
            "0",
            "4294967296",
            "42.0",
        ];
        for pid in pid_invalid {
            let got = parse_listen_env(Some(pid), Some("1"), ME);
            assert!(matches!(got, Err(Error::ListenPidInvalid { ref value }) if value == pid));
        }
        for fds in [None, Some("")] {
            let got = parse_listen_env(Some("4242"), fds, ME);
            assert!(
                matches!(got, Err(Error::ListenFdsMissing)),
                "{fds:?}: {got:?}"
            );
        }
        let fds_invalid = ["x", "-1", "+1", "1 ", "2147483645", "18446744073709551616"];
        for fds in fds_invalid {
            let got = parse_listen_env(Some("4242"), Some(fds), ME);
            assert!(matches!(got, Err(Error::ListenFdsInvalid { ref value }) if value == fds));
        }
    }

    #[test]
    fn watchdog_env_parsing() {
        let secs = |s| Some(Duration::from_secs(s));
        // (WATCHDOG_USEC, WATCHDOG_PID, expected)
        let ok: &[(Option<&str>, Option<&str>, Option<Duration>)] = &[
            (None, None, None),
            (Some(""), None, None),
            (None, Some("4242"), None),
            (Some("30000000"), None, secs(15)),
            (Some("30000000"), Some(""), secs(15)),
            (Some("30000000"), Some("4242"), secs(15)),
            (Some("30000000"), Some("4243"), None),
            (Some("3"), None, Some(Duration::from_micros(1))),
        ];
        for &(usec, pid, expected) in ok {
            let got = parse_watchdog_env(usec, pid, ME);
            assert!(
                matches!(got, Ok(ref d) if *d == expected),
                "{usec:?} {pid:?}: {got:?}"
            );
        }
    }

    #[test]
    fn watchdog_env_rejects_malformed_values() {
        for usec in [
            "0",
            "x",
            "-5",
            "1.5",
            "18446744073709551615",
            "18446744073709551616",
        ] {
            let got = parse_watchdog_env(Some(usec), None, ME);
            assert!(matches!(got, Err(Error::WatchdogUsecInvalid { ref value }) if value == usec));
        }
        for pid in ["0", "x", "-1"] {
            let got = parse_watchdog_env(Some("30000000"), Some(pid), ME);
            assert!(matches!(got, Err(Error::WatchdogPidInvalid { ref value }) if value == pid));
        }
    }

    #[test]
    fn notify_socket_parsing() {
        let path = parse_notify_socket(Some("/run/systemd/notify"))
            .unwrap()
            .unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let abstract_name = parse_notify_socket(Some("@/org/freedesktop/systemd1/notify"));
        let abstract_name = abstract_name.unwrap().unwrap();
        assert_eq!(
            abstract_name.as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify"[..])
        );
        assert_eq!(abstract_name.as_pathname(), None);
        assert!(parse_notify_socket(None).unwrap().is_none());
        assert!(parse_notify_socket(Some("")).unwrap().is_none());
    }

    #[test]
    fn notify_socket_rejects_malformed_values() {
        for value in ["run/notify", "vsock:2:1234", " /run/notify"] {
            let got = parse_notify_socket(Some(value));
            assert!(
                matches!(got, Err(Error::NotifySocketNotAbsolute { value: ref v }) if v == value)
            );
        }
        let too_long_path = format!("/{}", "a".repeat(200));
        let too_long_name = format!("@{}", "a".repeat(200));
        for value in [too_long_path.as_str(), too_long_name.as_str(), "/a\0b"] {
            let got = parse_notify_socket(Some(value));
            assert!(
                matches!(got, Err(Error::NotifySocketAddress { .. })),
                "{value:?}: {got:?}"
            );
        }
    }

    /// Receives one datagram from `socket` as text (fails the test after 10 s).
    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn notifier_sends_each_state_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("kitebridge-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let systemd = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::for_address(path.to_str()).unwrap();

        notifier.ready();
        assert_eq!(receive(&systemd), "READY=1");
        notifier.watchdog();
        assert_eq!(receive(&systemd), "WATCHDOG=1");
        notifier.status("serving\nREADY=1");
        assert_eq!(receive(&systemd), "STATUS=serving READY=1");
        notifier.stopping();
        assert_eq!(receive(&systemd), "STOPPING=1");

        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn notifier_sends_to_an_abstract_socket() {
        let name = format!("kitebridge-test-notify-{}", std::process::id());
        let systemd = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap());
        let systemd = systemd.unwrap();
        let notifier = Notifier::for_address(Some(&format!("@{name}"))).unwrap();
        notifier.ready();
        assert_eq!(receive(&systemd), "READY=1");
    }

    #[test]
    fn notifier_without_socket_is_a_no_op() {
        for value in [None, Some("")] {
            let notifier = Notifier::for_address(value).unwrap();
            assert!(notifier.target.is_none());
            notifier.ready();
        }
    }

    #[test]
    fn notifier_survives_a_vanished_socket() {
        let dir = std::env::temp_dir().join(format!("kitebridge-gone-{}", std::process::id()));
        let notifier = Notifier::for_address(dir.join("absent.sock").to_str()).unwrap();
        assert!(notifier.target.is_some());
        notifier.ready(); // ENOENT, logged at debug; must not panic
    }

    #[test]
    fn listener_check_accepts_listening_tcp_sockets() {
        for address in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = TcpListener::bind(address) else {
                assert_eq!(address, "[::1]:0", "IPv4 loopback must be available");
                continue; // no IPv6 on this host
            };
            assert!(check_listener_fd(listener.as_raw_fd()).is_ok(), "{address}");
        }
    }

    #[test]
    fn listener_check_rejects_other_descriptors() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let got = check_listener_fd(stream.as_raw_fd());
        assert!(
            matches!(got, Err(Error::ListenFdNotListening { .. })),
            "{got:?}"
        );

        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let got = check_listener_fd(udp.as_raw_fd());
        let dgram = libc::SOCK_DGRAM;
        assert!(
            matches!(got, Err(Error::ListenFdNotStream { socket_type, .. }) if socket_type == dgram)
        );

        let unix = UnixListener::bind_addr(
            &SocketAddr::from_abstract_name(format!(
                "kitebridge-test-listener-{}",
                std::process::id()
            ))
            .unwrap(),
        )
        .unwrap();
        let got = check_listener_fd(unix.as_raw_fd());
        let local = libc::AF_UNIX;
        assert!(matches!(got, Err(Error::ListenFdNotInet { family, .. }) if family == local));

        let file = std::fs::File::open("/dev/null").unwrap();
        let got = check_listener_fd(file.as_raw_fd());
        assert!(
            matches!(got, Err(Error::ListenFdUnusable { ref source, .. })
            if source.raw_os_error() == Some(libc::ENOTSOCK))
        );
    }

    #[test]
    fn cloexec_is_set_on_open_descriptors() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = listener.as_raw_fd();
        // SAFETY: F_SETFD/F_GETFD on a descriptor this test owns.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        set_cloexec(fd).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETFD) }, libc::FD_CLOEXEC);
        assert!(set_cloexec(-1).is_err());
    }

    /// Sends `signo` to the signal thread only (a process-wide signal could land on a test thread
    /// that has it unblocked and kill the test process).
    fn signal_thread(handle: &JoinHandle<()>, signo: libc::c_int) {
        use std::os::unix::thread::JoinHandleExt;
        // SAFETY: the signal thread loops for the life of the process (it ends only if sigwait
        // fails, which a set from block_signals cannot cause), so its pthread_t is live.
        assert_eq!(
            unsafe { libc::pthread_kill(handle.as_pthread_t(), signo) },
            0
        );
    }

    #[test]
    fn signal_thread_reports_each_signal() {
        let set = block_signals().unwrap();
        let (tx, rx) = mpsc::channel();
        let handle = spawn_signal_thread(set, move |s| tx.send(s).unwrap()).unwrap();
        for (signo, expected) in HANDLED {
            signal_thread(&handle, signo);
            assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(expected));
        }
    }

    #[test]
    fn signal_thread_survives_a_panicking_handler() {
        let set = block_signals().unwrap();
        let (tx, rx) = mpsc::channel();
        let handler = move |s| {
            assert_ne!(s, Signal::Hangup, "reload failed");
            tx.send(s).unwrap();
        };
        let handle = spawn_signal_thread(set, handler).unwrap();
        signal_thread(&handle, libc::SIGHUP);
        signal_thread(&handle, libc::SIGTERM);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)),
            Ok(Signal::Terminate)
        );
    }

    #[test]
    fn errors_display_short_and_escaped() {
        let e = Error::ListenPidInvalid {
            value: "1\n2".into(),
        };
        assert_eq!(e.to_string(), r#"LISTEN_PID "1\n2" is not a pid"#);
        let e = Error::ListenFdNotListening { fd: 3 };
        assert_eq!(e.to_string(), "passed fd 3 is not listening");
    }
}
