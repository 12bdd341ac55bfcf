//! Prometheus text exposition (format 0.0.4) for `GET /metrics`: request counts by route and
//! status, vend outcomes, upstream calls and their latency by upstream host and outcome, JWKS
//! fetches, rate-limited requests, and gauges (open connections, readiness, the profile
//! generation). Label values are route patterns, status codes, configured hosts and fixed words:
//! never a token, a claim value or a secret.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the upstream latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0,
];

/// A counter family: name and help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
}

pub const HTTP_REQUESTS: Family = Family {
    name: "kitebridge_http_requests_total",
    help: "Responses sent, by route pattern and status.",
};
pub const VENDS: Family = Family {
    name: "kitebridge_vend_total",
    help: "Tokens handed out, by cache outcome (hit, miss, coalesced, shared).",
};
pub const UPSTREAM_REQUESTS: Family = Family {
    name: "kitebridge_upstream_requests_total",
    help: "Calls to GitHub, Buildkite and the JWKS, by host and outcome.",
};
pub const JWKS_FETCHES: Family = Family {
    name: "kitebridge_jwks_fetch_total",
    help: "Key set fetches, by outcome (ok, error).",
};
pub const RATE_LIMITED: Family = Family {
    name: "kitebridge_rate_limited_total",
    help: "Requests refused with 429, by limit (source, pipeline).",
};
pub const MINTS_HELD_BACK: Family = Family {
    name: "kitebridge_mints_held_back_total",
    help: "Cache misses answered 503 instead of minting, by reason (budget: RATE_LIMIT_MINTS; github_reserve: GITHUB_RATELIMIT_RESERVE).",
};

pub const REVOCATIONS: Family = Family {
    name: "kitebridge_revocations_total",
    help: "Early revocations of tokens at their end of life, by outcome (revoked, already_gone, failed: an attempt to retry, expired: GitHub's expiry came first, left: at shutdown).",
};

pub const AUDIT_WRITE_FAILURES: Family = Family {
    name: "kitebridge_audit_write_failures_total",
    help: "Audit records that could not be written when they were due (each is retried; a token whose record failed is not sent unless AUDIT_ON_FAILURE=serve).",
};
pub const AUDIT_DROPPED: Family = Family {
    name: "kitebridge_audit_dropped_total",
    help: "Audit records dropped because too many already waited for the audit sink.",
};

const UPSTREAM_SECONDS: &str = "kitebridge_upstream_request_duration_seconds";

/// A histogram family: name, help text and bucket upper bounds (seconds, ascending).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct HistogramFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub buckets: &'static [f64],
}

/// A [`HistogramFamily`] and its series by labels.
type HistogramSeries = (HistogramFamily, BTreeMap<Labels, Series>);

/// One labelled series of a [`HistogramFamily`].
#[derive(Debug, Default, Clone)]
struct Series {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// A gauge value supplied at render time.
#[derive(Debug, Clone)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    /// Rendered labels, e.g. `digest="ab12…"`, or empty.
    pub labels: String,
    pub value: f64,
}

type Labels = Vec<(&'static str, String)>;

/// The registry.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(Family, Labels), u64>>,
    latency: Mutex<BTreeMap<Labels, Histogram>>,
    /// Other histograms, by family name: the family and its series.
    histograms: Mutex<BTreeMap<&'static str, HistogramSeries>>,
}

/// `"` `\` and newlines escaped, as the exposition format wants.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_labels(labels: &[(&'static str, String)]) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if inner.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", inner.join(","))
    }
}

impl Metrics {
    /// Adds one to the counter `family{labels}`.
    pub fn count(&self, family: Family, labels: &[(&'static str, &str)]) {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        // A counter seen before is found without building its key (no allocation per count):
        // the family's counters are few, and the empty label list sorts first among them.
        let same = |kept: &Labels| {
            kept.len() == labels.len()
                && kept
                    .iter()
                    .zip(labels)
                    .all(|((k, v), (k2, v2))| k == k2 && v == v2)
        };
        let start = (family, Labels::new());
        for ((f, kept), value) in counters.range_mut(start..) {
            if *f != family {
                break;
            }
            if same(kept) {
                *value += 1;
                return;
            }
        }
        let labels: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        *counters.entry((family, labels)).or_insert(0) += 1;
    }

    /// Makes the counter `family` (without labels) appear at 0 before anything is counted, so an
    /// alert on it sees a value from the start.
    pub fn declare(&self, family: Family) {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((family, Vec::new()))
            .or_insert(0);
    }

    /// Records one upstream call.
    pub fn upstream(&self, host: &str, outcome: &str, elapsed: Duration) {
        self.count(
            UPSTREAM_REQUESTS,
            &[("upstream", host), ("outcome", outcome)],
        );
        let labels: Labels = vec![
            ("upstream", host.to_owned()),
            ("outcome", outcome.to_owned()),
        ];
        let mut latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let h = latency.entry(labels).or_default();
        let secs = elapsed.as_secs_f64();
        for (bucket, bound) in h.buckets.iter_mut().zip(BUCKETS) {
            if secs <= bound {
                *bucket += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Records one observation of `family{labels}`.
    pub fn observe(
        &self,
        family: HistogramFamily,
        labels: &[(&'static str, &str)],
        elapsed: Duration,
    ) {
        let labels: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        let mut histograms = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        let (_, series) = histograms
            .entry(family.name)
            .or_insert_with(|| (family, BTreeMap::new()));
        let h = series.entry(labels).or_insert_with(|| Series {
            buckets: vec![0; family.buckets.len()],
            ..Series::default()
        });
        let secs = elapsed.as_secs_f64();
        for (bucket, bound) in h.buckets.iter_mut().zip(family.buckets) {
            if secs <= *bound {
                *bucket += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// The exposition text, counters and histograms followed by `gauges`.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        let counters = self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut last: Option<Family> = None;
        for ((family, labels), value) in &counters {
            if last != Some(*family) {
                let _ = writeln!(
                    out,
                    "# HELP {} {}\n# TYPE {} counter",
                    family.name, family.help, family.name
                );
                last = Some(*family);
            }
            let _ = writeln!(out, "{}{} {value}", family.name, render_labels(labels));
        }
        let latency = self
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !latency.is_empty() {
            let _ = writeln!(
                out,
                "# HELP {UPSTREAM_SECONDS} Upstream call duration, by host and outcome.\n# TYPE {UPSTREAM_SECONDS} histogram"
            );
        }
        for (labels, h) in &latency {
            let base = render_labels(labels);
            let inner = base.trim_start_matches('{').trim_end_matches('}');
            for (count, bound) in h.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "{UPSTREAM_SECONDS}_bucket{{{inner},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "{UPSTREAM_SECONDS}_bucket{{{inner},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "{UPSTREAM_SECONDS}_sum{base} {}", h.sum);
            let _ = writeln!(out, "{UPSTREAM_SECONDS}_count{base} {}", h.count);
        }
        let histograms = self
            .histograms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (name, (family, series)) in &histograms {
            let _ = writeln!(
                out,
                "# HELP {name} {}\n# TYPE {name} histogram",
                family.help
            );
            for (labels, h) in series {
                let base = render_labels(labels);
                let inner = base.trim_start_matches('{').trim_end_matches('}');
                let sep = if inner.is_empty() { "" } else { "," };
                for (count, bound) in h.buckets.iter().zip(family.buckets) {
                    let _ = writeln!(out, "{name}_bucket{{{inner}{sep}le=\"{bound}\"}} {count}");
                }
                let _ = writeln!(out, "{name}_bucket{{{inner}{sep}le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{base} {}", h.sum);
                let _ = writeln!(out, "{name}_count{base} {}", h.count);
            }
        }
        for g in gauges {
            let labels = if g.labels.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", g.labels)
            };
            let _ = writeln!(
                out,
                "# HELP {} {}\n# TYPE {} gauge\n{}{labels} {}",
                g.name, g.help, g.name, g.name, g.value
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_label_set_of_a_family_apart() {
        let m = Metrics::default();
        m.declare(VENDS);
        for outcome in ["hit", "miss", "hit", "coalesced", "hit"] {
            m.count(VENDS, &[("outcome", outcome)]);
        }
        m.count(HTTP_REQUESTS, &[("route", "/token"), ("status", "200")]);
        m.count(HTTP_REQUESTS, &[("route", "/token"), ("status", "403")]);
        m.count(HTTP_REQUESTS, &[("route", "/token"), ("status", "200")]);
        let counters = m.counters.lock().unwrap();
        let value = |family: Family, labels: &[(&'static str, &str)]| {
            let labels: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
            counters.get(&(family, labels)).copied()
        };
        assert_eq!(value(VENDS, &[]), Some(0));
        assert_eq!(value(VENDS, &[("outcome", "hit")]), Some(3));
        assert_eq!(value(VENDS, &[("outcome", "miss")]), Some(1));
        assert_eq!(value(VENDS, &[("outcome", "coalesced")]), Some(1));
        let ok = [("route", "/token"), ("status", "200")];
        assert_eq!(value(HTTP_REQUESTS, &ok), Some(2));
        let refused = [("route", "/token"), ("status", "403")];
        assert_eq!(value(HTTP_REQUESTS, &refused), Some(1));
    }

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.count(HTTP_REQUESTS, &[("route", "/token"), ("status", "200")]);
        m.count(HTTP_REQUESTS, &[("route", "/token"), ("status", "200")]);
        m.count(VENDS, &[("outcome", "hit")]);
        m.upstream("api.github.com", "2xx", Duration::from_millis(30));
        let text = m.render(&[Gauge {
            name: "kitebridge_ready",
            help: "1 when ready.",
            labels: String::new(),
            value: 1.0,
        }]);
        assert!(
            text.contains("kitebridge_http_requests_total{route=\"/token\",status=\"200\"} 2\n"),
            "{text}"
        );
        assert!(text.contains(
            "# TYPE kitebridge_vend_total counter\nkitebridge_vend_total{outcome=\"hit\"} 1\n"
        ));
        assert!(text.contains("kitebridge_upstream_request_duration_seconds_bucket{upstream=\"api.github.com\",outcome=\"2xx\",le=\"0.025\"} 0\n"));
        assert!(text.contains("kitebridge_upstream_request_duration_seconds_bucket{upstream=\"api.github.com\",outcome=\"2xx\",le=\"0.05\"} 1\n"));
        assert!(text.contains("kitebridge_upstream_request_duration_seconds_count{upstream=\"api.github.com\",outcome=\"2xx\"} 1\n"));
        assert!(text.contains("# TYPE kitebridge_ready gauge\nkitebridge_ready 1\n"));
        assert_eq!(
            text.matches("# TYPE kitebridge_http_requests_total")
                .count(),
            1
        );
    }

    #[test]
    fn declared_counters_show_zero_then_count() {
        let m = Metrics::default();
        m.declare(AUDIT_WRITE_FAILURES);
        assert!(
            m.render(&[])
                .contains("\nkitebridge_audit_write_failures_total 0\n")
        );
        m.count(AUDIT_WRITE_FAILURES, &[]);
        m.declare(AUDIT_WRITE_FAILURES);
        assert!(
            m.render(&[])
                .contains("\nkitebridge_audit_write_failures_total 1\n")
        );
    }

    #[test]
    fn histogram_families_render_their_own_buckets() {
        const FAMILY: HistogramFamily = HistogramFamily {
            name: "kitebridge_test_seconds",
            help: "A test histogram.",
            buckets: &[0.001, 0.01],
        };
        let m = Metrics::default();
        m.observe(FAMILY, &[("operation", "get")], Duration::from_micros(500));
        m.observe(FAMILY, &[("operation", "get")], Duration::from_millis(5));
        m.observe(FAMILY, &[], Duration::from_secs(1));
        let text = m.render(&[]);
        assert!(
            text.contains("# TYPE kitebridge_test_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("kitebridge_test_seconds_bucket{operation=\"get\",le=\"0.001\"} 1\n")
        );
        assert!(text.contains("kitebridge_test_seconds_bucket{operation=\"get\",le=\"0.01\"} 2\n"));
        assert!(text.contains("kitebridge_test_seconds_bucket{operation=\"get\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("kitebridge_test_seconds_count{operation=\"get\"} 2\n"));
        assert!(
            text.contains("kitebridge_test_seconds_bucket{le=\"+Inf\"} 1\n"),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE kitebridge_test_seconds").count(), 1);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            render_labels(&[("a", "x\"y\\z\nw".into())]),
            "{a=\"x\\\"y\\\\z\\nw\"}"
        );
    }
}
