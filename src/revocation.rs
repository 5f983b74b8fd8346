//! Token revocation (docs/security.md, "Tokens"). Staff revoke one token (by its id) or every
//! token of a subject through the API; the list lives in the database so every replica sees
//! it, and each replica keeps a copy in memory, refreshed every few seconds, so the check on
//! every websocket message costs a hash lookup.

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::Duration;

use kizuna_store::{Revocation, Store};
use sha2::{Digest, Sha256};

/// How often each replica re-reads the list (a revocation made on another replica takes
/// effect within this time; on the replica that made it, at once).
pub const REFRESH: Duration = Duration::from_secs(2);

pub struct Revocations {
    store: Store,
    revoked: RwLock<HashSet<(String, String)>>,
}

/// The id of a token: the first 16 bytes of its SHA-256, hex. Logs and the API use it, never
/// the token itself.
pub fn token_id(token: &str) -> String {
    let digest = Sha256::digest(token.trim().as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl Revocations {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            revoked: RwLock::new(HashSet::new()),
        }
    }

    pub fn is_revoked(&self, token: &str, subject: &str) -> bool {
        let revoked = self.revoked.read().unwrap_or_else(|e| e.into_inner());
        if revoked.is_empty() {
            return false;
        }
        revoked.contains(&("subject".to_string(), subject.to_string()))
            || revoked.contains(&("token".to_string(), token_id(token)))
    }

    /// Re-reads the list from the database.
    pub async fn refresh(&self) -> Result<(), kizuna_store::StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        let rows = self.store.revocations(now).await?;
        let set = rows.into_iter().map(|r| (r.kind, r.value)).collect();
        *self.revoked.write().unwrap_or_else(|e| e.into_inner()) = set;
        Ok(())
    }

    pub async fn revoke(&self, revocation: &Revocation) -> Result<(), kizuna_store::StoreError> {
        self.store.revoke(revocation).await?;
        self.refresh().await
    }

    pub async fn unrevoke(
        &self,
        kind: &str,
        value: &str,
    ) -> Result<bool, kizuna_store::StoreError> {
        let removed = self.store.unrevoke(kind, value).await?;
        self.refresh().await?;
        Ok(removed)
    }

    pub async fn list(&self) -> Result<Vec<Revocation>, kizuna_store::StoreError> {
        self.store
            .revocations(chrono::Utc::now().timestamp_millis())
            .await
    }

    /// Keeps the in-memory copy fresh until shutdown.
    pub async fn run_refresh(
        self: std::sync::Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "cannot read the token revocation list");
            }
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = crate::listener::stopped(&mut shutdown) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_are_stable_and_do_not_contain_the_token() {
        let id = token_id("kz1.abc.def");
        assert_eq!(id.len(), 32);
        assert_eq!(id, token_id(" kz1.abc.def "));
        assert_ne!(id, token_id("kz1.abc.deg"));
        assert!(!id.contains("abc"));
    }
}
