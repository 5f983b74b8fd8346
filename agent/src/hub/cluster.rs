//! Several replicas on one database (docs/deployment.md).
//!
//! - **One turn at a time per conversation, cluster-wide.** A worker answers only while its
//!   replica holds the conversation's lease (`leases` row, renewed while the turn runs), and
//!   then answers the conversation's pending messages oldest first, whichever replica took
//!   them. A crashed owner's lease expires and the sweeper of another replica picks the
//!   message up. Replies are fenced in the store (`record_reply` stores only for a message
//!   still pending, and never while people hold the conversation), so nothing is answered
//!   twice even when a lease is lost mid-turn.
//! - **Fan-out.** Durable frames are announced by the store at commit (PostgreSQL NOTIFY);
//!   transient ones (a reply being streamed) are announced here, in order. Each replica's
//!   listener feeds its local sockets; after a reconnect it re-reads the durable log.
//!
//! On SQLite (one process) the same code runs with leases in the same file and no notices.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kizuna_protocol::ServerFrame;
use kizuna_store::{ClusterEvent, StoreError};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{owner_identity, ConversationHub, Job, Live, OutFrame};

/// How often a worker waiting for another replica's turn to end looks again.
const LEASE_POLL: Duration = Duration::from_millis(250);

/// Renews a lease until dropped.
struct LeaseRenewal(tokio::task::JoinHandle<()>);

impl Drop for LeaseRenewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes a message from the replica's in-flight set when its job is done.
struct InFlight<'a> {
    hub: &'a ConversationHub,
    message_id: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.hub
            .in_flight
            .lock()
            .expect("in-flight lock")
            .remove(&self.message_id);
    }
}

impl ConversationHub {
    /// Marks a message as queued on this replica; false if it already is.
    pub(super) fn mark_in_flight(&self, message_id: &str) -> bool {
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .insert(message_id.to_string())
    }

    /// Answers `job` once this replica holds the conversation's lease, after any older
    /// pending message of the conversation; returns at once when the message is answered
    /// (here or elsewhere) or held for people.
    pub(super) async fn run_job(&self, conversation_id: &str, live: &Live, job: Job) {
        let _in_flight = InFlight {
            hub: self,
            message_id: job.message_id.clone(),
        };
        let ttl = self.config.lease_ttl;
        let mut waited = false;
        loop {
            match self.store.message_status(&job.message_id).await {
                Ok(Some(status)) if status == "pending" => {}
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(conversation_id, error = %e, "cannot read a message's status; trying again");
                    tokio::time::sleep(LEASE_POLL * 4).await;
                    continue;
                }
            }
            match self.store.try_lease(conversation_id, ttl).await {
                Ok(true) => break,
                Ok(false) => {
                    if !waited {
                        tracing::debug!(
                            conversation_id,
                            "another replica is answering this conversation; waiting"
                        );
                        waited = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(conversation_id, error = %e, "cannot take the conversation's lease; trying again")
                }
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
        let renewal = {
            let store = self.store.clone();
            let name = conversation_id.to_string();
            LeaseRenewal(tokio::spawn(async move {
                let mut every = tokio::time::interval(ttl / 3);
                every.tick().await;
                loop {
                    every.tick().await;
                    match store.try_lease(&name, ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            // Held too long without renewing (a stalled process): the store's
                            // fencing keeps another replica's answer from being doubled.
                            tracing::warn!(conversation_id = %name, "lost the conversation's lease mid-turn");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(conversation_id = %name, error = %e, "cannot renew the conversation's lease")
                        }
                    }
                }
            }))
        };
        let own_id = job.message_id.clone();
        let mut tried: HashSet<String> = HashSet::new();
        loop {
            // Oldest first: a message taken by another replica may be older than ours.
            let pending = match self.store.pending_messages(Some(conversation_id)).await {
                Ok(pending) => pending,
                Err(e) => {
                    // Fenced in the store, so answering ours cannot double a reply.
                    tracing::warn!(conversation_id, error = %e, "cannot list pending messages; answering ours");
                    self.answer(conversation_id, live, job).await;
                    break;
                }
            };
            let Some(next) = pending.into_iter().find(|m| !tried.contains(&m.id)) else {
                break;
            };
            if next.id == own_id {
                self.answer(conversation_id, live, job).await;
                break;
            }
            tried.insert(next.id.clone());
            let Ok(Some(conv)) = self.store.conversation(conversation_id).await else {
                break;
            };
            self.answer(
                conversation_id,
                live,
                Job {
                    message_id: next.id,
                    client_msg_id: next.client_msg_id.unwrap_or_default(),
                    text: next.content,
                    identity: owner_identity(&conv),
                    _ticket: None,
                },
            )
            .await;
        }
        drop(renewal);
        if let Err(e) = self.store.release_lease(conversation_id).await {
            tracing::warn!(conversation_id, error = %e, "cannot release the conversation's lease; it expires by itself");
        }
    }

    /// Queues every pending message no replica is answering: at start (work left by a
    /// crash) and then every `sweep_interval` when other replicas share the database (work
    /// left by a replica that died).
    pub async fn recover(&self) -> Result<usize, super::HubError> {
        if !self.store.is_shared() {
            // One process: a lease in the file was left by this server's previous run.
            self.store.clear_stale_leases().await?;
        }
        let pending = self.store.unleased_pending_messages(500).await?;
        let mut count = 0;
        for message in pending {
            if !self.mark_in_flight(&message.id) {
                continue;
            }
            let Some(conv) = self.store.conversation(&message.conversation_id).await? else {
                self.in_flight
                    .lock()
                    .expect("in-flight lock")
                    .remove(&message.id);
                continue;
            };
            count += 1;
            self.enqueue(
                &message.conversation_id,
                Job {
                    message_id: message.id,
                    client_msg_id: message.client_msg_id.unwrap_or_default(),
                    text: message.content,
                    identity: owner_identity(&conv),
                    // Left by a crash: answered whatever the queues hold.
                    _ticket: None,
                },
            );
        }
        if count > 0 {
            tracing::info!(count, "answering messages no replica is answering");
        }
        Ok(count)
    }

    /// Starts what a replica sharing its database needs: the listener that feeds other
    /// replicas' frames to local sockets, the publisher of transient frames, and the
    /// sweeper. Does nothing on SQLite.
    pub async fn start_cluster(self: &Arc<Self>) -> Result<(), StoreError> {
        let Some(mut feed) = self.store.cluster_feed().await? else {
            return Ok(());
        };
        let (sender, mut outgoing) = mpsc::unbounded_channel::<TransientOut>();
        let _ = self.transient_out.set(sender);
        let store = self.store.clone();
        tokio::spawn(async move {
            while let Some(out) = outgoing.recv().await {
                match out {
                    TransientOut::Frame(conversation_id, frame) => {
                        if let Err(e) = store.notify_transient(&conversation_id, &frame).await {
                            tracing::debug!(error = %e, "could not announce a transient frame");
                        }
                    }
                    TransientOut::Flushed(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let event = feed.next().await;
                let Some(hub) = hub.upgrade() else { return };
                match event {
                    Ok(event) => hub.apply_cluster_event(event).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster listener failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        let hub = Arc::downgrade(self);
        let every = self.config.sweep_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(hub) = hub.upgrade() else { return };
                if let Err(e) = hub.recover().await {
                    tracing::warn!(error = %e, "sweep for unanswered messages failed");
                }
            }
        });
        tracing::info!(
            replica = self.store.replica_id(),
            "listening for the other replicas' changes"
        );
        Ok(())
    }

    /// Announces a transient frame to the other replicas (when there are any).
    pub(super) fn announce_transient(&self, live: &Live, frame: &ServerFrame) {
        if let Some(out) = self.transient_out.get() {
            let _ = out.send(TransientOut::Frame(
                live.conversation_id.clone(),
                frame.to_value(),
            ));
        }
    }

    /// Waits until the transient frames announced so far went out, so the durable reply
    /// committed next is announced after its deltas (PostgreSQL delivers notices in commit
    /// order) and other replicas' sockets see the stream before the reply. Bounded: a slow
    /// database delays the reply by at most a second.
    pub(super) async fn flush_transients(&self) {
        if let Some(out) = self.transient_out.get() {
            let (done, flushed) = tokio::sync::oneshot::channel();
            if out.send(TransientOut::Flushed(done)).is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(1), flushed).await;
            }
        }
    }

    /// Shows another replica's change on this replica's sockets.
    async fn apply_cluster_event(&self, event: ClusterEvent) {
        match event {
            ClusterEvent::Frame {
                conversation_id,
                seq,
                payload,
            } => {
                let Some(live) = self.watched(&conversation_id) else {
                    return;
                };
                match payload {
                    Some(payload) => live.publish(OutFrame::stored(seq, payload)),
                    None => self.reread(&live, seq - 1).await,
                }
            }
            ClusterEvent::Transient {
                conversation_id,
                payload,
            } => {
                if let Some(live) = self.watched(&conversation_id) {
                    let _ = live.frames.send(OutFrame::relayed(&payload));
                }
            }
            ClusterEvent::Resync => {
                let watched: Vec<Arc<Live>> = self
                    .live
                    .lock()
                    .expect("live lock")
                    .values()
                    .filter(|l| l.frames.receiver_count() > 0)
                    .cloned()
                    .collect();
                tracing::info!(
                    conversations = watched.len(),
                    "cluster listener reconnected; re-reading what sockets show"
                );
                for live in watched {
                    let after = live.last_seq.load(std::sync::atomic::Ordering::Acquire);
                    self.reread(&live, after).await;
                }
            }
        }
    }

    /// The conversation's live state, if a socket here watches it.
    fn watched(&self, conversation_id: &str) -> Option<Arc<Live>> {
        self.live
            .lock()
            .expect("live lock")
            .get(conversation_id)
            .filter(|l| l.frames.receiver_count() > 0)
            .cloned()
    }

    /// Broadcasts the durable frames after `after_seq` from the log.
    async fn reread(&self, live: &Live, after_seq: i64) {
        match self
            .store
            .frames_after(&live.conversation_id, after_seq)
            .await
        {
            Ok(frames) => {
                for f in frames {
                    live.publish(OutFrame::stored(f.seq, f.payload));
                }
            }
            Err(e) => {
                tracing::warn!(conversation_id = %live.conversation_id, error = %e, "cannot re-read frames for a resync")
            }
        }
    }
}

/// What the transient publisher is asked to do, in order.
pub(super) enum TransientOut {
    /// Announce a transient frame of a conversation.
    Frame(Arc<str>, Value),
    /// Say when everything before this went out.
    Flushed(tokio::sync::oneshot::Sender<()>),
}
