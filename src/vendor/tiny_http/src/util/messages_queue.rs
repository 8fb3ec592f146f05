use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

enum Control<T> {
    Elem(T),
    Unblock,
}

impl<T> Control<T> {
    fn into_elem(self) -> Option<T> {
        match self {
            Control::Elem(value) => Some(value),
            Control::Unblock => None,
        }
    }
}

/// PATCHED: a message goes to the thread that started waiting last, handed to it directly.
/// Upstream every popping thread waited on one condition variable, whose waiters wake
/// oldest first: with the manager's 1024 request threads each request ran on the thread idle
/// longest, whose stack, allocator cache and TLB entries had long gone cold (a pool of 8
/// threads served the same load with a sixth less CPU). Now the few threads a load needs do
/// all of it, and the rest stay asleep.
pub struct MessagesQueue<T>
where
    T: Send,
{
    state: Mutex<State<T>>,
}

struct State<T> {
    /// Messages pushed while no thread was waiting, oldest first.
    queue: VecDeque<Control<T>>,
    /// The threads waiting, the latest to start waiting last.
    waiting: Vec<Arc<Waiter>>,
    /// Messages handed to a waiting thread that has not woken to take them yet.
    handed: Vec<(u64, Control<T>)>,
    next_ticket: u64,
}

/// One waiting thread, woken alone.
struct Waiter {
    ticket: u64,
    wake: Condvar,
}

impl<T> MessagesQueue<T>
where
    T: Send,
{
    pub fn with_capacity(capacity: usize) -> Arc<MessagesQueue<T>> {
        Arc::new(MessagesQueue {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(capacity),
                waiting: Vec::new(),
                handed: Vec::new(),
                next_ticket: 0,
            }),
        })
    }

    /// Pushes an element to the queue.
    pub fn push(&self, value: T) {
        self.send(Control::Elem(value));
    }

    /// Unblock one thread stuck in pop loop.
    pub fn unblock(&self) {
        self.send(Control::Unblock);
    }

    /// Hands `message` to the thread that started waiting last, or queues it when none
    /// waits. The thread is woken once the lock is released, so it does not find it held.
    fn send(&self, message: Control<T>) {
        let mut state = self.lock();
        match state.waiting.pop() {
            Some(waiter) => {
                state.handed.push((waiter.ticket, message));
                drop(state);
                waiter.wake.notify_one();
            }
            None => state.queue.push_back(message),
        }
    }

    /// Pops an element. Blocks until one is available.
    /// Returns None in case unblock() was issued.
    pub fn pop(&self) -> Option<T> {
        self.wait(None)
    }

    /// Tries to pop an element without blocking.
    pub fn try_pop(&self) -> Option<T> {
        let message = self.lock().queue.pop_front();
        message.and_then(Control::into_elem)
    }

    /// Tries to pop an element without blocking
    /// more than the specified timeout duration
    /// or unblock() was issued
    pub fn pop_timeout(&self, timeout: Duration) -> Option<T> {
        // A timeout past what an `Instant` holds is no timeout.
        self.wait(Instant::now().checked_add(timeout))
    }

    /// The lock is held for bookkeeping only, where nothing panics; should it be poisoned all
    /// the same, the state is still whole.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A queued message, else the first one handed to this thread, waiting at most until
    /// `deadline`.
    fn wait(&self, deadline: Option<Instant>) -> Option<T> {
        let mut state = self.lock();
        if let Some(message) = state.queue.pop_front() {
            return message.into_elem();
        }
        let waiter = Arc::new(Waiter {
            ticket: state.next_ticket,
            wake: Condvar::new(),
        });
        state.next_ticket += 1;
        state.waiting.push(Arc::clone(&waiter));
        loop {
            if let Some(i) = state.handed.iter().position(|(t, _)| *t == waiter.ticket) {
                return state.handed.swap_remove(i).1.into_elem();
            }
            state = match deadline {
                None => waiter.wake.wait(state).unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        if let Some(i) = state.waiting.iter().position(|w| Arc::ptr_eq(w, &waiter)) {
                            state.waiting.remove(i);
                            return None;
                        }
                        // Handing a message and taking its thread off `waiting` happen under
                        // one lock: a thread no longer waiting has its message in `handed`.
                        continue;
                    }
                    let (state, _) = waiter
                        .wake
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner);
                    state
                }
            };
        }
    }
}
