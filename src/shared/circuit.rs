//! The shared cache's circuit: closed while the server answers; opened by any failure, after
//! which requests stop asking the server (they pay no timeout) and only the probe thread does,
//! backing off from [`PROBE_FIRST`] to [`PROBE_MAX`], until a probe answers. Pure: time is passed
//! in.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

/// The first probe after the circuit opens.
pub const PROBE_FIRST: Duration = Duration::from_millis(250);
/// The longest pause between probes.
pub const PROBE_MAX: Duration = Duration::from_secs(5);

/// See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    /// Requests use the server.
    Closed,
    /// Requests skip the server; the probe thread asks it at `next_probe`.
    Open {
        since: Instant,
        next_probe: Instant,
        backoff: Duration,
    },
}

impl Circuit {
    /// Open at `now`, probing at once (the state before the first probe).
    pub fn unknown(now: Instant) -> Circuit {
        Circuit::Open {
            since: now,
            next_probe: now,
            backoff: PROBE_FIRST / 2,
        }
    }

    /// Whether requests may use the server.
    pub fn is_closed(&self) -> bool {
        matches!(self, Circuit::Closed)
    }

    /// After a failed operation or probe at `now`: open, the next probe after a pause twice the
    /// last one (from [`PROBE_FIRST`], at most [`PROBE_MAX`]).
    pub fn failed(self, now: Instant) -> Circuit {
        match self {
            Circuit::Closed => Circuit::Open {
                since: now,
                next_probe: now + PROBE_FIRST,
                backoff: PROBE_FIRST,
            },
            Circuit::Open { since, backoff, .. } => {
                let backoff = (backoff * 2).clamp(PROBE_FIRST, PROBE_MAX);
                Circuit::Open {
                    since,
                    next_probe: now + backoff,
                    backoff,
                }
            }
        }
    }

    /// Whether the probe thread should ask the server at `now`.
    pub fn probe_due(&self, now: Instant) -> bool {
        match self {
            Circuit::Closed => false,
            Circuit::Open { next_probe, .. } => now >= *next_probe,
        }
    }

    /// How long the circuit has been open at `now` (zero when closed).
    pub fn open_for(&self, now: Instant) -> Duration {
        match self {
            Circuit::Closed => Duration::ZERO,
            Circuit::Open { since, .. } => now.saturating_duration_since(*since),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_opens_probes_back_off_and_an_answer_closes() {
        let t0 = Instant::now();
        let ms = |n| Duration::from_millis(n);
        let closed = Circuit::Closed;
        assert!(closed.is_closed() && !closed.probe_due(t0));
        let open = closed.failed(t0);
        assert!(!open.is_closed());
        assert!(!open.probe_due(t0 + ms(249)));
        assert!(open.probe_due(t0 + ms(250)));
        let mut circuit = open;
        let mut now = t0;
        let mut pauses = Vec::new();
        for _ in 0..7 {
            now += ms(250);
            circuit = circuit.failed(now);
            if let Circuit::Open {
                next_probe, since, ..
            } = circuit
            {
                assert_eq!(since, t0, "open since the first failure");
                pauses.push((next_probe - now).as_millis());
            }
        }
        assert_eq!(pauses, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(circuit.open_for(now), ms(1750));
        assert_eq!(Circuit::Closed.open_for(now), Duration::ZERO);
    }

    #[test]
    fn before_the_first_probe_the_circuit_is_open_and_due() {
        let t0 = Instant::now();
        let circuit = Circuit::unknown(t0);
        assert!(!circuit.is_closed());
        assert!(circuit.probe_due(t0));
        let Circuit::Open { next_probe, .. } = circuit.failed(t0) else {
            panic!("open");
        };
        assert_eq!(
            next_probe - t0,
            PROBE_FIRST,
            "a failed first probe retries soon"
        );
    }
}
