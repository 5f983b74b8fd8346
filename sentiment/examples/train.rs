//! Retrains the committed head (what `kizuna train-sentiment` does) and prints the reports:
//!
//! ```text
//! cargo run --release -p kizuna-sentiment --example train
//! ```
//!
//! Reads `sentiment/data/{train,heldout}.jsonl`, the e5 model at `models/e5-small-q4.bin`
//! (or `KIZUNA_E5_MODEL`) and writes `sentiment/model/head.{safetensors,json}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kizuna_knowledge::embed::E5Model;
use kizuna_sentiment::{
    train_from_files, DEFAULT_HELDOUT_PATH, DEFAULT_MODEL_DIR, DEFAULT_TRAIN_PATH,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model_path = std::env::var_os("KIZUNA_E5_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("models/e5-small-q4.bin"));
    let embedder = Arc::new(E5Model::load(&model_path)?);
    let (train_report, heldout) = train_from_files(
        &root.join(DEFAULT_TRAIN_PATH),
        &root.join(DEFAULT_HELDOUT_PATH),
        &root.join(DEFAULT_MODEL_DIR),
        embedder.as_ref(),
    )?;
    println!("{train_report}");
    println!("held-out set: {heldout}");
    Ok(())
}
