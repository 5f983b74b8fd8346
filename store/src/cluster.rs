//! What several replicas on one database share (docs/deployment.md):
//!
//! - **leases**: time-limited rows that decide which replica answers a conversation's turn
//!   (`name` = the conversation id) or runs a singleton job (`job:<name>`); a crashed owner's
//!   lease simply expires;
//! - **change notices** (PostgreSQL `LISTEN`/`NOTIFY`): every durable frame is announced at
//!   commit, and transient frames (a reply being streamed) are announced as they are made, so
//!   sockets on other replicas see them live. Notices are lost while a listener reconnects;
//!   [`ClusterEvent::Resync`] tells the hub to re-read the durable log, which is what
//!   guarantees delivery.
//!
//! Lease times are the replicas' wall clocks in Unix milliseconds; keep them in sync (NTP)
//! to well under the lease length.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use sqlx::Row;

use crate::{message_from_row, Engine, Result, Store, StoreError, StoredMessage};

/// The channel every replica listens on.
pub const FRAMES_CHANNEL: &str = "kizuna_frames";

/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; bigger frames are announced
/// without their payload and read from the `frames` table.
const MAX_NOTICE_BYTES: usize = 7000;

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What travels in a notice.
#[derive(Debug, Serialize, Deserialize)]
struct Notice {
    /// The replica that made the frame (its own notices are skipped).
    r: String,
    /// Conversation id.
    c: String,
    /// Sequence number of a durable frame; absent for a transient one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<i64>,
    /// The frame, when it fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<serde_json::Value>,
}

/// A change another replica made.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterEvent {
    /// A durable frame was committed; its payload when it fitted in the notice.
    Frame {
        conversation_id: String,
        seq: i64,
        payload: Option<serde_json::Value>,
    },
    /// A transient frame (part of a reply in progress).
    Transient {
        conversation_id: String,
        payload: serde_json::Value,
    },
    /// The listener lost its connection and is back: notices in between are lost, so
    /// whatever is shown must be re-read from the durable log.
    Resync,
}

/// Announces a durable frame inside the transaction that stores it.
pub(crate) async fn notify_frame(
    store: &Store,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    conversation_id: &str,
    seq: i64,
    payload: &serde_json::Value,
) -> Result<()> {
    let mut notice = Notice {
        r: store.replica_id.to_string(),
        c: conversation_id.to_string(),
        s: Some(seq),
        f: Some(payload.clone()),
    };
    let mut text = serde_json::to_string(&notice).expect("notice serialises");
    if text.len() > MAX_NOTICE_BYTES {
        notice.f = None;
        text = serde_json::to_string(&notice).expect("notice serialises");
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(FRAMES_CHANNEL)
        .bind(text)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// This process's name in leases and notices.
    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    /// Whether other processes may share this database (PostgreSQL). On SQLite there is one
    /// process, and notices are not needed.
    pub fn is_shared(&self) -> bool {
        self.engine == Engine::Postgres
    }

    /// Takes the lease `name` for `ttl` if it is free or expired, or renews it if this
    /// replica holds it. True when this replica holds it now.
    pub async fn try_lease(&self, name: &str, ttl: Duration) -> Result<bool> {
        let now = wall_ms();
        let until = now + ttl.as_millis() as i64;
        let done = sqlx::query(
            "INSERT INTO leases (name, owner, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
             WHERE leases.expires_at < $4 OR leases.owner = excluded.owner",
        )
        .bind(name)
        .bind(&*self.replica_id)
        .bind(until)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Counts one hit on `key` in the current `window` across all replicas; false when the
    /// window already had `limit` hits (the hit is still counted, so a client hammering the
    /// limit stays limited). Atomic: one upsert, whichever replica counts.
    pub async fn hit_rate_window(&self, key: &str, window: Duration, limit: u32) -> Result<bool> {
        let width = window.as_millis().max(1) as i64;
        let start = wall_ms() / width * width;
        let hits: i64 = sqlx::query_scalar(
            "INSERT INTO rate_windows (key, window_start, hits) VALUES ($1, $2, 1)
             ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_windows.hits + 1
             RETURNING hits",
        )
        .bind(key)
        .bind(start)
        .fetch_one(&self.pool)
        .await?;
        if hits == 1 {
            // The first hit of a window: windows two widths old are done with.
            sqlx::query("DELETE FROM rate_windows WHERE window_start < $1")
                .bind(start - 2 * width)
                .execute(&self.pool)
                .await?;
        }
        Ok(hits <= limit as i64)
    }

    /// Forgets every lease: on SQLite only one process uses the file, so leases left by
    /// an earlier run (a crash) hold nothing. Refused on a shared database.
    pub async fn clear_stale_leases(&self) -> Result<()> {
        if self.engine == Engine::Sqlite {
            sqlx::query("DELETE FROM leases")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Gives a lease back (only if this replica holds it).
    pub async fn release_lease(&self, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND owner = $2")
            .bind(name)
            .bind(&*self.replica_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The replica holding `name` now, if any.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT owner FROM leases WHERE name = $1 AND expires_at >= $2")
            .bind(name)
            .bind(wall_ms())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("owner")).transpose()?)
    }

    /// Pending user messages of conversations no replica is answering (its owner crashed,
    /// or the replica that took the message is gone), oldest first.
    pub async fn unleased_pending_messages(&self, limit: i64) -> Result<Vec<StoredMessage>> {
        let rows = sqlx::query(
            "SELECT id, conversation_id, client_msg_id, role, content, reply_to, status, metadata, created_at
             FROM messages m
             WHERE status = 'pending'
               AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.name = m.conversation_id AND l.expires_at >= $1)
             ORDER BY created_at, id LIMIT $2",
        )
        .bind(wall_ms())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    /// A message's status (`pending`, `answered`, `held`, …), or None if there is none.
    pub async fn message_status(&self, message_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT status FROM messages WHERE id = $1")
            .bind(message_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("status")).transpose()?)
    }

    /// Announces a transient frame to the other replicas (PostgreSQL; a no-op on SQLite).
    pub async fn notify_transient(
        &self,
        conversation_id: &str,
        payload: &serde_json::Value,
    ) -> Result<()> {
        if self.engine != Engine::Postgres {
            return Ok(());
        }
        let notice = Notice {
            r: self.replica_id.to_string(),
            c: conversation_id.to_string(),
            s: None,
            f: Some(payload.clone()),
        };
        let text = serde_json::to_string(&notice).expect("notice serialises");
        if text.len() > MAX_NOTICE_BYTES {
            // A transient frame is a convenience; the durable reply follows anyway.
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(FRAMES_CHANNEL)
            .bind(text)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Listens for the other replicas' changes (PostgreSQL only).
    pub async fn cluster_feed(&self) -> Result<Option<ClusterFeed>> {
        if self.engine != Engine::Postgres {
            return Ok(None);
        }
        let mut listener = PgListener::connect(&self.url).await?;
        listener.listen(FRAMES_CHANNEL).await?;
        Ok(Some(ClusterFeed {
            listener,
            replica_id: self.replica_id.to_string(),
        }))
    }
}

/// The other replicas' changes, in the order PostgreSQL delivers them.
pub struct ClusterFeed {
    listener: PgListener,
    replica_id: String,
}

impl ClusterFeed {
    /// The next change made elsewhere. Waits; reconnects by itself after a lost connection
    /// (and then says [`ClusterEvent::Resync`]).
    pub async fn next(&mut self) -> Result<ClusterEvent> {
        loop {
            let Some(notification) = self.listener.try_recv().await? else {
                return Ok(ClusterEvent::Resync);
            };
            let notice: Notice = match serde_json::from_str(notification.payload()) {
                Ok(n) => n,
                Err(e) => {
                    return Err(StoreError::Corrupt(format!("cluster notice: {e}")));
                }
            };
            if notice.r == self.replica_id {
                continue;
            }
            return Ok(match (notice.s, notice.f) {
                (Some(seq), payload) => ClusterEvent::Frame {
                    conversation_id: notice.c,
                    seq,
                    payload,
                },
                (None, Some(payload)) => ClusterEvent::Transient {
                    conversation_id: notice.c,
                    payload,
                },
                (None, None) => continue,
            });
        }
    }
}
