//! A person's decision on a send held for approval (important accounts).

use kizuna_store::Store;

use crate::OutreachError;

/// A person declined send `send_id`: it is never delivered, and its cause stays claimed so
/// the trigger does not draft it again. False when it is not (or no longer) awaiting approval.
pub async fn reject_approval(store: &Store, send_id: &str) -> Result<bool, OutreachError> {
    Ok(store
        .move_outreach_send(send_id, "awaiting_approval", "rejected")
        .await?)
}
