//! Prometheus metrics in the text exposition format (version 0.0.4) for `GET /metrics`.
//!
//! Every label value comes from a closed set: route patterns from the route table (or
//! `unmatched`), the status codes this service answers with, worker states, and model ids from
//! the settings. Nothing a client sends becomes a label, so the number of series is fixed by
//! the configuration and memory stays bounded however the service is used.
//!
//! Counters and histograms live behind their own small mutex, apart from the pool's; the pool
//! gauges are read from the pool when the page is rendered.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Histogram buckets in seconds, from a cached `/health` (milliseconds) to a long transcription
/// (minutes); shared by both histograms so they can be compared.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations at or below each bucket bound (cumulative, as Prometheus wants them).
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct Recorded {
    requests: BTreeMap<(&'static str, u16), u64>,
    request_seconds: BTreeMap<&'static str, Histogram>,
    inference_seconds: BTreeMap<String, Histogram>,
    /// Seconds of audio transcribed, by model.
    audio_seconds: BTreeMap<String, f64>,
    /// Uploads ffmpeg could not decode (junk, a timeout, too long).
    conversion_failures: u64,
}

/// The pool's side of the page, read at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolGauges {
    /// (state name, workers in it), for every state.
    pub workers: Vec<(&'static str, usize)>,
    pub restarts: u64,
    pub rotations: u64,
    pub in_flight: usize,
    pub queue_depth: usize,
}

#[derive(Debug, Default)]
pub struct Metrics {
    recorded: Mutex<Recorded>,
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One answered request. `route` is a route pattern or `unmatched`.
    pub fn record_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        let mut recorded = self.lock();
        *recorded.requests.entry((route, status)).or_default() += 1;
        recorded
            .request_seconds
            .entry(route)
            .or_default()
            .observe(elapsed.as_secs_f64());
    }

    /// One successful inference on `model` (a configured id).
    pub fn record_inference(&self, model: &str, elapsed: Duration) {
        let mut recorded = self.lock();
        match recorded.inference_seconds.get_mut(model) {
            Some(histogram) => histogram.observe(elapsed.as_secs_f64()),
            None => {
                let mut histogram = Histogram::default();
                histogram.observe(elapsed.as_secs_f64());
                recorded
                    .inference_seconds
                    .insert(model.to_string(), histogram);
            }
        }
    }

    /// `seconds` of audio transcribed by `model` (a configured id).
    pub fn record_audio(&self, model: &str, seconds: f64) {
        let mut recorded = self.lock();
        match recorded.audio_seconds.get_mut(model) {
            Some(total) => *total += seconds,
            None => {
                recorded.audio_seconds.insert(model.to_string(), seconds);
            }
        }
    }

    /// An upload that could not be converted.
    pub fn record_conversion_failure(&self) {
        self.lock().conversion_failures += 1;
    }

    /// The whole page.
    pub fn render(&self, pool: &PoolGauges) -> String {
        let mut page = String::new();
        {
            let recorded = self.lock();
            header(
                &mut page,
                "ism_http_requests_total",
                "counter",
                "HTTP requests answered, by route pattern and status code.",
            );
            for ((route, status), count) in &recorded.requests {
                let _ = writeln!(
                    page,
                    "ism_http_requests_total{{route=\"{}\",status=\"{status}\"}} {count}",
                    escape(route)
                );
            }
            header(
                &mut page,
                "ism_http_request_duration_seconds",
                "histogram",
                "Time from a request's arrival to its answer.",
            );
            for (route, histogram) in &recorded.request_seconds {
                histogram_lines(
                    &mut page,
                    "ism_http_request_duration_seconds",
                    "route",
                    route,
                    histogram,
                );
            }
            header(
                &mut page,
                "ism_inference_duration_seconds",
                "histogram",
                "Time a worker took for a successful inference, by model.",
            );
            for (model, histogram) in &recorded.inference_seconds {
                histogram_lines(
                    &mut page,
                    "ism_inference_duration_seconds",
                    "model",
                    model,
                    histogram,
                );
            }
            header(
                &mut page,
                "ism_audio_seconds_total",
                "counter",
                "Seconds of audio transcribed, by model.",
            );
            for (model, seconds) in &recorded.audio_seconds {
                let _ = writeln!(
                    page,
                    "ism_audio_seconds_total{{model=\"{}\"}} {seconds}",
                    escape(model)
                );
            }
            header(
                &mut page,
                "ism_conversion_failures_total",
                "counter",
                "Uploads ffmpeg could not decode (not audio, too long, too slow).",
            );
            let _ = writeln!(
                page,
                "ism_conversion_failures_total {}",
                recorded.conversion_failures
            );
        }
        header(
            &mut page,
            "ism_workers",
            "gauge",
            "Worker processes by state.",
        );
        for (state, count) in &pool.workers {
            let _ = writeln!(page, "ism_workers{{state=\"{state}\"}} {count}");
        }
        let singles = [
            (
                "ism_worker_restarts_total",
                "counter",
                "Workers respawned after a failure.",
                pool.restarts as f64,
            ),
            (
                "ism_worker_rotations_total",
                "counter",
                "Workers replaced after workers.rotateThreshold requests.",
                pool.rotations as f64,
            ),
            (
                "ism_inflight_requests",
                "gauge",
                "Requests being transcribed by a worker now.",
                pool.in_flight as f64,
            ),
            (
                "ism_queue_depth",
                "gauge",
                "Requests waiting for an idle worker.",
                pool.queue_depth as f64,
            ),
            (
                "ism_log_lines_dropped_total",
                "counter",
                "Log lines dropped because stderr did not keep up.",
                crate::logging::dropped_lines() as f64,
            ),
        ];
        for (name, kind, help, value) in singles {
            header(&mut page, name, kind, help);
            let _ = writeln!(page, "{name} {value}");
        }
        page
    }
}

fn header(page: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(page, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram_lines(page: &mut String, name: &str, label: &str, value: &str, histogram: &Histogram) {
    let value = escape(value);
    for (bound, count) in BUCKETS.iter().zip(histogram.counts) {
        let _ = writeln!(
            page,
            "{name}_bucket{{{label}=\"{value}\",le=\"{bound}\"}} {count}"
        );
    }
    let _ = writeln!(
        page,
        "{name}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {}",
        histogram.count
    );
    let _ = writeln!(page, "{name}_sum{{{label}=\"{value}\"}} {}", histogram.sum);
    let _ = writeln!(
        page,
        "{name}_count{{{label}=\"{value}\"}} {}",
        histogram.count
    );
}

/// Label values escape backslash, double quote and line feed.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.004);
        h.observe(0.3);
        h.observe(500.0);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[6], 2, "le=0.5 holds 0.004 and 0.3");
        assert_eq!(h.counts[BUCKETS.len() - 1], 2, "500 s is only in +Inf");
        assert_eq!(h.count, 3);
    }

    #[test]
    fn page_has_every_family_and_escaped_labels() {
        let metrics = Metrics::default();
        metrics.record_request("/health", 200, Duration::from_millis(2));
        metrics.record_request("/health", 200, Duration::from_millis(3));
        metrics.record_inference("odd\"model", Duration::from_millis(800));
        let page = metrics.render(&PoolGauges {
            workers: vec![("healthy", 2)],
            ..PoolGauges::default()
        });
        assert!(
            page.contains("ism_http_requests_total{route=\"/health\",status=\"200\"} 2\n"),
            "{page}"
        );
        assert!(page.contains(
            "ism_http_request_duration_seconds_bucket{route=\"/health\",le=\"0.005\"} 2\n"
        ));
        assert!(
            page.contains("ism_inference_duration_seconds_count{model=\"odd\\\"model\"} 1\n"),
            "{page}"
        );
        assert!(page.contains("ism_workers{state=\"healthy\"} 2\n"));
        for family in [
            "ism_worker_restarts_total",
            "ism_worker_rotations_total",
            "ism_inflight_requests",
            "ism_queue_depth",
            "ism_log_lines_dropped_total",
        ] {
            assert!(page.contains(&format!("# TYPE {family} ")), "{family}");
        }
    }
}
