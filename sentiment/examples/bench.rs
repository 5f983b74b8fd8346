//! Milliseconds per message for the committed head alone (on precomputed query embeddings,
//! the server's path) and for embedding + head (`SentimentModel::classify`, one message at a
//! time), over the held-out messages:
//!
//! ```text
//! cargo run --release -p kizuna-sentiment --example bench
//! ```
//!
//! Uses `models/e5-small-q4.bin` (or `KIZUNA_E5_MODEL`); `RAYON_NUM_THREADS` limits the
//! embedder's threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use kizuna_agent::sentiment::SentimentModel;
use kizuna_knowledge::embed::E5Model;
use kizuna_knowledge::Embedder;
use kizuna_sentiment::data::read_labelled_jsonl;
use kizuna_sentiment::{load, DEFAULT_HELDOUT_PATH, DEFAULT_MODEL_DIR};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model_path = std::env::var_os("KIZUNA_E5_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("models/e5-small-q4.bin"));
    let embedder: Arc<dyn Embedder> = Arc::new(E5Model::load(&model_path)?);
    let classifier = load(&root.join(DEFAULT_MODEL_DIR), embedder.clone())?;
    let messages = read_labelled_jsonl(&root.join(DEFAULT_HELDOUT_PATH))?;
    let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    println!(
        "{} held-out messages, head: {} ({} parameters)",
        texts.len(),
        classifier.head().architecture(),
        classifier.head().parameter_count()
    );

    let embeddings = embedder.embed_queries(&texts)?;
    // Warm up, then time the head alone over several passes.
    for embedding in embeddings.iter().take(20) {
        classifier.classify_with_embedding(embedding)?;
    }
    let passes = 20;
    let started = Instant::now();
    for _ in 0..passes {
        for embedding in &embeddings {
            std::hint::black_box(classifier.classify_with_embedding(embedding)?);
        }
    }
    let head_ms = started.elapsed().as_secs_f64() * 1000.0 / (passes * embeddings.len()) as f64;
    println!("head alone (classify_with_embedding): {head_ms:.3} ms/message");

    let started = Instant::now();
    for text in &texts {
        std::hint::black_box(classifier.classify(text)?);
    }
    let full_ms = started.elapsed().as_secs_f64() * 1000.0 / texts.len() as f64;
    println!("embedding + head (classify, one message at a time): {full_ms:.2} ms/message");

    let started = Instant::now();
    std::hint::black_box(classifier.classify_batch(&texts)?);
    let batch_ms = started.elapsed().as_secs_f64() * 1000.0 / texts.len() as f64;
    println!("embedding + head (classify_batch, all at once): {batch_ms:.2} ms/message");
    Ok(())
}
