//! The inference history: the last `historySize` runs in a ring, and all-time statistics kept
//! as counters, so memory stays bounded however long the service runs.
//!
//! It has its own small mutex rather than a place in `PoolState`: it is an append-only log that
//! no scheduling decision reads, and recording under the pool lock would serialize unrelated
//! work for nothing.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;

/// One run, as `/api/inference/history` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub inference_id: String,
    pub model_id: String,
    /// Milliseconds.
    pub processing_time: u64,
    pub timestamp: String,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// All-time figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Statistics {
    pub total_inferences: u64,
    pub successful_inferences: u64,
    pub failed_inferences: u64,
    /// Milliseconds, mean over all runs.
    pub average_processing_time: f64,
    /// Successful over total, from 0 to 1 (0 before the first run).
    pub success_rate: f64,
}

#[derive(Debug, Default)]
struct Ring {
    entries: VecDeque<Entry>,
    total: u64,
    successes: u64,
    total_ms: u64,
}

#[derive(Debug)]
pub struct History {
    ring: Mutex<Ring>,
    capacity: usize,
}

impl History {
    pub fn new(capacity: usize) -> History {
        History {
            ring: Mutex::new(Ring::default()),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, entry: Entry) {
        let mut ring = self.lock();
        ring.total += 1;
        ring.successes += u64::from(entry.success);
        ring.total_ms += entry.processing_time;
        if self.capacity == 0 {
            return;
        }
        if ring.entries.len() == self.capacity {
            ring.entries.pop_front();
        }
        ring.entries.push_back(entry);
    }

    /// The statistics and the newest `limit` entries, newest first.
    pub fn snapshot(&self, limit: usize) -> (Statistics, Vec<Entry>) {
        let ring = self.lock();
        let statistics = Statistics {
            total_inferences: ring.total,
            successful_inferences: ring.successes,
            failed_inferences: ring.total - ring.successes,
            average_processing_time: if ring.total == 0 {
                0.0
            } else {
                ring.total_ms as f64 / ring.total as f64
            },
            success_rate: if ring.total == 0 {
                0.0
            } else {
                ring.successes as f64 / ring.total as f64
            },
        };
        (
            statistics,
            ring.entries.iter().rev().take(limit).cloned().collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64, success: bool) -> Entry {
        Entry {
            inference_id: format!("inf-{n}"),
            model_id: "m".into(),
            processing_time: n,
            timestamp: String::new(),
            success,
            error: (!success).then(|| "boom".into()),
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_the_statistics_count_everything() {
        let history = History::new(3);
        for n in 1..=5 {
            history.record(entry(n * 10, n != 2));
        }
        let (stats, entries) = history.snapshot(10);
        let ids: Vec<&str> = entries.iter().map(|e| e.inference_id.as_str()).collect();
        assert_eq!(ids, ["inf-50", "inf-40", "inf-30"]);
        assert_eq!(
            (
                stats.total_inferences,
                stats.successful_inferences,
                stats.failed_inferences
            ),
            (5, 4, 1)
        );
        assert_eq!(stats.average_processing_time, 30.0);
        assert_eq!(stats.success_rate, 0.8);
        assert_eq!(history.snapshot(1).1.len(), 1);
    }

    #[test]
    fn an_empty_history_has_zero_rates() {
        let (stats, entries) = History::new(0).snapshot(5);
        assert_eq!(
            (stats.success_rate, stats.average_processing_time),
            (0.0, 0.0)
        );
        assert!(entries.is_empty());
    }
}
