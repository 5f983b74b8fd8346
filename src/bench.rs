//! `kizuna bench`: the figures we promise, measured on this machine.
//!
//! 1. Idle memory per websocket: a `kizuna serve` child process, N connections that said
//!    hello, RSS growth / N.
//! 2. Server overhead per turn, excluding model time: the child talks to an instant
//!    OpenAI-compatible stand-in served by this command on loopback, so the measured
//!    send→final-reply time is the server's own work (plus one loopback HTTP call).
//! 3. The local model: time to first token of a conversation's second turn (its prefix
//!    cached) and decode tokens/s.
//! 4. Realistic turns with the local model (`--local`): a `kizuna serve` child on the
//!    embedded defaults with the knowledge base ingested, and whole conversations over the
//!    websocket: a FAQ question, a plan question, a free question with retrieval, a 4-turn
//!    conversation. Per kind of answer (composed from tools, FAQ, written by the model, written
//!    by the model but rejected by the validator and replaced), p50 and p95 of the time to the
//!    first visible text and to the final reply.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::response::IntoResponse;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Idle websocket connections to open.
    #[arg(long, env = "KIZUNA_BENCH_CONNECTIONS", default_value_t = 5000)]
    connections: usize,
    /// Turns to time for the per-turn overhead.
    #[arg(long, env = "KIZUNA_BENCH_TURNS", default_value_t = 300)]
    turns: usize,
    /// Also measure the local model (needs the files from scripts/setup).
    #[arg(long, env = "KIZUNA_BENCH_LOCAL")]
    local: bool,
    #[arg(
        long,
        env = "KIZUNA_MODEL_PATH",
        default_value = "models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    )]
    model_path: PathBuf,
    #[arg(
        long,
        env = "KIZUNA_TOKENIZER_PATH",
        default_value = "models/qwen2.5-tokenizer.json"
    )]
    tokenizer_path: PathBuf,
    /// Repetitions of the realistic conversations (phase 4, with `--local`).
    #[arg(long, env = "KIZUNA_BENCH_REAL_REPS", default_value_t = 3)]
    real_reps: usize,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// Replicas to run on one PostgreSQL (`--database-url`): 2 or more measures idle memory
    /// per socket split over them, messages per second and cross-replica delivery latency
    /// instead of phases 1–2 (docs/deployment.md).
    #[arg(long, env = "KIZUNA_BENCH_REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// The PostgreSQL database the replicas share (it is migrated and written to; use a
    /// throwaway one).
    #[arg(long, env = "KIZUNA_BENCH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Conversations sending at once in the replicas' throughput phase.
    #[arg(long, env = "KIZUNA_BENCH_CONVERSATIONS", default_value_t = 32)]
    conversations: usize,
    #[command(subcommand)]
    only: Option<BenchOnly>,
}

/// One benchmark instead of the default phases.
#[derive(Debug, clap::Subcommand)]
enum BenchOnly {
    /// The embedded model on the prompts a turn really sends (short, a 1,000-token RAG
    /// prompt, a realistic turn cold and with its passages cached, a 4-turn conversation):
    /// time to first token, prefill and decode tokens/s, peak memory. Writes the prompts for
    /// llama.cpp to run too (evals/llama-cpp/run; docs/benchmarks.md).
    Engine(engine::EngineArgs),
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(BenchOnly::Engine(engine)) = &args.only {
        return engine::run(&args, engine).await;
    }
    raise_fd_limit(args.connections as u64 * 2 + 256);
    let mut report = serde_json::Map::new();
    if args.replicas > 1 {
        let database = args
            .database_url
            .clone()
            .context("--replicas needs --database-url (a throwaway PostgreSQL database)")?;
        if !database.starts_with("postgres") {
            bail!("--database-url must be a PostgreSQL URL: replicas share one PostgreSQL");
        }
        let figures = replicas::run(&args, &database).await?;
        return print_report(&args, figures);
    }

    let stub = start_stub_model().await?;
    let dir = tempfile_dir()?;
    let port = free_port()?;
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n[llm]\nbackend = \"openai\"\nopenai_base_url = \"http://{stub}/v1\"\nopenai_model = \"stub\"\n[limits]\nconnections_per_ip = {}\nmessages_per_minute_per_ip = 1000000\nmessages_per_minute_per_connection = 1000000\n",
            dir.join("data").display(),
            args.connections + 100
        ),
    )?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "--config",
            config.to_str().context("temp path is not UTF-8")?,
            "serve",
        ])
        .env("KIZUNA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start kizuna serve")?;
    let pid = child.id().context("child has no pid")?;
    let base = format!("127.0.0.1:{port}");
    wait_healthy(&base).await?;
    let url = format!("ws://{base}/ws");

    // 1. Idle memory per connection.
    let warm = open_idle(&url).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid)?;
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        sockets.push(
            open_idle(&url)
                .await
                .with_context(|| format!("connection {i}"))?,
        );
    }
    let open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid)?;
    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / args.connections as f64;
    report.insert("idle_connections".into(), json!(args.connections));
    report.insert("idle_rss_before_mib".into(), json!(before as f64 / 1024.0));
    report.insert("idle_rss_after_mib".into(), json!(after as f64 / 1024.0));
    report.insert("idle_bytes_per_connection".into(), json!(per_conn.round()));
    report.insert("connect_seconds".into(), json!(open_secs));
    drop(sockets);
    drop(warm);

    // 2. Per-turn server overhead with an instant model.
    let mut latencies = Vec::with_capacity(args.turns);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    ws.send(Message::Text(json!({"type": "hello"}).to_string().into()))
        .await?;
    next_of(&mut ws, "welcome", None).await?;
    for i in 0..args.turns {
        let id = format!("bench-{i}");
        let t = Instant::now();
        ws.send(Message::Text(
            json!({"type": "message", "id": id, "text": "こんにちは"})
                .to_string()
                .into(),
        ))
        .await?;
        next_of(&mut ws, "reply", Some(&id)).await?;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
    };
    report.insert("turns".into(), json!(args.turns));
    report.insert("turn_overhead_p50_ms".into(), json!(pct(0.50)));
    report.insert("turn_overhead_p99_ms".into(), json!(pct(0.99)));
    child.kill().await.ok();

    // 3. The local model.
    if args.local {
        let cfg =
            kizuna_llm::local::LocalConfig::with_paths(&args.model_path, &args.tokenizer_path);
        let model = kizuna_llm::local::LocalModel::load_async(cfg)
            .await
            .context("cannot load the local model")?;
        let prompts = kizuna_agent::prompts::Prompts::load(std::path::Path::new("prompts"))?;
        let tools = kizuna_tools::registry(kizuna_tools::ToolDeps {
            store: kizuna_store::Store::connect(&format!(
                "sqlite://{}?mode=rwc",
                dir.join("m.db").display()
            ))
            .await?,
            calendar: kizuna_tools::BookingCalendar::default(),
            templates: std::sync::Arc::new(kizuna_tools::TemplateCatalog::default()),
            followup_link: None,
        })?;
        let system = prompts.system_message(&tools.specs(), false);
        let m = model.measure(Some(&system), 32).await?;
        report.insert("local_model".into(), serde_json::to_value(&m)?);
        drop(model);
        let real = realistic_turns(&args, &dir)
            .await
            .context("realistic turns")?;
        report.insert("realistic_turns".into(), real);
    }
    let _ = std::fs::remove_dir_all(&dir);
    print_report(&args, report)
}

fn print_report(args: &BenchArgs, report: serde_json::Map<String, Value>) -> anyhow::Result<()> {
    if args.json {
        println!("{}", Value::Object(report));
    } else {
        println!("kizuna bench");
        for (k, v) in &report {
            println!("  {k:<32} {v}");
        }
    }
    Ok(())
}

mod engine;
mod replicas;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The conversations of phase 4, as a visitor on the widget would write them.
const REALISTIC: &[(&str, &[&str])] = &[
    ("faq", &["測定の当日は家にいないといけませんか？"]),
    ("plan", &["スタンダードプランはいくらですか？"]),
    (
        "free",
        &[
            "防音マットを敷いてもらえば、上の階の足音はどのくらい軽くなるものなんでしょうか？",
            "夜勤明けで昼間に寝ているのですが、昼の生活音のような小さめの音でも記録に残せますか？",
        ],
    ),
    (
        "four_turns",
        &[
            "上の階の足音が夜中にうるさくて眠れません",
            "どのプランがいいですか？",
            "測定の日までに準備しておくことはありますか？",
            "ありがとうございます、検討します",
        ],
    ),
];

/// Phase 4: whole conversations against `kizuna serve` on the embedded model.
async fn realistic_turns(args: &BenchArgs, dir: &std::path::Path) -> anyhow::Result<Value> {
    let data = dir.join("real");
    let port = free_port()?;
    let config = dir.join("real.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n[llm]\nbackend = \"local\"\nmodel_path = \"{}\"\ntokenizer_path = \"{}\"\n[limits]\nmessages_per_minute_per_ip = 1000000\nmessages_per_minute_per_connection = 1000000\n",
            data.display(),
            args.model_path.display(),
            args.tokenizer_path.display(),
        ),
    )?;
    let config = config
        .to_str()
        .context("temp path is not UTF-8")?
        .to_string();
    eprintln!("[bench] realistic turns: ingesting the knowledge base");
    let status = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--config", &config, "ingest"])
        .env("KIZUNA_LOG", "warn")
        .stdout(Stdio::null())
        .status()
        .await?;
    if !status.success() {
        bail!("kizuna ingest failed ({status})");
    }
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--config", &config, "serve"])
        .env("KIZUNA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start kizuna serve")?;
    let base = format!("127.0.0.1:{port}");
    wait_ready(&base, Duration::from_secs(600)).await?;
    let url = format!("ws://{base}/ws");

    // (kind of answer, first visible text, final reply) per turn.
    let mut samples: Vec<(String, Duration, Duration)> = Vec::new();
    for rep in 0..args.real_reps {
        for (scenario, messages) in REALISTIC {
            let mut ws = open_idle(&url).await?;
            for (i, text) in messages.iter().enumerate() {
                let id = format!("{scenario}-{rep}-{i}");
                let sent = Instant::now();
                ws.send(Message::Text(
                    json!({"type": "message", "id": id, "text": text})
                        .to_string()
                        .into(),
                ))
                .await?;
                let mut first = None;
                let mut streamed = false;
                let reply = loop {
                    let frame = next_frame(&mut ws, Duration::from_secs(300)).await?;
                    let mine = frame["reply_to"] == id.as_str();
                    match frame["type"].as_str() {
                        Some("delta") if mine => {
                            streamed = true;
                            first.get_or_insert(sent.elapsed());
                        }
                        Some("reply") if mine => break frame,
                        _ => {}
                    }
                };
                let done = sent.elapsed();
                // A model reply the validator rejected was replaced by a composed answer
                // (`fallback`): it took model time, so it is counted apart.
                let model_failed = reply["fallback"]
                    .as_str()
                    .is_some_and(|f| f != "added_tool_facts");
                let kind = if reply["direct_answer"] == true {
                    "faq"
                } else if streamed {
                    "model"
                } else if model_failed {
                    "model_replaced"
                } else {
                    "composed"
                };
                let shown: String = reply["text"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(60)
                    .collect();
                eprintln!(
                    "[bench] {id} {kind} first {:.2}s final {:.2}s: {}",
                    first.unwrap_or(done).as_secs_f64(),
                    done.as_secs_f64(),
                    shown.replace('\n', " ")
                );
                samples.push((kind.to_string(), first.unwrap_or(done), done));
            }
        }
    }
    child.kill().await.ok();

    let mut out = serde_json::Map::new();
    for kind in ["composed", "faq", "model", "model_replaced", "all"] {
        let mut firsts: Vec<Duration> = Vec::new();
        let mut finals: Vec<Duration> = Vec::new();
        for (k, f, d) in &samples {
            if kind == "all" || k == kind {
                firsts.push(*f);
                finals.push(*d);
            }
        }
        if firsts.is_empty() {
            continue;
        }
        out.insert(
            kind.into(),
            json!({
                "turns": firsts.len(),
                "first_text_p50_ms": percentile_ms(&mut firsts, 0.50),
                "first_text_p95_ms": percentile_ms(&mut firsts, 0.95),
                "final_p50_ms": percentile_ms(&mut finals, 0.50),
                "final_p95_ms": percentile_ms(&mut finals, 0.95),
            }),
        );
    }
    Ok(Value::Object(out))
}

fn percentile_ms(values: &mut [Duration], p: f64) -> u64 {
    values.sort();
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[i].as_millis() as u64
}

async fn next_frame(ws: &mut Ws, wait: Duration) -> anyhow::Result<Value> {
    let msg = tokio::time::timeout(wait, ws.next())
        .await
        .context("timed out waiting for a frame")?;
    let Some(Ok(Message::Text(t))) = msg else {
        bail!("connection ended")
    };
    let v: Value = serde_json::from_str(&t)?;
    if v["type"] == "error" {
        bail!("server error: {v}");
    }
    Ok(v)
}

/// Waits for `/readyz` (the model loaded and its prompt prefilled).
async fn wait_ready(base: &str, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(mut s) = tokio::net::TcpStream::connect(base).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let req = format!("GET /readyz HTTP/1.1\r\nHost: {base}\r\nConnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).await.is_ok() {
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf).await;
                if buf.starts_with(b"HTTP/1.1 200") {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("the server was not ready after {limit:?}")
}

async fn open_idle(url: &str) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    ws.send(Message::Text(json!({"type": "hello"}).to_string().into()))
        .await?;
    next_of(&mut ws, "welcome", None).await?;
    Ok(ws)
}

async fn next_of(ws: &mut Ws, kind: &str, reply_to: Option<&str>) -> anyhow::Result<Value> {
    let deadline = Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout(deadline, ws.next())
            .await
            .context("timed out waiting for a frame")?;
        let Some(Ok(Message::Text(t))) = msg else {
            bail!("connection ended while waiting for {kind}")
        };
        let v: Value = serde_json::from_str(&t)?;
        if v["type"] == "error" {
            bail!("server error: {v}");
        }
        if v["type"] == kind && reply_to.is_none_or(|id| v["reply_to"] == id) {
            return Ok(v);
        }
    }
}

/// An instant OpenAI-compatible endpoint: streams a fixed short reply.
async fn start_stub_model() -> anyhow::Result<SocketAddr> {
    async fn completions() -> impl IntoResponse {
        let chunk = |content: &str| {
            format!(
                "data: {}\n\n",
                json!({"id": "b", "object": "chat.completion.chunk", "created": 0, "model": "stub",
                       "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
            )
        };
        let body = format!(
            "{}{}data: [DONE]\n\n",
            chunk("ご相談"),
            chunk("ありがとうございます。")
        );
        (
            [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
            body,
        )
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(completions));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

async fn wait_healthy(base: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(base).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.ok();
            if buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200") {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the server did not become healthy")
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc status")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kizuna-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn raise_fd_limit(wanted: u64) {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < wanted {
            lim.rlim_cur = wanted.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
