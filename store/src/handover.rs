//! Hand-offs between the bot and people: escalations, CSM replies and status changes, with
//! their notices queued in the outbox (`outbox.rs`). Every change and the frames that
//! announce it commit together.

use sqlx::Row;

use crate::outbox::{insert_outbox, OutboxInsert};
use crate::{append_frame, Result, Store, StoreError};

/// An escalation and the state of its conversation, for the CSM queue.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EscalationRow {
    pub id: String,
    pub conversation_id: String,
    pub customer_id: Option<String>,
    pub owner_id: String,
    pub conversation_status: String,
    pub reason: String,
    pub detail: String,
    pub status: String,
    pub assigned_to: Option<String>,
    pub created_at: i64,
    pub last_message: Option<String>,
}

struct FinalMessage<'a> {
    conversation_id: &'a str,
    message_id: &'a str,
    role: &'a str,
    text: &'a str,
    metadata: &'a serde_json::Value,
    frame: &'a serde_json::Value,
}

/// What [`Store::record_escalation`] writes.
#[derive(Debug, Clone)]
pub struct EscalationInsert<'a> {
    pub escalation_id: &'a str,
    pub conversation_id: &'a str,
    /// The user message that caused it; marked answered by the holding reply.
    pub user_message_id: &'a str,
    pub reason: &'a str,
    pub detail: &'a str,
    pub status_frame: &'a serde_json::Value,
    /// The holding message the customer sees ("a person will reply …").
    pub reply_message_id: &'a str,
    pub reply_text: &'a str,
    pub reply_metadata: &'a serde_json::Value,
    pub reply_frame: &'a serde_json::Value,
    pub notification: Option<&'a OutboxInsert>,
}

impl Store {
    /// Hands a conversation to people in one transaction: status `escalated`, the escalation
    /// record, the holding reply (answering the user's message), both frames, and the
    /// notification. Returns the sequence numbers of the status and reply frames.
    pub async fn record_escalation(
        &self,
        e: &EscalationInsert<'_>,
        now_ms: i64,
    ) -> Result<(i64, i64)> {
        let mut tx = self.begin_write().await?;
        // Fenced like a reply: only a still-pending message of a conversation people do not
        // already hold is escalated (docs/deployment.md).
        crate::claim_pending(self, &mut tx, e.conversation_id, e.user_message_id, true).await?;
        sqlx::query("UPDATE conversations SET status = 'escalated', updated_at = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(e.conversation_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO escalations (id, conversation_id, message_id, reason, detail, status, assigned_to, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'open', NULL, $6, $6)",
        )
        .bind(e.escalation_id)
        .bind(e.conversation_id)
        .bind(e.user_message_id)
        .bind(e.reason)
        .bind(e.detail)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let status_seq =
            append_frame(self, &mut tx, e.conversation_id, e.status_frame, now_ms).await?;
        sqlx::query(
            "INSERT INTO messages (id, conversation_id, client_msg_id, role, content, reply_to, status, metadata, created_at)
             VALUES ($1, $2, NULL, 'assistant', $3, $4, 'final', $5, $6)",
        )
        .bind(e.reply_message_id)
        .bind(e.conversation_id)
        .bind(e.reply_text)
        .bind(e.user_message_id)
        .bind(e.reply_metadata.to_string())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let reply_seq =
            append_frame(self, &mut tx, e.conversation_id, e.reply_frame, now_ms).await?;
        if let Some(n) = e.notification {
            insert_outbox(&mut tx, n, now_ms).await?;
        }
        tx.commit().await?;
        Ok((status_seq, reply_seq))
    }

    /// A user message that arrives while people hold the conversation: stored, acknowledged,
    /// not answered by the bot (status `held`, so restarts do not answer it either).
    pub async fn hold_message(&self, message_id: &str) -> Result<()> {
        sqlx::query("UPDATE messages SET status = 'held' WHERE id = $1")
            .bind(message_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Changes who handles a conversation (`human`, `bot`, `closed`) and announces it with a
    /// durable frame; open escalations follow (`taken`, `resolved`). Returns the frame's seq.
    pub async fn change_handler(
        &self,
        conversation_id: &str,
        status: &str,
        assigned_to: Option<&str>,
        frame: &serde_json::Value,
        now_ms: i64,
    ) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let updated =
            sqlx::query("UPDATE conversations SET status = $1, updated_at = $2 WHERE id = $3")
                .bind(status)
                .bind(now_ms)
                .bind(conversation_id)
                .execute(&mut *tx)
                .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NoSuchConversation(conversation_id.to_string()));
        }
        let escalation_status = match status {
            "human" => Some("taken"),
            "bot" | "closed" => Some("resolved"),
            _ => None,
        };
        if let Some(es) = escalation_status {
            sqlx::query(
                "UPDATE escalations SET status = $1, assigned_to = COALESCE($2, assigned_to), updated_at = $3
                 WHERE conversation_id = $4 AND status <> 'resolved'",
            )
            .bind(es)
            .bind(assigned_to)
            .bind(now_ms)
            .bind(conversation_id)
            .execute(&mut *tx)
            .await?;
        }
        let seq = append_frame(self, &mut tx, conversation_id, frame, now_ms).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// A CSM's reply: stored as a `human_agent` message with its frame. Messages the
    /// customer sent while waiting count as seen by the person now. Returns the seq.
    pub async fn record_human_reply(
        &self,
        conversation_id: &str,
        message_id: &str,
        text: &str,
        metadata: &serde_json::Value,
        frame: &serde_json::Value,
        now_ms: i64,
    ) -> Result<i64> {
        let message = FinalMessage {
            conversation_id,
            message_id,
            role: "human_agent",
            text,
            metadata,
            frame,
        };
        self.insert_final_message(&message, true, now_ms).await
    }

    /// An agent-initiated message (outreach): stored as the assistant's with its `proactive`
    /// frame. Returns the seq.
    pub async fn record_proactive(
        &self,
        conversation_id: &str,
        message_id: &str,
        text: &str,
        metadata: &serde_json::Value,
        frame: &serde_json::Value,
        now_ms: i64,
    ) -> Result<i64> {
        let message = FinalMessage {
            conversation_id,
            message_id,
            role: "assistant",
            text,
            metadata,
            frame,
        };
        self.insert_final_message(&message, false, now_ms).await
    }

    /// One message that answers nothing in particular, with its frame, in one transaction.
    async fn insert_final_message(
        &self,
        m: &FinalMessage<'_>,
        release_held: bool,
        now_ms: i64,
    ) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO messages (id, conversation_id, client_msg_id, role, content, reply_to, status, metadata, created_at)
             VALUES ($1, $2, NULL, $3, $4, NULL, 'final', $5, $6)",
        )
        .bind(m.message_id)
        .bind(m.conversation_id)
        .bind(m.role)
        .bind(m.text)
        .bind(m.metadata.to_string())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if release_held {
            sqlx::query(
                "UPDATE messages SET status = 'answered' WHERE conversation_id = $1 AND status = 'held'",
            )
            .bind(m.conversation_id)
            .execute(&mut *tx)
            .await?;
        }
        let seq = append_frame(self, &mut tx, m.conversation_id, m.frame, now_ms).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// The owner's most recently active conversation.
    pub async fn latest_conversation(
        &self,
        owner_role: &str,
        owner_id: &str,
    ) -> Result<Option<crate::Conversation>> {
        let row = sqlx::query(
            "SELECT id FROM conversations WHERE owner_role = $1 AND owner_id = $2
             ORDER BY updated_at DESC, id DESC LIMIT 1",
        )
        .bind(owner_role)
        .bind(owner_id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => self.conversation(&r.try_get::<String, _>("id")?).await,
            None => Ok(None),
        }
    }

    /// The owner's newest conversation whose last message is an agent-initiated one.
    pub async fn unanswered_proactive_conversation(
        &self,
        owner_role: &str,
        owner_id: &str,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT c.id FROM conversations c
             WHERE c.owner_role = $1 AND c.owner_id = $2 AND c.status = 'bot'
               AND EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id
                           AND m.role = 'assistant' AND m.client_msg_id IS NULL AND m.reply_to IS NULL
                           AND m.created_at = (SELECT MAX(m2.created_at) FROM messages m2
                                               WHERE m2.conversation_id = c.id))
             ORDER BY c.updated_at DESC, c.id DESC LIMIT 1",
        )
        .bind(owner_role)
        .bind(owner_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    /// Conversations waiting for or held by people, newest escalation first, with the latest
    /// escalation of each and the customer's last message.
    pub async fn open_escalations(&self, limit: i64) -> Result<Vec<EscalationRow>> {
        let rows = sqlx::query(
            "SELECT e.id, e.conversation_id, c.customer_id, c.owner_id, c.status AS conversation_status,
                    e.reason, e.detail, e.status, e.assigned_to, e.created_at,
                    (SELECT m.content FROM messages m WHERE m.conversation_id = c.id AND m.role = 'user'
                     ORDER BY m.created_at DESC, m.id DESC LIMIT 1) AS last_message
             FROM escalations e JOIN conversations c ON c.id = e.conversation_id
             WHERE c.status IN ('escalated', 'human') AND e.status <> 'resolved'
               AND e.created_at = (SELECT MAX(e2.created_at) FROM escalations e2 WHERE e2.conversation_id = e.conversation_id)
             ORDER BY e.created_at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EscalationRow {
                    id: r.try_get("id")?,
                    conversation_id: r.try_get("conversation_id")?,
                    customer_id: r.try_get("customer_id")?,
                    owner_id: r.try_get("owner_id")?,
                    conversation_status: r.try_get("conversation_status")?,
                    reason: r.try_get("reason")?,
                    detail: r.try_get("detail")?,
                    status: r.try_get("status")?,
                    assigned_to: r.try_get("assigned_to")?,
                    created_at: r.try_get("created_at")?,
                    last_message: r.try_get("last_message")?,
                })
            })
            .collect()
    }

    /// Adds keys to a message's metadata (e.g. its sentiment reading).
    pub async fn merge_message_metadata(
        &self,
        message_id: &str,
        extra: &serde_json::Value,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT metadata FROM messages WHERE id = $1")
            .bind(message_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(());
        };
        let text: String = row.try_get("metadata")?;
        let mut metadata: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("message metadata: {e}")))?;
        if let (Some(target), Some(extra)) = (metadata.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                target.insert(k.clone(), v.clone());
            }
        }
        sqlx::query("UPDATE messages SET metadata = $1 WHERE id = $2")
            .bind(metadata.to_string())
            .bind(message_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
