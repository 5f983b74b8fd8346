//! Training from the labelled files twice gives bit-identical weights, with the real e5
//! embedder, on a small subset of the data so the test stays fast.
//!
//! Needs `models/e5-small-q4.bin` (run `scripts/setup-embedder`); with
//! `KIZUNA_SKIP_MODEL_TESTS=1` it prints "skipped" instead of failing.

mod common;

use kizuna_sentiment::{
    read_metadata, train_from_files_with, HeadArchitecture, HeadSpec, TrainConfig,
    DEFAULT_HELDOUT_PATH, DEFAULT_TRAIN_PATH, HEAD_METADATA_FILE, HEAD_WEIGHTS_FILE,
};

/// The first `lines` lines of a repository file.
fn head_of(path: &str, lines: usize) -> String {
    let text = std::fs::read_to_string(common::root().join(path)).expect("read data");
    text.lines().take(lines).map(|l| format!("{l}\n")).collect()
}

#[test]
fn training_twice_on_a_subset_gives_bit_identical_weights() {
    let Some(e5) = common::e5("training_twice_on_a_subset_gives_bit_identical_weights") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let train_path = dir.path().join("train.jsonl");
    let heldout_path = dir.path().join("heldout.jsonl");
    std::fs::write(&train_path, head_of(DEFAULT_TRAIN_PATH, 160)).expect("write train");
    std::fs::write(&heldout_path, head_of(DEFAULT_HELDOUT_PATH, 40)).expect("write heldout");
    let spec = |architecture| HeadSpec {
        architecture,
        epochs: 8,
        learning_rate: 1e-3,
        weight_decay: 0.05,
    };
    let config = TrainConfig {
        folds: 3,
        candidates: vec![
            spec(HeadArchitecture::SoftmaxRegression),
            spec(HeadArchitecture::Mlp { hidden: 64 }),
        ],
        ..kizuna_sentiment::default_train_config()
    };

    let mut outputs = Vec::new();
    for run in ["first", "second"] {
        let out = dir.path().join(run);
        let (report, heldout) =
            train_from_files_with(&train_path, &heldout_path, &out, e5.as_ref(), &config)
                .expect("train");
        assert_eq!(report.examples_used + report.dropped_overlaps.len(), 160);
        assert_eq!(heldout.examples, 40);
        assert_eq!(
            read_metadata(&out).expect("metadata").training_examples,
            report.examples_used
        );
        outputs.push(out);
    }
    for file in [HEAD_WEIGHTS_FILE, HEAD_METADATA_FILE] {
        let first = std::fs::read(outputs[0].join(file)).expect("first run");
        let second = std::fs::read(outputs[1].join(file)).expect("second run");
        assert!(first == second, "{file} differs between two training runs");
    }

    // Another seed must change the weights, or the comparison above proves nothing.
    let reseeded = dir.path().join("reseeded");
    train_from_files_with(
        &train_path,
        &heldout_path,
        &reseeded,
        e5.as_ref(),
        &TrainConfig {
            seed: config.seed + 1,
            ..config.clone()
        },
    )
    .expect("train with another seed");
    assert!(
        std::fs::read(reseeded.join(HEAD_WEIGHTS_FILE)).expect("reseeded")
            != std::fs::read(outputs[0].join(HEAD_WEIGHTS_FILE)).expect("first"),
        "a different seed gave the same weights"
    );
}
