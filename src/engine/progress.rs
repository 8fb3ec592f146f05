//! The transcriptions running now and how far each has got, for `/api/v1/status`: a long
//! recording is many chunks, and an operator wants to see them go by.
//!
//! It has its own small mutex: a run registers once, counts a chunk at a time and leaves when
//! it ends (its `Tracker` is dropped), and nothing the pool decides depends on it.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;

/// One running transcription as `/api/v1/status` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Running {
    pub inference_id: String,
    pub model: String,
    /// Seconds of audio.
    pub audio_seconds: f64,
    pub chunks_done: usize,
    pub chunks_total: usize,
    /// Milliseconds since it started.
    pub elapsed: u64,
}

#[derive(Debug, Default)]
pub struct Progress {
    running: Mutex<BTreeMap<String, (Running, Instant)>>,
}

/// A run's place in the list; it leaves the list when dropped.
pub struct Tracker<'a> {
    progress: &'a Progress,
    id: String,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, (Running, Instant)>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists a run of `chunks_total` chunks until the returned tracker is dropped.
    pub fn start(
        &self,
        id: &str,
        model: &str,
        audio_seconds: f64,
        chunks_total: usize,
    ) -> Tracker<'_> {
        let running = Running {
            inference_id: id.to_string(),
            model: model.to_string(),
            audio_seconds,
            chunks_done: 0,
            chunks_total,
            elapsed: 0,
        };
        self.lock()
            .insert(id.to_string(), (running, Instant::now()));
        Tracker {
            progress: self,
            id: id.to_string(),
        }
    }

    /// The runs now, oldest first.
    pub fn snapshot(&self) -> Vec<Running> {
        let mut runs: Vec<Running> = self
            .lock()
            .values()
            .map(|(run, started)| Running {
                elapsed: started.elapsed().as_millis() as u64,
                ..run.clone()
            })
            .collect();
        runs.sort_by_key(|run| std::cmp::Reverse(run.elapsed));
        runs
    }
}

impl Tracker<'_> {
    /// One more chunk is transcribed; returns how many are.
    pub fn chunk_done(&self) -> usize {
        let mut running = self.progress.lock();
        match running.get_mut(&self.id) {
            Some((run, _)) => {
                run.chunks_done += 1;
                run.chunks_done
            }
            None => 0,
        }
    }
}

impl Drop for Tracker<'_> {
    fn drop(&mut self) {
        self.progress.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_listed_while_they_last() {
        let progress = Progress::default();
        let tracker = progress.start("inf-1", "base", 600.0, 20);
        assert_eq!(tracker.chunk_done(), 1);
        assert_eq!(tracker.chunk_done(), 2);
        let runs = progress.snapshot();
        assert_eq!((runs[0].chunks_done, runs[0].chunks_total), (2, 20));
        drop(tracker);
        assert!(progress.snapshot().is_empty());
    }
}
