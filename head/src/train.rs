//! Deterministic training of the head with candle's autograd and AdamW.
//!
//! Everything random (initial weights, the cross-validation folds, the mini-batch order) comes
//! from a SplitMix64 generator seeded by [`TrainConfig::seed`], the epoch count is fixed and
//! the CPU kernels involved are deterministic, so the same examples and configuration give
//! bit-identical weights on the same machine.

use std::fmt;

use candle_core::{Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalReport};
use crate::head::{ClassifierHead, HeadArchitecture};

/// One training or evaluation example: a message's embedding and its label, an index into the
/// caller's label list.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedExample {
    pub embedding: Vec<f32>,
    pub label: usize,
}

/// One head to try: its shape and the optimiser settings that go with it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeadSpec {
    pub architecture: HeadArchitecture,
    pub epochs: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
}

impl fmt::Display for HeadSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, {} epochs, lr {}, weight decay {}",
            self.architecture, self.epochs, self.learning_rate, self.weight_decay
        )
    }
}

/// How to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub seed: u64,
    pub batch_size: usize,
    /// Cross-validation folds over the training examples (never the held-out file) to
    /// compare the candidates; below 2, the first candidate is trained without comparison.
    /// The chosen candidate is then retrained on all training examples.
    pub folds: usize,
    /// Heads to compare, simplest first (see [`TrainReport::selection_tolerance`]).
    ///
    /// There is no `Default`: the settings belong to the model (kizuna-sentiment spells out
    /// the ones its committed head was trained with), so that tuning one model's cannot
    /// silently change another's weights.
    pub candidates: Vec<HeadSpec>,
}

/// A candidate's cross-validated result (pooled over the folds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateScore {
    pub spec: HeadSpec,
    pub validation_accuracy: f64,
    pub validation_macro_f1: f64,
}

/// The head trained on all examples with the chosen candidate's settings.
#[derive(Debug, Clone)]
pub struct TrainedHead {
    pub head: ClassifierHead,
    pub spec: HeadSpec,
    pub seed: u64,
    pub batch_size: usize,
}

/// What training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// The label names, in index order.
    pub labels: Vec<String>,
    /// Labelled lines read (before the held-out overlap check).
    pub training_lines: usize,
    /// Training messages dropped because they also occur in the held-out set.
    pub dropped_overlaps: Vec<String>,
    /// Examples the final head was trained on.
    pub examples_used: usize,
    /// Of those, per label in label order.
    pub class_counts: Vec<usize>,
    /// Loss weight per label (`n / (labels present × count)`, 0 for an absent label),
    /// balancing the classes.
    pub class_weights: Vec<f32>,
    /// Cross-validation folds used to compare the candidates (0: no comparison).
    pub folds: usize,
    /// Examples scored in cross-validation (each once, by a head that did not see it).
    pub validation_examples: usize,
    pub candidates: Vec<CandidateScore>,
    /// How far below the best cross-validated macro-F1 a simpler candidate may be and still
    /// be chosen: one standard error of the best candidate's cross-validated accuracy.
    pub selection_tolerance: f64,
    pub chosen: HeadSpec,
    pub seed: u64,
    pub batch_size: usize,
    /// Mean weighted cross-entropy over the final epoch.
    pub final_loss: f32,
    /// Accuracy of the final head on its own training examples.
    pub training_accuracy: f64,
}

impl fmt::Display for TrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: Vec<String> = self
            .labels
            .iter()
            .zip(&self.class_counts)
            .map(|(label, count)| format!("{label} {count}"))
            .collect();
        writeln!(
            f,
            "{} labelled lines, {} dropped as held-out overlaps, {} used ({})",
            self.training_lines,
            self.dropped_overlaps.len(),
            self.examples_used,
            counts.join(", ")
        )?;
        for text in &self.dropped_overlaps {
            writeln!(f, "  dropped: {text}")?;
        }
        if !self.candidates.is_empty() {
            writeln!(
                f,
                "candidates, {}-fold cross-validated on {} training examples:",
                self.folds, self.validation_examples
            )?;
            for candidate in &self.candidates {
                writeln!(
                    f,
                    "  {:<60} accuracy {:.3}  macro-F1 {:.3}",
                    candidate.spec.to_string(),
                    candidate.validation_accuracy,
                    candidate.validation_macro_f1
                )?;
            }
            writeln!(
                f,
                "  (the simplest candidate within {:.3} (one standard error) of the best is chosen)",
                self.selection_tolerance
            )?;
        }
        writeln!(
            f,
            "chosen: {} (seed {}, batch {}); final loss {:.4}, training accuracy {:.3}",
            self.chosen, self.seed, self.batch_size, self.final_loss, self.training_accuracy
        )
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast and fully specified, so the stream is
/// the same everywhere.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 bits of precision.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [0, bound), bound > 0 (the modulo bias is below 2^-40 for our sizes).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

// Separate streams for the separate uses, so e.g. a different epoch count does not change
// the initial weights.
const FOLD_STREAM: u64 = 0x464F_4C44_0000_0000;
const INIT_STREAM: u64 = 0x494E_4954_0000_0000;
const ORDER_STREAM: u64 = 0x4F52_4445_5200_0000;

/// Compares the candidates by stratified k-fold cross-validation on `examples` (every
/// example is predicted once by a head not trained on it), then trains the chosen one on all
/// of them. With `folds` below 2 the first candidate is trained without comparison.
///
/// `labels` names the labels in index order (at least two); every example's label must be an
/// index into it. A label with no example still gets an output (never predicted in practice).
pub fn train(
    examples: &[EmbeddedExample],
    labels: &[impl AsRef<str>],
    config: &TrainConfig,
) -> Result<(TrainedHead, TrainReport)> {
    let labels: Vec<String> = labels.iter().map(|l| l.as_ref().to_string()).collect();
    let first = config
        .candidates
        .first()
        .ok_or_else(|| Error::Training("no candidate heads to train".into()))?;
    check_examples(examples, labels.len())?;
    let label_count = labels.len();

    let mut candidates = Vec::new();
    let mut validation_examples = 0;
    let mut chosen = *first;
    let mut selection_tolerance = 0.0;
    if config.folds >= 2 {
        if examples.len() < config.folds {
            return Err(Error::Training(format!(
                "{} examples cannot be split into {} folds",
                examples.len(),
                config.folds
            )));
        }
        let fold_of = stratified_folds(
            examples,
            label_count,
            config.folds,
            config.seed ^ FOLD_STREAM,
        );
        for spec in &config.candidates {
            let mut pairs = Vec::with_capacity(examples.len());
            for fold in 0..config.folds {
                let (held, fit): (Vec<_>, Vec<_>) = examples
                    .iter()
                    .zip(&fold_of)
                    .partition(|(_, f)| **f == fold);
                let fit: Vec<EmbeddedExample> = fit.into_iter().map(|(e, _)| e.clone()).collect();
                let held: Vec<EmbeddedExample> = held.into_iter().map(|(e, _)| e.clone()).collect();
                let fitted = fit_head(&fit, label_count, spec, config.seed, config.batch_size)?;
                let embeddings: Vec<Vec<f32>> = held.iter().map(|e| e.embedding.clone()).collect();
                let predictions = fitted.head.classify_embeddings(&embeddings)?;
                pairs.extend(
                    held.iter()
                        .zip(predictions)
                        .map(|(e, p)| (e.label, p.label)),
                );
            }
            let scores = EvalReport::from_pairs(&labels, pairs);
            tracing::info!(
                candidate = %spec,
                accuracy = scores.accuracy,
                macro_f1 = scores.macro_f1,
                "classifier head candidate, cross-validated"
            );
            candidates.push(CandidateScore {
                spec: *spec,
                validation_accuracy: scores.accuracy,
                validation_macro_f1: scores.macro_f1,
            });
        }
        validation_examples = examples.len();
        let (index, tolerance) = choose_candidate(&candidates, validation_examples);
        chosen = candidates[index].spec;
        selection_tolerance = tolerance;
    }

    let fitted = fit_head(
        examples,
        label_count,
        &chosen,
        config.seed,
        config.batch_size,
    )?;
    let training_scores: EvalReport = evaluate(&fitted.head, &labels, examples)?;
    let report = TrainReport {
        labels,
        training_lines: examples.len(),
        dropped_overlaps: Vec::new(),
        examples_used: examples.len(),
        class_counts: fitted.class_counts,
        class_weights: fitted.class_weights,
        folds: if config.folds >= 2 { config.folds } else { 0 },
        validation_examples,
        candidates,
        selection_tolerance,
        chosen,
        seed: config.seed,
        batch_size: config.batch_size,
        final_loss: fitted.final_loss,
        training_accuracy: training_scores.accuracy,
    };
    let trained = TrainedHead {
        head: fitted.head,
        spec: chosen,
        seed: config.seed,
        batch_size: config.batch_size,
    };
    Ok((trained, report))
}

/// The one-standard-error rule: differences smaller than the validation estimate's sampling
/// error are noise, so take the first (simplest) candidate whose macro-F1 is within one
/// standard error of the best. Returns the chosen index and that tolerance.
fn choose_candidate(candidates: &[CandidateScore], validation_examples: usize) -> (usize, f64) {
    let Some(best) = candidates
        .iter()
        .max_by(|a, b| a.validation_macro_f1.total_cmp(&b.validation_macro_f1))
    else {
        return (0, 0.0);
    };
    let accuracy = best.validation_accuracy;
    let tolerance = (accuracy * (1.0 - accuracy) / validation_examples.max(1) as f64).sqrt();
    let index = candidates
        .iter()
        .position(|c| c.validation_macro_f1 >= best.validation_macro_f1 - tolerance)
        .unwrap_or(0);
    (index, tolerance)
}

fn check_examples(examples: &[EmbeddedExample], label_count: usize) -> Result<()> {
    if label_count < 2 {
        return Err(Error::Training(format!(
            "{label_count} labels: a classifier needs at least two"
        )));
    }
    let dim = examples
        .first()
        .ok_or_else(|| Error::Training("no training examples".into()))?
        .embedding
        .len();
    if dim == 0 {
        return Err(Error::Training("empty embeddings".into()));
    }
    for (index, example) in examples.iter().enumerate() {
        if example.embedding.len() != dim {
            return Err(Error::Training(format!(
                "example {index} has {} dimensions, the first has {dim}",
                example.embedding.len()
            )));
        }
        if example.embedding.iter().any(|v| !v.is_finite()) {
            return Err(Error::Training(format!(
                "example {index} has a non-finite value"
            )));
        }
        if example.label >= label_count {
            return Err(Error::Training(format!(
                "example {index} has label {}, there are {label_count} labels",
                example.label
            )));
        }
    }
    Ok(())
}

/// Assigns each example a fold in `0..folds`: each label's examples (labels in index order)
/// are shuffled with a seeded generator and dealt round-robin, so every fold has nearly the
/// same label mix.
fn stratified_folds(
    examples: &[EmbeddedExample],
    label_count: usize,
    folds: usize,
    seed: u64,
) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed);
    let mut fold_of = vec![0; examples.len()];
    let mut next_fold = 0;
    for label in 0..label_count {
        let mut indices: Vec<usize> = (0..examples.len())
            .filter(|&i| examples[i].label == label)
            .collect();
        rng.shuffle(&mut indices);
        for i in indices {
            fold_of[i] = next_fold;
            // Continue the deal across labels so small labels do not all start at fold 0.
            next_fold = (next_fold + 1) % folds;
        }
    }
    fold_of
}

struct Fitted {
    head: ClassifierHead,
    class_counts: Vec<usize>,
    class_weights: Vec<f32>,
    final_loss: f32,
}

/// Uniform ±1/√fan_in initial weights (PyTorch's `Linear` default range), from `rng`.
fn init_layer(rng: &mut SplitMix64, rows: usize, columns: usize) -> Result<(Var, Var)> {
    let bound = 1.0 / (columns as f32).sqrt();
    let mut uniform = |count: usize| -> Vec<f32> {
        (0..count)
            .map(|_| (rng.next_f32() * 2.0 - 1.0) * bound)
            .collect()
    };
    let weight = Var::from_vec(uniform(rows * columns), (rows, columns), &Device::Cpu)?;
    let bias = Var::from_vec(uniform(rows), rows, &Device::Cpu)?;
    Ok((weight, bias))
}

/// Trains one head on `examples` (assumed checked by [`check_examples`]).
fn fit_head(
    examples: &[EmbeddedExample],
    label_count: usize,
    spec: &HeadSpec,
    seed: u64,
    batch_size: usize,
) -> Result<Fitted> {
    let count = examples.len();
    let dim = examples[0].embedding.len();
    let batch_size = batch_size.max(1);

    // Standardisation statistics, accumulated in f64 in example order.
    let mut mean = vec![0f64; dim];
    for example in examples {
        for (m, v) in mean.iter_mut().zip(&example.embedding) {
            *m += f64::from(*v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= count as f64);
    let mut variance = vec![0f64; dim];
    for example in examples {
        for ((s, v), m) in variance.iter_mut().zip(&example.embedding).zip(&mean) {
            *s += (f64::from(*v) - m).powi(2);
        }
    }
    let scale: Vec<f32> = variance
        .iter()
        .map(|s| (1.0 / (s / count as f64).sqrt().max(1e-6)) as f32)
        .collect();
    let mean: Vec<f32> = mean.iter().map(|m| *m as f32).collect();

    let mut class_counts = vec![0usize; label_count];
    for example in examples {
        class_counts[example.label] += 1;
    }
    // Inverse-frequency weights so every label counts the same in the loss.
    let present = class_counts.iter().filter(|&&c| c > 0).count().max(1);
    let class_weights: Vec<f32> = class_counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                count as f32 / (present * c) as f32
            }
        })
        .collect();

    let device = Device::Cpu;
    let flat: Vec<f32> = examples
        .iter()
        .flat_map(|e| e.embedding.iter().copied())
        .collect();
    let inputs = Tensor::from_vec(flat, (count, dim), &device)?;
    let labels: Vec<u32> = examples.iter().map(|e| e.label as u32).collect();
    let labels = Tensor::from_vec(labels, count, &device)?;
    let weight_per_class = Tensor::from_slice(&class_weights, label_count, &device)?;

    let mut init_rng = SplitMix64::new(seed ^ INIT_STREAM);
    let (hidden, fan_in) = match spec.architecture {
        HeadArchitecture::SoftmaxRegression => (None, dim),
        HeadArchitecture::Mlp { hidden } => {
            if hidden == 0 {
                return Err(Error::Training("an MLP head needs hidden units".into()));
            }
            (Some(init_layer(&mut init_rng, hidden, dim)?), hidden)
        }
    };
    let output = init_layer(&mut init_rng, label_count, fan_in)?;
    let mut variables = Vec::new();
    if let Some((weight, bias)) = &hidden {
        variables.push(weight.clone());
        variables.push(bias.clone());
    }
    variables.push(output.0.clone());
    variables.push(output.1.clone());

    // The head's tensors are the variables themselves: the optimiser updates them in place.
    let head = ClassifierHead::from_tensors(
        Tensor::from_vec(mean, dim, &device)?,
        Tensor::from_vec(scale, dim, &device)?,
        hidden
            .as_ref()
            .map(|(w, b)| (w.as_tensor().clone(), b.as_tensor().clone())),
        (output.0.as_tensor().clone(), output.1.as_tensor().clone()),
    )?;
    let mut optimiser = AdamW::new(
        variables,
        ParamsAdamW {
            lr: spec.learning_rate,
            weight_decay: spec.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;

    let mut order_rng = SplitMix64::new(seed ^ ORDER_STREAM);
    let mut order: Vec<u32> = (0..count as u32).collect();
    let mut final_loss = 0f32;
    for _ in 0..spec.epochs {
        order_rng.shuffle(&mut order);
        let mut epoch_loss = 0f64;
        for batch in order.chunks(batch_size) {
            let indices = Tensor::from_slice(batch, batch.len(), &device)?;
            let batch_inputs = inputs.index_select(&indices, 0)?;
            let batch_labels = labels.index_select(&indices, 0)?;
            let loss = weighted_cross_entropy(
                &head.logits(&batch_inputs)?,
                &batch_labels,
                &weight_per_class,
            )?;
            optimiser.backward_step(&loss)?;
            epoch_loss += f64::from(loss.to_scalar::<f32>()?) * batch.len() as f64;
        }
        final_loss = (epoch_loss / count as f64) as f32;
    }

    Ok(Fitted {
        head: detached_copy(&head)?,
        class_counts,
        class_weights,
        final_loss,
    })
}

/// Mean cross-entropy with each example weighted by its label's weight.
fn weighted_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    class_weights: &Tensor,
) -> Result<Tensor> {
    let log_probabilities = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_probabilities
        .gather(&labels.unsqueeze(1)?, 1)?
        .squeeze(1)?;
    let weights = class_weights.index_select(labels, 0)?;
    let total = (picked * &weights)?.sum_all()?.neg()?;
    Ok(total.broadcast_div(&weights.sum_all()?)?)
}

/// A copy of `head` whose tensors no longer alias the training variables.
fn detached_copy(head: &ClassifierHead) -> Result<ClassifierHead> {
    let bytes = head.to_safetensors_bytes()?;
    ClassifierHead::from_safetensors_bytes(&bytes, "(trained head)")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOUR: [&str; 4] = ["anger", "anxious", "neutral", "positive"];

    /// `labels` noisy clusters in 16 dimensions, one per label, from a seeded generator.
    fn clustered(per_label: usize, labels: usize, seed: u64) -> Vec<EmbeddedExample> {
        let mut rng = SplitMix64::new(seed);
        let dim = 16;
        let mut examples = Vec::new();
        for i in 0..per_label {
            for label in 0..labels {
                let embedding = (0..dim)
                    .map(|d| {
                        let centre = if d % labels == label { 1.0 } else { 0.0 };
                        centre + (rng.next_f32() - 0.5) * 0.8 + (i % 3) as f32 * 0.01
                    })
                    .collect();
                examples.push(EmbeddedExample { embedding, label });
            }
        }
        examples
    }

    /// Four clusters, one per label of [`FOUR`].
    fn clustered_examples(per_label: usize, seed: u64) -> Vec<EmbeddedExample> {
        clustered(per_label, FOUR.len(), seed)
    }

    fn small_config(seed: u64) -> TrainConfig {
        TrainConfig {
            seed,
            batch_size: 16,
            folds: 4,
            candidates: vec![
                HeadSpec {
                    architecture: HeadArchitecture::SoftmaxRegression,
                    epochs: 15,
                    learning_rate: 1e-2,
                    weight_decay: 0.01,
                },
                HeadSpec {
                    architecture: HeadArchitecture::Mlp { hidden: 8 },
                    epochs: 15,
                    learning_rate: 1e-2,
                    weight_decay: 0.01,
                },
            ],
        }
    }

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // First outputs of the reference implementation for seed 1234567.
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(rng.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let mut a: Vec<u32> = (0..50).collect();
        let mut b = a.clone();
        SplitMix64::new(7).shuffle(&mut a);
        SplitMix64::new(7).shuffle(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..50).collect::<Vec<_>>());
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn folds_are_stratified() {
        let examples = clustered_examples(10, 3);
        let fold_of = stratified_folds(&examples, 4, 5, 11);
        for fold in 0..5 {
            for label in 0..4 {
                let count = examples
                    .iter()
                    .zip(&fold_of)
                    .filter(|(e, f)| e.label == label && **f == fold)
                    .count();
                assert_eq!(count, 2, "fold {fold}, label {label}");
            }
        }
        assert_eq!(fold_of, stratified_folds(&examples, 4, 5, 11));
        assert_ne!(fold_of, stratified_folds(&examples, 4, 5, 12));
    }

    #[test]
    fn training_twice_gives_bit_identical_weights() {
        let examples = clustered_examples(30, 5);
        let (first, first_report) = train(&examples, &FOUR, &small_config(42)).expect("train");
        let (second, second_report) =
            train(&examples, &FOUR, &small_config(42)).expect("train again");
        assert_eq!(
            first.head.to_safetensors_bytes().expect("bytes"),
            second.head.to_safetensors_bytes().expect("bytes")
        );
        assert_eq!(first_report, second_report);

        // A different seed must give different weights, or the test above proves nothing.
        let (other, _) =
            train(&examples, &FOUR, &small_config(43)).expect("train with another seed");
        assert_ne!(
            first.head.to_safetensors_bytes().expect("bytes"),
            other.head.to_safetensors_bytes().expect("bytes")
        );
    }

    #[test]
    fn learns_separable_clusters_and_reports_candidates() {
        let examples = clustered_examples(40, 9);
        let (trained, report) = train(&examples, &FOUR, &small_config(1)).expect("train");
        assert_eq!(report.labels, FOUR);
        assert_eq!(report.candidates.len(), 2);
        assert_eq!(report.folds, 4);
        assert_eq!(report.validation_examples, 160);
        assert_eq!(report.class_counts, [40; 4]);
        assert!(report.class_weights.iter().all(|w| (w - 1.0).abs() < 1e-6));
        let best = report
            .candidates
            .iter()
            .map(|c| c.validation_macro_f1)
            .fold(f64::NEG_INFINITY, f64::max);
        let chosen = report
            .candidates
            .iter()
            .position(|c| c.spec == report.chosen)
            .expect("chosen is a candidate");
        assert!(report.candidates[chosen].validation_macro_f1 >= best - report.selection_tolerance);
        assert!(best > 0.9, "{report}");
        assert!(report.training_accuracy > 0.9, "{report}");
        assert!(
            report
                .to_string()
                .contains("used (anger 40, anxious 40, neutral 40, positive 40)"),
            "{report}"
        );

        let fresh = clustered_examples(10, 99);
        let scores = evaluate(&trained.head, &FOUR, &fresh).expect("evaluate");
        assert!(scores.accuracy > 0.9, "{scores}");
    }

    /// The head is not hard-wired to four labels: six clusters, six outputs, six-way folds,
    /// weights and scores.
    #[test]
    fn trains_a_six_label_head() {
        let labels = ["a", "b", "c", "d", "e", "f"];
        let mut examples = clustered(24, 6, 21);
        // Make label "f" rarer, so its class weight differs.
        let mut seen = 0;
        examples.retain(|e| {
            if e.label != 5 {
                return true;
            }
            seen += 1;
            seen % 2 == 0
        });
        let fold_of = stratified_folds(&examples, 6, 4, 3);
        for label in 0..6 {
            let per_fold: Vec<usize> = (0..4)
                .map(|fold| {
                    examples
                        .iter()
                        .zip(&fold_of)
                        .filter(|(e, f)| e.label == label && **f == fold)
                        .count()
                })
                .collect();
            let (min, max) = (per_fold.iter().min(), per_fold.iter().max());
            assert!(
                max.zip(min).is_some_and(|(a, b)| a - b <= 1),
                "{per_fold:?}"
            );
        }

        let (trained, report) = train(&examples, &labels, &small_config(6)).expect("train");
        assert_eq!(trained.head.label_count(), 6);
        assert_eq!(report.class_counts, [24, 24, 24, 24, 24, 12]);
        // n / (6 × count): 132 / 144 and 132 / 72
        assert!((report.class_weights[0] - 132.0 / 144.0).abs() < 1e-6);
        assert!((report.class_weights[5] - 132.0 / 72.0).abs() < 1e-6);
        assert!(report.training_accuracy > 0.9, "{report}");
        assert!(report.to_string().contains("f 12)"), "{report}");

        let fresh = clustered(10, 6, 77);
        let scores = evaluate(&trained.head, &labels, &fresh).expect("evaluate");
        assert_eq!(scores.per_class.len(), 6);
        assert_eq!(scores.confusion.len(), 6);
        assert_eq!(scores.class(5).label, "f");
        assert!(scores.accuracy > 0.9, "{scores}");
        let prediction = trained
            .head
            .classify_embedding(&fresh[5].embedding)
            .expect("classify");
        assert_eq!(prediction.probabilities.len(), 6);
        assert_eq!(prediction.label, 5);

        // Labels beyond the list are refused.
        let mut bad = examples.clone();
        bad[0].label = 6;
        assert!(matches!(
            train(&bad, &labels, &small_config(6)),
            Err(Error::Training(_))
        ));
    }

    fn candidate(architecture: HeadArchitecture, f1: f64) -> CandidateScore {
        CandidateScore {
            spec: HeadSpec {
                architecture,
                epochs: 1,
                learning_rate: 1e-3,
                weight_decay: 0.0,
            },
            validation_accuracy: f1,
            validation_macro_f1: f1,
        }
    }

    #[test]
    fn the_simplest_candidate_within_one_standard_error_is_chosen() {
        let scores = [
            candidate(HeadArchitecture::SoftmaxRegression, 0.80),
            candidate(HeadArchitecture::Mlp { hidden: 64 }, 0.89),
            candidate(HeadArchitecture::Mlp { hidden: 128 }, 0.90),
        ];
        // sqrt(0.9 × 0.1 / 400) = 0.015: 0.89 is within it, 0.80 is not.
        let (index, tolerance) = choose_candidate(&scores, 400);
        assert!((tolerance - 0.015).abs() < 1e-9);
        assert_eq!(index, 1);
        // With a hundred times more validation data the tolerance shrinks below the gap.
        assert_eq!(choose_candidate(&scores, 40_000).0, 2);
    }

    #[test]
    fn class_weights_balance_an_imbalanced_set() {
        let mut examples = clustered_examples(12, 4);
        // Keep only a third of the examples of the last label.
        let mut last = 0;
        examples.retain(|e| {
            if e.label != 3 {
                return true;
            }
            last += 1;
            last % 3 == 0
        });
        let config = TrainConfig {
            folds: 0,
            ..small_config(3)
        };
        let (_, report) = train(&examples, &FOUR, &config).expect("train");
        assert_eq!(report.class_counts, [12, 12, 12, 4]);
        // n / (4 × count): 40 / 48 and 40 / 16
        assert!((report.class_weights[0] - 40.0 / 48.0).abs() < 1e-6);
        assert!((report.class_weights[3] - 2.5).abs() < 1e-6);
        assert!(report.candidates.is_empty());
    }

    #[test]
    fn rejects_ragged_or_empty_input() {
        assert!(train(&[], &FOUR, &small_config(1)).is_err());
        let mut examples = clustered_examples(3, 1);
        examples[2].embedding.pop();
        assert!(matches!(
            train(&examples, &FOUR, &small_config(1)),
            Err(Error::Training(_))
        ));
        // One label is no classification.
        let examples = clustered(3, 1, 1);
        assert!(matches!(
            train(&examples, &["only"], &small_config(1)),
            Err(Error::Training(_))
        ));
    }
}
