//! The committed head (`sentiment/model/`) with the real e5 embedder.
//!
//! Needs `models/e5-small-q4.bin` (run `scripts/setup-embedder`); with
//! `KIZUNA_SKIP_MODEL_TESTS=1` these tests print "skipped" instead of failing.
//! `cargo test --release -p kizuna-sentiment --test committed_head -- --ignored` also
//! retrains from scratch and checks the committed weights are reproduced bit for bit.

mod common;

use std::sync::Arc;

use kizuna_agent::sentiment::{SentimentLabel, SentimentModel};
use kizuna_knowledge::Embedder;
use kizuna_sentiment::data::read_labelled_jsonl;
use kizuna_sentiment::eval::evaluate;
use kizuna_sentiment::{
    load, read_metadata, train_from_files, EmbeddedExample, SentimentClassifier,
    DEFAULT_HELDOUT_PATH, DEFAULT_MODEL_DIR, DEFAULT_TRAIN_PATH, HEAD_METADATA_FILE,
    HEAD_WEIGHTS_FILE,
};
use sha2::{Digest, Sha256};

/// Held-out accuracy and macro-F1 measured when the committed head was trained (0.947 and
/// 0.947), less 0.05 of slack for other CPUs' floating-point differences.
const HELDOUT_ACCURACY_FLOOR: f64 = 0.947 - 0.05;
const HELDOUT_MACRO_F1_FLOOR: f64 = 0.947 - 0.05;

fn classifier(test: &str) -> Option<SentimentClassifier> {
    let e5 = common::e5(test)?;
    Some(load(&common::root().join(DEFAULT_MODEL_DIR), e5).expect("load the committed head"))
}

#[test]
fn committed_head_scores_above_the_floor_on_the_heldout_set() {
    let Some(classifier) = classifier("committed_head_scores_above_the_floor_on_the_heldout_set")
    else {
        return;
    };
    let heldout = read_labelled_jsonl(&common::root().join(DEFAULT_HELDOUT_PATH)).expect("heldout");
    let texts: Vec<&str> = heldout.iter().map(|m| m.text.as_str()).collect();
    let embeddings = classifier
        .embedder()
        .embed_queries(&texts)
        .expect("embed the held-out set");
    let examples: Vec<EmbeddedExample> = embeddings
        .into_iter()
        .zip(&heldout)
        .map(|(embedding, m)| EmbeddedExample {
            embedding,
            label: m.label,
        })
        .collect();
    let report = evaluate(classifier.head(), &examples).expect("evaluate");
    println!("{report}");
    assert_eq!(report.examples, 456);
    assert!(
        report.accuracy >= HELDOUT_ACCURACY_FLOOR,
        "held-out accuracy {:.3} fell below {HELDOUT_ACCURACY_FLOOR:.3}\n{report}",
        report.accuracy
    );
    assert!(
        report.macro_f1 >= HELDOUT_MACRO_F1_FLOOR,
        "held-out macro-F1 {:.3} fell below {HELDOUT_MACRO_F1_FLOOR:.3}\n{report}",
        report.macro_f1
    );
    for scores in &report.per_class {
        assert!(
            scores.f1 >= 0.85,
            "{:?} F1 {:.3}\n{report}",
            scores.label,
            scores.f1
        );
    }
}

#[test]
fn committed_metadata_describes_the_committed_data_and_weights() {
    let dir = common::root().join(DEFAULT_MODEL_DIR);
    let metadata = read_metadata(&dir).expect("head.json");
    let sha256 = |path: std::path::PathBuf| -> String {
        let bytes = std::fs::read(&path).expect("read");
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    assert_eq!(
        metadata.training_set.sha256,
        sha256(common::root().join(DEFAULT_TRAIN_PATH)),
        "train.jsonl changed since the head was trained: run `kizuna train-sentiment`"
    );
    assert_eq!(
        metadata.heldout_set.sha256,
        sha256(common::root().join(DEFAULT_HELDOUT_PATH))
    );
    assert_eq!(metadata.weights_sha256, sha256(dir.join(HEAD_WEIGHTS_FILE)));
    assert_eq!(metadata.embedder_model_id, "multilingual-e5-small-q4");
    assert_eq!(metadata.dropped_heldout_overlaps, 4);
    let train_lines = std::fs::read_to_string(common::root().join(DEFAULT_TRAIN_PATH))
        .expect("read train.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    assert_eq!(metadata.training_examples, train_lines - 4);
    assert!(metadata.heldout.accuracy >= HELDOUT_ACCURACY_FLOOR);
}

/// Descriptions of the noise itself, however strongly worded, are not anger at us.
const NOISE_DESCRIPTIONS: &[&str] = &[
    "上の階の足音がうるさくて眠れない",
    "隣の犬が夜中に吠え続けていて最悪です",
    "隣の部屋のテレビの音が深夜まで響いてきて、本当に迷惑しています",
    "上の階の子どもが毎晩走り回っていて、もう限界です",
    "工事の騒音がひどくて、在宅勤務に集中できません",
    "隣人の話し声が壁越しに聞こえてきて、イライラします",
];

/// Complaints about our service.
const ANGER_AT_US: &[&str] = &[
    "何度連絡しても返事がない、どうなってるんですか",
    "レポートが届くと言われた日から一週間経っています。いい加減にしてください",
    "説明と全然違うじゃないですか。返金してください",
];

#[test]
fn noise_descriptions_are_not_anger_but_complaints_about_us_are() {
    let Some(classifier) =
        classifier("noise_descriptions_are_not_anger_but_complaints_about_us_are")
    else {
        return;
    };
    for text in NOISE_DESCRIPTIONS {
        let reading = classifier.classify(text).expect("classify");
        println!("{text} → {} {:.3}", reading.label.as_str(), reading.score);
        assert_ne!(reading.label, SentimentLabel::Anger, "{text}: {reading:?}");
    }
    for text in ANGER_AT_US {
        let reading = classifier.classify(text).expect("classify");
        println!("{text} → {} {:.3}", reading.label.as_str(), reading.score);
        assert_eq!(reading.label, SentimentLabel::Anger, "{text}: {reading:?}");
    }
    let reading = classifier
        .classify("丁寧に対応していただいて、本当に助かりました。ありがとうございました")
        .expect("classify");
    assert_eq!(reading.label, SentimentLabel::Positive, "{reading:?}");
    let reading = classifier
        .classify("相手に測定していることが知られたらと思うと怖くて眠れません")
        .expect("classify");
    assert_eq!(reading.label, SentimentLabel::Anxious, "{reading:?}");
}

#[test]
fn the_retrieval_embedding_gives_the_same_reading_as_classify() {
    let Some(classifier) = classifier("the_retrieval_embedding_gives_the_same_reading_as_classify")
    else {
        return;
    };
    let text = "何度連絡しても返事がない、どうなってるんですか";
    let embedding = classifier
        .embedder()
        .embed_queries(&[text])
        .expect("embed")
        .remove(0);
    let from_embedding = classifier
        .classify_with_embedding(&embedding)
        .expect("classify embedding");
    assert_eq!(classifier.classify(text).expect("classify"), from_embedding);
    let total: f32 = from_embedding.probabilities.iter().sum();
    assert!((total - 1.0).abs() < 1e-5, "{from_embedding:?}");
}

#[test]
#[ignore = "slow: embeds all 2,823 messages and retrains (about a minute)"]
fn retraining_reproduces_the_committed_head() {
    let Some(e5) = common::e5("retraining_reproduces_the_committed_head") else {
        return;
    };
    let out = tempfile::tempdir().expect("tempdir");
    let embedder: Arc<dyn Embedder> = e5;
    train_from_files(
        &common::root().join(DEFAULT_TRAIN_PATH),
        &common::root().join(DEFAULT_HELDOUT_PATH),
        out.path(),
        embedder.as_ref(),
    )
    .expect("train");
    let committed = common::root().join(DEFAULT_MODEL_DIR);
    let retrained = read_metadata(out.path()).expect("retrained metadata");
    let original = read_metadata(&committed).expect("committed metadata");
    assert_eq!(
        retrained.training_embeddings_sha256, original.training_embeddings_sha256,
        "the e5 embedder now gives other training embeddings than the committed head was \
         trained on (its numerics changed): retrain and commit with `kizuna train-sentiment`"
    );
    for file in [HEAD_WEIGHTS_FILE, HEAD_METADATA_FILE] {
        assert!(
            std::fs::read(out.path().join(file)).expect("retrained")
                == std::fs::read(committed.join(file)).expect("committed"),
            "{file} differs from the committed one"
        );
    }
}
