//! Singleton jobs across replicas (docs/deployment.md): the outreach scheduler and the LINE
//! forwarder run on one replica at a time. The leader holds a lease row (`job:<name>`) and
//! renews it on every pass; when it stops, another replica takes over once the lease ends.
//! On SQLite (one process) this replica always leads.

use std::time::Duration;

use kizuna_store::Store;

/// One singleton job's view of who leads.
pub struct Singleton {
    lease: String,
    ttl: Duration,
    leading: bool,
    /// When the lease was last taken or renewed (or found taken).
    checked: Option<std::time::Instant>,
}

impl Singleton {
    /// `ttl` must be longer than the job's interval, so a live leader keeps its lease.
    pub fn new(job: &str, ttl: Duration) -> Self {
        Self {
            lease: format!("job:{job}"),
            ttl,
            leading: false,
            checked: None,
        }
    }

    /// Takes or renews the lead; false when another replica leads (or the database cannot
    /// say, when nobody should act on a guess). Asks the database at most every third of the
    /// lease, so a job that runs twice a second costs no extra writes.
    pub async fn lead(&mut self, store: &Store) -> bool {
        if self.checked.is_some_and(|at| at.elapsed() < self.ttl / 3) {
            return self.leading;
        }
        self.checked = Some(std::time::Instant::now());
        let leading = match store.try_lease(&self.lease, self.ttl).await {
            Ok(leading) => leading,
            Err(e) => {
                tracing::warn!(job = %self.lease, error = %e, "cannot read the job's lease; skipping this pass");
                false
            }
        };
        if leading != self.leading {
            if leading {
                tracing::info!(job = %self.lease, "this replica now runs the job");
            } else {
                tracing::info!(job = %self.lease, "another replica runs the job");
            }
            self.leading = leading;
        }
        leading
    }

    /// Lets another replica take over at once (on shutdown).
    pub async fn step_down(&mut self, store: &Store) {
        if self.leading {
            let _ = store.release_lease(&self.lease).await;
            self.leading = false;
            self.checked = None;
        }
    }
}
