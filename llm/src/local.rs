//! Embedded GGUF backend: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M) run in-process on the CPU
//! with candle, with prefix KV-cache reuse across calls.
//!
//! - The prompt is rendered as Qwen2.5 ChatML ([`render_chatml`]); tools are described by the
//!   agent inside the system message (no native tool calling).
//! - The KV state of earlier prompts is kept as snapshots in one byte-bounded LRU
//!   (`LocalConfig::kv_cache_bytes`): one per conversation (`LlmRequest::cache_key`) and one
//!   per distinct system turn. The agent puts the retrieved passages in the system turn
//!   (system prompt, then passages, then the conversation), so a turn that retrieves
//!   passages seen before starts from their prefilled state. A call reuses the snapshot with
//!   the longest common token prefix (truncating it when it holds more than matches) and
//!   only prefills the rest; the result is the same tokens as a prefill from scratch.
//! - All compute runs on a blocking thread, one generation at a time. Generation stops
//!   early when the delta receiver is dropped (the caller gave up).
//!
//! Benchmarks: [`LocalModel::measure`] runs a two-turn Japanese exchange and reports load
//! time, system-prompt prefill time, second-turn time to first token and decode speed.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use candle_core::Tensor;
use candle_transformers::generation::{LogitsProcessor, Sampling};
use kizuna_agent::llm::{
    ChatMessage, ChatRole, LanguageModel, LlmError, LlmOutput, LlmRequest, Usage,
};
use serde::Serialize;
use tokenizers::Tokenizer;
use tokio::sync::mpsc;

use crate::qwen2::{KvCache, Qwen2Weights};

/// Default location of the model, relative to the working directory.
pub const DEFAULT_MODEL_PATH: &str = "models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf";
/// Default location of the tokenizer, relative to the working directory.
pub const DEFAULT_TOKENIZER_PATH: &str = "models/qwen2.5-tokenizer.json";
/// Added tokens from this id up exist only in Qwen3's tokenizer (`<tool_response>`,
/// `</tool_response>`, `<think>`, `</think>`); Qwen2.5 has no such tokens.
const QWEN3_ONLY_FIRST_ID: u64 = 151_665;

const IM_START: &str = "<|im_start|>";
const IM_END: &str = "<|im_end|>";
const ENDOFTEXT: &str = "<|endoftext|>";
const DEFAULT_SYSTEM: &str = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/// Threads the model's matrix products use: `RAYON_NUM_THREADS` when set (candle reads it
/// as rayon does), else the physical cores.
pub fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// Default budget of the KV snapshot cache, in MiB.
pub const DEFAULT_KV_CACHE_MIB: usize = 1024;

/// Settings of the local backend.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalConfig {
    pub model_path: PathBuf,
    pub tokenizer_path: PathBuf,
    /// Positions the model may use (prompt + reply); caps the rope tables. Default 4096.
    pub context_tokens: usize,
    /// Seed of the sampler (only used when the temperature is above zero).
    pub seed: u64,
    /// Sampling temperature. `Some(t)` overrides the request's temperature (`0.0` = greedy,
    /// the default: a 1.5B model follows the tool-call format best when greedy);
    /// `None` uses `LlmRequest::temperature`.
    pub temperature: Option<f32>,
    /// Name reported by [`LanguageModel::name`].
    pub model_name: String,
    /// Bytes of KV snapshots kept (system turns with their passages, and conversations;
    /// least recently used dropped first). Qwen2.5-1.5B takes 56 KiB per position.
    pub kv_cache_bytes: usize,
    /// Prompt tokens per forward pass during prefill (bounds memory of attention scores).
    pub prefill_chunk: usize,
    /// Repetition penalty over the last `repeat_last_n` generated tokens; 1.0 = off.
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            model_path: PathBuf::from(DEFAULT_MODEL_PATH),
            tokenizer_path: PathBuf::from(DEFAULT_TOKENIZER_PATH),
            context_tokens: 4096,
            seed: 299_792_458,
            temperature: Some(0.0),
            model_name: "local:qwen2.5-coder-1.5b".to_string(),
            kv_cache_bytes: DEFAULT_KV_CACHE_MIB << 20,
            prefill_chunk: 256,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
        }
    }
}

impl LocalConfig {
    /// Default settings with the given model and tokenizer files.
    pub fn with_paths(model_path: impl Into<PathBuf>, tokenizer_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
            tokenizer_path: tokenizer_path.into(),
            ..Self::default()
        }
    }
}

/// The embedded model. Cheap to clone (shared state).
#[derive(Clone)]
pub struct LocalModel {
    inner: Arc<Engine>,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("name", &self.inner.cfg.model_name)
            .field("model_path", &self.inner.cfg.model_path)
            .finish()
    }
}

/// Figures of [`LocalModel::measure`]. Times in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LocalBenchReport {
    /// Time [`LocalModel::load`] took (weights + tokenizer).
    pub load_ms: u64,
    pub system_prompt_tokens: usize,
    /// Prefill of the system prompt from an empty cache.
    pub system_prefill_ms: u64,
    pub first_turn_prompt_tokens: u32,
    pub first_turn_cached_tokens: u32,
    pub first_turn_ttft_ms: u64,
    pub second_turn_prompt_tokens: u32,
    pub second_turn_cached_tokens: u32,
    /// Time to first token of turn 2 of a conversation (its prefix cache warm).
    pub second_turn_ttft_ms: u64,
    /// Compute time of turn 2's uncached prompt tokens (TTFT minus tokenizing/queueing).
    pub second_turn_prefill_ms: u64,
    /// Decode speed over both turns (tokens after the first, per second).
    pub decode_tokens_per_s: f64,
    pub completion_tokens: u32,
    pub first_reply: String,
    pub second_reply: String,
}

#[derive(Clone)]
struct Snapshot {
    tokens: Vec<u32>,
    cache: KvCache,
}

/// What a snapshot is kept for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SnapshotKey {
    /// A whole system turn: the system prompt with the passages the agent put in it
    /// (docs/benchmarks.md, "Knowledge that is already prefilled"). Any conversation whose
    /// turn retrieves the same passages starts from it; identified by its tokens.
    Prefix,
    /// The latest prompt and reply of one conversation (`LlmRequest::cache_key`).
    Conversation(String),
}

/// KV snapshots, least recently used first, within a byte budget.
#[derive(Default)]
struct CacheState {
    entries: VecDeque<(SnapshotKey, Snapshot)>,
    /// Snapshots dropped to stay within the budget, since start.
    evictions: u64,
}

/// What the KV cache holds now ([`LocalModel::cache_stats`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CacheStats {
    /// System-turn (system prompt + passages) snapshots.
    pub prefixes: usize,
    /// Conversation snapshots.
    pub conversations: usize,
    /// Positions held over all snapshots.
    pub tokens: usize,
    /// Bytes those positions take (an upper bound: a truncated snapshot shares its memory).
    pub bytes: usize,
    pub budget_bytes: usize,
    /// KV bytes one position takes with this model.
    pub bytes_per_token: usize,
    pub evictions: u64,
}

impl CacheState {
    /// The snapshot sharing the longest token prefix with `tokens` (common length and a
    /// cheap clone); it becomes the most recently used.
    fn best_prefix(&mut self, tokens: &[u32]) -> Option<(usize, Snapshot)> {
        let (index, common) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, (_, s))| (i, common_prefix(&s.tokens, tokens)))
            .filter(|(_, n)| *n > 0)
            .max_by_key(|(i, n)| (*n, *i))?;
        let entry = self.entries.remove(index)?;
        let snap = entry.1.clone();
        self.entries.push_back(entry);
        Some((common, snap))
    }

    /// Whether a system-turn snapshot of exactly `tokens` is kept.
    fn has_prefix(&self, tokens: &[u32]) -> bool {
        self.entries
            .iter()
            .any(|(k, s)| *k == SnapshotKey::Prefix && s.tokens == tokens)
    }

    /// Keeps `snap` as the most recently used, replacing the entry with the same key (or, for
    /// a prefix, the same tokens), then drops snapshots until the rest fit `budget` bytes:
    /// the least recently used conversation first, prefixes only when no other
    /// conversation is left (the newest always stays). A conversation's snapshot mostly
    /// serves the rest of its own turn, while a system turn with passages serves every
    /// customer whose question retrieves them (docs/benchmarks.md, cache under load).
    fn put(&mut self, key: SnapshotKey, snap: Snapshot, budget: usize, bytes_per_token: usize) {
        self.entries.retain(|(k, s)| match (&key, k) {
            (SnapshotKey::Prefix, SnapshotKey::Prefix) => s.tokens != snap.tokens,
            _ => *k != key,
        });
        self.entries.push_back((key, snap));
        while self.entries.len() > 1 && self.tokens() * bytes_per_token > budget {
            let newest = self.entries.len() - 1;
            let victim = self
                .entries
                .iter()
                .take(newest)
                .position(|(k, _)| matches!(k, SnapshotKey::Conversation(_)))
                .unwrap_or(0);
            self.entries.remove(victim);
            self.evictions += 1;
        }
    }

    fn tokens(&self) -> usize {
        self.entries.iter().map(|(_, s)| s.tokens.len()).sum()
    }

    fn stats(&self, budget_bytes: usize, bytes_per_token: usize) -> CacheStats {
        let prefixes = self
            .entries
            .iter()
            .filter(|(k, _)| *k == SnapshotKey::Prefix)
            .count();
        CacheStats {
            prefixes,
            conversations: self.entries.len() - prefixes,
            tokens: self.tokens(),
            bytes: self.tokens() * bytes_per_token,
            budget_bytes,
            bytes_per_token,
            evictions: self.evictions,
        }
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

struct Engine {
    cfg: LocalConfig,
    weights: Qwen2Weights,
    tokenizer: Tokenizer,
    stop_ids: Vec<u32>,
    load_time: Duration,
    /// Serializes generations and guards the snapshots.
    state: Mutex<CacheState>,
}

/// What one blocking generation measured besides the output.
struct GenStats {
    prefill: Duration,
    decode: Duration,
    /// Tokens decoded after the first one (the ones `decode` covers).
    decoded_after_first: usize,
}

fn model_err(e: impl std::fmt::Display) -> LlmError {
    LlmError::Request(format!("local model: {e}"))
}

impl LocalModel {
    /// Loads the model and tokenizer (blocking; a few seconds). Fails with
    /// [`LlmError::Unavailable`] naming the missing file when the assets are absent.
    pub fn load(cfg: LocalConfig) -> Result<Self, LlmError> {
        let started = Instant::now();
        for (what, path) in [
            ("model", &cfg.model_path),
            ("tokenizer", &cfg.tokenizer_path),
        ] {
            if !path.is_file() {
                return Err(LlmError::Unavailable(format!(
                    "local {what} file {} not found; run scripts/setup to download the model assets",
                    path.display()
                )));
            }
        }
        let tokenizer = load_tokenizer(&cfg.tokenizer_path)?;
        let weights = Qwen2Weights::load(&cfg.model_path, cfg.context_tokens).map_err(|e| {
            LlmError::Unavailable(format!(
                "cannot load local model {}: {e} (run scripts/setup to fetch it again)",
                cfg.model_path.display()
            ))
        })?;
        let mut stop_ids = Vec::new();
        for s in [IM_END, ENDOFTEXT, IM_START] {
            match tokenizer.token_to_id(s) {
                Some(id) => stop_ids.push(id),
                None => {
                    return Err(LlmError::Unavailable(format!(
                        "tokenizer {} has no `{s}` token; is it a Qwen2.5 tokenizer?",
                        cfg.tokenizer_path.display()
                    )))
                }
            }
        }
        tracing::info!(
            model = %cfg.model_path.display(),
            load_ms = started.elapsed().as_millis() as u64,
            "loaded local model: {}",
            weights.describe()
        );
        Ok(Self {
            inner: Arc::new(Engine {
                weights,
                tokenizer,
                stop_ids,
                load_time: started.elapsed(),
                state: Mutex::new(CacheState::default()),
                cfg,
            }),
        })
    }

    /// [`LocalModel::load`] on a blocking thread.
    pub async fn load_async(cfg: LocalConfig) -> Result<Self, LlmError> {
        tokio::task::spawn_blocking(move || Self::load(cfg))
            .await
            .map_err(|e| LlmError::Unavailable(format!("model loading task failed: {e}")))?
    }

    pub fn config(&self) -> &LocalConfig {
        &self.inner.cfg
    }

    /// How long loading took.
    pub fn load_time(&self) -> Duration {
        self.inner.load_time
    }

    /// Prefills `system_prompt` (rendered as the system turn exactly as [`render_chatml`]
    /// does) and keeps it as a prefix snapshot, so a call whose system turn starts with this
    /// text skips its prefill (passages appended to it are prefilled on top). Blocking; returns the time spent computing.
    pub fn warm_prefix_blocking(&self, system_prompt: &str) -> Result<Duration, LlmError> {
        self.inner.warm_prefix(system_prompt)
    }

    /// [`LocalModel::warm_prefix_blocking`] on a blocking thread.
    pub async fn warm_prefix(&self, system_prompt: &str) -> Result<Duration, LlmError> {
        let inner = self.inner.clone();
        let sp = system_prompt.to_string();
        tokio::task::spawn_blocking(move || inner.warm_prefix(&sp))
            .await
            .map_err(|e| model_err(format!("warm-up task failed: {e}")))?
    }

    /// What the KV snapshot cache holds now.
    pub fn cache_stats(&self) -> CacheStats {
        let e = &self.inner;
        e.lock().stats(e.cfg.kv_cache_bytes, e.bytes_per_token())
    }

    /// Drops all KV snapshots (frees their memory).
    pub fn clear_cache(&self) {
        *self.inner.lock() = CacheState::default();
    }

    /// Number of tokens `text` encodes to (no special-token handling beyond ChatML markers).
    pub fn count_tokens(&self, text: &str) -> Result<usize, LlmError> {
        Ok(self.inner.encode(text)?.len())
    }

    /// Runs a short two-turn Japanese exchange and reports timings: system-prompt prefill
    /// from an empty cache, time to first token of each turn (the second with the
    /// conversation's prefix cached) and decode speed. `system_prompt` defaults to a
    /// built-in ~300-token customer-support prompt; `max_tokens` per turn (e.g. 32).
    /// It runs on an empty snapshot cache; the snapshots kept before are restored afterwards.
    pub async fn measure(
        &self,
        system_prompt: Option<&str>,
        max_tokens: u32,
    ) -> Result<LocalBenchReport, LlmError> {
        let inner = self.inner.clone();
        let sp = system_prompt.unwrap_or(BENCH_SYSTEM_PROMPT).to_string();
        tokio::task::spawn_blocking(move || inner.measure(&sp, max_tokens))
            .await
            .map_err(|e| model_err(format!("benchmark task failed: {e}")))?
    }
}

#[async_trait]
impl LanguageModel for LocalModel {
    fn name(&self) -> &str {
        &self.inner.cfg.model_name
    }

    fn native_tool_calls(&self) -> bool {
        false
    }

    async fn generate(
        &self,
        request: LlmRequest,
        deltas: mpsc::UnboundedSender<String>,
    ) -> Result<LlmOutput, LlmError> {
        let started = Instant::now();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner
                .generate(&request, &deltas, started)
                .map(|(out, _)| out)
        })
        .await
        .map_err(|e| model_err(format!("generation task failed: {e}")))?
    }
}

impl Engine {
    fn lock(&self) -> MutexGuard<'_, CacheState> {
        // A panic mid-generation leaves only a stale snapshot set behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| model_err(format!("tokenizing: {e}")))
    }

    fn decode(&self, ids: &[u32]) -> Result<String, LlmError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| model_err(format!("detokenizing: {e}")))
    }

    fn max_context(&self) -> usize {
        self.weights.config().max_context
    }

    /// Prefills `tokens[from..]` onto `cache` (which holds `tokens[..from]`) in chunks,
    /// stopping at `boundary` once so the caller can snapshot it via `at_boundary`.
    /// Returns the logits of the last token, or `None` when `cancelled()` turned true
    /// between chunks (the cache then holds the part computed so far).
    fn prefill(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        boundary: usize,
        mut at_boundary: impl FnMut(&KvCache),
        cancelled: impl Fn() -> bool,
    ) -> Result<Option<Tensor>, LlmError> {
        let chunk = self.cfg.prefill_chunk.max(1);
        let mut pos = cache.len();
        let mut logits = None;
        while pos < tokens.len() {
            if cancelled() {
                return Ok(None);
            }
            let mut end = (pos + chunk).min(tokens.len());
            if pos < boundary && end > boundary {
                end = boundary;
            }
            logits = Some(
                self.weights
                    .forward(&tokens[pos..end], cache)
                    .map_err(model_err)?,
            );
            pos = end;
            if pos == boundary {
                at_boundary(cache);
            }
        }
        logits
            .map(Some)
            .ok_or_else(|| model_err("nothing to prefill"))
    }

    fn warm_prefix(&self, system_prompt: &str) -> Result<Duration, LlmError> {
        let text = render_chatml_turns(&[ChatMessage::system(system_prompt)]);
        let tokens = self.encode(&text)?;
        if tokens.len() >= self.max_context() {
            return Err(LlmError::PromptTooLong {
                tokens: tokens.len(),
                limit: self.max_context(),
            });
        }
        let mut st = self.lock();
        if st.has_prefix(&tokens) {
            st.best_prefix(&tokens); // most recently used
            return Ok(Duration::ZERO);
        }
        let started = Instant::now();
        let mut cache = match st.best_prefix(&tokens) {
            Some((n, snap)) => {
                let mut c = snap.cache;
                c.truncate(n.min(tokens.len())).map_err(model_err)?;
                c
            }
            None => self.weights.new_cache(),
        };
        if cache.len() < tokens.len() {
            self.prefill(&tokens, &mut cache, 0, |_| {}, || false)?;
        }
        self.keep(&mut st, SnapshotKey::Prefix, Snapshot { tokens, cache });
        Ok(started.elapsed())
    }

    /// KV bytes of one position (keys and values of every layer, f32).
    fn bytes_per_token(&self) -> usize {
        let c = self.weights.config();
        c.n_layer * 2 * c.n_kv_head * c.head_dim * std::mem::size_of::<f32>()
    }

    fn keep(&self, st: &mut CacheState, key: SnapshotKey, snap: Snapshot) {
        st.put(key, snap, self.cfg.kv_cache_bytes, self.bytes_per_token());
    }

    fn sampler(&self, request_temperature: f32) -> Sampler {
        let t = self.cfg.temperature.unwrap_or(request_temperature);
        Sampler::new(
            self.cfg.seed,
            t,
            self.cfg.repeat_penalty,
            self.cfg.repeat_last_n,
        )
    }

    fn generate(
        &self,
        request: &LlmRequest,
        deltas: &mpsc::UnboundedSender<String>,
        started: Instant,
    ) -> Result<(LlmOutput, GenStats), LlmError> {
        let prompt = render_chatml(&request.messages);
        let tokens = self.encode(&prompt)?;
        let n = tokens.len();
        let ctx = self.max_context();
        if n >= ctx {
            return Err(LlmError::PromptTooLong {
                tokens: n,
                limit: ctx,
            });
        }
        // Where the system turn (system prompt + passages) ends: kept as a prefix snapshot.
        let sys_len = match request.messages.first() {
            Some(m) if m.role == ChatRole::System => {
                let sys = self.encode(&render_chatml_turns(std::slice::from_ref(m)))?;
                if tokens.starts_with(&sys) {
                    sys.len()
                } else {
                    0
                }
            }
            _ => 0,
        };

        let mut st = self.lock();
        let wait = started.elapsed();
        let prefill_started = Instant::now();
        let (mut cache, cached) = match st.best_prefix(&tokens) {
            Some((common, snap)) => {
                // Keep at least one token to run: its logits start the reply.
                let reuse = common.min(n - 1);
                let mut c = snap.cache;
                c.truncate(reuse).map_err(model_err)?;
                (c, reuse)
            }
            None => (self.weights.new_cache(), 0),
        };
        let prefix_kept = sys_len == 0 || st.has_prefix(&tokens[..sys_len]);
        if !prefix_kept && sys_len <= cached {
            // The system turn came from a conversation's snapshot: keep it on its own too
            // (a narrowed view, sharing that snapshot's memory).
            let mut c = cache.clone();
            c.truncate(sys_len).map_err(model_err)?;
            let snap = Snapshot {
                tokens: tokens[..sys_len].to_vec(),
                cache: c,
            };
            self.keep(&mut st, SnapshotKey::Prefix, snap);
        }
        let boundary = if prefix_kept || sys_len <= cached {
            0
        } else {
            sys_len
        };
        let mut new_prefix = None;
        let prefilled = self.prefill(
            &tokens,
            &mut cache,
            boundary,
            |c| {
                new_prefix = Some(Snapshot {
                    tokens: tokens[..boundary].to_vec(),
                    cache: c.clone(),
                });
            },
            || deltas.is_closed(),
        )?;
        if let Some(snap) = new_prefix {
            self.keep(&mut st, SnapshotKey::Prefix, snap);
        }
        let Some(mut logits) = prefilled else {
            // The caller gave up; keep what was computed for its retry.
            if let Some(key) = &request.cache_key {
                let done = tokens[..cache.len()].to_vec();
                let snap = Snapshot {
                    tokens: done,
                    cache,
                };
                self.keep(&mut st, SnapshotKey::Conversation(key.clone()), snap);
            }
            return Err(LlmError::Request(
                "local generation cancelled: the caller stopped listening".into(),
            ));
        };
        let prefill = prefill_started.elapsed();

        // Decode.
        let max_new = (request.max_tokens as usize).min(ctx - n);
        let mut sampler = self.sampler(request.temperature);
        let mut generated: Vec<u32> = Vec::new();
        let mut streamer = DeltaStreamer::default();
        let mut text = String::new();
        let mut ttft = None;
        let mut first_at = None;
        while generated.len() < max_new {
            let next = sampler.sample(&logits, &generated).map_err(model_err)?;
            if ttft.is_none() {
                ttft = Some(started.elapsed());
                first_at = Some(Instant::now());
            }
            if self.stop_ids.contains(&next) {
                break;
            }
            generated.push(next);
            text = self.decode(&generated)?;
            if let Some(d) = streamer.push(&text) {
                let _ = deltas.send(d);
            }
            if generated.len() >= max_new || cache.len() >= ctx || deltas.is_closed() {
                break;
            }
            logits = self
                .weights
                .forward(&[next], &mut cache)
                .map_err(model_err)?;
        }
        if let Some(d) = streamer.finish(&text) {
            let _ = deltas.send(d);
        }
        text.truncate(final_text(&text).len());
        let decode = first_at.map_or(Duration::ZERO, |t| t.elapsed());

        // Keep what the cache now holds: the prompt and the reply tokens fed back so far.
        if let Some(key) = &request.cache_key {
            let mut all = tokens;
            all.extend_from_slice(&generated);
            all.truncate(cache.len());
            let snap = Snapshot { tokens: all, cache };
            self.keep(&mut st, SnapshotKey::Conversation(key.clone()), snap);
        }
        drop(st);

        let total = started.elapsed();
        tracing::debug!(
            prompt_tokens = n,
            cached,
            completion = generated.len(),
            wait_ms = wait.as_millis() as u64,
            prefill_ms = prefill.as_millis() as u64,
            decode_ms = decode.as_millis() as u64,
            "local generation"
        );
        let usage = Usage {
            prompt_tokens: n as u32,
            cached_prompt_tokens: cached as u32,
            completion_tokens: generated.len() as u32,
            time_to_first_token: ttft.unwrap_or(total),
            total_time: total,
        };
        Ok((
            LlmOutput {
                text,
                tool_calls: Vec::new(),
                usage,
            },
            GenStats {
                prefill,
                decode,
                decoded_after_first: generated.len().saturating_sub(1),
            },
        ))
    }

    fn measure(&self, system_prompt: &str, max_tokens: u32) -> Result<LocalBenchReport, LlmError> {
        // The benchmark's snapshots must not push out (or be served from) live ones.
        let saved = std::mem::take(&mut self.lock().entries);
        let key = format!("__kizuna_bench_{}", std::process::id());
        let result = (|| {
            // System prompt from an empty cache (nothing shares a prefix with it but the
            // ChatML header, so drop the snapshots' influence by timing the raw prefill).
            let sys_tokens =
                self.encode(&render_chatml_turns(&[ChatMessage::system(system_prompt)]))?;
            let t = Instant::now();
            let mut cache = self.weights.new_cache();
            self.prefill(&sys_tokens, &mut cache, 0, |_| {}, || false)?;
            let system_prefill = t.elapsed();
            let snap = Snapshot {
                tokens: sys_tokens.clone(),
                cache,
            };
            self.keep(&mut self.lock(), SnapshotKey::Prefix, snap);

            let (tx, _rx) = mpsc::unbounded_channel();
            let mut messages = vec![
                ChatMessage::system(system_prompt),
                ChatMessage::user(
                    "こんにちは。先週注文した商品がまだ届いていません。注文番号は A-1042 です。",
                ),
            ];
            let req = |messages: &Vec<ChatMessage>| LlmRequest {
                messages: messages.clone(),
                tools: Vec::new(),
                max_tokens,
                temperature: 0.0,
                cache_key: Some(key.clone()),
            };
            let (first, s1) = self.generate(&req(&messages), &tx, Instant::now())?;
            messages.push(ChatMessage::assistant(first.text.clone()));
            messages.push(ChatMessage::user(
                "ありがとうございます。配送状況はどこで確認できますか？",
            ));
            let (second, s2) = self.generate(&req(&messages), &tx, Instant::now())?;
            let decoded = s1.decoded_after_first + s2.decoded_after_first;
            let decode_secs = (s1.decode + s2.decode).as_secs_f64();
            Ok(LocalBenchReport {
                load_ms: self.load_time.as_millis() as u64,
                system_prompt_tokens: sys_tokens.len(),
                system_prefill_ms: system_prefill.as_millis() as u64,
                first_turn_prompt_tokens: first.usage.prompt_tokens,
                first_turn_cached_tokens: first.usage.cached_prompt_tokens,
                first_turn_ttft_ms: first.usage.time_to_first_token.as_millis() as u64,
                second_turn_prompt_tokens: second.usage.prompt_tokens,
                second_turn_cached_tokens: second.usage.cached_prompt_tokens,
                second_turn_ttft_ms: second.usage.time_to_first_token.as_millis() as u64,
                second_turn_prefill_ms: s2.prefill.as_millis() as u64,
                decode_tokens_per_s: if decode_secs > 0.0 {
                    decoded as f64 / decode_secs
                } else {
                    0.0
                },
                completion_tokens: first.usage.completion_tokens + second.usage.completion_tokens,
                first_reply: first.text,
                second_reply: second.text,
            })
        })();
        self.lock().entries = saved;
        result
    }
}

/// A ~300-token Japanese customer-support system prompt for [`LocalModel::measure`].
pub const BENCH_SYSTEM_PROMPT: &str = "あなたは「Kizuna」のカスタマーサクセス担当アシスタントです。\
お客様のご質問に、丁寧で簡潔な日本語で回答してください。\n\
# 方針\n\
- 分からないことは推測せず、確認のうえで回答すると伝えてください。\n\
- 注文・配送・返品・請求に関する質問では、必要に応じてツールを使って情報を確認してください。\n\
- 個人情報（住所・電話番号・カード番号）を復唱しないでください。\n\
- 回答は三文以内を目安にしてください。\n\
- お客様が担当者との会話を希望した場合は、担当者に引き継ぐと伝えてください。\n\
# ツール\n\
ツールを使うときは、次の形式で一つずつ呼び出してください。\n\
<tool_call>\n{\"name\": \"ツール名\", \"arguments\": {\"引数\": \"値\"}}\n</tool_call>\n\
利用できるツール:\n\
- lookup_order: 注文番号から注文の状態を調べる。引数: order_id (文字列)\n\
- track_shipment: 配送状況を調べる。引数: order_id (文字列)\n\
- create_ticket: 担当者への引き継ぎチケットを作る。引数: summary (文字列), priority (low/normal/high)\n\
- search_faq: よくある質問を検索する。引数: query (文字列)\n\
ツールの結果を受け取ったら、その内容に基づいて日本語で回答してください。";

/// Renders messages as Qwen2.5 ChatML and opens the assistant turn.
pub fn render_chatml(messages: &[ChatMessage]) -> String {
    let mut s = String::new();
    if messages.first().map(|m| m.role) != Some(ChatRole::System) {
        s.push_str(&render_chatml_turns(&[ChatMessage::system(DEFAULT_SYSTEM)]));
    }
    s.push_str(&render_chatml_turns(messages));
    s.push_str(IM_START);
    s.push_str("assistant\n");
    s
}

/// The turns of `messages` without the opening of the next assistant turn. Consecutive
/// tool results form one user turn of `<tool_response>` blocks (Qwen2.5's template).
fn render_chatml_turns(messages: &[ChatMessage]) -> String {
    let mut s = String::new();
    for (i, m) in messages.iter().enumerate() {
        match m.role {
            ChatRole::System | ChatRole::User => {
                let role = if m.role == ChatRole::System {
                    "system"
                } else {
                    "user"
                };
                s.push_str(IM_START);
                s.push_str(role);
                s.push('\n');
                s.push_str(&m.content);
                s.push_str(IM_END);
                s.push('\n');
            }
            ChatRole::Assistant => {
                s.push_str(IM_START);
                s.push_str("assistant\n");
                s.push_str(&m.content);
                for (j, call) in m.tool_calls.iter().enumerate() {
                    if j > 0 || !m.content.is_empty() {
                        s.push('\n');
                    }
                    let name = serde_json::to_string(&call.name).unwrap_or_default();
                    let args = serde_json::to_string(&call.arguments).unwrap_or_default();
                    s.push_str("<tool_call>\n{\"name\": ");
                    s.push_str(&name);
                    s.push_str(", \"arguments\": ");
                    s.push_str(&args);
                    s.push_str("}\n</tool_call>");
                }
                s.push_str(IM_END);
                s.push('\n');
            }
            ChatRole::Tool => {
                let prev_tool = i > 0 && messages[i - 1].role == ChatRole::Tool;
                let next_tool = messages
                    .get(i + 1)
                    .is_some_and(|n| n.role == ChatRole::Tool);
                if !prev_tool {
                    s.push_str(IM_START);
                    s.push_str("user");
                }
                s.push_str("\n<tool_response>\n");
                s.push_str(&m.content);
                s.push_str("\n</tool_response>");
                if !next_tool {
                    s.push_str(IM_END);
                    s.push('\n');
                }
            }
        }
    }
    s
}

/// Loads a Qwen2.5 tokenizer.json, dropping Qwen3-only added tokens (see
/// [`clean_tokenizer_json`]) so that `<tool_response>` etc. encode as plain text.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, LlmError> {
    let raw = std::fs::read_to_string(path).map_err(|e| {
        LlmError::Unavailable(format!(
            "cannot read tokenizer {}: {e} (run scripts/setup)",
            path.display()
        ))
    })?;
    let cleaned = clean_tokenizer_json(&raw).map_err(|e| {
        LlmError::Unavailable(format!(
            "tokenizer {} is not valid JSON: {e}",
            path.display()
        ))
    })?;
    cleaned.parse::<Tokenizer>().map_err(|e| {
        LlmError::Unavailable(format!("cannot load tokenizer {}: {e}", path.display()))
    })
}

/// Removes `added_tokens` entries with id >= 151665 (Qwen3's `<tool_response>`,
/// `</tool_response>`, `<think>`, `</think>`). An already clean file is returned unchanged
/// in meaning.
pub fn clean_tokenizer_json(raw: &str) -> Result<String, serde_json::Error> {
    let mut v: serde_json::Value = serde_json::from_str(raw)?;
    if let Some(added) = v.get_mut("added_tokens").and_then(|a| a.as_array_mut()) {
        added.retain(|t| {
            t.get("id")
                .and_then(|id| id.as_u64())
                .is_none_or(|id| id < QWEN3_ONLY_FIRST_ID)
        });
    }
    serde_json::to_string(&v)
}

/// Turns successive decodings of the generated tokens into text deltas, holding back text
/// while it ends in U+FFFD (a multi-byte character split across byte-level tokens).
#[derive(Debug, Default)]
struct DeltaStreamer {
    emitted: usize,
}

impl DeltaStreamer {
    /// `full` is the decoding of every token generated so far.
    fn push(&mut self, full: &str) -> Option<String> {
        if full.ends_with('\u{FFFD}') {
            return None;
        }
        self.take(full)
    }

    /// Emits what is left at the end of generation, except an incomplete trailing
    /// character (the reply was cut off inside it); see [`final_text`].
    fn finish(&mut self, full: &str) -> Option<String> {
        self.take(final_text(full))
    }

    fn take(&mut self, full: &str) -> Option<String> {
        if full.len() <= self.emitted || !full.is_char_boundary(self.emitted) {
            return None;
        }
        let d = full[self.emitted..].to_string();
        self.emitted = full.len();
        Some(d)
    }
}

/// The reply text: the decoding without U+FFFD left at its end by a multi-byte character
/// whose remaining bytes were never generated.
fn final_text(full: &str) -> &str {
    full.trim_end_matches('\u{FFFD}')
}

/// Greedy or temperature sampling with an optional repetition penalty.
struct Sampler {
    inner: Option<LogitsProcessor>,
    penalty: f32,
    last_n: usize,
}

impl Sampler {
    fn new(seed: u64, temperature: f32, penalty: f32, last_n: usize) -> Self {
        let inner = (temperature > 0.0).then(|| {
            LogitsProcessor::from_sampling(
                seed,
                Sampling::TopKThenTopP {
                    k: 40,
                    p: 0.95,
                    temperature: temperature as f64,
                },
            )
        });
        Self {
            inner,
            penalty,
            last_n,
        }
    }

    fn sample(&mut self, logits: &Tensor, history: &[u32]) -> candle_core::Result<u32> {
        let mut v = logits.to_vec1::<f32>()?;
        if self.penalty != 1.0 && self.last_n > 0 {
            let from = history.len().saturating_sub(self.last_n);
            apply_penalty(&mut v, &history[from..], self.penalty);
        }
        match &mut self.inner {
            None => Ok(argmax(&v)),
            Some(p) => {
                let len = v.len();
                p.sample(&Tensor::from_vec(v, len, logits.device())?)
            }
        }
    }
}

fn apply_penalty(logits: &mut [f32], recent: &[u32], penalty: f32) {
    let mut seen = std::collections::HashSet::new();
    for &t in recent {
        if seen.insert(t) {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l >= 0.0 {
                    *l / penalty
                } else {
                    *l * penalty
                };
            }
        }
    }
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use kizuna_agent::llm::ToolCall;

    // ---------------------------------------------------------------- no model needed

    #[test]
    fn chatml_renders_turns_and_opens_assistant() {
        let p = render_chatml(&[ChatMessage::system("S"), ChatMessage::user("こんにちは")]);
        assert_eq!(
            p,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nこんにちは<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn chatml_adds_default_system_when_missing() {
        let p = render_chatml(&[ChatMessage::user("hi")]);
        assert!(p.starts_with("<|im_start|>system\nYou are Qwen"));
        assert!(p.ends_with("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"));
    }

    #[test]
    fn chatml_renders_tool_calls_and_grouped_tool_results() {
        let mut call = ChatMessage::assistant("");
        call.tool_calls = vec![
            ToolCall {
                id: "c1".into(),
                name: "lookup_order".into(),
                arguments: serde_json::json!({"order_id": "A-1"}),
            },
            ToolCall {
                id: "c2".into(),
                name: "track_shipment".into(),
                arguments: serde_json::json!({"order_id": "A-1"}),
            },
        ];
        let mut with_text = ChatMessage::assistant("確認します。");
        with_text.tool_calls = vec![call.tool_calls[0].clone()];
        let p = render_chatml(&[
            ChatMessage::system("S"),
            ChatMessage::user("U"),
            call,
            ChatMessage::tool_result("c1", "{\"status\":\"shipped\"}"),
            ChatMessage::tool_result("c2", "in transit"),
            with_text,
            ChatMessage::tool_result("c1", "ok"),
        ]);
        let expected = concat!(
            "<|im_start|>system\nS<|im_end|>\n",
            "<|im_start|>user\nU<|im_end|>\n",
            "<|im_start|>assistant\n",
            "<tool_call>\n{\"name\": \"lookup_order\", \"arguments\": {\"order_id\":\"A-1\"}}\n</tool_call>\n",
            "<tool_call>\n{\"name\": \"track_shipment\", \"arguments\": {\"order_id\":\"A-1\"}}\n</tool_call><|im_end|>\n",
            "<|im_start|>user\n<tool_response>\n{\"status\":\"shipped\"}\n</tool_response>\n<tool_response>\nin transit\n</tool_response><|im_end|>\n",
            "<|im_start|>assistant\n確認します。\n<tool_call>\n{\"name\": \"lookup_order\", \"arguments\": {\"order_id\":\"A-1\"}}\n</tool_call><|im_end|>\n",
            "<|im_start|>user\n<tool_response>\nok\n</tool_response><|im_end|>\n",
            "<|im_start|>assistant\n",
        );
        assert_eq!(p, expected);
    }

    fn synthetic_tokenizer_json() -> String {
        let mut added = vec![];
        for (id, content) in [
            (151643u32, "<|endoftext|>"),
            (151644, "<|im_start|>"),
            (151645, "<|im_end|>"),
            (151657, "<tool_call>"),
            (151665, "<tool_response>"),
            (151666, "</tool_response>"),
            (151667, "<think>"),
            (151668, "</think>"),
        ] {
            added.push(serde_json::json!({
                "id": id, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": id < 151657
            }));
        }
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "hello": 1, "<": 2, "tool_response": 3, ">": 4}, "unk_token": "[UNK]"}
        })
        .to_string()
    }

    #[test]
    fn tokenizer_cleanup_drops_qwen3_only_tokens() {
        let raw = synthetic_tokenizer_json();
        let before: Tokenizer = raw.parse().unwrap();
        assert!(before.token_to_id("<tool_response>").is_some());

        let cleaned = clean_tokenizer_json(&raw).unwrap();
        let v: serde_json::Value = serde_json::from_str(&cleaned).unwrap();
        let ids: Vec<u64> = v["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, vec![151643, 151644, 151645, 151657]);
        // Idempotent.
        assert_eq!(clean_tokenizer_json(&cleaned).unwrap(), cleaned);

        let dir = std::env::temp_dir().join(format!("kizuna-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, &raw).unwrap();
        let tok = load_tokenizer(&path).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(tok.token_to_id("<tool_response>"), None);
        assert!(tok.token_to_id("<|im_end|>").is_some());
        assert!(tok.token_to_id("<tool_call>").is_some());
        let ids = tok
            .encode("hello <tool_response>", false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(ids, vec![1, 2, 3, 4]);
    }

    #[test]
    fn kv_cache_truncate_and_extend() {
        use candle_core::{Device, Tensor};
        let dev = Device::Cpu;
        let kv = |start: f32, t: usize| {
            let n = 2 * t * 3;
            let data: Vec<f32> = (0..n).map(|i| start + i as f32).collect();
            Tensor::from_vec(data, (1, 2, t, 3), &dev).unwrap()
        };
        let mut c = KvCache::new(2);
        for layer in 0..2 {
            c.append_for_test(layer, kv(0.0, 5), kv(100.0, 5)).unwrap();
        }
        assert_eq!(c.len(), 5);
        let snapshot = c.clone();
        c.truncate(3).unwrap();
        assert_eq!(c.len(), 3);
        let (k, v) = c.layer(0).unwrap();
        assert_eq!(k.dims(), &[1, 2, 3, 3]);
        assert_eq!(v.dims(), &[1, 2, 3, 3]);
        // The kept positions are the first three of every head.
        let full = snapshot.layer(0).unwrap().0.clone();
        let want = full
            .narrow(2, 0, 3)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(k.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
        // Extending the truncated cache leaves the snapshot untouched.
        for layer in 0..2 {
            c.append_for_test(layer, kv(1000.0, 4), kv(2000.0, 4))
                .unwrap();
        }
        assert_eq!(c.len(), 7);
        assert_eq!(c.layer(1).unwrap().0.dims(), &[1, 2, 7, 3]);
        let row = c
            .layer(0)
            .unwrap()
            .0
            .narrow(2, 3, 1)
            .unwrap()
            .flatten_all()
            .unwrap();
        assert_eq!(
            row.to_vec1::<f32>().unwrap(),
            vec![1000.0, 1001.0, 1002.0, 1012.0, 1013.0, 1014.0]
        );
        assert_eq!(snapshot.len(), 5);
        assert_eq!(snapshot.layer(0).unwrap().0.dims(), &[1, 2, 5, 3]);
        // Truncating beyond the length is a no-op, to zero empties it.
        c.truncate(100).unwrap();
        assert_eq!(c.len(), 7);
        c.truncate(0).unwrap();
        assert!(c.is_empty() && c.layer(0).is_none());
    }

    #[test]
    fn causal_mask_allows_past_and_earlier_positions() {
        let m = crate::qwen2::causal_mask(2, 3, &candle_core::Device::Cpu).unwrap();
        let rows = m.to_vec2::<f32>().unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(rows, vec![vec![0.0, 0.0, 0.0, 0.0, inf], vec![0.0; 5]]);
    }

    #[test]
    fn delta_streamer_holds_split_multibyte_chars() {
        let mut s = DeltaStreamer::default();
        assert_eq!(s.push("お").as_deref(), Some("お"));
        assert_eq!(s.push("お\u{FFFD}"), None);
        assert_eq!(s.push("お\u{FFFD}\u{FFFD}"), None);
        assert_eq!(s.push("お問").as_deref(), Some("問"));
        assert_eq!(s.push("お問"), None);
        assert_eq!(s.push("お問い合わせ").as_deref(), Some("い合わせ"));
        assert_eq!(s.push("お問い合わせ\u{FFFD}"), None);
        assert_eq!(
            s.push("お問い合わせ\u{FFFD}x").as_deref(),
            Some("\u{FFFD}x")
        );
        // At the end, an incomplete trailing character is dropped.
        assert_eq!(
            s.finish("お問い合わせ\u{FFFD}x。\u{FFFD}").as_deref(),
            Some("。")
        );
        assert_eq!(s.finish("お問い合わせ\u{FFFD}x。\u{FFFD}"), None);
        assert_eq!(final_text("a\u{FFFD}\u{FFFD}"), "a");
    }

    #[test]
    fn lru_keeps_most_recent_within_budget_and_finds_longest_prefix() {
        let snap = |tokens: Vec<u32>| Snapshot {
            tokens,
            cache: KvCache::new(1),
        };
        let conv = |k: &str| SnapshotKey::Conversation(k.to_string());
        // 10 bytes a position, room for 7 positions.
        let mut st = CacheState::default();
        st.put(conv("a"), snap(vec![1, 2, 3]), 70, 10);
        st.put(conv("b"), snap(vec![1, 2, 9, 9]), 70, 10);
        st.put(conv("c"), snap(vec![5]), 70, 10);
        assert_eq!(st.entries.len(), 2, "a (the oldest) makes room");
        assert!(st.entries.iter().all(|(k, _)| *k != conv("a")));
        assert_eq!(st.evictions, 1);
        st.put(SnapshotKey::Prefix, snap(vec![1, 2]), 70, 10);
        let (n, s) = st.best_prefix(&[1, 2, 9, 7]).unwrap();
        assert_eq!((n, s.tokens.clone()), (3, vec![1, 2, 9, 9]));
        assert!(st.best_prefix(&[7]).is_none());
        // Using b made it the most recent: c goes first when room is needed.
        assert_eq!(st.entries.back().unwrap().0, conv("b"));
        st.put(SnapshotKey::Prefix, snap(vec![4]), 70, 10);
        assert!(st.entries.iter().all(|(k, _)| *k != conv("c")));
        // The same prefix tokens replace their entry; another prefix is a new one.
        st.put(SnapshotKey::Prefix, snap(vec![4]), 70, 10);
        assert!(st.has_prefix(&[4]) && st.has_prefix(&[1, 2]));
        let stats = st.stats(70, 10);
        assert_eq!((stats.prefixes, stats.conversations), (2, 1));
        assert_eq!((stats.tokens, stats.bytes, stats.evictions), (7, 70, 2));
        // Conversations go before prefixes, even more recent ones.
        st.put(SnapshotKey::Prefix, snap(vec![6, 6]), 70, 10);
        assert!(st.entries.iter().all(|(k, _)| *k != conv("b")));
        assert!(st.has_prefix(&[1, 2]) && st.has_prefix(&[4]) && st.has_prefix(&[6, 6]));
        // One snapshot larger than the budget is still kept (the newest always stays).
        st.put(conv("big"), snap(vec![7; 20]), 70, 10);
        assert_eq!(st.entries.len(), 1);
    }

    #[test]
    fn sampler_greedy_and_penalty() {
        let logits = Tensor::new(&[0.1f32, 2.0, 1.9, -1.0], &candle_core::Device::Cpu).unwrap();
        let mut g = Sampler::new(1, 0.0, 1.0, 64);
        assert_eq!(g.sample(&logits, &[1, 1]).unwrap(), 1);
        let mut p = Sampler::new(1, 0.0, 1.1, 64);
        assert_eq!(p.sample(&logits, &[1]).unwrap(), 2);
        let mut t = Sampler::new(7, 0.8, 1.0, 64);
        let x = t.sample(&logits, &[]).unwrap();
        assert!(x < 4);
    }

    // ---------------------------------------------------------------- model tests

    fn asset(env: &str, default: &str) -> PathBuf {
        std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(default)
        })
    }

    /// The shared test model, or `None` (after printing why) when model tests are skipped.
    /// Panics when the files are missing and `KIZUNA_SKIP_MODEL_TESTS` is not set.
    fn test_model() -> Option<&'static LocalModel> {
        static MODEL: std::sync::OnceLock<LocalModel> = std::sync::OnceLock::new();
        let model = asset("KIZUNA_MODEL_PATH", DEFAULT_MODEL_PATH);
        let tokenizer = asset("KIZUNA_TOKENIZER_PATH", DEFAULT_TOKENIZER_PATH);
        if !model.is_file() || !tokenizer.is_file() {
            let msg = format!(
                "model files missing ({} / {}); run scripts/setup, set KIZUNA_MODEL_PATH and KIZUNA_TOKENIZER_PATH, or set KIZUNA_SKIP_MODEL_TESTS=1",
                model.display(),
                tokenizer.display()
            );
            if std::env::var("KIZUNA_SKIP_MODEL_TESTS").is_ok_and(|v| v == "1") {
                eprintln!("skipped: {msg}");
                return None;
            }
            panic!("{msg}");
        }
        Some(MODEL.get_or_init(|| {
            let mut cfg = LocalConfig::with_paths(model, tokenizer);
            if let Some(c) = std::env::var("KIZUNA_PREFILL_CHUNK")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                cfg.prefill_chunk = c;
            }
            LocalModel::load(cfg).expect("load model")
        }))
    }

    /// Model tests run one at a time so timings are not disturbed by each other.
    async fn model_lock() -> tokio::sync::MutexGuard<'static, ()> {
        static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        LOCK.lock().await
    }

    fn request(messages: Vec<ChatMessage>, max_tokens: u32, key: Option<&str>) -> LlmRequest {
        LlmRequest {
            messages,
            tools: Vec::new(),
            max_tokens,
            temperature: 0.0,
            cache_key: key.map(str::to_string),
        }
    }

    /// Greedy decoding from one uncached prefill of the whole prompt.
    fn greedy_uncached(m: &LocalModel, messages: &[ChatMessage], n: usize) -> (Vec<f32>, String) {
        let e = &m.inner;
        let tokens = e.encode(&render_chatml(messages)).unwrap();
        let mut cache = e.weights.new_cache();
        let mut logits = e.weights.forward(&tokens, &mut cache).unwrap();
        let first = logits.to_vec1::<f32>().unwrap();
        let mut out = vec![];
        while out.len() < n {
            let t = argmax(&logits.to_vec1::<f32>().unwrap());
            if e.stop_ids.contains(&t) {
                break;
            }
            out.push(t);
            logits = e.weights.forward(&[t], &mut cache).unwrap();
        }
        (first, e.decode(&out).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn model_tokenizer_encodes_chatml_markers() {
        let Some(m) = test_model() else { return };
        let e = &m.inner;
        assert_eq!(e.encode("<|im_end|>").unwrap(), vec![151645]);
        assert_eq!(e.encode("<tool_call>").unwrap(), vec![151657]);
        let tr = e.encode("<tool_response>").unwrap();
        assert!(tr.len() > 1 && tr.iter().all(|&t| t < 151643), "{tr:?}");
        // Tool-call tags survive decoding; end-of-turn markers do not.
        assert_eq!(e.decode(&[151657, 151645]).unwrap(), "<tool_call>");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn model_cached_prefix_matches_uncached_prefill() {
        let Some(m) = test_model() else { return };
        let _g = model_lock().await;
        let sys = ChatMessage::system("You are a terse assistant. (cache-consistency test)");
        let turn_a = vec![sys.clone(), ChatMessage::user("List three primary colors.")];
        let (tx, _rx) = mpsc::unbounded_channel();
        let a = m
            .generate(request(turn_a.clone(), 12, Some("t-a")), tx.clone())
            .await
            .unwrap();
        let (_, want_a) = greedy_uncached(m, &turn_a, 12);
        assert_eq!(
            a.text, want_a,
            "fresh (chunked) prefill differs from one-shot prefill"
        );

        // A different last message: the "t-a" snapshot holds more tokens than match and is
        // truncated to the common prefix before the rest is prefilled.
        let turn_b = vec![sys, ChatMessage::user("Name two planets.")];
        let b = m
            .generate(request(turn_b.clone(), 12, Some("t-a")), tx)
            .await
            .unwrap();
        assert!(b.usage.cached_prompt_tokens > 0);
        assert!(b.usage.cached_prompt_tokens < b.usage.prompt_tokens);
        let (first_logits, want_b) = greedy_uncached(m, &turn_b, 12);
        assert_eq!(
            b.text, want_b,
            "truncated-cache generation differs from uncached"
        );

        // Logits right after the prompt agree closely too.
        let e = &m.inner;
        let tokens = e.encode(&render_chatml(&turn_b)).unwrap();
        let snap = e.lock().entries.back().unwrap().1.clone();
        let mut cache = snap.cache.clone();
        cache.truncate(tokens.len() - 1).unwrap();
        let cached_logits = e
            .weights
            .forward(&tokens[tokens.len() - 1..], &mut cache)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // Quantized matmuls quantize their activations per call, and one-row and many-row
        // kernels round differently, so logits carry noise of ~0.5 (out of ~20); compare the
        // distributions instead.
        assert_eq!(argmax(&first_logits), argmax(&cached_logits));
        let (p, q) = (softmax(&first_logits), softmax(&cached_logits));
        let max_diff = p
            .iter()
            .zip(&q)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            max_diff < 0.05,
            "next-token probabilities differ by {max_diff}"
        );
    }

    /// Retrieved passages sit in the system turn: a second customer whose turn retrieves the
    /// same passages starts from the kept system-turn snapshot and gets the same tokens as a
    /// prefill of the whole prompt from scratch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn model_passage_prefix_cache_generates_same_tokens_as_scratch() {
        let Some(m) = test_model() else { return };
        let _g = model_lock().await;
        let system = format!(
            "{BENCH_SYSTEM_PROMPT}\n\n以下の情報だけを使って答えてください。\n\
             ・測定は騒音計を室内に設置して、2時間から行います。\n\
             ・報告書は測定の翌営業日にメールでお送りします。\n(passage test {})",
            std::process::id()
        );
        let (tx, _rx) = mpsc::unbounded_channel();
        let first = vec![
            ChatMessage::system(system.clone()),
            ChatMessage::user("測定にはどれくらい時間がかかりますか？"),
        ];
        m.generate(request(first, 4, Some("t-passage-1")), tx.clone())
            .await
            .unwrap();
        let e = &m.inner;
        let sys_tokens = e
            .encode(&render_chatml_turns(&[ChatMessage::system(system.clone())]))
            .unwrap();
        assert!(e.lock().has_prefix(&sys_tokens), "system turn kept");

        let second = vec![
            ChatMessage::system(system),
            ChatMessage::user("報告書はいつ届きますか？"),
        ];
        let out = m
            .generate(request(second.clone(), 16, Some("t-passage-2")), tx)
            .await
            .unwrap();
        assert!(
            out.usage.cached_prompt_tokens as usize >= sys_tokens.len(),
            "{:?} (system turn: {} tokens)",
            out.usage,
            sys_tokens.len()
        );
        let (_, want) = greedy_uncached(m, &second, 16);
        assert!(!want.is_empty());
        assert_eq!(
            out.text, want,
            "cached-prefix generation differs from scratch"
        );
    }

    fn softmax(v: &[f32]) -> Vec<f32> {
        let m = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
        let s: f32 = e.iter().sum();
        e.into_iter().map(|x| x / s).collect()
    }

    /// `cargo test --release -p kizuna-llm local::tests::model_bench -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "benchmark; run explicitly"]
    async fn model_bench() {
        let Some(m) = test_model() else { return };
        let _g = model_lock().await;
        let r = m.measure(None, 32).await.unwrap();
        eprintln!("{}", serde_json::to_string_pretty(&r).unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn model_second_turn_reuses_prefix_cache() {
        let Some(m) = test_model() else { return };
        let _g = model_lock().await;
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut msgs = vec![
            ChatMessage::system(format!(
                "{BENCH_SYSTEM_PROMPT}\n(second-turn test {})",
                std::process::id()
            )),
            ChatMessage::user("注文 A-1042 の配送状況を教えてください。"),
        ];
        let first = m
            .generate(request(msgs.clone(), 8, Some("t-second")), tx.clone())
            .await
            .unwrap();
        msgs.push(ChatMessage::assistant(first.text.clone()));
        msgs.push(ChatMessage::user("ありがとうございます。"));
        let second = m
            .generate(request(msgs, 8, Some("t-second")), tx)
            .await
            .unwrap();
        eprintln!("turn 1 {:?}\nturn 2 {:?}", first.usage, second.usage);
        assert!(second.usage.cached_prompt_tokens > first.usage.prompt_tokens / 2);
        assert!(second.usage.time_to_first_token < first.usage.time_to_first_token);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn model_stops_when_receiver_closes() {
        let Some(m) = test_model() else { return };
        let _g = model_lock().await;
        let msgs = vec![
            ChatMessage::system("あなたは親切なアシスタントです。"),
            ChatMessage::user("日本の四季について長く説明してください。"),
        ];
        // Closed before the call: nothing is generated.
        let (tx, rx) = mpsc::unbounded_channel();
        drop(rx);
        assert!(m
            .generate(request(msgs.clone(), 200, Some("t-cancel")), tx)
            .await
            .is_err());
        // Closed after the first delta: decoding stops within a token or two.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = {
            let m = m.clone();
            tokio::spawn(async move { m.generate(request(msgs, 200, Some("t-cancel")), tx).await })
        };
        assert!(rx.recv().await.is_some());
        drop(rx);
        let out = task.await.unwrap().unwrap();
        assert!(out.usage.completion_tokens < 20, "{:?}", out.usage);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn model_japanese_reply_streams_japanese_text() {
        let Some(m) = test_model() else { return };
        let _g = model_lock().await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let out = m
            .generate(
                request(
                    vec![
                        ChatMessage::system("あなたは親切なカスタマーサポート担当です。日本語で簡潔に答えてください。"),
                        ChatMessage::user("パスワードを忘れました。どうすればいいですか？"),
                    ],
                    20,
                    None,
                ),
                tx,
            )
            .await
            .unwrap();
        let mut streamed = String::new();
        while let Some(d) = rx.recv().await {
            assert!(!d.is_empty());
            streamed.push_str(&d);
        }
        eprintln!("reply: {:?} ({:?})", out.text, out.usage);
        assert_eq!(streamed, out.text);
        assert!(out.usage.completion_tokens > 0);
        let japanese = out
            .text
            .chars()
            .filter(|c| matches!(*c as u32, 0x3040..=0x30ff | 0x4e00..=0x9fff))
            .count();
        assert!(japanese >= 3, "expected Japanese text, got {:?}", out.text);
        assert!(!out.text.contains('\u{FFFD}'));
    }
}
