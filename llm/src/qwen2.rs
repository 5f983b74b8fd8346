//! A Qwen2 decoder (GGUF-quantized weights) whose KV cache lives outside the model.
//!
//! [`Qwen2Weights`] is immutable after loading and can be shared between threads; all
//! per-sequence state is in [`KvCache`], which is cheap to clone (tensors are reference
//! counted and never mutated in place), so a computed prefix can be kept as a snapshot,
//! truncated to a shorter common prefix and extended again.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{bail, DType, Device, Module, Result, Tensor};

/// Hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2Config {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub hidden: usize,
    pub head_dim: usize,
    pub n_layer: usize,
    pub rms_eps: f64,
    pub rope_base: f32,
    /// Context length the model was trained for (from the metadata).
    pub trained_context: usize,
    /// Positions the rope tables cover: the largest `cache.len()` this model accepts.
    pub max_context: usize,
}

/// A projection: the quantized matrix (kept for fused matmuls) and its matmul wrapper.
#[derive(Debug, Clone)]
struct Proj {
    q: Arc<QTensor>,
    mm: QMatMul,
}

impl Proj {
    fn new(t: QTensor) -> Result<Self> {
        let q = Arc::new(t);
        let mm = QMatMul::from_arc(q.clone())?;
        Ok(Self { q, mm })
    }
}

#[derive(Debug, Clone)]
struct Layer {
    attn_norm: Tensor,
    wq: Proj,
    wk: Proj,
    wv: Proj,
    bq: Tensor,
    bk: Tensor,
    bv: Tensor,
    wo: Proj,
    ffn_norm: Tensor,
    gate: Proj,
    up: Proj,
    down: Proj,
}

/// The model weights. Immutable; share with `Arc`.
#[derive(Debug)]
pub struct Qwen2Weights {
    cfg: Qwen2Config,
    embed: Arc<QTensor>,
    output: QMatMul,
    out_norm: Tensor,
    layers: Vec<Layer>,
    cos: Tensor,
    sin: Tensor,
    device: Device,
    fuse: bool,
}

/// Per-layer keys and values of the positions computed so far, each `(1, n_kv_head, len,
/// head_dim)`. Cloning is cheap (reference-counted tensors).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    pub fn new(n_layer: usize) -> Self {
        Self {
            layers: vec![None; n_layer],
            len: 0,
        }
    }

    /// Number of positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps only the first `n` positions (no-op when `n >= len`).
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n >= self.len {
            return Ok(());
        }
        for slot in self.layers.iter_mut() {
            if n == 0 {
                *slot = None;
            } else if let Some((k, v)) = slot.take() {
                *slot = Some((k.narrow(2, 0, n)?, v.narrow(2, 0, n)?));
            }
        }
        self.len = n;
        Ok(())
    }

    /// Bytes of tensor data this cache refers to (an upper bound after truncation).
    pub fn approx_bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }

    /// Appends `k`, `v` (`(1, n_kv, t, d)`) for `layer` and returns the full tensors.
    fn append(&mut self, layer: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match &self.layers[layer] {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    #[cfg(test)]
    pub(crate) fn layer(&self, i: usize) -> Option<&(Tensor, Tensor)> {
        self.layers[i].as_ref()
    }

    #[cfg(test)]
    pub(crate) fn append_for_test(&mut self, layer: usize, k: Tensor, v: Tensor) -> Result<()> {
        let t = k.dim(2)?;
        self.append(layer, k, v)?;
        if layer + 1 == self.layers.len() {
            self.len += t;
        }
        Ok(())
    }
}

/// A causal mask for `t` new positions following `past` cached ones: `(t, past + t)`,
/// 0 where attention is allowed and -inf where position j lies after query i.
pub fn causal_mask(t: usize, past: usize, device: &Device) -> Result<Tensor> {
    let total = past + t;
    let mut m = vec![0f32; t * total];
    for i in 0..t {
        for j in (past + i + 1)..total {
            m[i * total + j] = f32::NEG_INFINITY;
        }
    }
    Tensor::from_vec(m, (t, total), device)
}

impl Qwen2Weights {
    /// Loads a GGUF file. `max_context` caps the rope tables (and so the usable context).
    pub fn load(path: &Path, max_context: usize) -> Result<Self> {
        let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
        let content = gguf_file::Content::read(&mut file).map_err(|e| e.with_path(path))?;
        Self::from_gguf(content, &mut file, max_context, &Device::Cpu)
    }

    pub fn from_gguf<R: std::io::Seek + std::io::Read>(
        ct: gguf_file::Content,
        r: &mut R,
        max_context: usize,
        device: &Device,
    ) -> Result<Self> {
        let md = |key: &str| match ct.metadata.get(key) {
            Some(v) => Ok(v),
            None => bail!("GGUF metadata has no `{key}`"),
        };
        let n_head = md("qwen2.attention.head_count")?.to_u32()? as usize;
        let n_kv_head = md("qwen2.attention.head_count_kv")?.to_u32()? as usize;
        let hidden = md("qwen2.embedding_length")?.to_u32()? as usize;
        let trained_context = md("qwen2.context_length")?.to_u32()? as usize;
        let n_layer = md("qwen2.block_count")?.to_u32()? as usize;
        let rms_eps = md("qwen2.attention.layer_norm_rms_epsilon")?.to_f32()? as f64;
        let rope_base = md("qwen2.rope.freq_base")
            .and_then(|v| v.to_f32())
            .unwrap_or(10_000.0);
        if n_head == 0
            || n_kv_head == 0
            || !n_head.is_multiple_of(n_kv_head)
            || !hidden.is_multiple_of(n_head)
        {
            bail!("unsupported head layout: {n_head} heads, {n_kv_head} kv heads, hidden {hidden}")
        }
        let head_dim = hidden / n_head;
        let max_context = max_context.min(trained_context).max(1);
        let cfg = Qwen2Config {
            n_head,
            n_kv_head,
            hidden,
            head_dim,
            n_layer,
            rms_eps,
            rope_base,
            trained_context,
            max_context,
        };

        let mut get = |name: &str| ct.tensor(r, name, device);
        let dense = |t: QTensor| t.dequantize(device);

        let embed = Arc::new(get("token_embd.weight")?);
        let out_norm = dense(get("output_norm.weight")?)?;
        let output = if ct.tensor_infos.contains_key("output.weight") {
            QMatMul::from_qtensor(get("output.weight")?)?
        } else {
            QMatMul::from_arc(embed.clone())?
        };
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let p = format!("blk.{i}");
            let mut g = |s: &str| get(&format!("{p}.{s}"));
            layers.push(Layer {
                attn_norm: dense(g("attn_norm.weight")?)?,
                wq: Proj::new(g("attn_q.weight")?)?,
                wk: Proj::new(g("attn_k.weight")?)?,
                wv: Proj::new(g("attn_v.weight")?)?,
                bq: dense(g("attn_q.bias")?)?,
                bk: dense(g("attn_k.bias")?)?,
                bv: dense(g("attn_v.bias")?)?,
                wo: Proj::new(g("attn_output.weight")?)?,
                ffn_norm: dense(g("ffn_norm.weight")?)?,
                gate: Proj::new(g("ffn_gate.weight")?)?,
                up: Proj::new(g("ffn_up.weight")?)?,
                down: Proj::new(g("ffn_down.weight")?)?,
            });
        }
        let (cos, sin) = rope_tables(head_dim, rope_base, max_context, device)?;
        let fuse = std::env::var("KIZUNA_NO_FUSED_GEMV").map_or(true, |v| v.is_empty() || v == "0");
        Ok(Self {
            cfg,
            embed,
            output,
            out_norm,
            layers,
            cos,
            sin,
            device: device.clone(),
            fuse,
        })
    }

    pub fn config(&self) -> &Qwen2Config {
        &self.cfg
    }

    /// An empty cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.n_layer)
    }

    /// Vocabulary size of the output layer.
    pub fn vocab_size(&self) -> usize {
        self.embed.shape().dims()[0]
    }

    /// Runs `tokens` at positions `cache.len()..` and returns the logits (f32, `(vocab,)`)
    /// of the last one. The cache is extended by `tokens.len()` positions.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let t = tokens.len();
        if t == 0 {
            bail!("forward called with no tokens")
        }
        if cache.layers.len() != self.cfg.n_layer {
            bail!(
                "KV cache has {} layers, model has {}",
                cache.layers.len(),
                self.cfg.n_layer
            )
        }
        let past = cache.len;
        if past + t > self.cfg.max_context {
            bail!(
                "context overflow: {past} cached + {t} new tokens > {} positions",
                self.cfg.max_context
            )
        }
        let c = &self.cfg;
        let rep = c.n_head / c.n_kv_head;
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.embedding(&ids)?.unsqueeze(0)?; // (1, t, hidden)
        let mask = if t > 1 {
            Some(causal_mask(t, past, &self.device)?)
        } else {
            None
        };
        let cos = self.cos.narrow(0, past, t)?;
        let sin = self.sin.narrow(0, past, t)?;
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        let eps = c.rms_eps as f32;

        for (li, l) in self.layers.iter().enumerate() {
            // --- attention
            let h = candle_nn::ops::rms_norm(&x, &l.attn_norm, eps)?;
            let qkv = self.project(&[&l.wq, &l.wk, &l.wv], &h)?;
            let q = qkv[0].broadcast_add(&l.bq)?;
            let k = qkv[1].broadcast_add(&l.bk)?;
            let v = qkv[2].broadcast_add(&l.bv)?;
            let q = q
                .reshape((1, t, c.n_head, c.head_dim))?
                .transpose(1, 2)?
                .contiguous()?;
            let k = k
                .reshape((1, t, c.n_kv_head, c.head_dim))?
                .transpose(1, 2)?
                .contiguous()?;
            let v = v
                .reshape((1, t, c.n_kv_head, c.head_dim))?
                .transpose(1, 2)?
                .contiguous()?;
            let q = candle_nn::rotary_emb::rope(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope(&k, &cos, &sin)?;
            let (k, v) = cache.append(li, k, v)?;
            let kv_len = past + t;
            // Grouped-query attention without repeating K/V: query heads sharing a KV head
            // are consecutive, so fold them into the row dimension.
            let q = (q * scale)?.reshape((1, c.n_kv_head, rep * t, c.head_dim))?;
            let k = k.contiguous()?;
            let v = v.contiguous()?;
            let att = q.matmul(&k.t()?)?; // (1, n_kv, rep*t, kv_len)
            let att = match &mask {
                None => att,
                Some(m) => att
                    .reshape((1, c.n_head, t, kv_len))?
                    .broadcast_add(m)?
                    .reshape((1, c.n_kv_head, rep * t, kv_len))?,
            };
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att.matmul(&v)?; // (1, n_kv, rep*t, d)
            let y = y
                .reshape((1, c.n_head, t, c.head_dim))?
                .transpose(1, 2)?
                .reshape((1, t, c.hidden))?;
            let y = l.wo.mm.forward(&y)?;
            x = (x + y)?;

            // --- feed-forward
            let h = candle_nn::ops::rms_norm(&x, &l.ffn_norm, eps)?;
            let gu = self.project(&[&l.gate, &l.up], &h)?;
            let h = (gu[0].silu()? * &gu[1])?;
            let h = l.down.mm.forward(&h)?;
            x = (x + h)?;
        }
        cache.len = past + t;

        let last = x.narrow(1, t - 1, 1)?;
        let last = candle_nn::ops::rms_norm(&last, &self.out_norm, eps)?;
        let logits = self.output.forward(&last)?; // (1, 1, vocab)
        logits.flatten_all()?.to_dtype(DType::F32)
    }

    /// Applies several projections to the same input, fused into one pass where candle
    /// supports it (same quantization type), else one matmul each.
    fn project(&self, ps: &[&Proj], x: &Tensor) -> Result<Vec<Tensor>> {
        if self.fuse && ps.len() > 1 {
            let dtype = ps[0].q.dtype();
            let same = ps.iter().all(|p| p.q.dtype() == dtype)
                && !matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
            if same {
                let qs: Vec<&QTensor> = ps.iter().map(|p| p.q.as_ref()).collect();
                if let Some(out) = QTensor::gemv_fused_shared_lhs(&qs, x)? {
                    return Ok(out);
                }
            }
        }
        ps.iter().map(|p| p.mm.forward(x)).collect()
    }

    /// A human-readable summary of the weight types (for logs).
    pub fn describe(&self) -> String {
        let l = &self.layers[0];
        format!(
            "qwen2 {} layers, {} heads ({} kv), hidden {}, ctx {} (trained {}), embed {:?}, q {:?}, k {:?}, v {:?}, o {:?}, gate {:?}, up {:?}, down {:?}",
            self.cfg.n_layer,
            self.cfg.n_head,
            self.cfg.n_kv_head,
            self.cfg.hidden,
            self.cfg.max_context,
            self.cfg.trained_context,
            self.embed.dtype(),
            l.wq.q.dtype(),
            l.wk.q.dtype(),
            l.wv.q.dtype(),
            l.wo.q.dtype(),
            l.gate.q.dtype(),
            l.up.q.dtype(),
            l.down.q.dtype(),
        )
    }
}

/// cos/sin tables `(positions, head_dim / 2)` for the rotate-half ("neox") rope layout.
fn rope_tables(
    head_dim: usize,
    base: f32,
    positions: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| 1.0 / (base as f64).powf((2 * i) as f64 / head_dim as f64))
        .collect();
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for p in 0..positions {
        for f in &inv_freq {
            let a = p as f64 * f;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    Ok((
        Tensor::from_vec(cos, (positions, half), device)?,
        Tensor::from_vec(sin, (positions, half), device)?,
    ))
}
