//! Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix (kizuna-head's),
//! with the sentiment labels.

pub use kizuna_head::eval::{ClassScores, EvalReport};
use kizuna_head::{ClassifierHead, EmbeddedExample};

use crate::error::Result;
use crate::labels::label_names;

/// Classifies `examples` (labels: head indices, see [`crate::label_index`]) with `head` and
/// scores the result.
pub fn evaluate(head: &ClassifierHead, examples: &[EmbeddedExample]) -> Result<EvalReport> {
    Ok(kizuna_head::evaluate(head, &label_names(), examples)?)
}
