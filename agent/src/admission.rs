//! Admission control in front of the language model (docs/protocol.md, `queue` frames).
//!
//! The embedded model answers one call at a time; turns of other conversations wait here in
//! arrival order (tokio's semaphore is fair) and learn their place and a rough wait. Only
//! model calls queue: FAQ answers, tool texts and other structured replies never pass through
//! the gate, so they are never stuck behind a long generation. The number of turns that may
//! wait at all is bounded where messages are accepted (`limits.max_queued_turns`: over it a
//! message is refused with `overloaded` and `retry_after_secs`, not stored and not dropped —
//! the client resends the same id).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How often a waiting turn hears its (new) place.
const POSITION_REFRESH: Duration = Duration::from_secs(2);

/// The gate in front of the model.
#[derive(Debug)]
pub struct ModelQueue {
    slots: Arc<Semaphore>,
    concurrency: usize,
    /// Tickets handed out and tickets admitted: a waiter's place is the difference.
    issued: AtomicU64,
    admitted: AtomicU64,
    /// Smoothed time a call holds the model, in ms (for the expected wait).
    average_hold_ms: AtomicU64,
}

/// Where a waiting call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePlace {
    /// 1 = next.
    pub position: u32,
    pub expected_wait_secs: u32,
}

/// Held while the call uses the model; records how long it held it.
#[derive(Debug)]
pub struct ModelSlot {
    _permit: OwnedSemaphorePermit,
    queue: Arc<ModelQueue>,
    since: Instant,
}

impl Drop for ModelSlot {
    fn drop(&mut self) {
        let held = self.since.elapsed().as_millis() as u64;
        // An exponentially weighted average (α = 1/4): recent calls count most.
        let _ =
            self.queue
                .average_hold_ms
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |avg| {
                    Some(if avg == 0 { held } else { (avg * 3 + held) / 4 })
                });
    }
}

impl ModelQueue {
    /// `concurrency`: calls the backend serves at once (1 for the embedded model);
    /// `initial_hold`: the expected length of a call until some were measured.
    pub fn new(concurrency: usize, initial_hold: Duration) -> Arc<Self> {
        let concurrency = concurrency.max(1);
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            issued: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            average_hold_ms: AtomicU64::new(initial_hold.as_millis() as u64),
        })
    }

    /// Calls waiting for the model now.
    pub fn waiting(&self) -> u64 {
        self.issued
            .load(Ordering::Acquire)
            .saturating_sub(self.admitted.load(Ordering::Acquire))
    }

    fn place(&self, ticket: u64) -> QueuePlace {
        let ahead = ticket.saturating_sub(self.admitted.load(Ordering::Acquire));
        let position = ahead + 1;
        let hold = self.average_hold_ms.load(Ordering::Acquire);
        // Those ahead, plus the calls running now, shared by the slots.
        let wait_ms = (ahead + 1) * hold / self.concurrency as u64;
        QueuePlace {
            position: position.min(u32::MAX as u64) as u32,
            expected_wait_secs: wait_ms.div_ceil(1000).min(u32::MAX as u64) as u32,
        }
    }

    /// Waits for a slot. `on_wait` hears the place when the call has to wait, and again
    /// whenever it changes while waiting; a call admitted at once hears nothing.
    pub async fn enter(self: &Arc<Self>, mut on_wait: impl FnMut(QueuePlace)) -> ModelSlot {
        let ticket = self.issued.fetch_add(1, Ordering::AcqRel);
        let acquire = self.slots.clone().acquire_owned();
        tokio::pin!(acquire);
        let mut told: Option<QueuePlace> = None;
        let permit = loop {
            if told.is_none() {
                // Admitted at once when a slot is free and nobody is ahead.
                if let Some(permit) = futures::FutureExt::now_or_never(&mut acquire) {
                    break permit;
                }
            }
            let place = self.place(ticket);
            if told != Some(place) {
                on_wait(place);
                told = Some(place);
            }
            tokio::select! {
                permit = &mut acquire => break permit,
                _ = tokio::time::sleep(POSITION_REFRESH) => {}
            }
        }
        .expect("the model queue's semaphore is never closed");
        self.admitted.fetch_add(1, Ordering::AcqRel);
        metrics::gauge!("kizuna_model_queue_waiting").set(self.waiting() as f64);
        ModelSlot {
            _permit: permit,
            queue: self.clone(),
            since: Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_learn_their_place_in_arrival_order() {
        let queue = ModelQueue::new(1, Duration::from_secs(10));
        let mut quiet = Vec::new();
        let first = queue.enter(|p| quiet.push(p)).await;
        assert!(quiet.is_empty(), "a free model admits at once: {quiet:?}");

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for n in 0..3u32 {
            let queue = queue.clone();
            let tx = tx.clone();
            waiters.push(tokio::spawn(async move {
                let slot = queue.enter(|p| tx.send((n, p)).unwrap()).await;
                tx.send((
                    100 + n,
                    QueuePlace {
                        position: 0,
                        expected_wait_secs: 0,
                    },
                ))
                .unwrap();
                drop(slot);
            }));
            // Let each one take its ticket before the next.
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut first_places = Vec::new();
        for _ in 0..3 {
            first_places.push(rx.recv().await.unwrap());
        }
        assert_eq!(
            first_places,
            vec![
                (
                    0,
                    QueuePlace {
                        position: 1,
                        expected_wait_secs: 10
                    }
                ),
                (
                    1,
                    QueuePlace {
                        position: 2,
                        expected_wait_secs: 20
                    }
                ),
                (
                    2,
                    QueuePlace {
                        position: 3,
                        expected_wait_secs: 30
                    }
                ),
            ]
        );
        assert_eq!(queue.waiting(), 3);
        drop(first);
        // They run in arrival order.
        let mut admitted = Vec::new();
        while admitted.len() < 3 {
            let (n, _) = rx.recv().await.unwrap();
            if n >= 100 {
                admitted.push(n - 100);
            }
        }
        assert_eq!(admitted, vec![0, 1, 2]);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(queue.waiting(), 0);
    }

    #[tokio::test]
    async fn a_waiter_hears_when_it_moves_up() {
        let queue = ModelQueue::new(1, Duration::from_secs(4));
        let a = queue.enter(|_| {}).await;
        let b_queue = queue.clone();
        let b = tokio::spawn(async move {
            let slot = b_queue.enter(|_| {}).await;
            // Longer than one refresh, so the waiter behind hears that it is next.
            tokio::time::sleep(POSITION_REFRESH + Duration::from_millis(500)).await;
            drop(slot);
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let places = Arc::new(std::sync::Mutex::new(Vec::new()));
        let c_places = places.clone();
        let c_queue = queue.clone();
        let c = tokio::spawn(async move {
            let _slot = c_queue
                .enter(|p| c_places.lock().unwrap().push(p.position))
                .await;
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(a);
        b.await.unwrap();
        c.await.unwrap();
        let places = places.lock().unwrap().clone();
        assert_eq!(places.first(), Some(&2), "{places:?}");
        assert!(places.contains(&1), "told it moved up: {places:?}");
    }
}
