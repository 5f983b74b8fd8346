//! The BERT encoder of multilingual-e5-small (XLM-RoBERTa architecture, post-LayerNorm,
//! exact-erf GELU) on the CPU. Matrix products are candle matmuls over f32 weights
//! dequantised from Q4_0 at load; the element-wise steps between them are fused candle
//! custom ops that run in parallel on rayon, because candle's generic CPU element-wise
//! kernels are single-threaded and would otherwise take as long as the matmuls.

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp1, Device, InplaceOp1, InplaceOp2, Layout, Shape, Tensor};
use memmap2::Mmap;
use rayon::prelude::*;

use super::fastmath::{exp_nonpositive, gelu, layer_norm, max, sum};
use super::format::{dequantize_q4, Header, ModelFile, Q4_BLOCK, Q4_BLOCK_BYTES};

/// One transformer layer. Matmul weights are stored transposed (`[in, out]`) so that
/// `x.matmul(w)` is a plain row-major product.
struct Layer {
    qkv_weight: Tensor,
    qkv_bias: Vec<f32>,
    attn_out_weight: Tensor,
    attn_out_bias: Vec<f32>,
    attn_norm_gamma: Vec<f32>,
    attn_norm_beta: Vec<f32>,
    ffn_in_weight: Tensor,
    ffn_in_bias: Vec<f32>,
    ffn_out_weight: Tensor,
    ffn_out_bias: Vec<f32>,
    out_norm_gamma: Vec<f32>,
    out_norm_beta: Vec<f32>,
}

/// Everything the encoder needs from the file except the file itself.
pub(crate) struct EncoderWeights {
    header: Header,
    word_embeddings: Range<usize>,
    positions: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm_gamma: Vec<f32>,
    embed_norm_beta: Vec<f32>,
    layers: Vec<Layer>,
}

impl EncoderWeights {
    /// Takes ownership of the memory map the weights were read from.
    pub fn attach(self, file: Mmap) -> Encoder {
        let EncoderWeights {
            header,
            word_embeddings,
            positions,
            token_type,
            embed_norm_gamma,
            embed_norm_beta,
            layers,
        } = self;
        Encoder {
            header,
            file,
            word_embeddings,
            positions,
            token_type,
            embed_norm_gamma,
            embed_norm_beta,
            layers,
        }
    }
}

pub(crate) struct Encoder {
    header: Header,
    /// The model file; the 250k-row word-embedding table stays quantised in it (54 MB
    /// instead of 384 MB as f32) and rows are dequantised as tokens need them.
    file: Mmap,
    word_embeddings: Range<usize>,
    /// Position embeddings, row `p` for position `p` (the file stores XLM-R's table already
    /// shifted past its padding offset, so the first token uses row 0).
    positions: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm_gamma: Vec<f32>,
    embed_norm_beta: Vec<f32>,
    layers: Vec<Layer>,
}

/// `[rows, cols]` Q4_0 matrix as a transposed `[cols, rows]` f32 tensor.
fn linear_weight(
    file: &ModelFile<'_>,
    name: &str,
    rows: usize,
    cols: usize,
) -> Result<Tensor, String> {
    let values = file.q4_dequantized(name, rows, cols)?;
    Tensor::from_vec(values, (rows, cols), &Device::Cpu)
        .and_then(|w| w.t()?.contiguous())
        .map_err(|e| format!("tensor {name}: {e}"))
}

impl Encoder {
    /// Reads and dequantises the weights; the result needs the map back via `attach`.
    pub fn load_weights(parsed: &ModelFile<'_>) -> Result<EncoderWeights, String> {
        let h = parsed.header;
        let (hidden, ffn) = (h.hidden, h.ffn);
        let word_embeddings = parsed.q4_range("emb.word", h.vocab, hidden)?;
        let positions = parsed.f32_tensor("emb.pos", h.max_positions * hidden)?;
        let token_type = parsed.f32_tensor("emb.type", h.type_vocab * hidden)?;
        let embed_norm_gamma = parsed.f32_tensor("emb.ln.w", hidden)?;
        let embed_norm_beta = parsed.f32_tensor("emb.ln.b", hidden)?;
        let mut layers = Vec::with_capacity(h.layers);
        for l in 0..h.layers {
            let name = |suffix: &str| format!("l{l}.{suffix}");
            let vector = |suffix: &str, len: usize| parsed.f32_tensor(&name(suffix), len);
            // Q, K and V share their input: one [hidden, 3 * hidden] product instead of three.
            let mut qkv = Vec::with_capacity(3 * hidden * hidden);
            let mut qkv_bias = Vec::with_capacity(3 * hidden);
            for part in ["q", "k", "v"] {
                qkv.extend(parsed.q4_dequantized(&name(&format!("{part}.w")), hidden, hidden)?);
                qkv_bias.extend(vector(&format!("{part}.b"), hidden)?);
            }
            let qkv_weight = Tensor::from_vec(qkv, (3 * hidden, hidden), &Device::Cpu)
                .and_then(|w| w.t()?.contiguous())
                .map_err(|e| format!("layer {l} qkv: {e}"))?;
            layers.push(Layer {
                qkv_weight,
                qkv_bias,
                attn_out_weight: linear_weight(parsed, &name("ao.w"), hidden, hidden)?,
                attn_out_bias: vector("ao.b", hidden)?,
                attn_norm_gamma: vector("aln.w", hidden)?,
                attn_norm_beta: vector("aln.b", hidden)?,
                ffn_in_weight: linear_weight(parsed, &name("fi.w"), ffn, hidden)?,
                ffn_in_bias: vector("fi.b", ffn)?,
                ffn_out_weight: linear_weight(parsed, &name("fo.w"), hidden, ffn)?,
                ffn_out_bias: vector("fo.b", hidden)?,
                out_norm_gamma: vector("oln.w", hidden)?,
                out_norm_beta: vector("oln.b", hidden)?,
            });
        }
        Ok(EncoderWeights {
            header: h,
            word_embeddings,
            positions,
            token_type,
            embed_norm_gamma,
            embed_norm_beta,
            layers,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Runs a batch of token sequences (each already `<s> … </s>`, at most
    /// `max_positions` long, token ids below the vocabulary size) and returns, per
    /// sequence, the mean of its final hidden states over all its tokens (not normalised).
    pub fn mean_pooled(&self, sequences: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let hidden = self.header.hidden;
        let heads = self.header.heads;
        let head_dim = hidden / heads;
        let batch = sequences.len();
        let seq_len = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        if batch == 0 || seq_len == 0 {
            return Ok(vec![vec![0.0; hidden]; batch]);
        }
        if seq_len > self.header.max_positions {
            candle_core::bail!("sequence of {seq_len} tokens exceeds the model's positions");
        }
        let lengths: Vec<usize> = sequences.iter().map(|s| s.len()).collect();
        let tokens = batch * seq_len;

        let mut x = Tensor::from_vec(
            self.embed(sequences, seq_len),
            (tokens, hidden),
            &Device::Cpu,
        )?;
        for layer in &self.layers {
            let qkv = x.matmul(&layer.qkv_weight)?.apply_op1_no_bwd(&SplitHeads {
                bias: &layer.qkv_bias,
                batch,
                seq_len,
                heads,
                head_dim,
                query_scale: 1.0 / (head_dim as f32).sqrt(),
            })?;
            let shape = (batch * heads, seq_len, head_dim);
            let q = qkv.get(0)?.reshape(shape)?;
            let k = qkv.get(1)?.reshape(shape)?;
            let v = qkv.get(2)?.reshape(shape)?;
            // The element-wise steps overwrite the fresh matmul outputs instead of
            // allocating (and page-faulting in) another buffer of the same size.
            let probs = q.matmul(&k.t()?)?;
            probs.inplace_op1(&MaskedSoftmax {
                lengths: &lengths,
                heads,
                seq_len,
            })?;
            let context = probs.matmul(&v)?.apply_op1_no_bwd(&MergeHeads {
                batch,
                seq_len,
                heads,
                head_dim,
            })?;
            let attn = context.matmul(&layer.attn_out_weight)?;
            attn.inplace_op2(
                &x,
                &AddNorm {
                    bias: &layer.attn_out_bias,
                    gamma: &layer.attn_norm_gamma,
                    beta: &layer.attn_norm_beta,
                    eps: self.header.layer_norm_eps,
                },
            )?;
            x = attn;
            let inner = x.matmul(&layer.ffn_in_weight)?;
            inner.inplace_op1(&BiasGelu {
                bias: &layer.ffn_in_bias,
            })?;
            let out = inner.matmul(&layer.ffn_out_weight)?;
            out.inplace_op2(
                &x,
                &AddNorm {
                    bias: &layer.ffn_out_bias,
                    gamma: &layer.out_norm_gamma,
                    beta: &layer.out_norm_beta,
                    eps: self.header.layer_norm_eps,
                },
            )?;
            x = out;
        }

        let states = x.flatten_all()?.to_vec1::<f32>()?;
        Ok(lengths
            .iter()
            .enumerate()
            .map(|(b, &len)| {
                let mut sum = vec![0f32; hidden];
                for row in states[b * seq_len * hidden..][..len * hidden].chunks_exact(hidden) {
                    sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                }
                let inv = 1.0 / len as f32;
                sum.iter_mut().for_each(|s| *s *= inv);
                sum
            })
            .collect())
    }

    /// Word + position + token-type embeddings, layer-normalised, `[batch * seq_len, hidden]`.
    /// Padding rows stay zero (they are masked out of attention and pooling).
    fn embed(&self, sequences: &[&[u32]], seq_len: usize) -> Vec<f32> {
        let hidden = self.header.hidden;
        let row_bytes = hidden / Q4_BLOCK * Q4_BLOCK_BYTES;
        let words = &self.file[self.word_embeddings.clone()];
        let mut out = vec![0f32; sequences.len() * seq_len * hidden];
        out.par_chunks_mut(seq_len * hidden)
            .zip(sequences)
            .for_each(|(rows, ids)| {
                for (position, (row, &id)) in rows.chunks_exact_mut(hidden).zip(*ids).enumerate() {
                    dequantize_q4(&words[id as usize * row_bytes..][..row_bytes], row);
                    let pos = &self.positions[position * hidden..][..hidden];
                    for ((r, p), t) in row.iter_mut().zip(pos).zip(&self.token_type[..hidden]) {
                        *r += p + t;
                    }
                    layer_norm(
                        row,
                        &self.embed_norm_gamma,
                        &self.embed_norm_beta,
                        self.header.layer_norm_eps,
                    );
                }
            });
        out
    }
}

/// Defines a row kernel, kept out of line (so it shows up under its own name in a
/// profile) and compiled twice on x86_64: for the baseline target (SSE2, what the crate is
/// built for) and for AVX2, chosen at run time, which doubles the vector width.
macro_rules! row_kernel {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$doc])*
        #[inline(never)]
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn kernel($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn kernel_avx2($($arg: $ty),*) {
                    kernel($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features this copy was compiled for.
                    return unsafe { kernel_avx2($($arg),*) };
                }
            }
            kernel($($arg),*)
        }
    };
}

row_kernel! {
    /// Softmax over `row[..valid]`; the padding tail becomes zero.
    fn softmax_row(row: &mut [f32], valid: usize) {
        let (live, padding) = row.split_at_mut(valid);
        let peak = max(live);
        live.iter_mut().for_each(|v| *v = exp_nonpositive(*v - peak));
        let inv = 1.0 / sum(live);
        live.iter_mut().for_each(|v| *v *= inv);
        padding.fill(0.0);
    }
}

row_kernel! {
    fn bias_gelu_row(row: &mut [f32], bias: &[f32]) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v = gelu(*v + b);
        }
    }
}

row_kernel! {
    fn add_norm_row(
        row: &mut [f32],
        residual: &[f32],
        bias: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) {
        for ((v, r), b) in row.iter_mut().zip(residual).zip(bias) {
            *v += r + b;
        }
        layer_norm(row, gamma, beta, eps);
    }
}

/// The contiguous f32 data of a custom op's input.
fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("e5 encoder ops take f32 tensors");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("e5 encoder ops take contiguous tensors");
    };
    Ok(&data[start..end])
}

/// The contiguous f32 data of an in-place op's target.
fn contiguous_f32_mut<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a mut [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("e5 encoder ops take f32 tensors");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("e5 encoder ops take contiguous tensors");
    };
    Ok(&mut data[start..end])
}

/// `[batch * seq, 3 * hidden]` (Q|K|V per token) + bias → `[3, batch, heads, seq, head_dim]`,
/// with Q pre-multiplied by `1/sqrt(head_dim)`.
struct SplitHeads<'a> {
    bias: &'a [f32],
    batch: usize,
    seq_len: usize,
    heads: usize,
    head_dim: usize,
    query_scale: f32,
}

impl CustomOp1 for SplitHeads<'_> {
    fn name(&self) -> &'static str {
        "e5-split-heads"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout)?;
        let (batch, seq, heads, dim) = (self.batch, self.seq_len, self.heads, self.head_dim);
        let hidden = heads * dim;
        let mut out = vec![0f32; input.len()];
        out.par_chunks_mut(seq * dim)
            .enumerate()
            .for_each(|(block, dst)| {
                // block enumerates (part, b, h) in row-major order.
                let part = block / (batch * heads);
                let b = block / heads % batch;
                let h = block % heads;
                let column = part * hidden + h * dim;
                let bias = &self.bias[column..column + dim];
                let scale = if part == 0 { self.query_scale } else { 1.0 };
                for (t, dst_row) in dst.chunks_exact_mut(dim).enumerate() {
                    let src = &input[(b * seq + t) * 3 * hidden + column..][..dim];
                    for ((d, s), bb) in dst_row.iter_mut().zip(src).zip(bias) {
                        *d = (s + bb) * scale;
                    }
                }
            });
        Ok((
            CpuStorage::F32(out),
            Shape::from((3, batch, heads, seq, dim)),
        ))
    }
}

/// Row softmax of `[batch * heads, seq, seq]` attention scores, in place, over each
/// sequence's real keys only; probabilities of padding keys are exactly zero.
struct MaskedSoftmax<'a> {
    lengths: &'a [usize],
    heads: usize,
    seq_len: usize,
}

impl InplaceOp1 for MaskedSoftmax<'_> {
    fn name(&self) -> &'static str {
        "e5-masked-softmax"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let scores = contiguous_f32_mut(storage, layout)?;
        let seq = self.seq_len;
        scores
            .par_chunks_mut(seq)
            .enumerate()
            .for_each(|(row, scores)| {
                softmax_row(scores, self.lengths[row / (self.heads * seq)]);
            });
        Ok(())
    }
}

/// `[batch * heads, seq, head_dim]` → `[batch * seq, hidden]`.
struct MergeHeads {
    batch: usize,
    seq_len: usize,
    heads: usize,
    head_dim: usize,
}

impl CustomOp1 for MergeHeads {
    fn name(&self) -> &'static str {
        "e5-merge-heads"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout)?;
        let (seq, heads, dim) = (self.seq_len, self.heads, self.head_dim);
        let hidden = heads * dim;
        let mut out = vec![0f32; input.len()];
        out.par_chunks_mut(hidden)
            .enumerate()
            .for_each(|(token, dst)| {
                let (b, t) = (token / seq, token % seq);
                for (h, dst_head) in dst.chunks_exact_mut(dim).enumerate() {
                    dst_head.copy_from_slice(&input[((b * heads + h) * seq + t) * dim..][..dim]);
                }
            });
        Ok((
            CpuStorage::F32(out),
            Shape::from((self.batch * seq, hidden)),
        ))
    }
}

/// `gelu(x + bias)` over rows of `[tokens, ffn]`, in place.
struct BiasGelu<'a> {
    bias: &'a [f32],
}

impl InplaceOp1 for BiasGelu<'_> {
    fn name(&self) -> &'static str {
        "e5-bias-gelu"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let values = contiguous_f32_mut(storage, layout)?;
        values
            .par_chunks_mut(self.bias.len())
            .for_each(|row| bias_gelu_row(row, self.bias));
        Ok(())
    }
}

/// Post-LN residual over rows of `[tokens, hidden]`: the sublayer output `y` (updated in
/// place) becomes `LayerNorm(residual + y + bias)`.
struct AddNorm<'a> {
    bias: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    eps: f32,
}

impl InplaceOp2 for AddNorm<'_> {
    fn name(&self) -> &'static str {
        "e5-add-norm"
    }

    fn cpu_fwd(
        &self,
        update: &mut CpuStorage,
        update_layout: &Layout,
        residual: &CpuStorage,
        residual_layout: &Layout,
    ) -> candle_core::Result<()> {
        let update = contiguous_f32_mut(update, update_layout)?;
        let residual = contiguous_f32(residual, residual_layout)?;
        if residual.len() != update.len() {
            candle_core::bail!("e5-add-norm: operand sizes differ");
        }
        let width = self.bias.len();
        update
            .par_chunks_mut(width)
            .zip(residual.par_chunks(width))
            .for_each(|(row, residual)| {
                add_norm_row(row, residual, self.bias, self.gamma, self.beta, self.eps)
            });
        Ok(())
    }
}
