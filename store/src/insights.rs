//! What the voice-of-the-customer report reads (docs/insights.md): customers' messages of a
//! period with the reply each got, escalations, and the cache of message embeddings
//! (migration 0013).

use std::str::FromStr;

use sqlx::Row;

use crate::{Result, Store, StoreError};

/// A customer's (or visitor's) message and the bot reply it got, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct InsightMessage {
    pub id: String,
    pub conversation_id: String,
    pub customer_id: Option<String>,
    pub content: String,
    /// The message's metadata: `sentiment`, `intent`, `retrieval` (set by the turn).
    pub metadata: serde_json::Value,
    pub created_at: i64,
    /// The metadata of the assistant's reply (`fallback`, `unhelpful`, `sources`, …).
    pub reply_metadata: Option<serde_json::Value>,
}

/// One escalation: its reason and when.
#[derive(Debug, Clone, PartialEq)]
pub struct EscalationEvent {
    pub reason: String,
    pub created_at: i64,
}

fn json(text: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::Value::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

impl Store {
    /// Customers' messages created in `[from_ms, to_ms)`, oldest first, each with its reply's
    /// metadata. Customers' and visitors' chats only: managers' questions to the bot and tool
    /// logs (`mcp:*`) are not the customers' voice.
    pub async fn insight_messages(&self, from_ms: i64, to_ms: i64) -> Result<Vec<InsightMessage>> {
        let rows = sqlx::query(
            "SELECT m.id, m.conversation_id, c.customer_id, m.content, m.metadata, m.created_at
             FROM messages m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.role = 'user' AND m.created_at >= $1 AND m.created_at < $2
               AND c.owner_role IN ('customer', 'anonymous')
             ORDER BY m.created_at, m.id",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut messages = rows
            .iter()
            .map(|r| {
                let metadata: String = r.try_get("metadata")?;
                Ok(InsightMessage {
                    id: r.try_get("id")?,
                    conversation_id: r.try_get("conversation_id")?,
                    customer_id: r.try_get("customer_id")?,
                    content: r.try_get("content")?,
                    metadata: json(&metadata, "message metadata")?,
                    created_at: r.try_get("created_at")?,
                    reply_metadata: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Replies come after their message, so the same lower bound finds them all.
        let replies = sqlx::query(
            "SELECT m.reply_to, m.metadata FROM messages m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.role = 'assistant' AND m.reply_to IS NOT NULL AND m.created_at >= $1
               AND c.owner_role IN ('customer', 'anonymous')",
        )
        .bind(from_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut by_message = std::collections::HashMap::new();
        for r in &replies {
            let reply_to: String = r.try_get("reply_to")?;
            let metadata: String = r.try_get("metadata")?;
            by_message.insert(reply_to, json(&metadata, "reply metadata")?);
        }
        for m in &mut messages {
            m.reply_metadata = by_message.remove(&m.id);
        }
        Ok(messages)
    }

    /// Escalations created in `[from_ms, to_ms)`, oldest first.
    pub async fn escalation_events(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<EscalationEvent>> {
        let rows = sqlx::query(
            "SELECT reason, created_at FROM escalations WHERE created_at >= $1 AND created_at < $2
             ORDER BY created_at, id",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EscalationEvent {
                    reason: r.try_get("reason")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Cached embeddings by `model` of the messages created since `from_ms`, by message id.
    pub async fn message_embeddings(
        &self,
        model: &str,
        from_ms: i64,
    ) -> Result<std::collections::HashMap<String, Vec<f32>>> {
        let rows = sqlx::query(
            "SELECT e.message_id, e.dim, e.vector FROM message_embeddings e
             JOIN messages m ON m.id = e.message_id
             WHERE e.model = $1 AND m.created_at >= $2",
        )
        .bind(model)
        .bind(from_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut out = std::collections::HashMap::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get("message_id")?;
            let dim: i64 = r.try_get("dim")?;
            let bytes: Vec<u8> = r.try_get("vector")?;
            if bytes.len() != dim as usize * 4 {
                return Err(StoreError::Corrupt(format!(
                    "embedding of message {id}: {} bytes for dimension {dim}",
                    bytes.len()
                )));
            }
            let vector = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            out.insert(id, vector);
        }
        Ok(out)
    }

    /// Caches embeddings by `model` (a message embedded by another model is replaced).
    pub async fn store_message_embeddings(
        &self,
        model: &str,
        embeddings: &[(String, Vec<f32>)],
        now_ms: i64,
    ) -> Result<()> {
        if embeddings.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for (id, vector) in embeddings {
            let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            sqlx::query(
                "INSERT INTO message_embeddings (message_id, model, dim, vector, created_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (message_id) DO UPDATE SET model = excluded.model, dim = excluded.dim,
                     vector = excluded.vector, created_at = excluded.created_at",
            )
            .bind(id)
            .bind(model)
            .bind(vector.len() as i64)
            .bind(bytes)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
