//! The intent interface the planner reads. The model (a head over the multilingual-e5
//! sentence embedding, trained by `kizuna train-intents` on `nlu/data/`) is wired in by the
//! binary; the labels and their meaning are `nlu/INTENTS.md`.

pub use kizuna_nlu::intent::{Intent, IntentReading};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("intent model failed: {0}")]
pub struct IntentError(pub String);

/// Reads what one message asks for. CPU-bound: call from `spawn_blocking` in async code.
pub trait IntentModel: Send + Sync {
    fn classify(&self, text: &str) -> Result<IntentReading, IntentError>;
}
