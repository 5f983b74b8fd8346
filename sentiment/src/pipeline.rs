//! File-level operations behind the `kizuna` subcommands: train from the labelled files and
//! write the head, load it back, score messages line by line.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use kizuna_agent::sentiment::{SentimentLabel, SentimentModel};
use kizuna_knowledge::Embedder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::classifier::SentimentClassifier;
use crate::data::{drop_heldout_overlaps, parse_labelled_jsonl, LabelledMessage};
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalReport};
use crate::head::{HeadArchitecture, SentimentHead, LABEL_COUNT};
use crate::train::{train, CandidateScore, EmbeddedExample, TrainConfig, TrainReport};

/// The head's weights inside the model directory.
pub const HEAD_WEIGHTS_FILE: &str = "head.safetensors";
/// The head's metadata (embedder, training settings, data hashes, held-out scores).
pub const HEAD_METADATA_FILE: &str = "head.json";
/// Where the committed head lives, relative to the repository root.
pub const DEFAULT_MODEL_DIR: &str = "sentiment/model";
/// The labelled training set, relative to the repository root.
pub const DEFAULT_TRAIN_PATH: &str = "sentiment/data/train.jsonl";
/// The held-out evaluation set, relative to the repository root.
pub const DEFAULT_HELDOUT_PATH: &str = "sentiment/data/heldout.jsonl";

const METADATA_FORMAT: &str = "kizuna-sentiment-head/1";
/// Messages per embedding call while training. Fixed, so each message is always embedded in
/// the same batch and the embeddings (hence the weights) are reproducible.
const EMBED_CHUNK: usize = 32;

/// A labelled file as training saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFileSummary {
    /// File name (without directories, so the metadata does not depend on where it ran).
    pub file: String,
    pub sha256: String,
    pub lines: usize,
}

/// `head.json`: everything needed to check and reproduce the committed head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadMetadata {
    pub format: String,
    /// [`Embedder::model_id`] of the embeddings the head was trained on.
    pub embedder_model_id: String,
    pub embedding_dim: usize,
    /// Always `query`: the head reads the e5 `query: ` embedding.
    pub text_kind: String,
    /// Output order of the head.
    pub labels: Vec<SentimentLabel>,
    pub architecture: HeadArchitecture,
    pub parameters: usize,
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub class_weights: [f32; LABEL_COUNT],
    pub training_set: DataFileSummary,
    /// SHA-256 of the training embeddings (f32, little-endian, in training order): if a
    /// retrain gives other weights, this tells whether the embedder's numerics changed.
    pub training_embeddings_sha256: String,
    pub dropped_heldout_overlaps: usize,
    pub training_examples: usize,
    pub class_counts: [usize; LABEL_COUNT],
    /// Folds of the cross-validation on the training set that compared the candidates.
    pub folds: usize,
    pub validation_examples: usize,
    /// The candidates' cross-validated scores (training data only, never the held-out set).
    pub validation: Vec<CandidateScore>,
    pub heldout_set: DataFileSummary,
    pub heldout: EvalReport,
    /// SHA-256 of `head.safetensors`, so a head and its metadata cannot be mixed up.
    pub weights_sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn embeddings_sha256(examples: &[EmbeddedExample]) -> String {
    let mut hasher = Sha256::new();
    for example in examples {
        for value in &example.embedding {
            hasher.update(value.to_le_bytes());
        }
    }
    hex(&hasher.finalize())
}

fn read_labelled(path: &Path) -> Result<(Vec<LabelledMessage>, DataFileSummary)> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let content = String::from_utf8(bytes).map_err(|e| Error::BadData {
        path: path.display().to_string(),
        line: 0,
        reason: format!("not UTF-8: {e}"),
    })?;
    let messages = parse_labelled_jsonl(&content, &path.display().to_string())?;
    let summary = DataFileSummary {
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256: sha256_hex(content.as_bytes()),
        lines: messages.len(),
    };
    Ok((messages, summary))
}

/// Embeds `texts` as e5 queries in fixed chunks, printing progress to stderr under `what`.
pub fn embed_messages(
    embedder: &dyn Embedder,
    texts: &[&str],
    what: &str,
) -> Result<Vec<Vec<f32>>> {
    let started = Instant::now();
    let mut embeddings = Vec::with_capacity(texts.len());
    let mut next_report = 0;
    for chunk in texts.chunks(EMBED_CHUNK) {
        let vectors = embedder.embed_queries(chunk)?;
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

fn embed_examples(
    embedder: &dyn Embedder,
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

/// [`train_from_files_with`] with the default [`TrainConfig`] (what `kizuna train-sentiment`
/// runs to reproduce the committed head).
pub fn train_from_files(
    train_path: &Path,
    heldout_path: &Path,
    out_dir: &Path,
    embedder: &dyn Embedder,
) -> Result<(TrainReport, EvalReport)> {
    train_from_files_with(
        train_path,
        heldout_path,
        out_dir,
        embedder,
        &TrainConfig::default(),
    )
}

/// Reads the labelled files, drops training messages that also occur in the held-out set,
/// embeds both as e5 queries, trains (choosing the head by cross-validation on the training
/// data only), scores the held-out set and writes `head.safetensors` and `head.json` into
/// `out_dir`. Progress goes to stderr.
pub fn train_from_files_with(
    train_path: &Path,
    heldout_path: &Path,
    out_dir: &Path,
    embedder: &dyn Embedder,
    config: &TrainConfig,
) -> Result<(TrainReport, EvalReport)> {
    let (train_messages, training_set) = read_labelled(train_path)?;
    let (heldout_messages, heldout_set) = read_labelled(heldout_path)?;
    let (kept, dropped) = drop_heldout_overlaps(train_messages, &heldout_messages);
    eprintln!(
        "{} training messages, {} dropped because they also occur in {}; {} held-out messages",
        training_set.lines,
        dropped.len(),
        heldout_set.file,
        heldout_set.lines
    );

    let train_examples = embed_examples(embedder, &kept, "training messages")?;
    let heldout_examples = embed_examples(embedder, &heldout_messages, "held-out messages")?;

    eprintln!(
        "training: comparing {} candidate heads by {}-fold cross-validation, then fitting the chosen one",
        config.candidates.len(),
        config.folds
    );
    let started = Instant::now();
    let (trained, mut report) = train(&train_examples, config)?;
    report.training_lines = training_set.lines;
    report.dropped_overlaps = dropped.into_iter().map(|m| m.text).collect();
    eprintln!("trained in {:.1} s", started.elapsed().as_secs_f64());

    let heldout = evaluate(&trained.head, &heldout_examples)?;

    let weights = trained.head.to_safetensors_bytes()?;
    let metadata = HeadMetadata {
        format: METADATA_FORMAT.into(),
        embedder_model_id: embedder.model_id().to_string(),
        embedding_dim: embedder.dim(),
        text_kind: "query".into(),
        labels: SentimentLabel::ALL.to_vec(),
        architecture: trained.head.architecture(),
        parameters: trained.head.parameter_count(),
        seed: trained.seed,
        epochs: trained.spec.epochs,
        batch_size: trained.batch_size,
        learning_rate: trained.spec.learning_rate,
        weight_decay: trained.spec.weight_decay,
        class_weights: report.class_weights,
        training_set,
        training_embeddings_sha256: embeddings_sha256(&train_examples),
        dropped_heldout_overlaps: report.dropped_overlaps.len(),
        training_examples: report.examples_used,
        class_counts: report.class_counts,
        folds: report.folds,
        validation_examples: report.validation_examples,
        validation: report.candidates.clone(),
        heldout_set,
        heldout: heldout.clone(),
        weights_sha256: sha256_hex(&weights),
    };
    let mut metadata_json = serde_json::to_string_pretty(&metadata)?;
    metadata_json.push('\n');

    std::fs::create_dir_all(out_dir).map_err(Error::io(out_dir))?;
    write_replacing(&out_dir.join(HEAD_WEIGHTS_FILE), &weights)?;
    write_replacing(&out_dir.join(HEAD_METADATA_FILE), metadata_json.as_bytes())?;
    tracing::info!(
        dir = %out_dir.display(),
        accuracy = heldout.accuracy,
        macro_f1 = heldout.macro_f1,
        "wrote sentiment head"
    );
    Ok((report, heldout))
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes).map_err(Error::io(&temporary))?;
    std::fs::rename(&temporary, path).map_err(Error::io(path))
}

/// Reads and checks `head.json` in `model_dir`.
pub fn read_metadata(model_dir: &Path) -> Result<HeadMetadata> {
    let path = model_dir.join(HEAD_METADATA_FILE);
    let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
    let metadata: HeadMetadata = serde_json::from_str(&text).map_err(|e| Error::BadHead {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    if metadata.format != METADATA_FORMAT {
        return Err(Error::BadHead {
            path: path.display().to_string(),
            reason: format!(
                "format {:?}, this build reads {METADATA_FORMAT:?}",
                metadata.format
            ),
        });
    }
    if metadata.labels != SentimentLabel::ALL {
        return Err(Error::BadHead {
            path: path.display().to_string(),
            reason: format!(
                "label order {:?} is not {:?}",
                metadata.labels,
                SentimentLabel::ALL
            ),
        });
    }
    Ok(metadata)
}

/// Loads the head in `model_dir` for `embedder`. Refuses a head trained on another
/// embedding model (or whose weights do not match its `head.json`).
pub fn load(model_dir: &Path, embedder: Arc<dyn Embedder>) -> Result<SentimentClassifier> {
    let metadata = read_metadata(model_dir)?;
    if metadata.embedder_model_id != embedder.model_id() || metadata.embedding_dim != embedder.dim()
    {
        return Err(Error::EmbedderMismatch {
            dir: model_dir.display().to_string(),
            trained: format!(
                "{} ({} dimensions)",
                metadata.embedder_model_id, metadata.embedding_dim
            ),
            actual: format!("{} ({} dimensions)", embedder.model_id(), embedder.dim()),
        });
    }
    let weights_path = model_dir.join(HEAD_WEIGHTS_FILE);
    let weights = std::fs::read(&weights_path).map_err(Error::io(&weights_path))?;
    let bad = |reason: String| Error::BadHead {
        path: weights_path.display().to_string(),
        reason,
    };
    if sha256_hex(&weights) != metadata.weights_sha256 {
        return Err(bad(format!(
            "its SHA-256 does not match {HEAD_METADATA_FILE}; retrain with `kizuna train-sentiment`"
        )));
    }
    let head =
        SentimentHead::from_safetensors_bytes(&weights, &weights_path.display().to_string())?;
    if head.architecture() != metadata.architecture {
        return Err(bad(format!(
            "weights are a {}, {HEAD_METADATA_FILE} says {}",
            head.architecture(),
            metadata.architecture
        )));
    }
    tracing::info!(
        dir = %model_dir.display(),
        architecture = %head.architecture(),
        heldout_accuracy = metadata.heldout.accuracy,
        "loaded sentiment head"
    );
    SentimentClassifier::new(embedder, head)
}

/// Classifies one message per input line and writes `label<TAB>score` per line (score: the
/// label's probability, three decimals), flushing after each line so it works interactively.
/// Output line N always answers input line N: an empty or whitespace-only line has no
/// sentiment and is written as `neutral<TAB>1.000` (the reading [`SentimentModel::classify`]
/// gives a blank message). A trailing `\r` is ignored. Returns the number of lines written.
pub fn score_lines(
    reader: impl BufRead,
    mut writer: impl Write,
    classifier: &SentimentClassifier,
) -> Result<usize> {
    let input = Path::new("<input>");
    let output = Path::new("<output>");
    let mut written = 0;
    for line in reader.lines() {
        let line = line.map_err(Error::io(input))?;
        let text = line.strip_suffix('\r').unwrap_or(&line);
        let reading = classifier.classify(text)?;
        writeln!(writer, "{}\t{:.3}", reading.label.as_str(), reading.score)
            .and_then(|()| writer.flush())
            .map_err(Error::io(output))?;
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifier::tests::KeywordEmbedder;
    use crate::head::HeadArchitecture;
    use crate::train::HeadSpec;

    const TRAIN: &str = r#"{"text": "何度も連絡しているのに返事がない", "label": "anger"}
{"text": "ふざけるな、最悪の対応だ", "label": "anger"}
{"text": "最悪の対応で返事がない", "label": "anger"}
{"text": "返事がないのはどういうことですか", "label": "anger"}
{"text": "不安で眠れません", "label": "anxious"}
{"text": "相手に知られたら怖いです、心配です", "label": "anxious"}
{"text": "心配でたまりません", "label": "anxious"}
{"text": "怖い、不安です", "label": "anxious"}
{"text": "測定の流れを教えてください", "label": "neutral"}
{"text": "上の階の足音がうるさいです", "label": "neutral"}
{"text": "測定期間を教えて", "label": "neutral"}
{"text": "レポートの再発行はできますか", "label": "neutral"}
{"text": "ありがとうございました", "label": "positive"}
{"text": "本当に助かりました、嬉しいです", "label": "positive"}
{"text": "嬉しい知らせをありがとう", "label": "positive"}
{"text": "助かりました", "label": "positive"}
"#;

    const HELDOUT: &str = r#"{"text": "レポートの再発行はできますか？", "label": "neutral"}
{"text": "返事がないです、最悪の対応", "label": "anger"}
{"text": "心配で怖いです", "label": "anxious"}
{"text": "ありがとうございます、助かりました", "label": "positive"}
"#;

    fn small_config() -> TrainConfig {
        TrainConfig {
            seed: 7,
            batch_size: 4,
            folds: 3,
            candidates: vec![
                HeadSpec {
                    architecture: HeadArchitecture::SoftmaxRegression,
                    epochs: 30,
                    learning_rate: 0.05,
                    weight_decay: 0.0,
                },
                HeadSpec {
                    architecture: HeadArchitecture::Mlp { hidden: 6 },
                    epochs: 30,
                    learning_rate: 0.05,
                    weight_decay: 0.0,
                },
            ],
        }
    }

    fn trained_dir(embedder: &KeywordEmbedder) -> (tempfile::TempDir, TrainReport, EvalReport) {
        let dir = tempfile::tempdir().expect("tempdir");
        let train_path = dir.path().join("train.jsonl");
        let heldout_path = dir.path().join("heldout.jsonl");
        std::fs::write(&train_path, TRAIN).expect("write train");
        std::fs::write(&heldout_path, HELDOUT).expect("write heldout");
        let (report, heldout) = train_from_files_with(
            &train_path,
            &heldout_path,
            &dir.path().join("model"),
            embedder,
            &small_config(),
        )
        .expect("train from files");
        (dir, report, heldout)
    }

    #[test]
    fn trains_from_files_and_loads_the_written_head() {
        let embedder = Arc::new(KeywordEmbedder::new("keyword-test"));
        let (dir, report, heldout) = trained_dir(&embedder);
        assert_eq!(report.training_lines, 16);
        assert_eq!(
            report.dropped_overlaps,
            vec!["レポートの再発行はできますか"]
        );
        assert_eq!(report.examples_used, 15);
        assert_eq!(report.candidates.len(), 2);
        assert_eq!(heldout.examples, 4);
        assert_eq!(heldout.accuracy, 1.0, "{heldout}");
        // Both sets were embedded as queries (the double refuses passages).
        let seen = embedder.seen.lock().expect("lock").len();
        assert_eq!(seen, 15 + 4);

        let model_dir = dir.path().join("model");
        let metadata = read_metadata(&model_dir).expect("metadata");
        assert_eq!(metadata.embedder_model_id, "keyword-test");
        assert_eq!(metadata.dropped_heldout_overlaps, 1);
        assert_eq!(metadata.training_set.sha256, sha256_hex(TRAIN.as_bytes()));
        assert_eq!(metadata.training_set.file, "train.jsonl");
        assert_eq!(metadata.heldout, heldout);

        let classifier = load(&model_dir, embedder.clone()).expect("load");
        let reading = classifier
            .classify("返事がない、ふざけるな")
            .expect("classify");
        assert_eq!(reading.label, SentimentLabel::Anger);
    }

    #[test]
    fn training_from_files_twice_writes_identical_files() {
        let embedder = KeywordEmbedder::new("keyword-test");
        let (first, _, _) = trained_dir(&embedder);
        let (second, _, _) = trained_dir(&embedder);
        for file in [HEAD_WEIGHTS_FILE, HEAD_METADATA_FILE] {
            let a = std::fs::read(first.path().join("model").join(file)).expect("first");
            let b = std::fs::read(second.path().join("model").join(file)).expect("second");
            assert_eq!(a, b, "{file} differs between two training runs");
        }
    }

    #[test]
    fn load_refuses_another_embedder_or_tampered_weights() {
        let embedder = KeywordEmbedder::new("keyword-test");
        let (dir, _, _) = trained_dir(&embedder);
        let model_dir = dir.path().join("model");

        let other = Arc::new(KeywordEmbedder::new("another-model"));
        let error = load(&model_dir, other).expect_err("other model id");
        assert!(matches!(error, Error::EmbedderMismatch { .. }), "{error}");
        assert!(error.to_string().contains("another-model"), "{error}");

        let weights_path = model_dir.join(HEAD_WEIGHTS_FILE);
        let mut weights = std::fs::read(&weights_path).expect("read");
        let last = weights.len() - 1;
        weights[last] ^= 0x40;
        std::fs::write(&weights_path, weights).expect("write");
        let error = load(&model_dir, Arc::new(KeywordEmbedder::new("keyword-test")))
            .expect_err("tampered weights");
        assert!(matches!(error, Error::BadHead { .. }), "{error}");
    }

    #[test]
    fn scores_one_line_per_message() {
        let embedder = Arc::new(KeywordEmbedder::new("keyword-test"));
        let classifier =
            SentimentClassifier::new(embedder, crate::classifier::tests::identity_head())
                .expect("classifier");
        let input = "返事がない、最悪の対応です\r\n\n不安で心配です\nありがとうございました";
        let mut output = Vec::new();
        let lines = score_lines(input.as_bytes(), &mut output, &classifier).expect("score");
        assert_eq!(lines, 4);
        let output = String::from_utf8(output).expect("utf-8");
        let rows: Vec<(&str, f32)> = output
            .lines()
            .map(|line| {
                let (label, score) = line.split_once('\t').expect("tab");
                assert_eq!(score.len(), 5, "three decimals: {line}");
                (label, score.parse().expect("score"))
            })
            .collect();
        let labels: Vec<&str> = rows.iter().map(|(l, _)| *l).collect();
        assert_eq!(labels, ["anger", "neutral", "anxious", "positive"]);
        assert_eq!(rows[1].1, 1.0);
        assert!(
            rows.iter().all(|(_, s)| (0.25..=1.0).contains(s)),
            "{output}"
        );
    }
}
