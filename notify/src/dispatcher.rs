//! The outbox dispatcher: claims due rows, sends them, and records the outcome.
//!
//! Several replicas may run over one database: a row is claimed by moving its
//! `next_attempt_at` forward (a lease) with a conditional update, and only the replica whose
//! update matched sends it. A replica that dies mid-send leaves the lease to expire, after
//! which another picks the row up. The per-channel rate limit is kept per process.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kizuna_store::{OutboxRow, Store, StoreError};
use tokio::sync::{watch, Notify};

use crate::{NotificationSender, SendError};

/// Rows read per channel and pass; more than one so a row claimed by another replica does
/// not stall this one.
const CLAIM_CANDIDATES: i64 = 10;
/// How often pending rows of channels without a sender are looked for (to warn about them).
const UNCONFIGURED_CHECK_INTERVAL: Duration = Duration::from_secs(60);
const MAX_ERROR_CHARS: usize = 1000;

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Pause between looks at the outbox when nothing wakes the dispatcher.
    pub poll_interval: Duration,
    /// How long a claimed row is reserved for the replica sending it; longer than a send.
    pub claim_lease: Duration,
    /// Attempts after which a row is marked `dead` (and logged as an error).
    pub max_attempts: u32,
    /// Delay after the first failure; doubles with each further failure.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Least time between two requests to one channel (Slack allows 1 message/s).
    pub min_send_interval: Duration,
    /// When more escalation notices than this are due on a channel at once, they go out as
    /// one digest instead (docs/security.md); `None` sends each.
    pub digest_above: Option<usize>,
    /// Pending rows on a channel above which the dispatcher logs an error once a minute.
    pub backlog_alert: i64,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            claim_lease: Duration::from_secs(60),
            max_attempts: 200,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            min_send_interval: Duration::from_secs(1),
            digest_above: Some(5),
            backlog_alert: 200,
        }
    }
}

/// Delivers outbox rows through the senders of their channels.
pub struct Dispatcher {
    store: Store,
    /// Sorted by channel so passes are deterministic.
    senders: Vec<(String, Arc<dyn NotificationSender>)>,
    config: DispatcherConfig,
    /// When each channel may be sent to again (rate limit, `Retry-After`).
    channel_ready_at: HashMap<String, Instant>,
    warned_channels: HashSet<String>,
    last_unconfigured_check: Option<Instant>,
    last_backlog_check: Option<Instant>,
}

enum Delivery {
    /// This replica claimed the row and attempted it.
    Attempted,
    /// Another replica claimed it first.
    NotClaimed,
    Stopped,
}

enum Pass {
    Wait(Duration),
    Stopped,
}

impl Dispatcher {
    /// Runs until `shutdown` becomes `true` (or its sender is dropped). `wakeup` makes it
    /// look at the outbox at once (the hub notifies it after queueing a notice); otherwise
    /// it looks every `poll_interval`. Rows of channels missing from `senders` stay pending.
    pub async fn run(
        store: Store,
        senders: HashMap<String, Arc<dyn NotificationSender>>,
        config: DispatcherConfig,
        wakeup: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut senders: Vec<_> = senders.into_iter().collect();
        senders.sort_by(|a, b| a.0.cmp(&b.0));
        let channels: Vec<&str> = senders.iter().map(|(c, _)| c.as_str()).collect();
        tracing::info!(?channels, "outbox dispatcher started");
        let mut dispatcher = Self {
            store,
            senders,
            config,
            channel_ready_at: HashMap::new(),
            warned_channels: HashSet::new(),
            last_unconfigured_check: None,
            last_backlog_check: None,
        };
        loop {
            if *shutdown.borrow() || shutdown.has_changed().is_err() {
                break;
            }
            let wait = match dispatcher.pass(&mut shutdown).await {
                Ok(Pass::Wait(wait)) => wait,
                Ok(Pass::Stopped) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox dispatcher could not read the outbox; retrying");
                    dispatcher.config.poll_interval
                }
            };
            tokio::select! {
                _ = wakeup.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop_requested(&mut shutdown) => break,
            }
        }
        tracing::info!("outbox dispatcher stopped");
    }

    /// Sends at most one due row per ready channel; returns how long to wait before the next.
    async fn pass(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<Pass, StoreError> {
        self.warn_about_unconfigured_channels().await;
        self.alert_on_backlog().await;
        let mut wait = self.config.poll_interval;
        for index in 0..self.senders.len() {
            let channel = self.senders[index].0.clone();
            if let Some(left) = self.channel_wait(&channel) {
                wait = wait.min(left);
                continue;
            }
            if let Some(threshold) = self.config.digest_above {
                match self
                    .send_digest(index, &channel, threshold, shutdown)
                    .await?
                {
                    Some(Delivery::Stopped) => return Ok(Pass::Stopped),
                    Some(_) => {
                        wait = wait.min(self.channel_wait(&channel).unwrap_or(Duration::ZERO));
                        continue;
                    }
                    None => {}
                }
            }
            let rows = self.due_rows(&channel).await?;
            for row in &rows {
                match self.deliver(index, row, shutdown).await? {
                    Delivery::Attempted => break,
                    Delivery::NotClaimed => continue,
                    Delivery::Stopped => return Ok(Pass::Stopped),
                }
            }
            if rows.len() > 1 {
                // More is due on this channel: come back as soon as the rate limit allows.
                wait = wait.min(self.channel_wait(&channel).unwrap_or(Duration::ZERO));
            }
        }
        Ok(Pass::Wait(wait))
    }

    fn channel_wait(&self, channel: &str) -> Option<Duration> {
        self.channel_ready_at
            .get(channel)
            .and_then(|at| at.checked_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }

    async fn due_rows(&self, channel: &str) -> Result<Vec<OutboxRow>, StoreError> {
        self.store
            .due_outbox(channel, None, now_ms(), CLAIM_CANDIDATES)
            .await
    }

    async fn deliver(
        &mut self,
        sender_index: usize,
        row: &OutboxRow,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Delivery, StoreError> {
        let lease_until = now_ms().saturating_add(duration_ms(self.config.claim_lease));
        let claimed = self
            .store
            .move_outbox_attempt(&row.id, row.next_attempt_at, lease_until)
            .await?;
        if !claimed {
            return Ok(Delivery::NotClaimed);
        }

        let result = match serde_json::from_str::<serde_json::Value>(&row.payload) {
            Err(e) => Err(SendError::permanent(format!(
                "outbox payload is not JSON: {e}"
            ))),
            Ok(payload) => {
                let sender = self.senders[sender_index].1.clone();
                tokio::select! {
                    result = sender.send(&row.channel, &row.kind, &payload) => result,
                    _ = stop_requested(shutdown) => {
                        // Hand the row back so the next start does not wait for the lease.
                        self.release(row, lease_until).await;
                        return Ok(Delivery::Stopped);
                    }
                }
            }
        };
        // Counted from the end of the request, so the receiver sees the gap too.
        let mut ready_at = Instant::now() + self.config.min_send_interval;
        let attempts = row.attempts.saturating_add(1);
        match result {
            Ok(()) => self.mark_sent(row, attempts).await,
            Err(error) => {
                if let Some(retry_after) = error.retry_after {
                    // The receiver throttles the whole channel, not just this row.
                    ready_at = ready_at.max(Instant::now() + retry_after);
                }
                self.record_failure(row, attempts, &error).await;
            }
        }
        self.channel_ready_at.insert(row.channel.clone(), ready_at);
        Ok(Delivery::Attempted)
    }

    /// When more than `threshold` escalation notices are due on `channel`, claims them and
    /// sends one digest for all; `None` when there are not that many.
    async fn send_digest(
        &mut self,
        sender_index: usize,
        channel: &str,
        threshold: usize,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Delivery>, StoreError> {
        let rows = self
            .store
            .due_outbox(channel, Some(crate::KIND_ESCALATION), now_ms(), 500)
            .await?;
        if rows.len() <= threshold {
            return Ok(None);
        }
        let lease_until = now_ms().saturating_add(duration_ms(self.config.claim_lease));
        let mut claimed = Vec::new();
        for row in rows {
            if self
                .store
                .move_outbox_attempt(&row.id, row.next_attempt_at, lease_until)
                .await?
            {
                claimed.push(row);
            }
        }
        if claimed.is_empty() {
            return Ok(Some(Delivery::NotClaimed));
        }
        let mut reasons: HashMap<String, usize> = HashMap::new();
        let mut takeover_urls = Vec::new();
        for row in &claimed {
            let notice: Option<crate::EscalationNotice> = serde_json::from_str(&row.payload).ok();
            let reason = notice
                .as_ref()
                .map(|n| n.reason.clone())
                .unwrap_or_default();
            *reasons.entry(reason).or_default() += 1;
            if let Some(n) = notice {
                if takeover_urls.len() < 5 {
                    takeover_urls.push(n.takeover_url);
                }
            }
        }
        let mut reasons: Vec<(String, usize)> = reasons.into_iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let digest = crate::EscalationDigest {
            count: claimed.len(),
            reasons,
            takeover_urls,
        };
        let payload = serde_json::to_value(&digest).unwrap_or_default();
        let sender = self.senders[sender_index].1.clone();
        let result = tokio::select! {
            result = sender.send(channel, crate::KIND_ESCALATION_DIGEST, &payload) => result,
            _ = stop_requested(shutdown) => {
                for row in &claimed {
                    self.release(row, lease_until).await;
                }
                return Ok(Some(Delivery::Stopped));
            }
        };
        let mut ready_at = Instant::now() + self.config.min_send_interval;
        match result {
            Ok(()) => {
                metrics::counter!("kizuna_notification_digests_total").increment(1);
                tracing::warn!(
                    channel,
                    count = claimed.len(),
                    "escalation notices flooded; sent one digest for them"
                );
                for row in &claimed {
                    self.mark_sent(row, row.attempts.saturating_add(1)).await;
                }
            }
            Err(error) => {
                if let Some(retry_after) = error.retry_after {
                    ready_at = ready_at.max(Instant::now() + retry_after);
                }
                tracing::warn!(channel, error = %error.message, "escalation digest not delivered; will retry");
                for row in &claimed {
                    self.release(row, lease_until).await;
                }
            }
        }
        self.channel_ready_at.insert(channel.to_string(), ready_at);
        Ok(Some(Delivery::Attempted))
    }

    /// Logs an error (at most once a minute) while a channel's backlog is above the alert
    /// level, and keeps the `kizuna_outbox_pending` gauge current.
    async fn alert_on_backlog(&mut self) {
        if self
            .last_backlog_check
            .is_some_and(|at| at.elapsed() < UNCONFIGURED_CHECK_INTERVAL)
        {
            return;
        }
        self.last_backlog_check = Some(Instant::now());
        let Ok(backlog) = self.store.pending_outbox_by_channel().await else {
            return;
        };
        for (channel, pending) in backlog {
            metrics::gauge!("kizuna_outbox_pending", "channel" => channel.clone())
                .set(pending as f64);
            if pending > self.config.backlog_alert {
                tracing::error!(channel, pending, "the notification outbox is backing up");
            }
        }
    }

    async fn mark_sent(&self, row: &OutboxRow, attempts: i64) {
        let done = self
            .store
            .mark_outbox_sent(&row.id, attempts, now_ms())
            .await;
        match done {
            Ok(_) => tracing::info!(
                outbox_id = %row.id, channel = %row.channel, kind = %row.kind, attempts,
                "notification delivered"
            ),
            // The notice went out; after the lease it will go out once more (at least once).
            Err(e) => tracing::error!(
                outbox_id = %row.id, channel = %row.channel, error = %e,
                "notification delivered but not marked sent; it may be delivered again"
            ),
        }
    }

    async fn record_failure(&self, row: &OutboxRow, attempts: i64, error: &SendError) {
        let last_error = truncate(&error.message, MAX_ERROR_CHARS);
        let give_up = !error.retryable || attempts >= i64::from(self.config.max_attempts);
        let update = if give_up {
            tracing::error!(
                outbox_id = %row.id, channel = %row.channel, kind = %row.kind, attempts,
                retryable = error.retryable, error = %error.message,
                "notification could not be delivered and is marked dead; it stays in the outbox table"
            );
            self.store
                .mark_outbox_dead(&row.id, attempts, &last_error)
                .await
        } else {
            let delay = error.retry_after.unwrap_or_else(|| {
                backoff(
                    attempts,
                    self.config.initial_backoff,
                    self.config.max_backoff,
                    fastrand::f64(),
                )
            });
            tracing::warn!(
                outbox_id = %row.id, channel = %row.channel, kind = %row.kind, attempts,
                retry_in_ms = duration_ms(delay), error = %error.message,
                "notification not delivered; will retry"
            );
            self.store
                .retry_outbox_at(
                    &row.id,
                    attempts,
                    &last_error,
                    now_ms().saturating_add(duration_ms(delay)),
                )
                .await
        };
        if let Err(e) = update {
            // The lease still holds the row; it is retried when the lease ends.
            tracing::error!(outbox_id = %row.id, error = %e, "could not record a failed notification attempt");
        }
    }

    async fn release(&self, row: &OutboxRow, lease_until: i64) {
        let released = self
            .store
            .move_outbox_attempt(&row.id, lease_until, row.next_attempt_at)
            .await;
        if let Err(e) = released {
            tracing::warn!(outbox_id = %row.id, error = %e, "could not release a claimed notification; it is retried after its lease");
        }
    }

    /// Warns once per channel about pending rows that no sender will deliver.
    async fn warn_about_unconfigured_channels(&mut self) {
        if self
            .last_unconfigured_check
            .is_some_and(|at| at.elapsed() < UNCONFIGURED_CHECK_INTERVAL)
        {
            return;
        }
        self.last_unconfigured_check = Some(Instant::now());
        let backlog = match self.store.pending_outbox_by_channel().await {
            Ok(backlog) => backlog,
            Err(e) => {
                tracing::warn!(error = %e, "could not list outbox channels");
                return;
            }
        };
        for (channel, _) in backlog {
            let configured = self.senders.iter().any(|(c, _)| *c == channel);
            if !configured && self.warned_channels.insert(channel.clone()) {
                tracing::warn!(
                    channel = %channel,
                    "notifications are queued for a channel with no sender configured; they stay pending until one is"
                );
            }
        }
    }
}

/// Resolves when shutdown is requested or its sender is gone.
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Exponential backoff after `attempts` failures (1 s, 2 s, 4 s … capped), plus up to 20%
/// jitter (`random` in `[0, 1)`) so queued rows do not retry in lockstep.
fn backoff(attempts: i64, initial: Duration, max: Duration, random: f64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let base = initial.saturating_mul(1u32 << doublings).min(max);
    base + base.mul_f64(random.clamp(0.0, 1.0) * 0.2)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(duration_ms)
        .unwrap_or(0)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_and_caps_at_five_minutes() {
        let (initial, max) = (Duration::from_secs(1), Duration::from_secs(300));
        let plain: Vec<u64> = (1..=10)
            .map(|n| backoff(n, initial, max, 0.0).as_secs())
            .collect();
        assert_eq!(plain, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(backoff(200, initial, max, 0.0), max);
        assert_eq!(backoff(i64::MAX, initial, max, 0.0), max);
        // Jitter adds at most a fifth.
        let jittered = backoff(3, initial, max, 0.999);
        assert!(jittered > Duration::from_secs(4) && jittered < Duration::from_millis(4800));
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(truncate("あいうえお", 3), "あいう…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
