//! Concurrency in tests: many clients at once, and a loop in the background while the test
//! does something else. Both stop by themselves when an assertion fails, so a failing test
//! fails instead of hanging.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{Scope, ScopedJoinHandle};

/// Runs `each(i)` for every `i` in `0..count`, from `clients` threads at once (each takes the
/// next `i` as it finishes one), and returns the results in no particular order. A panic in
/// one client stops the others from taking more, then fails the caller.
pub fn spread<T: Send>(clients: usize, count: usize, each: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    let _stop_others = OnPanic(|| next.store(count, Ordering::SeqCst));
                    let mut results = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= count {
                            return results;
                        }
                        results.push(each(i));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Runs its closure when dropped during a panic.
struct OnPanic<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnPanic<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            (self.0)();
        }
    }
}

/// A thread that loops until told to stop. [`Background::finish`] stops it and returns what
/// it returned. Dropping the guard, as a failed assertion in the test does while it unwinds,
/// stops and joins it too: the test fails instead of waiting for a loop that never ends.
pub struct Background<'scope, T> {
    stop: Arc<AtomicBool>,
    handle: Option<ScopedJoinHandle<'scope, T>>,
}

/// What the loop of a [`Background`] asks whether it should stop.
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl<'scope, T: Send + 'scope> Background<'scope, T> {
    /// Starts `body` on a thread of `scope`; it should return soon after `Stop::requested`.
    pub fn spawn<'env>(
        scope: &'scope Scope<'scope, 'env>,
        body: impl FnOnce(Stop) -> T + Send + 'scope,
    ) -> Background<'scope, T> {
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Stop(Arc::clone(&stop));
        Background {
            stop,
            handle: Some(scope.spawn(move || body(asked))),
        }
    }

    /// Stops the loop and returns its result; a panic in the loop fails the caller.
    pub fn finish(mut self) -> T {
        self.stop.store(true, Ordering::SeqCst);
        let handle = self.handle.take().expect("finished once");
        handle
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl<T> Drop for Background<'_, T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            // While the test unwinds from its own failure, that failure is the one to report.
            if let Err(panic) = handle.join() {
                if !std::thread::panicking() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }
}
