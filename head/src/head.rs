//! The classifier head: standardise the embedding with the training set's statistics, then
//! either one linear layer (softmax regression) or a one-hidden-layer ReLU MLP, then softmax
//! over the labels (as many as the output layer has rows, in the caller's label order).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const INPUT_MEAN: &str = "input.mean";
const INPUT_SCALE: &str = "input.scale";
const HIDDEN_WEIGHT: &str = "hidden.weight";
const HIDDEN_BIAS: &str = "hidden.bias";
const OUTPUT_WEIGHT: &str = "output.weight";
const OUTPUT_BIAS: &str = "output.bias";

/// The shape of the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HeadArchitecture {
    /// One linear layer straight to the label logits.
    SoftmaxRegression,
    /// embedding → `hidden` ReLU units → label logits.
    Mlp { hidden: usize },
}

impl std::fmt::Display for HeadArchitecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadArchitecture::SoftmaxRegression => write!(f, "softmax regression"),
            HeadArchitecture::Mlp { hidden } => write!(f, "MLP ({hidden} hidden)"),
        }
    }
}

/// One classified embedding: label indices are positions in the caller's label list.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Index of the most probable label (the first on a tie).
    pub label: usize,
    /// Probability of `label`.
    pub score: f32,
    /// Probabilities in label order.
    pub probabilities: Vec<f32>,
}

impl Prediction {
    /// The prediction for a probability vector: the most probable label (the first on a tie)
    /// and its probability as the score. An empty vector gives label 0 with score 0.
    pub fn from_probabilities(probabilities: Vec<f32>) -> Self {
        let mut best = 0;
        for (index, p) in probabilities.iter().enumerate() {
            if *p > probabilities[best] {
                best = index;
            }
        }
        Self {
            label: best,
            score: probabilities.get(best).copied().unwrap_or(0.0),
            probabilities,
        }
    }
}

/// A trained (or, during training, a being-trained) head. Cheap to clone: tensors share
/// their storage.
#[derive(Debug, Clone)]
pub struct ClassifierHead {
    input_mean: Tensor,
    input_scale: Tensor,
    hidden: Option<Linear>,
    output: Linear,
    input_dim: usize,
    label_count: usize,
}

impl ClassifierHead {
    /// Assembles a head from its tensors, checking their shapes: `input_mean` and
    /// `input_scale` `(dim)`, `hidden` `(hidden, dim)` + `(hidden)`, `output` `(labels, in)` +
    /// `(labels)` where `in` is `hidden` or `dim` and `labels` is at least 2.
    pub fn from_tensors(
        input_mean: Tensor,
        input_scale: Tensor,
        hidden: Option<(Tensor, Tensor)>,
        output: (Tensor, Tensor),
    ) -> Result<Self> {
        let bad = |reason: String| Error::BadHead {
            path: "(tensors)".into(),
            reason,
        };
        let input_dim = input_mean.dims1()?;
        if input_dim == 0 || input_scale.dims1()? != input_dim {
            return Err(bad(format!(
                "input statistics have shapes {:?} and {:?}",
                input_mean.dims(),
                input_scale.dims()
            )));
        }
        let mut fan_in = input_dim;
        let hidden = match hidden {
            Some((weight, bias)) => {
                let (units, columns) = weight.dims2()?;
                if columns != input_dim || bias.dims1()? != units || units == 0 {
                    return Err(bad(format!(
                        "hidden layer has shapes {:?} and {:?} for {input_dim} inputs",
                        weight.dims(),
                        bias.dims()
                    )));
                }
                fan_in = units;
                Some(Linear::new(weight, Some(bias)))
            }
            None => None,
        };
        let (weight, bias) = output;
        let (label_count, columns) = weight.dims2()?;
        if label_count < 2 || columns != fan_in || bias.dims1()? != label_count {
            return Err(bad(format!(
                "output layer has shapes {:?} and {:?}, expected (labels ≥ 2, {fan_in})",
                weight.dims(),
                bias.dims()
            )));
        }
        for tensor in [&input_mean, &input_scale, &weight, &bias] {
            if tensor.dtype() != DType::F32 {
                return Err(bad(format!(
                    "tensor type {:?}, expected f32",
                    tensor.dtype()
                )));
            }
        }
        Ok(Self {
            input_mean,
            input_scale,
            hidden,
            output: Linear::new(weight, Some(bias)),
            input_dim,
            label_count,
        })
    }

    /// The embedding dimension the head reads.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// The number of labels (output logits).
    pub fn label_count(&self) -> usize {
        self.label_count
    }

    pub fn architecture(&self) -> HeadArchitecture {
        match &self.hidden {
            Some(layer) => HeadArchitecture::Mlp {
                hidden: layer.weight().dims()[0],
            },
            None => HeadArchitecture::SoftmaxRegression,
        }
    }

    /// Number of trained parameters (the input statistics included).
    pub fn parameter_count(&self) -> usize {
        self.named_tensors()
            .iter()
            .map(|(_, t)| t.elem_count())
            .sum()
    }

    /// Logits `(n, labels)` for a batch of embeddings `(n, dim)`.
    pub fn logits(&self, embeddings: &Tensor) -> Result<Tensor> {
        let standardised = embeddings
            .broadcast_sub(&self.input_mean)?
            .broadcast_mul(&self.input_scale)?;
        let features = match &self.hidden {
            Some(layer) => layer.forward(&standardised)?.relu()?,
            None => standardised,
        };
        Ok(self.output.forward(&features)?)
    }

    /// Classifies one embedding.
    pub fn classify_embedding(&self, embedding: &[f32]) -> Result<Prediction> {
        self.check_dim(embedding.len())?;
        let input = Tensor::from_slice(embedding, (1, self.input_dim), &Device::Cpu)?;
        let mut predictions = self.predictions(&input)?;
        predictions
            .pop()
            .ok_or_else(|| Error::Training("no prediction for one embedding".into()))
    }

    /// Classifies a batch of embeddings in one pass.
    pub fn classify_embeddings(&self, embeddings: &[Vec<f32>]) -> Result<Vec<Prediction>> {
        if embeddings.is_empty() {
            return Ok(Vec::new());
        }
        let mut flat = Vec::with_capacity(embeddings.len() * self.input_dim);
        for embedding in embeddings {
            self.check_dim(embedding.len())?;
            flat.extend_from_slice(embedding);
        }
        let input = Tensor::from_vec(flat, (embeddings.len(), self.input_dim), &Device::Cpu)?;
        self.predictions(&input)
    }

    fn predictions(&self, input: &Tensor) -> Result<Vec<Prediction>> {
        let probabilities = candle_nn::ops::softmax_last_dim(&self.logits(input)?)?;
        probabilities
            .to_vec2::<f32>()?
            .into_iter()
            .map(|row| {
                if row.len() != self.label_count {
                    return Err(Error::Training(format!(
                        "head produced {} probabilities",
                        row.len()
                    )));
                }
                Ok(Prediction::from_probabilities(row))
            })
            .collect()
    }

    fn check_dim(&self, actual: usize) -> Result<()> {
        if actual == self.input_dim {
            Ok(())
        } else {
            Err(Error::DimensionMismatch {
                expected: self.input_dim,
                actual,
            })
        }
    }

    fn named_tensors(&self) -> Vec<(&'static str, Tensor)> {
        let mut tensors = vec![
            (INPUT_MEAN, self.input_mean.clone()),
            (INPUT_SCALE, self.input_scale.clone()),
        ];
        if let Some(layer) = &self.hidden {
            tensors.push((HIDDEN_WEIGHT, layer.weight().clone()));
            if let Some(bias) = layer.bias() {
                tensors.push((HIDDEN_BIAS, bias.clone()));
            }
        }
        tensors.push((OUTPUT_WEIGHT, self.output.weight().clone()));
        if let Some(bias) = self.output.bias() {
            tensors.push((OUTPUT_BIAS, bias.clone()));
        }
        tensors
    }

    /// The head as safetensors bytes (tensor order is fixed by the format, so equal weights
    /// give equal bytes).
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>> {
        safetensors::serialize(self.named_tensors(), None)
            .map_err(|e| Error::Training(format!("cannot serialise the head: {e}")))
    }

    /// Reads a head written by [`ClassifierHead::to_safetensors_bytes`]. `source` names it in
    /// errors.
    pub fn from_safetensors_bytes(bytes: &[u8], source: &str) -> Result<Self> {
        let bad = |reason: String| Error::BadHead {
            path: source.to_string(),
            reason,
        };
        let mut tensors: HashMap<String, Tensor> =
            candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
                .map_err(|e| bad(e.to_string()))?;
        let mut take = |name: &str| {
            tensors
                .remove(name)
                .ok_or_else(|| bad(format!("missing tensor {name}")))
        };
        let input_mean = take(INPUT_MEAN)?;
        let input_scale = take(INPUT_SCALE)?;
        let output = (take(OUTPUT_WEIGHT)?, take(OUTPUT_BIAS)?);
        let hidden = match (tensors.remove(HIDDEN_WEIGHT), tensors.remove(HIDDEN_BIAS)) {
            (Some(weight), Some(bias)) => Some((weight, bias)),
            (None, None) => None,
            _ => return Err(bad("hidden layer is missing its weight or bias".into())),
        };
        if let Some(extra) = tensors.keys().next() {
            return Err(bad(format!("unexpected tensor {extra}")));
        }
        Self::from_tensors(input_mean, input_scale, hidden, output).map_err(|e| match e {
            Error::BadHead { reason, .. } => bad(reason),
            other => bad(other.to_string()),
        })
    }

    /// Loads `head.safetensors`.
    pub fn load_safetensors(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        Self::from_safetensors_bytes(&bytes, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(values: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(values, shape, &Device::Cpu).expect("tensor")
    }

    /// A 2-d, 4-label softmax-regression head whose logits are easy to work out by hand.
    fn linear_head() -> ClassifierHead {
        ClassifierHead::from_tensors(
            tensor(&[1.0, 0.0], &[2]),
            tensor(&[1.0, 2.0], &[2]),
            None,
            (
                // logits = W · ((x - mean) * scale) + b
                tensor(&[1.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, -1.0], &[4, 2]),
                tensor(&[0.0, 0.0, 0.5, 0.0], &[4]),
            ),
        )
        .expect("valid head")
    }

    #[test]
    fn classifies_by_softmax_over_the_standardised_input() {
        let head = linear_head();
        assert_eq!(head.label_count(), 4);
        // standardised (2, 0) → logits (2, 0, -1.5, 0)
        let prediction = head.classify_embedding(&[3.0, 0.0]).expect("classify");
        assert_eq!(prediction.label, 0);
        let exp = [2f32.exp(), 1.0, (-1.5f32).exp(), 1.0];
        let total: f32 = exp.iter().sum();
        assert_eq!(prediction.probabilities.len(), 4);
        for (p, e) in prediction.probabilities.iter().zip(exp) {
            assert!(
                (p - e / total).abs() < 1e-6,
                "{:?}",
                prediction.probabilities
            );
        }
        assert_eq!(prediction.score, prediction.probabilities[0]);

        // standardised (0, 1) → logits (0, 1, 0.5, -1)
        let prediction = head.classify_embedding(&[1.0, 0.5]).expect("classify");
        assert_eq!(prediction.label, 1);
        let batch = head
            .classify_embeddings(&[vec![3.0, 0.0], vec![1.0, 0.5]])
            .expect("batch");
        assert_eq!(batch[1], prediction);
        assert_eq!(batch[0].label, 0);
    }

    #[test]
    fn rejects_a_wrong_dimension() {
        let error = linear_head()
            .classify_embedding(&[1.0, 2.0, 3.0])
            .expect_err("3-d input to a 2-d head");
        assert!(matches!(
            error,
            Error::DimensionMismatch {
                expected: 2,
                actual: 3
            }
        ));
    }

    #[test]
    fn rejects_inconsistent_shapes() {
        let result = ClassifierHead::from_tensors(
            tensor(&[0.0, 0.0], &[2]),
            tensor(&[1.0, 1.0], &[2]),
            Some((tensor(&[0.0; 6], &[3, 2]), tensor(&[0.0; 3], &[3]))),
            (tensor(&[0.0; 8], &[4, 2]), tensor(&[0.0; 4], &[4])),
        );
        assert!(matches!(result, Err(Error::BadHead { .. })));
        // A single output is no classifier.
        let result = ClassifierHead::from_tensors(
            tensor(&[0.0, 0.0], &[2]),
            tensor(&[1.0, 1.0], &[2]),
            None,
            (tensor(&[0.0; 2], &[1, 2]), tensor(&[0.0; 1], &[1])),
        );
        assert!(matches!(result, Err(Error::BadHead { .. })));
    }

    #[test]
    fn safetensors_round_trip_keeps_the_outputs() {
        let head = ClassifierHead::from_tensors(
            tensor(&[0.1, -0.2], &[2]),
            tensor(&[2.0, 0.5], &[2]),
            Some((
                tensor(&[0.3, -0.1, 0.7, 0.2, -0.5, 0.4], &[3, 2]),
                tensor(&[0.0, 0.1, -0.1], &[3]),
            )),
            (
                tensor(
                    &[
                        0.5, -0.3, 0.2, 0.1, 0.4, -0.6, -0.2, 0.3, 0.1, 0.6, -0.1, 0.2,
                    ],
                    &[4, 3],
                ),
                tensor(&[0.0, 0.2, -0.2, 0.1], &[4]),
            ),
        )
        .expect("valid head");
        assert_eq!(head.architecture(), HeadArchitecture::Mlp { hidden: 3 });
        assert_eq!(head.parameter_count(), 2 + 2 + 6 + 3 + 12 + 4);
        let bytes = head.to_safetensors_bytes().expect("serialise");
        assert_eq!(bytes, head.to_safetensors_bytes().expect("serialise again"));
        let loaded = ClassifierHead::from_safetensors_bytes(&bytes, "mem").expect("load");
        assert_eq!(loaded.architecture(), head.architecture());
        assert_eq!(loaded.label_count(), 4);
        for input in [[0.4f32, -1.0], [-2.0, 0.3], [0.0, 0.0]] {
            assert_eq!(
                loaded.classify_embedding(&input).expect("loaded"),
                head.classify_embedding(&input).expect("original")
            );
        }
        assert!(ClassifierHead::from_safetensors_bytes(&bytes[..bytes.len() - 4], "cut").is_err());
    }

    #[test]
    fn six_labels_come_out_as_six_probabilities() {
        // Softmax regression on a 3-d input with 6 outputs: logit k = x[k % 3] × (k < 3 ? 1 : -1).
        let mut weights = vec![0f32; 6 * 3];
        for k in 0..6 {
            weights[k * 3 + k % 3] = if k < 3 { 1.0 } else { -1.0 };
        }
        let head = ClassifierHead::from_tensors(
            tensor(&[0.0; 3], &[3]),
            tensor(&[1.0; 3], &[3]),
            None,
            (tensor(&weights, &[6, 3]), tensor(&[0.0; 6], &[6])),
        )
        .expect("6-label head");
        assert_eq!(head.label_count(), 6);
        let prediction = head
            .classify_embedding(&[0.0, 0.0, -2.0])
            .expect("classify");
        assert_eq!(prediction.probabilities.len(), 6);
        assert_eq!(prediction.label, 5);
        let total: f32 = prediction.probabilities.iter().sum();
        assert!((total - 1.0).abs() < 1e-6);
        let bytes = head.to_safetensors_bytes().expect("serialise");
        let loaded = ClassifierHead::from_safetensors_bytes(&bytes, "mem").expect("load");
        assert_eq!(loaded.label_count(), 6);
    }

    #[test]
    fn ties_go_to_the_first_label() {
        let prediction = Prediction::from_probabilities(vec![0.25; 4]);
        assert_eq!(prediction.label, 0);
        assert_eq!(prediction.score, 0.25);
        let prediction = Prediction::from_probabilities(vec![0.1, 0.3, 0.3, 0.2, 0.1]);
        assert_eq!(prediction.label, 1);
    }
}
