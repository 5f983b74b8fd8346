//! Kizuna's persistence: SQLite by default (a file under the data dir), PostgreSQL when the
//! URL says so. One code path through sqlx's `Any` driver; every statement uses `$N`
//! placeholders, which both engines accept. Migrations are embedded per engine.
//!
//! Timestamps are Unix milliseconds (`BIGINT`), JSON is stored as `TEXT`.

mod activity;
mod bookings;
mod churn_models;
mod cluster;
mod customers;
mod handover;
mod health_state;
mod insights;
mod line;
mod outbox;
mod outreach;
mod revocation;

pub use activity::CustomerActivity;
pub use bookings::{BookingRecord, NewBooking, NewReminder, ReminderRecord, SeatOutcome};
pub use churn_models::ChurnModelRecord;
pub use cluster::{ClusterEvent, ClusterFeed, FRAMES_CHANNEL};
pub use customers::{CustomerImport, CustomerQuery, CustomerRecord};
pub use handover::{EscalationInsert, EscalationRow};
pub use health_state::HealthStateRow;
pub use insights::{EscalationEvent, InsightMessage};
pub use line::{LineUser, LinkOutcome};
pub use outbox::{OutboxInsert, OutboxRow, OutboxState};
pub use outreach::{
    NewOutreachSend, OutreachAttempt, OutreachEventCount, OutreachEventInsert, OutreachSend,
};
pub use revocation::Revocation;

use std::str::FromStr;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("conversation {0} does not exist")]
    NoSuchConversation(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The user's message is no longer pending: another replica (or an earlier attempt)
    /// answered it. Nothing was stored.
    #[error("message {0} was already answered")]
    AlreadyAnswered(String),
    /// People hold the conversation (escalated or taken over): the bot's reply was not
    /// stored (docs/escalation.md).
    #[error("people hold conversation {0}; the bot stays silent")]
    HeldByPeople(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    /// This process's name in leases and change notices (a new UUID per start).
    replica_id: std::sync::Arc<str>,
    /// The connection URL, for the PostgreSQL change listener (never logged).
    url: std::sync::Arc<str>,
}

/// A conversation row.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: String,
    pub owner_role: String,
    pub owner_id: String,
    pub customer_id: Option<String>,
    pub status: String,
    pub last_seq: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A message row.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub id: String,
    pub conversation_id: String,
    pub client_msg_id: Option<String>,
    pub role: String,
    pub content: String,
    pub reply_to: Option<String>,
    pub status: String,
    pub metadata: serde_json::Value,
    pub created_at: i64,
}

/// The result of storing a user's message.
#[derive(Debug, Clone, PartialEq)]
pub enum UserMessageInsert {
    /// Stored now; `ack_seq` is the sequence number of the acknowledgement frame.
    New { message_id: String, ack_seq: i64 },
    /// The client already sent this id: nothing was stored.
    Duplicate { message_id: String, status: String },
}

/// One tool call to record with a turn.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallRecord {
    pub id: String,
    pub name: String,
    pub arguments: serde_json::Value,
    pub result: serde_json::Value,
    pub ok: bool,
    pub duration_ms: i64,
}

/// A durable server frame: its sequence number and JSON payload (without `seq`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFrame {
    pub seq: i64,
    pub payload: serde_json::Value,
}

impl Store {
    /// Connects and runs the embedded migrations. `sqlite://path?mode=rwc` creates the file.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Engine::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        let max_connections = match engine {
            // SQLite serialises writers anyway; a few readers are enough.
            Engine::Sqlite => 4,
            Engine::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        // WAL + synchronous=FULL: an acknowledged message survives SIGKILL and
                        // power loss; busy_timeout lets concurrent writers queue, not fail.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        let store = Self {
            pool,
            engine,
            replica_id: uuid::Uuid::new_v4().to_string().into(),
            url: url.into(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        match self.engine {
            Engine::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
            Engine::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The connection pool, for tests that set up or inspect rows no repository method
    /// covers. Production code uses the typed methods: only this crate writes SQL.
    #[cfg(any(test, feature = "test-support"))]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes every connection (a test's stand-in for the process ending).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction. SQLite's `BEGIN IMMEDIATE` takes the write lock up front (waiting
    /// through busy_timeout), so a transaction that reads before it writes cannot fail
    /// halfway with "database is locked" when another writer commits in between.
    pub async fn begin_write(
        &self,
    ) -> std::result::Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Engine::Postgres => self.pool.begin().await,
        }
    }

    /// Cheap liveness check for `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn create_conversation(
        &self,
        id: &str,
        owner_role: &str,
        owner_id: &str,
        customer_id: Option<&str>,
        now_ms: i64,
    ) -> Result<Conversation> {
        sqlx::query(
            "INSERT INTO conversations (id, owner_role, owner_id, customer_id, status, last_seq, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'bot', 0, $5, $5)",
        )
        .bind(id)
        .bind(owner_role)
        .bind(owner_id)
        .bind(customer_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        self.conversation(id)
            .await?
            .ok_or_else(|| StoreError::NoSuchConversation(id.to_string()))
    }

    pub async fn conversation(&self, id: &str) -> Result<Option<Conversation>> {
        let row = sqlx::query(
            "SELECT id, owner_role, owner_id, customer_id, status, last_seq, created_at, updated_at
             FROM conversations WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| conversation_from_row(&r)).transpose()
    }

    pub async fn set_conversation_status(&self, id: &str, status: &str, now_ms: i64) -> Result<()> {
        sqlx::query("UPDATE conversations SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status)
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a user's message and its acknowledgement frame in one transaction, before
    /// anything answers it. A resend of the same client id stores nothing.
    pub async fn insert_user_message(
        &self,
        conversation_id: &str,
        message_id: &str,
        client_msg_id: &str,
        content: &str,
        ack_payload: &serde_json::Value,
        now_ms: i64,
    ) -> Result<UserMessageInsert> {
        let mut tx = self.begin_write().await?;
        let existing = sqlx::query(
            "SELECT id, status FROM messages WHERE conversation_id = $1 AND client_msg_id = $2",
        )
        .bind(conversation_id)
        .bind(client_msg_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            return Ok(UserMessageInsert::Duplicate {
                message_id: row.try_get("id")?,
                status: row.try_get("status")?,
            });
        }
        sqlx::query(
            "INSERT INTO messages (id, conversation_id, client_msg_id, role, content, reply_to, status, metadata, created_at)
             VALUES ($1, $2, $3, 'user', $4, NULL, 'pending', '{}', $5)",
        )
        .bind(message_id)
        .bind(conversation_id)
        .bind(client_msg_id)
        .bind(content)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let ack_seq = append_frame(self, &mut tx, conversation_id, ack_payload, now_ms).await?;
        tx.commit().await?;
        Ok(UserMessageInsert::New {
            message_id: message_id.to_string(),
            ack_seq,
        })
    }

    /// Appends one durable frame and returns its sequence number.
    pub async fn append_frame(
        &self,
        conversation_id: &str,
        payload: &serde_json::Value,
        now_ms: i64,
    ) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let seq = append_frame(self, &mut tx, conversation_id, payload, now_ms).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Stores a finished turn atomically: the assistant's message, its tool calls, the user
    /// message marked answered, and the reply frame. Returns the reply frame's sequence number.
    ///
    /// Fenced (docs/deployment.md): stores nothing and says why when the message is no longer
    /// pending ([`StoreError::AlreadyAnswered`]) or people hold the conversation
    /// ([`StoreError::HeldByPeople`]), both read in this transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_reply(
        &self,
        conversation_id: &str,
        user_message_id: &str,
        reply_message_id: &str,
        reply_role: &str,
        reply_text: &str,
        metadata: &serde_json::Value,
        tool_calls: &[ToolCallRecord],
        frame_payload: &serde_json::Value,
        now_ms: i64,
    ) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO messages (id, conversation_id, client_msg_id, role, content, reply_to, status, metadata, created_at)
             VALUES ($1, $2, NULL, $3, $4, $5, 'final', $6, $7)",
        )
        .bind(reply_message_id)
        .bind(conversation_id)
        .bind(reply_role)
        .bind(reply_text)
        .bind(user_message_id)
        .bind(metadata.to_string())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        for call in tool_calls {
            sqlx::query(
                "INSERT INTO tool_calls (id, conversation_id, message_id, name, arguments, result, ok, duration_ms, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&call.id)
            .bind(conversation_id)
            .bind(user_message_id)
            .bind(&call.name)
            .bind(call.arguments.to_string())
            .bind(call.result.to_string())
            .bind(call.ok as i64)
            .bind(call.duration_ms)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        claim_pending(self, &mut tx, conversation_id, user_message_id, true).await?;
        let seq = append_frame(self, &mut tx, conversation_id, frame_payload, now_ms).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Logs a tool call made outside a chat turn (an MCP client's, docs/mcp.md) the way a
    /// turn's calls are logged: a `tool_calls` row under a log conversation, which is created
    /// on first use with the caller as its owner. `owner_role` keeps such conversations apart
    /// from chats (e.g. `mcp:customer`), so nothing that looks up a customer's chat finds them.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_tool_call(
        &self,
        conversation_id: &str,
        owner_role: &str,
        owner_id: &str,
        customer_id: Option<&str>,
        message_id: &str,
        call: &ToolCallRecord,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO conversations (id, owner_role, owner_id, customer_id, status, last_seq, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'tool_log', 0, $5, $5)
             ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at",
        )
        .bind(conversation_id)
        .bind(owner_role)
        .bind(owner_id)
        .bind(customer_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO tool_calls (id, conversation_id, message_id, name, arguments, result, ok, duration_ms, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&call.id)
        .bind(conversation_id)
        .bind(message_id)
        .bind(&call.name)
        .bind(call.arguments.to_string())
        .bind(call.result.to_string())
        .bind(call.ok as i64)
        .bind(call.duration_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The tool calls logged under a conversation, oldest first.
    pub async fn tool_calls(&self, conversation_id: &str) -> Result<Vec<ToolCallRecord>> {
        let rows = sqlx::query(
            "SELECT id, name, arguments, result, ok, duration_ms FROM tool_calls
             WHERE conversation_id = $1 ORDER BY created_at, id",
        )
        .bind(conversation_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let json = |col: &str| -> Result<serde_json::Value> {
                    let text: String = r.try_get(col)?;
                    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
                };
                Ok(ToolCallRecord {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    arguments: json("arguments")?,
                    result: json("result")?,
                    ok: r.try_get::<i64, _>("ok")? != 0,
                    duration_ms: r.try_get("duration_ms")?,
                })
            })
            .collect()
    }

    /// The last `limit` messages of a conversation, oldest first.
    pub async fn recent_messages(
        &self,
        conversation_id: &str,
        limit: i64,
    ) -> Result<Vec<StoredMessage>> {
        let rows = sqlx::query(
            "SELECT id, conversation_id, client_msg_id, role, content, reply_to, status, metadata, created_at
             FROM messages WHERE conversation_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(conversation_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut messages = rows
            .iter()
            .map(message_from_row)
            .collect::<Result<Vec<_>>>()?;
        messages.reverse();
        Ok(messages)
    }

    /// User messages stored but not yet answered, oldest first (work left by a crash).
    pub async fn pending_messages(
        &self,
        conversation_id: Option<&str>,
    ) -> Result<Vec<StoredMessage>> {
        let rows = sqlx::query(
            "SELECT id, conversation_id, client_msg_id, role, content, reply_to, status, metadata, created_at
             FROM messages WHERE status = 'pending' AND ($1 IS NULL OR conversation_id = $1)
             ORDER BY created_at, id",
        )
        .bind(conversation_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    /// Durable frames after `after_seq`, in order.
    pub async fn frames_after(
        &self,
        conversation_id: &str,
        after_seq: i64,
    ) -> Result<Vec<StoredFrame>> {
        let rows = sqlx::query(
            "SELECT seq, payload FROM frames WHERE conversation_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(conversation_id)
        .bind(after_seq)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let payload: String = r.try_get("payload")?;
                Ok(StoredFrame {
                    seq: r.try_get("seq")?,
                    payload: serde_json::from_str(&payload)
                        .map_err(|e| StoreError::Corrupt(format!("frame payload: {e}")))?,
                })
            })
            .collect()
    }
}

/// Appends a durable frame inside `tx` and returns its sequence number. On PostgreSQL the
/// frame is also announced to the other replicas; NOTIFY in a transaction is delivered at
/// commit, so a listener never hears of a frame it cannot read yet.
async fn append_frame(
    store: &Store,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    conversation_id: &str,
    payload: &serde_json::Value,
    now_ms: i64,
) -> Result<i64> {
    let row = sqlx::query(
        "UPDATE conversations SET last_seq = last_seq + 1, updated_at = $1 WHERE id = $2 RETURNING last_seq",
    )
    .bind(now_ms)
    .bind(conversation_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::NoSuchConversation(conversation_id.to_string()))?;
    let seq: i64 = row.try_get("last_seq")?;
    sqlx::query(
        "INSERT INTO frames (conversation_id, seq, payload, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(conversation_id)
    .bind(seq)
    .bind(payload.to_string())
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    if store.engine == Engine::Postgres {
        cluster::notify_frame(store, tx, conversation_id, seq, payload).await?;
    }
    Ok(seq)
}

/// Marks a pending user message answered inside `tx`, or fails the transaction: when another
/// replica answered it first, or (for the bot) when people took the conversation over since
/// the turn began. The conversation row is locked first so a takeover cannot slip between
/// this check and the commit.
pub(crate) async fn claim_pending(
    store: &Store,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    conversation_id: &str,
    user_message_id: &str,
    bot: bool,
) -> Result<()> {
    let lock = match store.engine {
        Engine::Postgres => "SELECT status FROM conversations WHERE id = $1 FOR UPDATE",
        // BEGIN IMMEDIATE already holds the write lock.
        Engine::Sqlite => "SELECT status FROM conversations WHERE id = $1",
    };
    let status: Option<String> = sqlx::query(lock)
        .bind(conversation_id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.try_get("status"))
        .transpose()?;
    let Some(status) = status else {
        return Err(StoreError::NoSuchConversation(conversation_id.to_string()));
    };
    if bot && (status == "escalated" || status == "human") {
        return Err(StoreError::HeldByPeople(conversation_id.to_string()));
    }
    let claimed =
        sqlx::query("UPDATE messages SET status = 'answered' WHERE id = $1 AND status = 'pending'")
            .bind(user_message_id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    if claimed == 0 {
        return Err(StoreError::AlreadyAnswered(user_message_id.to_string()));
    }
    Ok(())
}

fn conversation_from_row(r: &AnyRow) -> Result<Conversation> {
    Ok(Conversation {
        id: r.try_get("id")?,
        owner_role: r.try_get("owner_role")?,
        owner_id: r.try_get("owner_id")?,
        customer_id: r.try_get("customer_id")?,
        status: r.try_get("status")?,
        last_seq: r.try_get("last_seq")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

pub(crate) fn message_from_row(r: &AnyRow) -> Result<StoredMessage> {
    let metadata: String = r.try_get("metadata")?;
    Ok(StoredMessage {
        id: r.try_get("id")?,
        conversation_id: r.try_get("conversation_id")?,
        client_msg_id: r.try_get("client_msg_id")?,
        role: r.try_get("role")?,
        content: r.try_get("content")?,
        reply_to: r.try_get("reply_to")?,
        status: r.try_get("status")?,
        metadata: serde_json::Value::from_str(&metadata)
            .map_err(|e| StoreError::Corrupt(format!("message metadata: {e}")))?,
        created_at: r.try_get("created_at")?,
    })
}

/// Hides the password of a database URL for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests;
