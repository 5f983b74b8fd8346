//! A person's decision on a send held for approval (important accounts).

use kizuna_store::Store;

use crate::OutreachError;

/// A person declined send `send_id`: it is never delivered, and its cause stays claimed so
/// the trigger does not draft it again. False when it is not (or no longer) awaiting approval.
pub async fn reject_approval(store: &Store, send_id: &str) -> Result<bool, OutreachError> {
    let rejected = sqlx::query(
        "UPDATE outreach_sends SET status = 'rejected' WHERE id = $1 AND status = 'awaiting_approval'",
    )
    .bind(send_id)
    .execute(store.pool())
    .await?
    .rows_affected()
        > 0;
    Ok(rejected)
}
