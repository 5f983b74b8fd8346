use std::sync::Arc;

use kizuna_agent::sentiment::{SentimentError, SentimentLabel, SentimentModel, SentimentReading};
use kizuna_head::ClassifierHead;
use kizuna_knowledge::Embedder;

use crate::error::{Error, Result};
use crate::labels::{reading_from_prediction, reading_from_probabilities, LABEL_COUNT};

/// The sentiment model: the e5 `query: ` embedding of a message, then the trained head.
///
/// A message that is empty or only whitespace carries no sentiment: it reads as `neutral`
/// with probability 1 without running the embedder.
#[derive(Clone)]
pub struct SentimentClassifier {
    embedder: Arc<dyn Embedder>,
    head: ClassifierHead,
}

impl std::fmt::Debug for SentimentClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentimentClassifier")
            .field("embedder", &self.embedder.model_id())
            .field("head", &self.head.architecture())
            .finish()
    }
}

impl SentimentClassifier {
    /// Pairs a head with the embedder it reads. Fails when their dimensions differ or the
    /// head does not have the four sentiment outputs; checking that the head was trained on
    /// this embedder's model is [`crate::load`]'s job.
    pub fn new(embedder: Arc<dyn Embedder>, head: ClassifierHead) -> Result<Self> {
        if embedder.dim() != head.input_dim() {
            return Err(Error::DimensionMismatch {
                expected: head.input_dim(),
                actual: embedder.dim(),
            });
        }
        if head.label_count() != LABEL_COUNT {
            return Err(Error::BadHead {
                path: "(tensors)".into(),
                reason: format!(
                    "{} outputs, the sentiment labels are {LABEL_COUNT}",
                    head.label_count()
                ),
            });
        }
        Ok(Self { embedder, head })
    }

    pub fn head(&self) -> &ClassifierHead {
        &self.head
    }

    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// Classifies from the message's `query: ` embedding (what [`Embedder::embed_queries`]
    /// returns, which retrieval computes anyway), so the message is embedded once.
    pub fn classify_with_embedding(
        &self,
        query_embedding: &[f32],
    ) -> Result<SentimentReading, SentimentError> {
        self.head
            .classify_embedding(query_embedding)
            .map_err(Error::from)
            .and_then(reading_from_prediction)
            .map_err(|e| SentimentError(e.to_string()))
    }

    /// Classifies several messages with one batched embedding call.
    pub fn classify_batch(&self, texts: &[&str]) -> Result<Vec<SentimentReading>, SentimentError> {
        let to_embed: Vec<&str> = texts
            .iter()
            .copied()
            .filter(|t| !t.trim().is_empty())
            .collect();
        let embeddings = self
            .embedder
            .embed_queries(&to_embed)
            .map_err(|e| SentimentError(e.to_string()))?;
        let mut readings = self
            .head
            .classify_embeddings(&embeddings)
            .map_err(Error::from)
            .and_then(|predictions| {
                predictions
                    .into_iter()
                    .map(reading_from_prediction)
                    .collect::<Result<Vec<_>>>()
            })
            .map_err(|e| SentimentError(e.to_string()))?
            .into_iter();
        texts
            .iter()
            .map(|text| {
                if text.trim().is_empty() {
                    Ok(blank_message_reading())
                } else {
                    readings.next().ok_or_else(|| {
                        SentimentError("the embedder returned too few vectors".into())
                    })
                }
            })
            .collect()
    }
}

/// The reading of a message with no text.
pub(crate) fn blank_message_reading() -> SentimentReading {
    let mut probabilities = [0.0; LABEL_COUNT];
    probabilities[SentimentLabel::Neutral.index()] = 1.0;
    reading_from_probabilities(probabilities)
}

impl SentimentModel for SentimentClassifier {
    fn classify(&self, text: &str) -> Result<SentimentReading, SentimentError> {
        if text.trim().is_empty() {
            return Ok(blank_message_reading());
        }
        let embedding = self
            .embedder
            .embed_queries(&[text])
            .map_err(|e| SentimentError(e.to_string()))?
            .pop()
            .ok_or_else(|| SentimentError("the embedder returned no vector".into()))?;
        self.classify_with_embedding(&embedding)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use candle_core::{Device, Tensor};
    use kizuna_knowledge::EmbedError;

    use super::*;

    /// Test double: a 4-d "embedding" with one axis per keyword group, so a hand-built head
    /// can read it. Counts query calls and records the texts it saw.
    pub(crate) struct KeywordEmbedder {
        pub model_id: String,
        pub calls: AtomicUsize,
        pub seen: std::sync::Mutex<Vec<String>>,
    }

    impl KeywordEmbedder {
        pub(crate) fn new(model_id: &str) -> Self {
            Self {
                model_id: model_id.into(),
                calls: AtomicUsize::new(0),
                seen: std::sync::Mutex::new(Vec::new()),
            }
        }

        pub(crate) fn vector(text: &str) -> Vec<f32> {
            let groups: [&[&str]; 4] = [
                &["返事がない", "ふざけるな", "最悪の対応"],
                &["不安", "心配", "怖い"],
                &["足音", "測定", "教えて"],
                &["ありがとう", "助かりました", "嬉しい"],
            ];
            let mut vector: Vec<f32> = groups
                .iter()
                .map(|words| words.iter().filter(|w| text.contains(*w)).count() as f32)
                .collect();
            vector[2] += 0.1; // so a text with no keyword is not the zero vector
            let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
            vector.iter().map(|v| v / norm).collect()
        }
    }

    impl Embedder for KeywordEmbedder {
        fn model_id(&self) -> &str {
            &self.model_id
        }
        fn dim(&self) -> usize {
            4
        }
        fn embed_queries(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut seen) = self.seen.lock() {
                seen.extend(texts.iter().map(|t| t.to_string()));
            }
            Ok(texts.iter().map(|t| Self::vector(t)).collect())
        }
        fn embed_passages(&self, _texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            Err(EmbedError::Inference(
                "the sentiment model must use query embeddings".into(),
            ))
        }
    }

    /// A head that reads the keyword axes directly (logit = 6 × axis).
    pub(crate) fn identity_head() -> ClassifierHead {
        let device = Device::Cpu;
        let mut eye = vec![0f32; 16];
        for i in 0..4 {
            eye[i * 4 + i] = 6.0;
        }
        ClassifierHead::from_tensors(
            Tensor::zeros(4, candle_core::DType::F32, &device).expect("zeros"),
            Tensor::ones(4, candle_core::DType::F32, &device).expect("ones"),
            None,
            (
                Tensor::from_vec(eye, (4, 4), &device).expect("weights"),
                Tensor::zeros(4, candle_core::DType::F32, &device).expect("bias"),
            ),
        )
        .expect("head")
    }

    fn classifier() -> (Arc<KeywordEmbedder>, SentimentClassifier) {
        let embedder = Arc::new(KeywordEmbedder::new("keyword-test"));
        let classifier =
            SentimentClassifier::new(embedder.clone(), identity_head()).expect("classifier");
        (embedder, classifier)
    }

    #[test]
    fn classify_embeds_the_message_as_a_query_then_applies_the_head() {
        let (embedder, classifier) = classifier();
        let reading = classifier
            .classify("何度連絡しても返事がない、最悪の対応です")
            .expect("classify");
        assert_eq!(reading.label, SentimentLabel::Anger);
        assert!(reading.score > 0.9, "{reading:?}");
        assert_eq!(embedder.calls.load(Ordering::SeqCst), 1);

        let reading = classifier
            .classify("丁寧に対応していただき、ありがとうございました")
            .expect("classify");
        assert_eq!(reading.label, SentimentLabel::Positive);
    }

    #[test]
    fn a_precomputed_embedding_gives_the_same_reading_without_embedding_again() {
        let (embedder, classifier) = classifier();
        let text = "夜になると不安で眠れません";
        let from_text = classifier.classify(text).expect("classify");
        let calls = embedder.calls.load(Ordering::SeqCst);
        let from_vector = classifier
            .classify_with_embedding(&KeywordEmbedder::vector(text))
            .expect("classify vector");
        assert_eq!(from_text, from_vector);
        assert_eq!(from_vector.label, SentimentLabel::Anxious);
        assert_eq!(embedder.calls.load(Ordering::SeqCst), calls);

        let error = classifier
            .classify_with_embedding(&[0.5, 0.5])
            .expect_err("wrong dimension");
        assert!(error.0.contains("dimensions"), "{error}");
    }

    #[test]
    fn blank_messages_are_neutral_without_running_the_embedder() {
        let (embedder, classifier) = classifier();
        let reading = classifier.classify("  \t").expect("classify");
        assert_eq!(reading.label, SentimentLabel::Neutral);
        assert_eq!(reading.score, 1.0);
        assert_eq!(embedder.calls.load(Ordering::SeqCst), 0);

        let batch = classifier
            .classify_batch(&["ありがとうございました", "", "心配です"])
            .expect("batch");
        assert_eq!(
            batch.iter().map(|r| r.label).collect::<Vec<_>>(),
            [
                SentimentLabel::Positive,
                SentimentLabel::Neutral,
                SentimentLabel::Anxious
            ]
        );
        assert_eq!(embedder.calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn refuses_a_head_of_another_dimension() {
        struct WideEmbedder;
        impl Embedder for WideEmbedder {
            fn model_id(&self) -> &str {
                "wide"
            }
            fn dim(&self) -> usize {
                8
            }
            fn embed_queries(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
                Ok(vec![vec![0.0; 8]; texts.len()])
            }
            fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
                self.embed_queries(texts)
            }
        }
        let result = SentimentClassifier::new(Arc::new(WideEmbedder), identity_head());
        assert!(matches!(
            result,
            Err(Error::DimensionMismatch {
                expected: 4,
                actual: 8
            })
        ));
    }

    #[test]
    fn refuses_a_head_without_the_four_labels() {
        let device = Device::Cpu;
        let head = ClassifierHead::from_tensors(
            Tensor::zeros(4, candle_core::DType::F32, &device).expect("zeros"),
            Tensor::ones(4, candle_core::DType::F32, &device).expect("ones"),
            None,
            (
                Tensor::zeros((6, 4), candle_core::DType::F32, &device).expect("weights"),
                Tensor::zeros(6, candle_core::DType::F32, &device).expect("bias"),
            ),
        )
        .expect("a 6-label head");
        let result = SentimentClassifier::new(Arc::new(KeywordEmbedder::new("k")), head);
        assert!(matches!(result, Err(Error::BadHead { .. })), "{result:?}");
    }
}
