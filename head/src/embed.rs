//! The embedder a head reads, and embedding labelled sets with it in fixed chunks.

use std::time::Instant;

use crate::data::LabelledMessage;
use crate::error::{BoxError, Error, Result};
use crate::train::EmbeddedExample;

/// Messages per embedding call while training. Fixed, so each message is always embedded in
/// the same batch and the embeddings (hence the weights) are reproducible.
pub const EMBED_CHUNK: usize = 32;

/// What a head needs of a sentence embedder: its identity (recorded in `head.json` and
/// checked on load) and query embeddings.
///
/// kizuna-head defines this instead of using kizuna-knowledge's `Embedder` so it depends on
/// neither kizuna-knowledge nor (through it) kizuna-agent; a crate holding a
/// `kizuna_knowledge::Embedder` wraps it in a few lines (see kizuna-sentiment's
/// `KnowledgeEmbedder`).
pub trait QueryEmbedder {
    /// A stable identifier of the model and its settings.
    fn model_id(&self) -> &str;
    /// Vector dimension.
    fn dim(&self) -> usize;
    /// Embeds `texts` as queries (e5: the `query: ` prefix), one vector per text.
    fn embed_queries(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BoxError>;
}

/// Embeds `texts` as queries in chunks of [`EMBED_CHUNK`], printing progress to stderr under
/// `what` (about every tenth of the texts, and at the end).
pub fn embed_messages(
    embedder: &dyn QueryEmbedder,
    texts: &[&str],
    what: &str,
) -> Result<Vec<Vec<f32>>> {
    let started = Instant::now();
    let mut embeddings = Vec::with_capacity(texts.len());
    let mut next_report = 0;
    for chunk in texts.chunks(EMBED_CHUNK) {
        let vectors = embedder.embed_queries(chunk).map_err(Error::Embed)?;
        if vectors.len() != chunk.len() || vectors.iter().any(|v| v.len() != embedder.dim()) {
            return Err(Error::Training(format!(
                "the embedder returned {} vectors for {} texts or a vector of the wrong size",
                vectors.len(),
                chunk.len()
            )));
        }
        embeddings.extend(vectors);
        if embeddings.len() >= next_report || embeddings.len() == texts.len() {
            eprintln!(
                "embedding {what}: {}/{} ({:.1} s)",
                embeddings.len(),
                texts.len(),
                started.elapsed().as_secs_f64()
            );
            next_report = embeddings.len() + texts.len().div_ceil(10);
        }
    }
    Ok(embeddings)
}

/// [`embed_messages`] for labelled messages: the examples, in message order.
pub fn embed_examples(
    embedder: &dyn QueryEmbedder,
    messages: &[LabelledMessage],
    what: &str,
) -> Result<Vec<EmbeddedExample>> {
    let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    let embeddings = embed_messages(embedder, &texts, what)?;
    Ok(embeddings
        .into_iter()
        .zip(messages)
        .map(|(embedding, message)| EmbeddedExample {
            embedding,
            label: message.label,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    struct Recording {
        calls: Mutex<Vec<usize>>,
        wrong: bool,
    }

    impl QueryEmbedder for Recording {
        fn model_id(&self) -> &str {
            "recording"
        }
        fn dim(&self) -> usize {
            2
        }
        fn embed_queries(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BoxError> {
            self.calls.lock().expect("lock").push(texts.len());
            if texts.iter().any(|t| t.is_empty()) {
                return Err("empty text".into());
            }
            let dim = if self.wrong { 3 } else { 2 };
            Ok(texts.iter().map(|t| vec![t.len() as f32; dim]).collect())
        }
    }

    #[test]
    fn embeds_in_fixed_chunks_in_order() {
        let embedder = Recording {
            calls: Mutex::new(Vec::new()),
            wrong: false,
        };
        let texts: Vec<String> = (0..70).map(|i| "x".repeat(i + 1)).collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let embeddings = embed_messages(&embedder, &texts, "test texts").expect("embed");
        assert_eq!(*embedder.calls.lock().expect("lock"), [32, 32, 6]);
        assert_eq!(embeddings.len(), 70);
        assert_eq!(embeddings[69], [70.0, 70.0]);

        let messages = [LabelledMessage {
            text: "abc".into(),
            label: 4,
        }];
        let examples = embed_examples(&embedder, &messages, "one").expect("examples");
        assert_eq!(
            examples,
            [EmbeddedExample {
                embedding: vec![3.0, 3.0],
                label: 4
            }]
        );
    }

    #[test]
    fn passes_on_embedder_failures_and_wrong_sizes() {
        let embedder = Recording {
            calls: Mutex::new(Vec::new()),
            wrong: false,
        };
        let error = embed_messages(&embedder, &["a", ""], "t").expect_err("embedder failure");
        assert!(matches!(error, Error::Embed(_)));
        assert_eq!(error.to_string(), "empty text");

        let wrong = Recording {
            calls: Mutex::new(Vec::new()),
            wrong: true,
        };
        let error = embed_messages(&wrong, &["a"], "t").expect_err("3-d vectors from a 2-d model");
        assert!(matches!(error, Error::Training(_)));
    }
}
