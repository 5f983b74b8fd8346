//! Data commands: importing customers, ingesting and evaluating the knowledge base, training
//! and running the sentiment model, and customer segments.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kizuna_store::Store;

use crate::config::{ServeArgs, Settings};
use crate::wiring;

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import customers from a CRM export (CSV or JSON Lines, see docs/crm-import.md).
    /// All-or-nothing: a file with a bad row writes nothing and lists every error by line.
    Customers {
        /// The CSV or JSONL file.
        file: PathBuf,
        #[command(flatten)]
        serve: ServeArgs,
    },
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Directory of Markdown/YAML/CSV/JSONL documents (default: knowledge.content_dir).
    pub dir: Option<PathBuf>,
    /// Re-embed every document, even unchanged ones.
    #[arg(long, env = "KIZUNA_INGEST_FULL")]
    pub full: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum KnowledgeCommand {
    /// Score retrieval on a labelled question set: recall@1, recall@5 and MRR for dense,
    /// sparse and hybrid search, and the calibrated similarity threshold.
    Eval {
        /// A labelled set (YAML file or directory).
        #[arg(long, env = "KIZUNA_RETRIEVAL_SET", default_value = "evals/retrieval")]
        set: PathBuf,
        /// One JSON document on stdout instead of tables.
        #[arg(long, env = "KIZUNA_JSON")]
        json: bool,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Documents and chunks in the index, and its size.
    Stats {
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Build the lindera dictionary from UTF-8 mecab-ipadic sources (scripts/setup-lindera).
    BuildDictionary {
        /// Directory with the converted *.csv and *.def files.
        src: PathBuf,
        /// Where to write the dictionary.
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct TrainSentimentArgs {
    /// Labelled training messages (JSON Lines: text, label).
    #[arg(
        long,
        env = "KIZUNA_SENTIMENT_TRAIN",
        default_value = "sentiment/data/train.jsonl"
    )]
    pub train: PathBuf,
    /// Held-out messages, written separately, for the reported accuracy.
    #[arg(
        long,
        env = "KIZUNA_SENTIMENT_HELDOUT",
        default_value = "sentiment/data/heldout.jsonl"
    )]
    pub heldout: PathBuf,
    /// Where to write the head (default: sentiment.model_dir).
    #[arg(long, env = "KIZUNA_SENTIMENT_OUT")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Args)]
pub struct TrainIntentsArgs {
    /// Labelled training messages (JSON Lines: text, intent, register).
    #[arg(long, env = "KIZUNA_INTENT_TRAIN", default_value = kizuna_intent::DEFAULT_TRAIN_PATH)]
    pub train: PathBuf,
    /// Held-out messages, written separately, for the reported per-intent scores.
    #[arg(long, env = "KIZUNA_INTENT_HELDOUT", default_value = kizuna_intent::DEFAULT_HELDOUT_PATH)]
    pub heldout: PathBuf,
    /// Where to write the head (default: intent.model_dir).
    #[arg(long, env = "KIZUNA_INTENT_OUT")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Args)]
pub struct TrainEscalationArgs {
    /// Labelled training messages (JSON Lines: text, label).
    #[arg(long, env = "KIZUNA_ESCALATION_TRAIN", default_value = kizuna_escalation::DEFAULT_TRAIN_PATH)]
    pub train: PathBuf,
    /// Test messages, written separately, for the reported per-label scores.
    #[arg(long, env = "KIZUNA_ESCALATION_HELDOUT", default_value = kizuna_escalation::DEFAULT_HELDOUT_PATH)]
    pub heldout: PathBuf,
    /// Where to write the head.
    #[arg(long, env = "KIZUNA_ESCALATION_OUT", default_value = kizuna_escalation::DEFAULT_MODEL_DIR)]
    pub out: PathBuf,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Args)]
pub struct SegmentsArgs {
    /// Number of segments (5–7); chosen by silhouette when omitted.
    #[arg(long, env = "KIZUNA_SEGMENTS_K")]
    pub k: Option<usize>,
    /// Compute recency as of this date (YYYY-MM-DD; default today, JST).
    #[arg(long, env = "KIZUNA_AS_OF")]
    pub as_of: Option<chrono::NaiveDate>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

fn settings(config: Option<PathBuf>, args: &ServeArgs) -> anyhow::Result<Settings> {
    crate::settings(config, args)
}

pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create data dir {}", settings.data_dir.display()))?;
    let url = settings.database_url();
    Store::connect(&url).await.with_context(|| {
        format!(
            "cannot open the database {}",
            kizuna_store::redact_url(&url)
        )
    })
}

pub async fn import(config: Option<PathBuf>, command: ImportCommand) -> anyhow::Result<()> {
    let ImportCommand::Customers { file, serve } = command;
    let settings = settings(config, &serve)?;
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let store = open_store(&settings).await?;
    let format = kizuna_tools::crm::Format::detect(&file, &bytes);
    match kizuna_tools::crm::import_customers(&store, &bytes, format).await {
        Ok(report) => {
            println!(
                "imported {}: {} new, {} updated",
                file.display(),
                report.inserted,
                report.updated
            );
            Ok(())
        }
        Err(e) => bail!("{}: nothing was imported.\n{e}", file.display()),
    }
}

pub async fn ingest(config: Option<PathBuf>, args: IngestArgs) -> anyhow::Result<()> {
    let settings = settings(config, &args.serve)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| settings.knowledge.content_dir.clone());
    let embedder = wiring::load_embedder(&settings)?;
    let kb = wiring::knowledge_base(&settings, embedder).await?;
    let progress = kizuna_knowledge::ProgressBar::new();
    let report = if args.full {
        kb.reindex(&dir, progress).await
    } else {
        kb.ingest(&dir, progress).await
    }
    .with_context(|| format!("ingesting {} failed", dir.display()))?;
    println!("{report}");
    Ok(())
}

pub async fn knowledge(config: Option<PathBuf>, command: KnowledgeCommand) -> anyhow::Result<()> {
    match command {
        KnowledgeCommand::Eval { set, json, serve } => {
            let settings = settings(config, &serve)?;
            let questions = kizuna_knowledge::evaluate::load_eval_set(&set)
                .with_context(|| format!("cannot read the labelled set {}", set.display()))?;
            let embedder = wiring::load_embedder(&settings)?;
            let kb = wiring::knowledge_base(&settings, embedder).await?;
            if kb.stats().await?.documents == 0 {
                bail!("the knowledge index is empty: run `kizuna ingest` first");
            }
            eprintln!("[knowledge] evaluating {} questions …", questions.len());
            let report = kizuna_knowledge::evaluate::evaluate(&kb, &questions).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        KnowledgeCommand::Stats { serve } => {
            let settings = settings(config, &serve)?;
            let embedder = wiring::load_embedder(&settings)?;
            let kb = wiring::knowledge_base(&settings, embedder).await?;
            let stats = kb.stats().await?;
            println!("{}", serde_json::to_string_pretty(&stats)?);
            Ok(())
        }
        KnowledgeCommand::BuildDictionary { src, out } => {
            kizuna_knowledge::sparse::build_ipadic_dictionary(&src, &out)
                .with_context(|| format!("cannot build the dictionary from {}", src.display()))?;
            println!("dictionary written to {}", out.display());
            Ok(())
        }
    }
}

pub async fn train_sentiment(
    config: Option<PathBuf>,
    args: TrainSentimentArgs,
) -> anyhow::Result<()> {
    let settings = settings(config, &args.serve)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| settings.sentiment.model_dir.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let embedder = wiring::load_embedder(&settings)?;
        let (train, eval) = kizuna_sentiment::train_from_files(
            &args.train,
            &args.heldout,
            &out,
            embedder.as_ref(),
        )?;
        println!(
            "{train}\n\nheld-out evaluation ({}):\n{eval}",
            args.heldout.display()
        );
        println!("weights written to {}", out.display());
        Ok(())
    })
    .await?
}

pub async fn train_intents(config: Option<PathBuf>, args: TrainIntentsArgs) -> anyhow::Result<()> {
    let settings = settings(config, &args.serve)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| settings.intent.model_dir.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let embedder = wiring::load_embedder(&settings)?;
        let (train, eval) =
            kizuna_intent::train_from_files(&args.train, &args.heldout, &out, embedder.as_ref())?;
        println!(
            "{train}\n\nheld-out evaluation ({}):\n{eval}",
            args.heldout.display()
        );
        println!("weights written to {}", out.display());
        Ok(())
    })
    .await?
}

pub async fn train_escalation(
    config: Option<PathBuf>,
    args: TrainEscalationArgs,
) -> anyhow::Result<()> {
    let settings = settings(config, &args.serve)?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let embedder = wiring::load_embedder(&settings)?;
        let (train, eval) = kizuna_escalation::train_from_files(
            &args.train,
            &args.heldout,
            &args.out,
            embedder.as_ref(),
        )?;
        println!(
            "{train}\n\nheld-out evaluation ({}):\n{eval}",
            args.heldout.display()
        );
        println!("weights written to {}", args.out.display());
        Ok(())
    })
    .await?
}

pub async fn escalation(config: Option<PathBuf>, serve: ServeArgs) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let settings = settings(config, &serve)?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let embedder = wiring::load_embedder(&settings)?;
        let dir = std::path::Path::new(kizuna_escalation::DEFAULT_MODEL_DIR);
        let classifier = kizuna_escalation::load(dir, embedder).with_context(|| {
            format!(
                "cannot load the escalation head from {} (kizuna train-escalation makes it)",
                dir.display()
            )
        })?;
        let mut out = std::io::stdout().lock();
        for line in std::io::stdin().lock().lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let (label, p) = classifier.classify(&line)?.top();
            let rule = kizuna_agent::escalation::rule_reason(&line)
                .map_or("-", |(reason, _)| reason.as_str());
            writeln!(out, "{}\t{p:.3}\t{rule}", label.as_str())?;
        }
        Ok(())
    })
    .await?
}

pub async fn intents(config: Option<PathBuf>, serve: ServeArgs) -> anyhow::Result<()> {
    use kizuna_agent::intent::IntentModel;
    use std::io::{BufRead, Write};
    let settings = settings(config, &serve)?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let embedder = wiring::load_embedder(&settings)?;
        let classifier =
            kizuna_intent::load(&settings.intent.model_dir, embedder).with_context(|| {
                format!(
                    "cannot load the intent model from {}",
                    settings.intent.model_dir.display()
                )
            })?;
        let mut out = std::io::stdout().lock();
        for line in std::io::stdin().lock().lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let reading = classifier.classify(&line)?;
            let mut ranked: Vec<(usize, f32)> =
                reading.probabilities.iter().copied().enumerate().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            let name = |i: usize| kizuna_agent::intent::Intent::ALL[i].as_str();
            writeln!(
                out,
                "{}\t{:.3}\t{}\t{:.3}",
                name(ranked[0].0),
                ranked[0].1,
                name(ranked[1].0),
                ranked[1].1
            )?;
        }
        Ok(())
    })
    .await?
}

pub async fn sentiment(config: Option<PathBuf>, serve: ServeArgs) -> anyhow::Result<()> {
    let settings = settings(config, &serve)?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let embedder = wiring::load_embedder(&settings)?;
        let classifier = kizuna_sentiment::load(&settings.sentiment.model_dir, embedder)
            .with_context(|| {
                format!(
                    "cannot load the sentiment model from {}",
                    settings.sentiment.model_dir.display()
                )
            })?;
        let stdin = std::io::stdin();
        let stdout = std::io::stdout();
        kizuna_sentiment::score_lines(stdin.lock(), stdout.lock(), &classifier)?;
        Ok(())
    })
    .await?
}

pub async fn segments(config: Option<PathBuf>, args: SegmentsArgs) -> anyhow::Result<()> {
    let settings = settings(config, &args.serve)?;
    let store = open_store(&settings).await?;
    let customers =
        kizuna_tools::crm::list_customers(&store, &kizuna_tools::crm::CustomerFilter::default())
            .await?;
    if customers.is_empty() {
        bail!("no customers: import some first (kizuna import customers FILE)");
    }
    let as_of = args.as_of.unwrap_or_else(|| {
        chrono::Utc::now()
            .with_timezone(&kizuna_agent::clock::jst())
            .date_naive()
    });
    let started = std::time::Instant::now();
    let report = kizuna_tools::segment_customers(
        &customers,
        as_of,
        &kizuna_tools::SegmentOptions {
            k: args.k,
            ..Default::default()
        },
    )?;
    println!("{report}");
    eprintln!(
        "[segments] {} customers in {} ms",
        customers.len(),
        started.elapsed().as_millis()
    );
    Ok(())
}
