//! Shared set-up for the integration tests: a real SQLite file database in a temporary
//! directory, and PostgreSQL (a fresh schema per test) when `KIZUNA_TEST_POSTGRES_URL` is set.
#![allow(dead_code)]

use chrono::{DateTime, FixedOffset};
use kizuna_agent::identity::Identity;
use kizuna_agent::tool::ToolContext;
use kizuna_store::Store;
use sqlx::Connection;

/// The demo's "today": Saturday 2026-11-21, 10:00 JST.
pub const NOW: &str = "2026-11-21T10:00:00+09:00";

pub struct TestDb {
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// Drops the PostgreSQL schema (SQLite's directory goes with the value).
    pub async fn cleanup(self) {
        if let Some((url, schema)) = &self.postgres {
            self.store.close().await;
            if let Ok(mut conn) = sqlx::AnyConnection::connect(url).await {
                let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                    .execute(&mut conn)
                    .await;
            }
        }
    }
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("kizuna.db").display()
    );
    let store = Store::connect(&url).await.expect("connect to SQLite");
    TestDb {
        store,
        _dir: Some(dir),
        postgres: None,
    }
}

/// A store on a schema of its own, so tests can run in parallel on one database.
pub async fn postgres() -> Option<TestDb> {
    let url = std::env::var("KIZUNA_TEST_POSTGRES_URL").ok()?;
    sqlx::any::install_default_drivers();
    let schema = format!("kizuna_tools_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::AnyConnection::connect(&url)
        .await
        .expect("connect to KIZUNA_TEST_POSTGRES_URL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("create a test schema");
    conn.close().await.ok();
    let separator = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{separator}options[search_path]={schema}");
    let store = Store::connect(&scoped)
        .await
        .expect("connect to PostgreSQL");
    Some(TestDb {
        store,
        _dir: None,
        postgres: Some((url, schema)),
    })
}

pub fn at(s: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(s).expect("RFC 3339 time")
}

pub fn ctx(identity: Identity) -> ToolContext {
    ctx_at(identity, NOW)
}

pub fn ctx_at(identity: Identity, now: &str) -> ToolContext {
    ToolContext {
        identity,
        conversation_id: "test".into(),
        now: at(now),
    }
}

pub fn demo_csv() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/customers.csv");
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs an async scenario `fn(&Store)` on SQLite and, when configured, on PostgreSQL.
#[macro_export]
macro_rules! on_both_engines {
    ($name:ident, $scenario:path) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = $crate::common::sqlite().await;
                $scenario(&db.store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(db) = $crate::common::postgres().await else {
                    eprintln!("skipped: set KIZUNA_TEST_POSTGRES_URL to run the PostgreSQL path");
                    return;
                };
                $scenario(&db.store).await;
                db.cleanup().await;
            }
        }
    };
}
