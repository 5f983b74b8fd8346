//! File-level operations behind the `kizuna` subcommands: train from the labelled files and
//! write the head, load it back, score messages line by line. The work is kizuna-head's; this
//! module supplies the sentiment model's settings (format, labels, paths, training
//! configuration) and the e5 embedder.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use kizuna_agent::sentiment::SentimentModel;
use kizuna_head::{
    EvalReport, HeadArchitecture, HeadKind, HeadMetadata, HeadSpec, TrainConfig, TrainReport,
};
use kizuna_knowledge::embed::KnowledgeEmbedder;
use kizuna_knowledge::Embedder;

use crate::classifier::SentimentClassifier;
use crate::data::LABEL_FIELD;
use crate::error::{Error, Result};
use crate::labels::label_names;

/// Where the committed head lives, relative to the repository root.
pub const DEFAULT_MODEL_DIR: &str = "sentiment/model";
/// The labelled training set, relative to the repository root.
pub const DEFAULT_TRAIN_PATH: &str = "sentiment/data/train.jsonl";
/// The held-out evaluation set, relative to the repository root.
pub const DEFAULT_HELDOUT_PATH: &str = "sentiment/data/heldout.jsonl";

/// `head.json`'s `format` for the sentiment head.
pub const METADATA_FORMAT: &str = "kizuna-sentiment-head/1";

/// The sentiment head as kizuna-head sees it: its format, its four labels (read from the
/// files' `label` field) and its names in logs and errors.
pub fn head_kind() -> HeadKind {
    HeadKind {
        format: METADATA_FORMAT.into(),
        labels: label_names(),
        label_field: LABEL_FIELD.into(),
        name: "sentiment head".into(),
        retrain_command: "kizuna train-sentiment".into(),
    }
}

/// The configuration of the committed head. The candidates' epoch counts and learning rates
/// were settled by the same cross-validation on the training set (softmax regression peaks
/// near 0.895 macro-F1, the MLPs near 0.903), never by the held-out scores.
pub fn default_train_config() -> TrainConfig {
    let adam = |architecture, epochs, learning_rate, weight_decay| HeadSpec {
        architecture,
        epochs,
        learning_rate,
        weight_decay,
    };
    TrainConfig {
        seed: 20_240_601,
        batch_size: 32,
        folds: 5,
        candidates: vec![
            adam(HeadArchitecture::SoftmaxRegression, 40, 3e-4, 0.05),
            adam(HeadArchitecture::Mlp { hidden: 64 }, 20, 1e-3, 0.05),
            adam(HeadArchitecture::Mlp { hidden: 128 }, 20, 1e-3, 0.05),
        ],
    }
}

/// Embeds `texts` as e5 queries in fixed chunks, printing progress to stderr under `what`.
pub fn embed_messages(
    embedder: &dyn Embedder,
    texts: &[&str],
    what: &str,
) -> Result<Vec<Vec<f32>>> {
    Ok(kizuna_head::embed_messages(
        &KnowledgeEmbedder(embedder),
        texts,
        what,
    )?)
}

/// [`train_from_files_with`] with [`default_train_config`] (what `kizuna train-sentiment`
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
        &default_train_config(),
    )
}

/// Reads the labelled files, drops training messages that also occur in the held-out set,
/// embeds both as e5 queries, trains (choosing the head by cross-validation on the training
/// data only), scores the held-out set and writes `head.safetensors` and `head.json` into
/// `out_dir`. Progress goes to stderr. (See [`kizuna_head::train_from_files`].)
pub fn train_from_files_with(
    train_path: &Path,
    heldout_path: &Path,
    out_dir: &Path,
    embedder: &dyn Embedder,
    config: &TrainConfig,
) -> Result<(TrainReport, EvalReport)> {
    Ok(kizuna_head::train_from_files(
        &head_kind(),
        train_path,
        heldout_path,
        out_dir,
        &KnowledgeEmbedder(embedder),
        config,
    )?)
}

/// Reads and checks `head.json` in `model_dir`.
pub fn read_metadata(model_dir: &Path) -> Result<HeadMetadata> {
    Ok(kizuna_head::read_metadata(&head_kind(), model_dir)?)
}

/// Loads the head in `model_dir` for `embedder`. Refuses a head trained on another
/// embedding model (or whose weights do not match its `head.json`).
pub fn load(model_dir: &Path, embedder: Arc<dyn Embedder>) -> Result<SentimentClassifier> {
    let (head, _) = kizuna_head::load(
        &head_kind(),
        model_dir,
        &KnowledgeEmbedder(embedder.as_ref()),
    )?;
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
    use kizuna_agent::sentiment::SentimentLabel;
    use kizuna_head::{sha256_hex, HEAD_METADATA_FILE, HEAD_WEIGHTS_FILE};

    use super::*;
    use crate::classifier::tests::KeywordEmbedder;

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
    fn load_refuses_another_embedder_or_tampered_weights() {
        let embedder = KeywordEmbedder::new("keyword-test");
        let (dir, _, _) = trained_dir(&embedder);
        let model_dir = dir.path().join("model");

        let other = Arc::new(KeywordEmbedder::new("another-model"));
        let error = load(&model_dir, other).expect_err("other model id");
        assert!(matches!(error, Error::EmbedderMismatch { .. }), "{error}");
        assert_eq!(
            error.to_string(),
            format!(
                "the sentiment head in {} was trained on keyword-test (4 dimensions) embeddings, \
                 but the embedder in use is another-model (4 dimensions); retrain it with \
                 `kizuna train-sentiment`",
                model_dir.display()
            )
        );

        let weights_path = model_dir.join(HEAD_WEIGHTS_FILE);
        let mut weights = std::fs::read(&weights_path).expect("read");
        let last = weights.len() - 1;
        weights[last] ^= 0x40;
        std::fs::write(&weights_path, weights).expect("write");
        let error = load(&model_dir, Arc::new(KeywordEmbedder::new("keyword-test")))
            .expect_err("tampered weights");
        assert!(matches!(error, Error::BadHead { .. }), "{error}");
        assert_eq!(
            error.to_string(),
            format!(
                "bad sentiment head {}: its SHA-256 does not match head.json; retrain with \
                 `kizuna train-sentiment`",
                weights_path.display()
            )
        );
    }

    #[test]
    fn an_unknown_label_names_the_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let train_path = dir.path().join("train.jsonl");
        let heldout_path = dir.path().join("heldout.jsonl");
        std::fs::write(
            &train_path,
            format!("{TRAIN}{{\"text\": \"激怒です\", \"label\": \"furious\"}}\n"),
        )
        .expect("write train");
        std::fs::write(&heldout_path, HELDOUT).expect("write heldout");
        let error = train_from_files_with(
            &train_path,
            &heldout_path,
            &dir.path().join("model"),
            &KeywordEmbedder::new("keyword-test"),
            &small_config(),
        )
        .expect_err("unknown label");
        assert!(matches!(error, Error::BadData { line: 17, .. }), "{error}");
        assert!(
            error.to_string().starts_with(&format!(
                "{}, line 17: unknown label \"furious\"",
                train_path.display()
            )),
            "{error}"
        );
    }

    #[test]
    fn embedder_failures_keep_their_type() {
        struct Failing;
        impl Embedder for Failing {
            fn model_id(&self) -> &str {
                "failing"
            }
            fn dim(&self) -> usize {
                4
            }
            fn embed_queries(
                &self,
                _texts: &[&str],
            ) -> Result<Vec<Vec<f32>>, kizuna_knowledge::EmbedError> {
                Err(kizuna_knowledge::EmbedError::Inference(
                    "out of memory".into(),
                ))
            }
            fn embed_passages(
                &self,
                texts: &[&str],
            ) -> Result<Vec<Vec<f32>>, kizuna_knowledge::EmbedError> {
                self.embed_queries(texts)
            }
        }
        let error = embed_messages(&Failing, &["a"], "test").expect_err("failing embedder");
        assert!(
            matches!(
                &error,
                Error::Embed(kizuna_knowledge::EmbedError::Inference(reason)) if reason == "out of memory"
            ),
            "{error:?}"
        );
    }

    /// `kizuna train-sentiment` (the default configuration) is what trained the committed
    /// head, and the committed `head.json` reads and writes back byte for byte with this
    /// build's metadata type (field names, order and types unchanged).
    #[test]
    fn the_committed_head_json_matches_this_build() {
        let model_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("model");
        let metadata = read_metadata(&model_dir).expect("committed head.json");
        let config = default_train_config();
        assert_eq!(metadata.seed, config.seed);
        assert_eq!(metadata.batch_size, config.batch_size);
        assert_eq!(metadata.folds, config.folds);
        let specs: Vec<HeadSpec> = metadata.validation.iter().map(|c| c.spec).collect();
        assert_eq!(specs, config.candidates);
        assert_eq!(metadata.labels, label_names());
        assert_eq!(metadata.format, METADATA_FORMAT);

        let text = std::fs::read_to_string(model_dir.join(HEAD_METADATA_FILE)).expect("read");
        let mut written = serde_json::to_string_pretty(&metadata).expect("serialise");
        written.push('\n');
        assert!(written == text, "head.json does not round-trip:\n{written}");

        // The committed weights load as a four-label head with the recorded shape.
        let weights = std::fs::read(model_dir.join(HEAD_WEIGHTS_FILE)).expect("weights");
        assert_eq!(sha256_hex(&weights), metadata.weights_sha256);
        let head = kizuna_head::ClassifierHead::from_safetensors_bytes(&weights, "committed")
            .expect("committed weights");
        assert_eq!(head.label_count(), 4);
        assert_eq!(head.architecture(), metadata.architecture);
        assert_eq!(head.parameter_count(), metadata.parameters);
        assert_eq!(head.input_dim(), metadata.embedding_dim);
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
