//! `kizuna bench engine`: the embedded model on prompts a turn really sends, written out so
//! llama.cpp can run the very same ones (`evals/llama-cpp/run`, docs/benchmarks.md).
//!
//! Two steps, in two processes so the model's peak memory is its own:
//! 1. Build the prompts: the knowledge base is ingested into a temporary data directory and
//!    each question's passages are retrieved and laid out exactly as the agent does
//!    ([`kizuna_agent::engine::model_messages`]); written as rendered ChatML text.
//! 2. Run them (`--prompts-in`): per prompt, an empty KV cache, then the `warmup` prompt if
//!    any (untimed: what an earlier turn left cached), then the prompt, timed: time to first
//!    token, prefill tokens per second over the uncached tokens, decode tokens per second.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use kizuna_agent::engine::{answering_passages, model_messages, ContextChunk};
use kizuna_agent::identity::Identity;
use kizuna_agent::llm::{ChatMessage, LanguageModel, LlmRequest};
use kizuna_llm::local::{render_chatml, LocalConfig, LocalModel};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, clap::Args)]
pub struct EngineArgs {
    /// Where to write the prompts (rendered ChatML; llama.cpp runs the same file).
    #[arg(long, default_value = "target/bench/engine-prompts.json")]
    prompts_out: PathBuf,
    /// Run the prompts of this file instead of building them (step 2).
    #[arg(long, conflicts_with = "prompts_out")]
    prompts_in: Option<PathBuf>,
    /// Where to write the results (JSON); they are also printed as a table.
    #[arg(long, default_value = "target/bench/engine-kizuna.json")]
    json_out: PathBuf,
    /// Threads for the model's matrix products (default: the physical cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Tokens generated per prompt (greedy; fewer when the model ends its reply).
    #[arg(long, default_value_t = 48)]
    max_tokens: u32,
}

/// The prompts file both engines read (`evals/llama-cpp/README.md`).
#[derive(Debug, Serialize, Deserialize)]
pub struct PromptSet {
    pub model: PathBuf,
    pub threads: usize,
    pub prompts: Vec<BenchPrompt>,
    /// Turns on many topics run one after another on one cache (the KV snapshot cache
    /// under load: what stays, what is evicted); only `kizuna bench engine` runs these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_turns: Vec<BenchPrompt>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchPrompt {
    pub name: String,
    pub description: String,
    /// Rendered ChatML, ending with the opened assistant turn.
    pub prompt: String,
    /// Run first, untimed: what an earlier turn left in the KV cache.
    pub warmup: Option<String>,
    pub max_tokens: u32,
    /// The same prompt as messages (the embedded model renders them to `prompt`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warmup_messages: Vec<ChatMessage>,
}

#[derive(Debug, Serialize)]
struct EngineResults {
    engine: String,
    threads: usize,
    load_s: f64,
    peak_rss_mib: f64,
    results: Vec<PromptResult>,
    kv_cache: kizuna_llm::local::CacheStats,
    cache_under_load: Option<CacheLoad>,
}

/// The snapshot cache after `cache_turns`, with the default budget.
#[derive(Debug, Serialize)]
struct CacheLoad {
    turns: usize,
    /// Time to first token of each turn, in order (every turn's passages are new to the
    /// cache unless an earlier turn retrieved the same ones).
    ttft_s: Vec<f64>,
    cached_tokens: Vec<u32>,
    after: kizuna_llm::local::CacheStats,
    /// The first turn again at the end: its passages' snapshot was evicted if it only has
    /// the system prompt cached.
    first_again_ttft_s: f64,
    first_again_cached_tokens: u32,
}

#[derive(Debug, Serialize)]
struct PromptResult {
    name: String,
    prompt_tokens: u32,
    cached_tokens: u32,
    prefill_tokens: u32,
    ttft_s: f64,
    prefill_tok_s: f64,
    decode_tokens: u32,
    decode_s: f64,
    decode_tok_s: f64,
    text: String,
}

pub async fn run(args: &super::BenchArgs, engine: &EngineArgs) -> anyhow::Result<()> {
    if let Some(path) = &engine.prompts_in {
        return measure(args, engine, path).await;
    }
    let threads = engine.threads.unwrap_or_else(kizuna_llm::local::threads);
    let set = build_prompts(args, engine, threads).await?;
    if let Some(dir) = engine.prompts_out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&engine.prompts_out, serde_json::to_vec_pretty(&set)?)
        .with_context(|| format!("cannot write {}", engine.prompts_out.display()))?;
    eprintln!(
        "[bench] {} prompts written to {}",
        set.prompts.len(),
        engine.prompts_out.display()
    );
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command
        .args(["bench", "--model-path"])
        .arg(&args.model_path)
        .arg("--tokenizer-path")
        .arg(&args.tokenizer_path)
        .args(["engine", "--prompts-in"])
        .arg(&engine.prompts_out)
        .arg("--json-out")
        .arg(&engine.json_out)
        .args(["--threads", &threads.to_string()])
        .args(["--max-tokens", &engine.max_tokens.to_string()])
        // candle sizes its thread pool from this (as rayon does).
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env("KIZUNA_LOG", "warn");
    let status = command
        .status()
        .await
        .context("cannot run the engine step")?;
    if !status.success() {
        bail!("the engine step failed ({status})");
    }
    Ok(())
}

/// Questions on different topics for the cache-under-load phase.
const TOPICS: [&str; 20] = [
    "測定の当日は家にいないといけませんか？",
    "報告書はどのくらいで届きますか？",
    "支払い方法は何がありますか？",
    "キャンセル料はかかりますか？",
    "夜間の測定はできますか？",
    "管理会社に相談する前に何をすればいいですか？",
    "測定機器はどこに置きますか？",
    "法人でも契約できますか？",
    "個人情報はどう扱われますか？",
    "測定結果は裁判で使えますか？",
    "低周波音も測れますか？",
    "予約の変更はできますか？",
    "騒音の基準値はどれくらいですか？",
    "AI仲裁サービスとは何ですか？",
    "領収書は発行できますか？",
    "測定は何日間できますか？",
    "賃貸でも利用できますか？",
    "ペットの鳴き声も測定できますか？",
    "測定後のサポートはありますか？",
    "対応エリアはどこですか？",
];

/// Questions of the realistic prompts: a free question that retrieval answers, and a
/// 4-turn conversation (with the assistant's replies written out, so both engines read the
/// same history).
const RAG_QUESTION: &str =
    "夜中に上の階から足音が響いて眠れません。測定してもらうと、どんなことが分かりますか？";
const RAG_OTHER_QUESTION: &str =
    "上の階の足音がうるさいのですが、測定をお願いすると何が分かるのでしょうか。";
const CONVERSATION: [(&str, &str); 4] = [
    (
        "隣の部屋のテレビの音が毎晩うるさくて困っています。",
        "毎晩の騒音はおつらいですね。音の大きさや時間帯を測定で記録すると、管理会社への相談材料になります。",
    ),
    (
        "測定ってどのくらいの時間がかかるんですか？",
        "測定時間はプランによって異なります。ご都合に合わせてお選びいただけます。",
    ),
    (
        "測定の結果は管理会社に見せても大丈夫ですか？",
        "はい、報告書は管理会社へのご相談にお使いいただけます。",
    ),
    ("報告書はどのくらいで届きますか？", ""),
];

async fn build_prompts(
    args: &super::BenchArgs,
    engine: &EngineArgs,
    threads: usize,
) -> anyhow::Result<PromptSet> {
    let dir = super::tempfile_dir()?;
    let mut settings = crate::config::Settings::load(None)?;
    settings.data_dir = dir.join("data");
    eprintln!("[bench] ingesting the knowledge base for the prompts' passages");
    let embedder = crate::wiring::load_embedder(&settings)?;
    let kb = crate::wiring::knowledge_base(&settings, embedder).await?;
    kb.ingest(
        &settings.knowledge.content_dir,
        kizuna_knowledge::ProgressBar::new(),
    )
    .await
    .context("ingesting the knowledge base")?;
    let retriever: std::sync::Arc<dyn kizuna_agent::hub::Retriever> = kb;
    let identity = Identity::anonymous("bench");
    let context_for = |question: &'static str| {
        let retriever = retriever.clone();
        let identity = identity.clone();
        async move { retriever.retrieve(question, &identity).await.chunks }
    };

    let prompts = kizuna_agent::prompts::Prompts::load(Path::new("prompts"))?;
    let store =
        kizuna_store::Store::connect(&format!("sqlite://{}?mode=rwc", dir.join("m.db").display()))
            .await?;
    let tools = kizuna_tools::registry(kizuna_tools::ToolDeps {
        store,
        calendar: kizuna_tools::BookingCalendar::default(),
        templates: std::sync::Arc::new(kizuna_tools::TemplateCatalog::default()),
        followup_link: None,
    })?;
    let system = prompts.system_message(&tools.specs(), false);
    let max_tokens = engine.max_tokens;
    let prompt = |name: &str,
                  description: &str,
                  messages: Vec<ChatMessage>,
                  warmup: Option<Vec<ChatMessage>>| BenchPrompt {
        name: name.to_string(),
        description: description.to_string(),
        prompt: render_chatml(&messages),
        warmup: warmup.as_deref().map(render_chatml),
        max_tokens,
        messages,
        warmup_messages: warmup.unwrap_or_default(),
    };

    let mut out = Vec::new();
    out.push(prompt(
        "short",
        "a one-line system prompt and a short question, from an empty cache",
        vec![
            ChatMessage::system("あなたは親切なカスタマーサポート担当です。"),
            ChatMessage::user("予約の変更はできますか？"),
        ],
        None,
    ));

    // ~1,000 tokens of retrieved text, as a turn with untrimmed chunks would send: raw
    // prefill throughput on a long Japanese prompt.
    let chunks = context_for(RAG_QUESTION).await;
    let long_context: Vec<String> = long_passages(&chunks, 1_400);
    out.push(prompt(
        "rag_1000",
        "the system prompt, ~1,400 characters of retrieved chunks and the question, from an empty cache",
        model_messages(&system, &[], RAG_QUESTION, &long_context),
        None,
    ));

    // The realistic turn: the agent's layout, one earlier exchange, from an empty cache and
    // with its passages already prefilled by another customer's turn.
    let history = vec![
        ChatMessage::user("こんばんは。騒音のことで相談したいです。"),
        ChatMessage::assistant(
            "こんばんは。騒音でお困りなのですね。どのような音でお困りか教えていただけますか。",
        ),
    ];
    let passages = answering_passages(RAG_QUESTION, &chunks);
    let other_chunks = context_for(RAG_OTHER_QUESTION).await;
    let other = answering_passages(RAG_OTHER_QUESTION, &other_chunks);
    let turn = model_messages(&system, &history, RAG_QUESTION, &passages);
    out.push(prompt(
        "rag_turn_cold",
        "a realistic turn (agent layout: system prompt, passages, last exchange, question) from an empty cache",
        turn.clone(),
        None,
    ));
    // What `kizuna serve` prefills at start: the system prompt alone.
    out.push(prompt(
        "rag_turn_system_cached",
        "the same turn with the system prompt cached (as kizuna serve warms it at start), its passages not",
        turn.clone(),
        Some(vec![ChatMessage::system(system.clone())]),
    ));
    let (warm_name, warm_description, warmup) = if other == passages {
        (
            "rag_turn_warm",
            "the same turn after another customer's question retrieved the same passages (system turn with passages cached)",
            model_messages(&system, &[], RAG_OTHER_QUESTION, &other),
        )
    } else {
        eprintln!("[bench] the two wordings retrieved different passages; the warm turn warms its own system turn");
        (
            "rag_turn_warm",
            "the same turn with its system turn and passages cached (warmed with the same system turn and another question)",
            model_messages(&system, &[], RAG_OTHER_QUESTION, &passages),
        )
    };
    out.push(prompt(warm_name, warm_description, turn, Some(warmup)));

    // A 4-turn conversation: each turn as the agent lays it out, after the previous turn
    // (what the conversation's own snapshot holds).
    let mut history: Vec<ChatMessage> = Vec::new();
    let mut previous: Option<Vec<ChatMessage>> = None;
    for (i, (question, reply)) in CONVERSATION.iter().enumerate() {
        let chunks = context_for(question).await;
        let passages = answering_passages(question, &chunks);
        let messages = model_messages(&system, &history, question, &passages);
        out.push(prompt(
            &format!("conversation_turn_{}", i + 1),
            "turn of a 4-turn conversation, after the previous turn ran",
            messages.clone(),
            previous.take(),
        ));
        let mut with_reply = messages;
        with_reply.push(ChatMessage::assistant(*reply));
        previous = Some(with_reply);
        history.push(ChatMessage::user(*question));
        history.push(ChatMessage::assistant(*reply));
    }
    let mut cache_turns = Vec::new();
    for (i, question) in TOPICS.iter().enumerate() {
        let chunks = context_for(question).await;
        let passages = answering_passages(question, &chunks);
        let mut p = prompt(
            &format!("topic_{}", i + 1),
            "one of 20 questions on different topics, run in order on one cache",
            model_messages(&system, &[], question, &passages),
            None,
        );
        p.max_tokens = 4;
        cache_turns.push(p);
    }
    // The index flushes when dropped: before its directory goes.
    drop(retriever);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(PromptSet {
        model: args.model_path.clone(),
        threads,
        prompts: out,
        cache_turns,
    })
}

/// Whole retrieved chunks (an FAQ's answer, another chunk's text), best first, up to
/// `budget` characters.
fn long_passages(chunks: &[ContextChunk], budget: usize) -> Vec<String> {
    let mut used = 0;
    let mut out = Vec::new();
    for chunk in chunks {
        let body = chunk.answer.as_deref().unwrap_or(&chunk.text).trim();
        let take: String = body.chars().take(budget.saturating_sub(used)).collect();
        if take.is_empty() {
            break;
        }
        used += take.chars().count();
        out.push(take);
    }
    out
}

async fn measure(args: &super::BenchArgs, engine: &EngineArgs, path: &Path) -> anyhow::Result<()> {
    let set: PromptSet = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{} is not a prompts file", path.display()))?;
    let cfg = LocalConfig::with_paths(&args.model_path, &args.tokenizer_path);
    let model = LocalModel::load_async(cfg)
        .await
        .context("cannot load the local model (run scripts/setup)")?;
    let threads = kizuna_llm::local::threads();
    eprintln!(
        "[bench] embedded model loaded in {:.1} s; {threads} threads",
        model.load_time().as_secs_f64()
    );
    // Untimed: the first forward pass pays for page faults and the thread pool's start
    // (llama_bench.py does the same).
    {
        let (tx, _rx) = mpsc::unbounded_channel();
        let warm = vec![ChatMessage::user("こんにちは")];
        model
            .generate(
                LlmRequest {
                    messages: warm,
                    tools: Vec::new(),
                    max_tokens: 1,
                    temperature: 0.0,
                    cache_key: None,
                },
                tx,
            )
            .await?;
    }
    let mut results = Vec::new();
    for p in &set.prompts {
        if p.messages.is_empty() {
            bail!(
                "prompt {} has no messages (written by another tool?)",
                p.name
            );
        }
        model.clear_cache();
        let request = |messages: &[ChatMessage], max_tokens: u32| LlmRequest {
            messages: messages.to_vec(),
            tools: Vec::new(),
            max_tokens,
            temperature: 0.0,
            cache_key: Some("bench".to_string()),
        };
        if !p.warmup_messages.is_empty() {
            let (tx, _rx) = mpsc::unbounded_channel();
            model.generate(request(&p.warmup_messages, 1), tx).await?;
        }
        let (tx, _rx) = mpsc::unbounded_channel();
        let started = Instant::now();
        let out = model
            .generate(request(&p.messages, p.max_tokens), tx)
            .await?;
        let total = started.elapsed().as_secs_f64();
        let u = &out.usage;
        let ttft = u.time_to_first_token.as_secs_f64();
        let prefill_tokens = u.prompt_tokens - u.cached_prompt_tokens;
        let decode_tokens = u.completion_tokens.saturating_sub(1);
        let decode_s = (total - ttft).max(0.0);
        let r = PromptResult {
            name: p.name.clone(),
            prompt_tokens: u.prompt_tokens,
            cached_tokens: u.cached_prompt_tokens,
            prefill_tokens,
            ttft_s: ttft,
            prefill_tok_s: prefill_tokens as f64 / ttft.max(1e-9),
            decode_tokens,
            decode_s,
            decode_tok_s: if decode_s > 0.0 {
                decode_tokens as f64 / decode_s
            } else {
                0.0
            },
            text: out.text.clone(),
        };
        eprintln!(
            "[bench] {:<22} prompt {:>5} cached {:>5} ttft {:>6.2} s prefill {:>6.1} tok/s decode {:>5.1} tok/s",
            r.name, r.prompt_tokens, r.cached_tokens, r.ttft_s, r.prefill_tok_s, r.decode_tok_s
        );
        results.push(r);
    }
    let cache_under_load = if set.cache_turns.is_empty() {
        None
    } else {
        Some(cache_load(&model, &set.cache_turns).await?)
    };
    let report = EngineResults {
        engine: format!("kizuna {} (candle)", env!("CARGO_PKG_VERSION")),
        threads,
        load_s: model.load_time().as_secs_f64(),
        peak_rss_mib: peak_rss_kib()? as f64 / 1024.0,
        kv_cache: model.cache_stats(),
        cache_under_load,
        results,
    };
    if let Some(dir) = engine.json_out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&engine.json_out, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("cannot write {}", engine.json_out.display()))?;
    eprintln!(
        "[bench] peak RSS {:.0} MiB; results in {}",
        report.peak_rss_mib,
        engine.json_out.display()
    );
    Ok(())
}

/// Runs `turns` in order on one cache (the system prompt warmed first, as `serve` does),
/// each as its own conversation, then the first again.
async fn cache_load(model: &LocalModel, turns: &[BenchPrompt]) -> anyhow::Result<CacheLoad> {
    model.clear_cache();
    let system = turns[0].messages[0].content.clone();
    let system = system
        .split("\n\n以下の情報だけを使って答えてください。")
        .next()
        .unwrap_or_default();
    model.warm_prefix(system).await?;
    let run = |i: usize, p: &BenchPrompt| {
        let request = LlmRequest {
            messages: p.messages.clone(),
            tools: Vec::new(),
            max_tokens: p.max_tokens,
            temperature: 0.0,
            cache_key: Some(format!("load-{i}")),
        };
        async move {
            let (tx, _rx) = mpsc::unbounded_channel();
            model.generate(request, tx).await
        }
    };
    let mut ttft_s = Vec::new();
    let mut cached_tokens = Vec::new();
    for (i, p) in turns.iter().enumerate() {
        let out = run(i, p).await?;
        ttft_s.push(out.usage.time_to_first_token.as_secs_f64());
        cached_tokens.push(out.usage.cached_prompt_tokens);
    }
    let after = model.cache_stats();
    let again = run(turns.len(), &turns[0]).await?;
    eprintln!(
        "[bench] cache under load: {} turns, TTFT {:.2}–{:.2} s; {} prefixes + {} conversations kept ({} MiB of {}), {} evicted; the first turn again: {} cached, TTFT {:.2} s",
        turns.len(),
        ttft_s.iter().cloned().fold(f64::INFINITY, f64::min),
        ttft_s.iter().cloned().fold(0.0, f64::max),
        after.prefixes,
        after.conversations,
        after.bytes >> 20,
        after.budget_bytes >> 20,
        after.evictions,
        again.usage.cached_prompt_tokens,
        again.usage.time_to_first_token.as_secs_f64()
    );
    Ok(CacheLoad {
        turns: turns.len(),
        ttft_s,
        cached_tokens,
        after,
        first_again_ttft_s: again.usage.time_to_first_token.as_secs_f64(),
        first_again_cached_tokens: again.usage.cached_prompt_tokens,
    })
}

/// Peak resident memory of this process (`VmHWM`).
fn peak_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")
}
