//! The LINE channel's state (docs/line.md): which conversation belongs to which LINE user,
//! webhook events already handled, and how far each conversation was forwarded to LINE.

use sqlx::Row;

use crate::handover::{insert_outbox, OutboxInsert};
use crate::{Result, Store};

/// A LINE user and their conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct LineUser {
    pub user_id: String,
    pub conversation_id: String,
    pub following: bool,
    /// The reply token of the user's latest message and when it arrived (Unix ms).
    pub reply_token: Option<String>,
    pub reply_token_at: i64,
    /// Highest frame sequence number of the conversation already forwarded to LINE.
    pub forwarded_seq: i64,
}

fn line_user(r: &sqlx::any::AnyRow) -> Result<LineUser> {
    Ok(LineUser {
        user_id: r.try_get("user_id")?,
        conversation_id: r.try_get("conversation_id")?,
        following: r.try_get::<i64, _>("following")? != 0,
        reply_token: r.try_get("reply_token")?,
        reply_token_at: r.try_get("reply_token_at")?,
        forwarded_seq: r.try_get("forwarded_seq")?,
    })
}

impl Store {
    /// Whether a webhook event was handled before (a redelivery).
    pub async fn line_event_seen(&self, event_id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 AS seen FROM line_events WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Records a webhook event id once handled; false when it was recorded before.
    pub async fn first_line_event(&self, event_id: &str, now_ms: i64) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO line_events (event_id, received_at) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn line_user(&self, user_id: &str) -> Result<Option<LineUser>> {
        let row = sqlx::query(
            "SELECT user_id, conversation_id, following, reply_token, reply_token_at, forwarded_seq
             FROM line_users WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(line_user).transpose()
    }

    /// Creates the user's row (with the conversation id their messages go to) or updates
    /// whether they follow the account; returns the row.
    pub async fn upsert_line_user(
        &self,
        user_id: &str,
        new_conversation_id: &str,
        following: bool,
        now_ms: i64,
    ) -> Result<LineUser> {
        sqlx::query(
            "INSERT INTO line_users (user_id, conversation_id, following, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (user_id) DO UPDATE SET following = excluded.following, updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(new_conversation_id)
        .bind(i64::from(following))
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(self.line_user(user_id).await?.expect("row just written"))
    }

    /// Keeps the reply token of the user's latest message.
    pub async fn set_line_reply_token(&self, user_id: &str, token: &str, at_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE line_users SET reply_token = $1, reply_token_at = $2 WHERE user_id = $3",
        )
        .bind(token)
        .bind(at_ms)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// LINE users whose conversation has frames not yet forwarded.
    pub async fn line_users_behind(&self, limit: i64) -> Result<Vec<(LineUser, i64)>> {
        let rows = sqlx::query(
            "SELECT l.user_id, l.conversation_id, l.following, l.reply_token, l.reply_token_at, l.forwarded_seq, c.last_seq
             FROM line_users l JOIN conversations c ON c.id = l.conversation_id
             WHERE c.last_seq > l.forwarded_seq ORDER BY c.updated_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((line_user(r)?, r.try_get("last_seq")?)))
            .collect()
    }

    /// Queues `deliveries` in the outbox and marks the conversation forwarded up to
    /// `up_to_seq`, in one transaction (so a frame is queued once, even across a crash). A used
    /// reply token is cleared.
    pub async fn forward_to_line(
        &self,
        user_id: &str,
        up_to_seq: i64,
        deliveries: &[OutboxInsert],
        used_reply_token: bool,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for d in deliveries {
            insert_outbox(&mut tx, d, now_ms).await?;
        }
        // A used reply token is cleared ($4 = 1); a fresh one stays for the next reply.
        sqlx::query(
            "UPDATE line_users SET forwarded_seq = $1, updated_at = $2,
                    reply_token = CASE WHEN $4 = 1 THEN NULL ELSE reply_token END
             WHERE user_id = $3 AND forwarded_seq < $1",
        )
        .bind(up_to_seq)
        .bind(now_ms)
        .bind(user_id)
        .bind(i64::from(used_reply_token))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_once_users_and_forwarding() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        assert!(store.first_line_event("E1", 1).await.unwrap());
        assert!(!store.first_line_event("E1", 2).await.unwrap());

        let u = store
            .upsert_line_user("U1", "conv-1", true, 1)
            .await
            .unwrap();
        assert_eq!(u.conversation_id, "conv-1");
        let u = store
            .upsert_line_user("U1", "conv-2", false, 2)
            .await
            .unwrap();
        assert_eq!(u.conversation_id, "conv-1", "a user keeps one conversation");
        assert!(!u.following);
        store.set_line_reply_token("U1", "rt", 5).await.unwrap();

        store
            .create_conversation("conv-1", "anonymous", "line:U1", None, 1)
            .await
            .unwrap();
        assert!(store.line_users_behind(10).await.unwrap().is_empty());
        sqlx::query("UPDATE conversations SET last_seq = 3 WHERE id = 'conv-1'")
            .execute(&store.pool)
            .await
            .unwrap();
        let behind = store.line_users_behind(10).await.unwrap();
        assert_eq!(behind.len(), 1);
        assert_eq!(behind[0].1, 3);
        assert_eq!(behind[0].0.reply_token.as_deref(), Some("rt"));
        let d = OutboxInsert {
            id: "line-conv-1-3".into(),
            channel: "line".into(),
            kind: "line_messages".into(),
            payload: serde_json::json!({"to": "U1"}),
        };
        store.forward_to_line("U1", 3, &[d], true, 9).await.unwrap();
        assert!(store.line_users_behind(10).await.unwrap().is_empty());
        let u = store.line_user("U1").await.unwrap().unwrap();
        assert_eq!((u.forwarded_seq, u.reply_token), (3, None));
    }
}
