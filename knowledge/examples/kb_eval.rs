//! Ingests a content directory with the real e5 model, measures the knowledge base and runs
//! the retrieval evaluation.
//!
//! Usage: `kb_eval <content-dir> [<eval-set>] [--index <dir>] [--mode dense|sparse|hybrid]
//!         [--threshold <cosine>] [--sparse-weight <w>]`
//! Models: `KIZUNA_E5_MODEL` (default `models/e5-small-q4.bin`), `KIZUNA_LINDERA_DIR` (default
//! `models/lindera-ipadic`). Without `--index` a temporary index is used, so the ingest time
//! is that of a full first ingest.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kizuna_knowledge::evaluate::{evaluate, load_eval_set};
use kizuna_knowledge::{
    EdgeIndex, KnowledgeBase, ProgressBar, RetrievalConfig, RetrievalMode, SparseEncoder,
};

struct Args {
    content: PathBuf,
    eval_set: Option<PathBuf>,
    index: Option<PathBuf>,
    mode: RetrievalMode,
    threshold: Option<f32>,
    sparse_weight: Option<f32>,
}

fn parse_args() -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut index = None;
    let mut mode = RetrievalConfig::default().mode;
    let mut threshold = None;
    let mut sparse_weight = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--index" => index = Some(PathBuf::from(args.next().ok_or("--index needs a path")?)),
            "--mode" => {
                mode = match args.next().as_deref() {
                    Some("dense") => RetrievalMode::Dense,
                    Some("sparse") => RetrievalMode::Sparse,
                    Some("hybrid") => RetrievalMode::Hybrid,
                    other => return Err(format!("unknown mode {other:?}")),
                }
            }
            "--threshold" => {
                threshold = Some(
                    args.next()
                        .and_then(|t| t.parse().ok())
                        .ok_or("--threshold needs a number")?,
                )
            }
            "--sparse-weight" => {
                sparse_weight = Some(
                    args.next()
                        .and_then(|t| t.parse().ok())
                        .ok_or("--sparse-weight needs a number")?,
                )
            }
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    let mut positional = positional.into_iter();
    Ok(Args {
        content: positional.next().ok_or("usage: kb_eval <content-dir> [<eval-set>] [--index <dir>] [--mode dense|sparse|hybrid] [--threshold <cosine>]")?,
        eval_set: positional.next(),
        index,
        mode,
        threshold,
        sparse_weight,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let model_path = std::env::var("KIZUNA_E5_MODEL").unwrap_or("models/e5-small-q4.bin".into());
    let lindera = std::env::var("KIZUNA_LINDERA_DIR").unwrap_or("models/lindera-ipadic".into());

    let started = Instant::now();
    let embedder = Arc::new(kizuna_knowledge::embed::E5Model::load(&model_path)?);
    let sparse = Arc::new(SparseEncoder::load(std::path::Path::new(&lindera))?);
    println!("models loaded in {:.2} s", started.elapsed().as_secs_f64());

    let temp;
    let index_dir = match &args.index {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().join("knowledge")
        }
    };
    let index = Arc::new(EdgeIndex::open(&index_dir).await?);
    let mut config = RetrievalConfig {
        mode: args.mode,
        ..RetrievalConfig::default()
    };
    if let Some(t) = args.threshold {
        config.threshold = t;
    }
    if let Some(w) = args.sparse_weight {
        config.hybrid.sparse_weight = w;
    }
    if std::env::var("KIZUNA_FUSION").as_deref() == Ok("score") {
        config.fusion = kizuna_knowledge::kb::FusionMethod::Score;
    }
    if let Ok(k) = std::env::var("KIZUNA_RRF_K") {
        config.hybrid.k = k.parse()?;
    }
    let kb = KnowledgeBase::new(index, embedder, Some(sparse), config);

    let report = kb.ingest(&args.content, ProgressBar::new()).await?;
    print!("ingest: {report}");
    let stats = kb.stats().await?;
    println!(
        "index: {} documents, {} chunks, {:.1} MiB on disk ({})",
        stats.documents,
        stats.chunks,
        stats.size_on_disk.unwrap_or(0) as f64 / (1024.0 * 1024.0),
        stats.backend
    );
    let again = Instant::now();
    let second = kb.ingest(&args.content, ProgressBar::new()).await?;
    println!(
        "re-ingest of unchanged content: {} unchanged, {} embedded, {:.2} s",
        second.unchanged,
        second.chunks_written,
        again.elapsed().as_secs_f64()
    );

    let Some(set_path) = args.eval_set else {
        return Ok(());
    };
    let set = load_eval_set(&set_path)?;

    // Latency of a first-time query (embedding + search), then of the search alone.
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for question in &set {
        let t = Instant::now();
        kb.search(&question.q, &[]).await?;
        cold.push(t.elapsed());
        let t = Instant::now();
        kb.search(&question.q, &[]).await?;
        warm.push(t.elapsed());
    }
    cold.sort();
    warm.sort();
    println!(
        "query latency over {} questions ({} mode): embedding + search p50 {:.1} ms, p99 {:.1} ms; search alone (cached embedding) p50 {:.2} ms, p99 {:.2} ms",
        set.len(),
        kb.config().mode,
        percentile(&cold, 50.0).as_secs_f64() * 1000.0,
        percentile(&cold, 99.0).as_secs_f64() * 1000.0,
        percentile(&warm, 50.0).as_secs_f64() * 1000.0,
        percentile(&warm, 99.0).as_secs_f64() * 1000.0,
    );

    let started = Instant::now();
    let report = evaluate(&kb, &set).await?;
    print!("{report}");
    println!("evaluation took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
