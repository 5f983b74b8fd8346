//! File-level operations: train from the labelled files and write the head, load it back.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::{drop_heldout_overlaps, parse_labelled_jsonl, LabelledMessage};
use crate::embed::{embed_examples, QueryEmbedder};
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalReport};
use crate::head::{ClassifierHead, HeadArchitecture};
use crate::train::{train, CandidateScore, EmbeddedExample, TrainConfig, TrainReport};

/// The head's weights inside the model directory.
pub const HEAD_WEIGHTS_FILE: &str = "head.safetensors";
/// The head's metadata (embedder, training settings, data hashes, held-out scores).
pub const HEAD_METADATA_FILE: &str = "head.json";

/// Which model a head is: what its files say it is and what its labels are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadKind {
    /// `head.json`'s `format`, e.g. `kizuna-sentiment-head/1`; a head of another format is
    /// refused on load.
    pub format: String,
    /// The label names in output order (at least two).
    pub labels: Vec<String>,
    /// The labelled files' field holding the label, e.g. `label` or `intent`.
    pub label_field: String,
    /// What the head is called in logs, e.g. `sentiment head`.
    pub name: String,
    /// The command that retrains the head, named in errors, e.g. `kizuna train-sentiment`.
    pub retrain_command: String,
}

/// A labelled file as training saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFileSummary {
    /// File name (without directories, so the metadata does not depend on where it ran).
    pub file: String,
    pub sha256: String,
    pub lines: usize,
}

/// `head.json`: everything needed to check and reproduce a head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadMetadata {
    /// [`HeadKind::format`].
    pub format: String,
    /// [`QueryEmbedder::model_id`] of the embeddings the head was trained on.
    pub embedder_model_id: String,
    pub embedding_dim: usize,
    /// Always `query`: the head reads query embeddings.
    pub text_kind: String,
    /// Output order of the head.
    pub labels: Vec<String>,
    pub architecture: HeadArchitecture,
    pub parameters: usize,
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Per label, in label order.
    pub class_weights: Vec<f32>,
    pub training_set: DataFileSummary,
    /// SHA-256 of the training embeddings (f32, little-endian, in training order): if a
    /// retrain gives other weights, this tells whether the embedder's numerics changed.
    pub training_embeddings_sha256: String,
    pub dropped_heldout_overlaps: usize,
    pub training_examples: usize,
    /// Per label, in label order.
    pub class_counts: Vec<usize>,
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

/// Lower-case hex SHA-256 of `bytes`, as `head.json` records it.
pub fn sha256_hex(bytes: &[u8]) -> String {
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

/// Reads a labelled JSONL file with `kind`'s label field and labels, and summarises it
/// (file name, SHA-256 of its bytes, messages read).
pub fn read_labelled_file(
    path: &Path,
    kind: &HeadKind,
) -> Result<(Vec<LabelledMessage>, DataFileSummary)> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let content = String::from_utf8(bytes).map_err(|e| Error::BadData {
        path: path.display().to_string(),
        line: 0,
        reason: format!("not UTF-8: {e}"),
    })?;
    let messages = parse_labelled_jsonl(
        &content,
        &path.display().to_string(),
        &kind.label_field,
        &kind.labels,
    )?;
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

/// Reads the labelled files, drops training messages that also occur in the held-out set,
/// embeds both as queries, trains (choosing the head by cross-validation on the training
/// data only), scores the held-out set and writes `head.safetensors` and `head.json` into
/// `out_dir`. Progress goes to stderr.
pub fn train_from_files(
    kind: &HeadKind,
    train_path: &Path,
    heldout_path: &Path,
    out_dir: &Path,
    embedder: &dyn QueryEmbedder,
    config: &TrainConfig,
) -> Result<(TrainReport, EvalReport)> {
    let (train_messages, training_set) = read_labelled_file(train_path, kind)?;
    let (heldout_messages, heldout_set) = read_labelled_file(heldout_path, kind)?;
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
    let (trained, mut report) = train(&train_examples, &kind.labels, config)?;
    report.training_lines = training_set.lines;
    report.dropped_overlaps = dropped.into_iter().map(|m| m.text).collect();
    eprintln!("trained in {:.1} s", started.elapsed().as_secs_f64());

    let heldout = evaluate(&trained.head, &kind.labels, &heldout_examples)?;

    let weights = trained.head.to_safetensors_bytes()?;
    let metadata = HeadMetadata {
        format: kind.format.clone(),
        embedder_model_id: embedder.model_id().to_string(),
        embedding_dim: embedder.dim(),
        text_kind: "query".into(),
        labels: kind.labels.clone(),
        architecture: trained.head.architecture(),
        parameters: trained.head.parameter_count(),
        seed: trained.seed,
        epochs: trained.spec.epochs,
        batch_size: trained.batch_size,
        learning_rate: trained.spec.learning_rate,
        weight_decay: trained.spec.weight_decay,
        class_weights: report.class_weights.clone(),
        training_set,
        training_embeddings_sha256: embeddings_sha256(&train_examples),
        dropped_heldout_overlaps: report.dropped_overlaps.len(),
        training_examples: report.examples_used,
        class_counts: report.class_counts.clone(),
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
        "wrote {}",
        kind.name
    );
    Ok((report, heldout))
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes).map_err(Error::io(&temporary))?;
    std::fs::rename(&temporary, path).map_err(Error::io(path))
}

/// Reads `head.json` in `model_dir` and checks it is a `kind` head: its format and labels.
pub fn read_metadata(kind: &HeadKind, model_dir: &Path) -> Result<HeadMetadata> {
    let path = model_dir.join(HEAD_METADATA_FILE);
    let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
    let metadata: HeadMetadata = serde_json::from_str(&text).map_err(|e| Error::BadHead {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    if metadata.format != kind.format {
        return Err(Error::BadHead {
            path: path.display().to_string(),
            reason: format!(
                "format {:?}, this build reads {:?}",
                metadata.format, kind.format
            ),
        });
    }
    if metadata.labels != kind.labels {
        return Err(Error::BadHead {
            path: path.display().to_string(),
            reason: format!("label order {:?} is not {:?}", metadata.labels, kind.labels),
        });
    }
    Ok(metadata)
}

/// Loads the `kind` head in `model_dir` for `embedder`. Refuses a head trained on another
/// embedding model (or whose weights do not match its `head.json`, or whose output count is
/// not the number of labels).
pub fn load(
    kind: &HeadKind,
    model_dir: &Path,
    embedder: &dyn QueryEmbedder,
) -> Result<(ClassifierHead, HeadMetadata)> {
    let metadata = read_metadata(kind, model_dir)?;
    if metadata.embedder_model_id != embedder.model_id() || metadata.embedding_dim != embedder.dim()
    {
        return Err(Error::EmbedderMismatch {
            dir: model_dir.display().to_string(),
            trained: format!(
                "{} ({} dimensions)",
                metadata.embedder_model_id, metadata.embedding_dim
            ),
            actual: format!("{} ({} dimensions)", embedder.model_id(), embedder.dim()),
            retrain_command: kind.retrain_command.clone(),
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
            "its SHA-256 does not match {HEAD_METADATA_FILE}; retrain with `{}`",
            kind.retrain_command
        )));
    }
    let head =
        ClassifierHead::from_safetensors_bytes(&weights, &weights_path.display().to_string())?;
    if head.architecture() != metadata.architecture {
        return Err(bad(format!(
            "weights are a {}, {HEAD_METADATA_FILE} says {}",
            head.architecture(),
            metadata.architecture
        )));
    }
    if head.label_count() != metadata.labels.len() {
        return Err(bad(format!(
            "weights have {} outputs, {HEAD_METADATA_FILE} lists {} labels",
            head.label_count(),
            metadata.labels.len()
        )));
    }
    tracing::info!(
        dir = %model_dir.display(),
        architecture = %head.architecture(),
        heldout_accuracy = metadata.heldout.accuracy,
        "loaded {}",
        kind.name
    );
    Ok((head, metadata))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::error::BoxError;
    use crate::train::HeadSpec;

    /// Test double: a 6-d "embedding" with one axis per keyword group, counting the texts it
    /// saw.
    pub(crate) struct KeywordEmbedder {
        pub model_id: String,
        pub seen: Mutex<Vec<String>>,
    }

    const GROUPS: [&[&str]; 6] = [
        &["返事がない", "ふざけるな", "最悪の対応"],
        &["不安", "心配", "怖い"],
        &["足音", "測定", "教えて"],
        &["ありがとう", "助かりました", "嬉しい"],
        &["解約", "やめたい", "退会"],
        &["請求", "料金", "支払い"],
    ];

    impl KeywordEmbedder {
        pub(crate) fn new(model_id: &str) -> Self {
            Self {
                model_id: model_id.into(),
                seen: Mutex::new(Vec::new()),
            }
        }

        fn vector(text: &str) -> Vec<f32> {
            let mut vector: Vec<f32> = GROUPS
                .iter()
                .map(|words| words.iter().filter(|w| text.contains(*w)).count() as f32)
                .collect();
            vector[2] += 0.1; // so a text with no keyword is not the zero vector
            let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
            vector.iter().map(|v| v / norm).collect()
        }
    }

    impl QueryEmbedder for KeywordEmbedder {
        fn model_id(&self) -> &str {
            &self.model_id
        }
        fn dim(&self) -> usize {
            GROUPS.len()
        }
        fn embed_queries(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BoxError> {
            if let Ok(mut seen) = self.seen.lock() {
                seen.extend(texts.iter().map(|t| t.to_string()));
            }
            Ok(texts.iter().map(|t| Self::vector(t)).collect())
        }
    }

    /// Six intents with the label in an `intent` field.
    fn kind() -> HeadKind {
        HeadKind {
            format: "kizuna-test-head/1".into(),
            labels: [
                "complaint",
                "worry",
                "question",
                "thanks",
                "cancel",
                "billing",
            ]
            .map(String::from)
            .to_vec(),
            label_field: "intent".into(),
            name: "test head".into(),
            retrain_command: "kizuna train-test".into(),
        }
    }

    const TRAIN: &str = r#"{"text": "何度も連絡しているのに返事がない", "intent": "complaint"}
{"text": "ふざけるな、最悪の対応だ", "intent": "complaint"}
{"text": "最悪の対応で返事がない", "intent": "complaint"}
{"text": "返事がないのはどういうことですか", "intent": "complaint"}
{"text": "不安で眠れません", "intent": "worry"}
{"text": "相手に知られたら怖いです、心配です", "intent": "worry"}
{"text": "心配でたまりません", "intent": "worry"}
{"text": "怖い、不安です", "intent": "worry"}
{"text": "測定の流れを教えてください", "intent": "question"}
{"text": "上の階の足音がうるさいです", "intent": "question"}
{"text": "測定期間を教えて", "intent": "question"}
{"text": "レポートの再発行はできますか", "intent": "question"}
{"text": "ありがとうございました", "intent": "thanks"}
{"text": "本当に助かりました、嬉しいです", "intent": "thanks"}
{"text": "嬉しい知らせをありがとう", "intent": "thanks"}
{"text": "助かりました", "intent": "thanks"}
{"text": "解約したいです", "intent": "cancel"}
{"text": "もうやめたい、退会します", "intent": "cancel"}
{"text": "退会の手続きは", "intent": "cancel"}
{"text": "解約をお願いします", "intent": "cancel"}
{"text": "請求が二重です", "intent": "billing"}
{"text": "料金の支払い方法は", "intent": "billing"}
{"text": "支払いが済んでいません", "intent": "billing"}
{"text": "請求書の料金を確認したい", "intent": "billing"}
"#;

    const HELDOUT: &str = r#"{"text": "レポートの再発行はできますか？", "intent": "question"}
{"text": "返事がないです、最悪の対応", "intent": "complaint"}
{"text": "心配で怖いです", "intent": "worry"}
{"text": "ありがとうございます、助かりました", "intent": "thanks"}
{"text": "解約して退会したい", "intent": "cancel"}
{"text": "今月の請求の料金", "intent": "billing"}
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
                    architecture: HeadArchitecture::Mlp { hidden: 8 },
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
        let (report, heldout) = train_from_files(
            &kind(),
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
    fn trains_a_six_label_head_from_files_and_loads_it() {
        let embedder = KeywordEmbedder::new("keyword-test");
        let (dir, report, heldout) = trained_dir(&embedder);
        assert_eq!(report.training_lines, 24);
        assert_eq!(
            report.dropped_overlaps,
            vec!["レポートの再発行はできますか"]
        );
        assert_eq!(report.examples_used, 23);
        assert_eq!(report.class_counts, [4, 4, 3, 4, 4, 4]);
        assert_eq!(report.candidates.len(), 2);
        assert_eq!(heldout.examples, 6);
        assert_eq!(heldout.per_class.len(), 6);
        assert_eq!(heldout.accuracy, 1.0, "{heldout}");
        // Both sets were embedded.
        assert_eq!(embedder.seen.lock().expect("lock").len(), 23 + 6);

        let model_dir = dir.path().join("model");
        let metadata = read_metadata(&kind(), &model_dir).expect("metadata");
        assert_eq!(metadata.format, "kizuna-test-head/1");
        assert_eq!(metadata.labels, kind().labels);
        assert_eq!(metadata.embedder_model_id, "keyword-test");
        assert_eq!(metadata.embedding_dim, 6);
        assert_eq!(metadata.dropped_heldout_overlaps, 1);
        assert_eq!(metadata.class_weights.len(), 6);
        assert_eq!(metadata.training_set.sha256, sha256_hex(TRAIN.as_bytes()));
        assert_eq!(metadata.training_set.file, "train.jsonl");
        assert_eq!(metadata.heldout, heldout);

        let (head, loaded) = load(&kind(), &model_dir, &embedder).expect("load");
        assert_eq!(loaded, metadata);
        assert_eq!(head.label_count(), 6);
        let prediction = head
            .classify_embedding(&KeywordEmbedder::vector("料金の請求について"))
            .expect("classify");
        assert_eq!(kind().labels[prediction.label], "billing");
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
    fn load_refuses_another_embedder_kind_or_tampered_weights() {
        let embedder = KeywordEmbedder::new("keyword-test");
        let (dir, _, _) = trained_dir(&embedder);
        let model_dir = dir.path().join("model");

        let other = KeywordEmbedder::new("another-model");
        let error = load(&kind(), &model_dir, &other).expect_err("other model id");
        assert!(matches!(error, Error::EmbedderMismatch { .. }), "{error}");
        assert!(error.to_string().contains("another-model"), "{error}");
        assert!(error.to_string().contains("kizuna train-test"), "{error}");

        let other_format = HeadKind {
            format: "kizuna-other-head/1".into(),
            ..kind()
        };
        let error = load(&other_format, &model_dir, &embedder).expect_err("other format");
        assert!(matches!(error, Error::BadHead { .. }), "{error}");
        let mut reordered = kind();
        reordered.labels.swap(0, 1);
        let error = read_metadata(&reordered, &model_dir).expect_err("other label order");
        assert!(error.to_string().contains("label order"), "{error}");

        let weights_path = model_dir.join(HEAD_WEIGHTS_FILE);
        let mut weights = std::fs::read(&weights_path).expect("read");
        let last = weights.len() - 1;
        weights[last] ^= 0x40;
        std::fs::write(&weights_path, weights).expect("write");
        let error = load(&kind(), &model_dir, &embedder).expect_err("tampered weights");
        assert!(matches!(error, Error::BadHead { .. }), "{error}");
        assert!(error.to_string().contains("kizuna train-test"), "{error}");
    }

    #[test]
    fn an_unknown_label_names_the_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let train_path = dir.path().join("train.jsonl");
        let heldout_path = dir.path().join("heldout.jsonl");
        std::fs::write(
            &train_path,
            format!("{TRAIN}{{\"text\": \"返金して\", \"intent\": \"refund\"}}\n"),
        )
        .expect("write train");
        std::fs::write(&heldout_path, HELDOUT).expect("write heldout");
        let error = train_from_files(
            &kind(),
            &train_path,
            &heldout_path,
            &dir.path().join("model"),
            &KeywordEmbedder::new("keyword-test"),
            &small_config(),
        )
        .expect_err("unknown intent");
        assert!(matches!(error, Error::BadData { line: 25, .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains("train.jsonl, line 25"), "{message}");
        assert!(message.contains("unknown intent \"refund\""), "{message}");
        assert!(!dir.path().join("model").exists());
    }
}
