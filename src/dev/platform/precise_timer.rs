//! Waits for the emulated latency that end within a fraction of a millisecond of their
//! deadline.
//!
//! tokio's timer counts whole milliseconds and rounds every deadline up to the next one, and the
//! runtime parks with a millisecond timeout: a 10 ms wait ends 10.5–11 ms later, so an emulated
//! 10 ms platform answered in about 11 ms and every figure measured against it carried that
//! error. One thread of its own keeps the deadlines in order and sleeps on a channel until the
//! first (the kernel wakes it within tens of microseconds), then wakes the waiting task. No
//! request holds a thread while it waits.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;
use tokio::sync::oneshot;

pub(crate) struct PreciseTimer {
    deadlines: mpsc::Sender<Wait>,
}

struct Wait {
    at: Instant,
    /// Deadlines that are equal end in the order they were asked for.
    order: u64,
    done: oneshot::Sender<()>,
}

impl PartialEq for Wait {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}

impl Eq for Wait {}

impl PartialOrd for Wait {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Reversed, so the max-heap yields the earliest deadline first.
impl Ord for Wait {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

impl PreciseTimer {
    /// Starts the timer's thread; it ends once the timer is dropped and its last wait is over.
    pub(crate) fn start() -> std::io::Result<PreciseTimer> {
        let (deadlines, incoming) = mpsc::channel();
        std::thread::Builder::new()
            .name("devplatform-latency".into())
            .spawn(move || run(&incoming))?;
        Ok(PreciseTimer { deadlines })
    }

    /// Returns at `at` or just after it, never before.
    pub(crate) async fn sleep_until(&self, at: Instant) {
        let (done, finished) = oneshot::channel();
        let wait = Wait { at, order: 0, done };
        if self.deadlines.send(wait).is_err() || finished.await.is_err() {
            // The thread is gone: the coarser timer still keeps the deadline.
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

fn run(incoming: &mpsc::Receiver<Wait>) {
    let mut pending: BinaryHeap<Wait> = BinaryHeap::new();
    let mut next_order: u64 = 0;
    loop {
        let now = Instant::now();
        while pending.peek().is_some_and(|w| w.at <= now) {
            if let Some(due) = pending.pop() {
                // The waiter may have given up (its request was cancelled): nothing to do.
                let _ = due.done.send(());
            }
        }
        let received = match pending.peek() {
            Some(first) => incoming.recv_timeout(first.at.saturating_duration_since(now)),
            None => incoming.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(mut wait) => {
                wait.order = next_order;
                next_order = next_order.wrapping_add(1);
                pending.push(wait);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // No new waits can come; finish the ones already asked for, in order.
                while let Some(wait) = pending.pop() {
                    std::thread::sleep(wait.at.saturating_duration_since(Instant::now()));
                    let _ = wait.done.send(());
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Never early, and in order; how late is the machine's business (no upper bound is
    /// asserted: a loaded machine may wake the thread late).
    #[tokio::test]
    async fn waits_end_no_sooner_than_their_deadlines() {
        let timer = std::sync::Arc::new(PreciseTimer::start().unwrap());
        let started = Instant::now();
        let mut waits = Vec::new();
        for ms in [30u64, 5, 20, 5, 0] {
            let timer = timer.clone();
            waits.push(tokio::spawn(async move {
                let at = started + Duration::from_millis(ms);
                timer.sleep_until(at).await;
                assert!(Instant::now() >= at, "{ms} ms: woke early");
            }));
        }
        for wait in waits {
            wait.await.unwrap();
        }
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn a_deadline_already_past_returns_at_once() {
        let timer = PreciseTimer::start().unwrap();
        let past = Instant::now();
        timer.sleep_until(past).await;
    }
}
