//! The LINE channel's state (docs/line.md): which conversation belongs to which LINE user,
//! webhook events already handled, and how far each conversation was forwarded to LINE.

use sqlx::Row;

use crate::outbox::{insert_outbox, OutboxInsert};
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
    /// The CRM customer this LINE user is linked to (a redeemed link token).
    pub customer_id: Option<String>,
    /// The customer's outreach opt-out was set by this user's block (unfollow).
    pub unfollow_opted_out: bool,
}

/// What redeeming a link token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutcome {
    /// The user is now linked to the customer; their conversation belongs to the customer.
    Linked,
    /// The user was already linked to this customer (the token is used up all the same).
    AlreadyLinked,
    /// The token's nonce was redeemed before.
    Reused,
    /// The user is linked to another customer; nothing changed.
    LinkedElsewhere,
    /// No customer has the token's id; nothing changed.
    UnknownCustomer,
}

/// The `line_users` columns [`line_user`] reads (a macro: sqlx takes only literal SQL).
macro_rules! select_user {
    () => {
        "SELECT user_id, conversation_id, following, reply_token, reply_token_at, forwarded_seq,
                customer_id, unfollow_opted_out
         FROM line_users WHERE user_id = $1"
    };
}

fn line_user(r: &sqlx::any::AnyRow) -> Result<LineUser> {
    Ok(LineUser {
        user_id: r.try_get("user_id")?,
        conversation_id: r.try_get("conversation_id")?,
        following: r.try_get::<i64, _>("following")? != 0,
        reply_token: r.try_get("reply_token")?,
        reply_token_at: r.try_get("reply_token_at")?,
        forwarded_seq: r.try_get("forwarded_seq")?,
        customer_id: r.try_get("customer_id")?,
        unfollow_opted_out: r.try_get::<i64, _>("unfollow_opted_out")? != 0,
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
        let row = sqlx::query(select_user!())
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
            "SELECT l.user_id, l.conversation_id, l.following, l.reply_token, l.reply_token_at, l.forwarded_seq,
                    l.customer_id, l.unfollow_opted_out, c.last_seq
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

    /// A follow (`following`) or unfollow (block) of the account: creates the user's row or
    /// updates it and, for a user linked to a customer, carries the choice to the customer's
    /// outreach opt-out in the same transaction. A block opts the customer out (and remembers
    /// that it did); a later follow opts them back in only when the block was what opted them
    /// out, so an explicit 配信停止 stays. Returns the row and the customer's new opt-out when
    /// it changed.
    pub async fn line_follow(
        &self,
        user_id: &str,
        new_conversation_id: &str,
        following: bool,
        now_ms: i64,
    ) -> Result<(LineUser, Option<bool>)> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO line_users (user_id, conversation_id, following, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (user_id) DO UPDATE SET following = excluded.following, updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(new_conversation_id)
        .bind(i64::from(following))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(select_user!())
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        let user = line_user(&row)?;
        let mut changed = None;
        if let Some(customer_id) = &user.customer_id {
            if !following {
                let n = sqlx::query(
                    "UPDATE customers SET opted_out = 1, updated_at = $1 WHERE id = $2 AND opted_out = 0",
                )
                .bind(now_ms)
                .bind(customer_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n > 0 {
                    sqlx::query("UPDATE line_users SET unfollow_opted_out = 1 WHERE user_id = $1")
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                    changed = Some(true);
                }
            } else if user.unfollow_opted_out {
                let n = sqlx::query(
                    "UPDATE customers SET opted_out = 0, updated_at = $1 WHERE id = $2 AND opted_out = 1",
                )
                .bind(now_ms)
                .bind(customer_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query("UPDATE line_users SET unfollow_opted_out = 0 WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                if n > 0 {
                    changed = Some(false);
                }
            }
        }
        tx.commit().await?;
        let user = self.line_user(user_id).await?.expect("row just written");
        Ok((user, changed))
    }

    /// Redeems a link token for `user_id` (whose row must exist): records the nonce (once
    /// only) and links the user to `customer_id`, making their conversation the customer's.
    /// Anything but [`LinkOutcome::Linked`] / [`LinkOutcome::AlreadyLinked`] changes nothing.
    pub async fn link_line_user(
        &self,
        user_id: &str,
        customer_id: &str,
        nonce: &str,
        now_ms: i64,
    ) -> Result<LinkOutcome> {
        let mut tx = self.begin_write().await?;
        let fresh = sqlx::query(
            "INSERT INTO line_link_nonces (nonce, customer_id, user_id, used_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (nonce) DO NOTHING",
        )
        .bind(nonce)
        .bind(customer_id)
        .bind(user_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            // The same user redeeming again (LINE redelivering the message after a crash)
            // is told they are linked; anyone else, that the token is used up.
            let again = sqlx::query(
                "SELECT 1 AS one FROM line_link_nonces n JOIN line_users l ON l.user_id = n.user_id
                 WHERE n.nonce = $1 AND n.user_id = $2 AND l.customer_id = n.customer_id",
            )
            .bind(nonce)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
            return Ok(if again {
                LinkOutcome::AlreadyLinked
            } else {
                LinkOutcome::Reused
            });
        }
        let known = sqlx::query("SELECT 1 AS one FROM customers WHERE id = $1")
            .bind(customer_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !known {
            // Dropping the transaction rolls the nonce back: nothing changed.
            return Ok(LinkOutcome::UnknownCustomer);
        }
        let row =
            sqlx::query("SELECT conversation_id, customer_id FROM line_users WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await?;
        let conversation_id: String = row.try_get("conversation_id")?;
        let linked: Option<String> = row.try_get("customer_id")?;
        let outcome = match linked.as_deref() {
            Some(c) if c == customer_id => LinkOutcome::AlreadyLinked,
            Some(_) => return Ok(LinkOutcome::LinkedElsewhere),
            None => LinkOutcome::Linked,
        };
        sqlx::query(
            "UPDATE line_users SET customer_id = $1, linked_at = $2, updated_at = $2 WHERE user_id = $3",
        )
        .bind(customer_id)
        .bind(now_ms)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        // The conversation so far becomes the customer's: their tools, health and outreach
        // see it, and the agent answers them as the customer from now on.
        sqlx::query(
            "UPDATE conversations SET owner_role = 'customer', owner_id = $1, customer_id = $1, updated_at = $2
             WHERE id = $3",
        )
        .bind(customer_id)
        .bind(now_ms)
        .bind(&conversation_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// The LINE user outreach for `customer_id` is pushed to: the most recently linked one
    /// that still follows the account.
    pub async fn line_push_target(&self, customer_id: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT user_id FROM line_users WHERE customer_id = $1 AND following = 1
             ORDER BY linked_at DESC, user_id LIMIT 1",
        )
        .bind(customer_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get::<String, _>("user_id"))
            .transpose()
            .map_err(Into::into)
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

    async fn customer(store: &Store, id: &str) {
        sqlx::query(
            "INSERT INTO customers (id, kind, name, opted_out, created_at, updated_at)
             VALUES ($1, 'b2b', 'テスト', 0, 1, 1)",
        )
        .bind(id)
        .execute(&store.pool)
        .await
        .unwrap();
    }

    async fn opted_out(store: &Store, id: &str) -> bool {
        let row = sqlx::query("SELECT opted_out FROM customers WHERE id = $1")
            .bind(id)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        row.try_get::<i64, _>("opted_out").unwrap() != 0
    }

    #[tokio::test]
    async fn linking_is_single_use_and_blocks_opt_out_only_what_they_caused() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        linking_scenario(&store, "").await;
    }

    /// The same against PostgreSQL (`KIZUNA_TEST_POSTGRES_URL`, started by scripts/test).
    #[tokio::test]
    async fn linking_on_postgres() {
        let Ok(url) = std::env::var("KIZUNA_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var("KIZUNA_REQUIRE_POSTGRES").is_err(),
                "KIZUNA_REQUIRE_POSTGRES is set but no PostgreSQL (KIZUNA_TEST_POSTGRES_URL) was started"
            );
            eprintln!("skipped: set KIZUNA_TEST_POSTGRES_URL to run the PostgreSQL path");
            return;
        };
        let store = Store::connect(&url).await.unwrap();
        // A shared database: this run's rows get their own prefix.
        linking_scenario(&store, &format!("{}-", uuid::Uuid::new_v4().simple())).await;
    }

    async fn linking_scenario(store: &Store, prefix: &str) {
        let store = store.clone();
        let owned = |id: &str| format!("{prefix}{id}");
        macro_rules! p {
            ($id:literal) => {
                owned($id).as_str()
            };
        }
        customer(&store, p!("C-1")).await;
        customer(&store, p!("C-2")).await;
        store
            .upsert_line_user(p!("U1"), p!("conv-1"), true, 1)
            .await
            .unwrap();
        store
            .create_conversation(p!("conv-1"), "anonymous", "line:U1", None, 1)
            .await
            .unwrap();

        // Unknown customer and the nonce are rolled back: the same nonce still works.
        assert_eq!(
            store
                .link_line_user(p!("U1"), p!("C-404"), p!("n1"), 2)
                .await
                .unwrap(),
            LinkOutcome::UnknownCustomer
        );
        assert_eq!(
            store
                .line_user(p!("U1"))
                .await
                .unwrap()
                .unwrap()
                .customer_id,
            None
        );
        assert_eq!(
            store
                .link_line_user(p!("U1"), p!("C-1"), p!("n1"), 3)
                .await
                .unwrap(),
            LinkOutcome::Linked
        );
        assert_eq!(
            store
                .link_line_user(p!("U1"), p!("C-1"), p!("n1"), 4)
                .await
                .unwrap(),
            LinkOutcome::AlreadyLinked,
            "the same user again (a redelivery)"
        );
        store
            .upsert_line_user(p!("U9"), p!("conv-9"), true, 4)
            .await
            .unwrap();
        assert_eq!(
            store
                .link_line_user(p!("U9"), p!("C-1"), p!("n1"), 4)
                .await
                .unwrap(),
            LinkOutcome::Reused
        );
        assert_eq!(
            store
                .line_user(p!("U9"))
                .await
                .unwrap()
                .unwrap()
                .customer_id,
            None
        );
        assert_eq!(
            store
                .link_line_user(p!("U1"), p!("C-2"), p!("n2"), 5)
                .await
                .unwrap(),
            LinkOutcome::LinkedElsewhere
        );
        assert_eq!(
            store
                .link_line_user(p!("U1"), p!("C-1"), p!("n3"), 6)
                .await
                .unwrap(),
            LinkOutcome::AlreadyLinked
        );
        let conv = store.conversation(p!("conv-1")).await.unwrap().unwrap();
        assert_eq!(
            (
                conv.owner_role.as_str(),
                conv.owner_id.as_str(),
                conv.customer_id.as_deref()
            ),
            ("customer", p!("C-1"), Some(p!("C-1")))
        );
        assert_eq!(
            store.line_push_target(p!("C-1")).await.unwrap().as_deref(),
            Some(p!("U1"))
        );
        assert_eq!(store.line_push_target(p!("C-2")).await.unwrap(), None);

        // A block opts out; following again opts back in.
        let (u, changed) = store.line_follow(p!("U1"), "x", false, 7).await.unwrap();
        assert_eq!(
            (u.following, u.unfollow_opted_out, changed),
            (false, true, Some(true))
        );
        assert!(opted_out(&store, p!("C-1")).await);
        assert_eq!(
            store.line_push_target(p!("C-1")).await.unwrap(),
            None,
            "blocked"
        );
        let (u, changed) = store.line_follow(p!("U1"), "x", true, 8).await.unwrap();
        assert_eq!(
            (u.following, u.unfollow_opted_out, changed),
            (true, false, Some(false))
        );
        assert!(!opted_out(&store, p!("C-1")).await);

        // An explicit 配信停止 before the block: the follow leaves it.
        store
            .set_customer_opted_out(p!("C-1"), true, 9)
            .await
            .unwrap();
        let (_, changed) = store.line_follow(p!("U1"), "x", false, 10).await.unwrap();
        assert_eq!(changed, None);
        let (_, changed) = store.line_follow(p!("U1"), "x", true, 11).await.unwrap();
        assert_eq!(changed, None);
        assert!(opted_out(&store, p!("C-1")).await);

        // 配信停止 said elsewhere while blocked: the follow leaves it too.
        store
            .set_customer_opted_out(p!("C-1"), false, 12)
            .await
            .unwrap();
        store.line_follow(p!("U1"), "x", false, 13).await.unwrap();
        store
            .set_customer_opted_out(p!("C-1"), true, 14)
            .await
            .unwrap();
        let (u, changed) = store.line_follow(p!("U1"), "x", true, 15).await.unwrap();
        assert_eq!((u.unfollow_opted_out, changed), (false, None));
        assert!(opted_out(&store, p!("C-1")).await);

        // Unlinked users only change their own row.
        let (u, changed) = store
            .line_follow(p!("U2"), p!("conv-2"), false, 16)
            .await
            .unwrap();
        assert_eq!((u.following, u.customer_id, changed), (false, None, None));
    }
}
