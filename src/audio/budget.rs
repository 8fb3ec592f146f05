//! How much decoded audio the manager holds at once, across every request
//! (`audio.maxSecondsInMemory`).
//!
//! Decoded audio is 16 kHz 16-bit PCM, 32 KB a second, and a request holds it until its last
//! chunk is transcribed. An upload can be far smaller than what it decodes to: 14 KB of 1 Hz
//! 8-bit audio claims 14,000 s, 460 MB decoded. Each request is bounded by `audio.maxSeconds`;
//! this bounds them all together. A request that would pass the budget is refused at once
//! (503, try later), before its audio is decoded where the length is known first (WAV), or as
//! soon as it is decoded (through ffmpeg, whose conversions at once `audio.maxConversions`
//! bounds).

use std::sync::{Arc, Mutex, PoisonError};

/// The seconds of decoded audio that may be held at once, and those held now.
#[derive(Debug, Clone)]
pub struct Budget {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    limit: f64,
    held: Mutex<f64>,
}

/// Seconds of the budget held for one request's audio, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    shared: Arc<Shared>,
    seconds: f64,
}

/// The budget would be passed: `held` seconds are held already, of `limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct Exhausted {
    pub wanted: f64,
    pub held: f64,
    pub limit: f64,
}

impl Budget {
    pub fn new(limit_seconds: u64) -> Budget {
        Budget {
            shared: Arc::new(Shared {
                limit: limit_seconds as f64,
                held: Mutex::new(0.0),
            }),
        }
    }

    /// Holds `seconds` of the budget, or says it would be passed.
    pub fn reserve(&self, seconds: f64) -> Result<Reservation, Exhausted> {
        let mut held = self.shared.lock();
        if *held + seconds > self.shared.limit {
            return Err(Exhausted {
                wanted: seconds,
                held: *held,
                limit: self.shared.limit,
            });
        }
        *held += seconds;
        Ok(Reservation {
            shared: Arc::clone(&self.shared),
            seconds,
        })
    }

    /// Seconds held now.
    #[cfg(test)]
    pub fn held(&self) -> f64 {
        *self.shared.lock()
    }
}

impl Shared {
    /// The count stays right whatever panicked while holding it: it is one number.
    fn lock(&self) -> std::sync::MutexGuard<'_, f64> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut held = self.shared.lock();
        *held = (*held - self.seconds).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_refused_past_the_limit_and_given_back_when_dropped() {
        let budget = Budget::new(100);
        let first = budget.reserve(60.0).unwrap();
        assert_eq!(
            budget.reserve(50.0).unwrap_err(),
            Exhausted {
                wanted: 50.0,
                held: 60.0,
                limit: 100.0
            }
        );
        let second = budget.reserve(40.0).unwrap();
        assert_eq!(budget.held(), 100.0);
        drop(first);
        assert_eq!(budget.held(), 40.0);
        assert!(budget.reserve(60.0).is_ok(), "given back, and taken again");
        drop(second);
        assert_eq!(budget.held(), 0.0);
    }
}
