//! `kizuna churn …`: the churn model on the command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use kizuna_churn::{cross_validate, Dataset, Params};

#[derive(Debug, Subcommand)]
pub enum ChurnCommand {
    /// Train and score on any CSV by stratified k-fold: prints ROC-AUC, PR-AUC and the
    /// expected calibration error (numeric and text columns encoded automatically, blank
    /// cells handled).
    Evaluate(EvaluateArgs),
    /// Train on the store's B2B customers (labels: `churned_at` from the CRM import), score by
    /// k-fold and store the model as the next version with its metrics.
    Train(TrainArgs),
    /// Churn probability, risk level, top 3 factors and retention plan from the newest model:
    /// every current B2B account (most likely first) or one.
    Predict(PredictArgs),
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Features as of this date (YYYY-MM-DD; default today, JST).
    #[arg(long, env = "KIZUNA_AS_OF")]
    pub as_of: Option<chrono::NaiveDate>,
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub serve: crate::config::ServeArgs,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Only this account.
    #[arg(long)]
    pub customer: Option<String>,
    /// At most this many accounts.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Only accounts at or above this risk level (low, medium, high, critical).
    #[arg(long)]
    pub min_risk: Option<String>,
    #[arg(long, env = "KIZUNA_AS_OF")]
    pub as_of: Option<chrono::NaiveDate>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub serve: crate::config::ServeArgs,
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The CSV file (header row; one row per customer).
    #[arg(long)]
    pub data: PathBuf,
    /// The label column: churned = 1/yes/true, stayed = 0/no/false.
    #[arg(long)]
    pub label: String,
    /// An identifier column, left out of the features.
    #[arg(long)]
    pub id: Option<String>,
    /// Number of folds.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Seed for the fold assignment.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write each row's fold (`row,fold`, row numbered from 0 in file order) to this
    /// file, so another tool can train on the same folds.
    #[arg(long)]
    pub folds_out: Option<PathBuf>,
    /// Number of trees.
    #[arg(long, default_value_t = Params::default().trees)]
    pub trees: usize,
    /// Learning rate.
    #[arg(long, default_value_t = Params::default().learning_rate)]
    pub learning_rate: f32,
    /// Tree depth.
    #[arg(long, default_value_t = Params::default().max_depth)]
    pub max_depth: usize,
    /// Train on one core (for timing against single-threaded trainers).
    #[arg(long)]
    pub single_thread: bool,
}

pub async fn run(config: Option<PathBuf>, cmd: ChurnCommand) -> anyhow::Result<()> {
    match cmd {
        ChurnCommand::Evaluate(args) => evaluate(args),
        ChurnCommand::Train(args) => train(config, args).await,
        ChurnCommand::Predict(args) => predict(config, args).await,
    }
}

fn today() -> chrono::NaiveDate {
    chrono::Utc::now()
        .with_timezone(&kizuna_agent::clock::jst())
        .date_naive()
}

async fn train(config: Option<PathBuf>, args: TrainArgs) -> anyhow::Result<()> {
    let settings = crate::settings(config, &args.serve)?;
    let store = crate::data::open_store(&settings).await?;
    let as_of = args.as_of.unwrap_or_else(today);
    let report = kizuna_tools::churn::train(&store, as_of, args.folds, args.seed).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "churn model v{} as of {}: {} B2B accounts ({} churned), {}-fold ROC-AUC {:.3}, PR-AUC {:.3}, calibration error {:.3}",
            report.version,
            report.as_of,
            report.rows,
            report.churned,
            report.metrics.folds,
            report.metrics.roc_auc,
            report.metrics.pr_auc,
            report.metrics.calibration_error
        );
    }
    Ok(())
}

async fn predict(config: Option<PathBuf>, args: PredictArgs) -> anyhow::Result<()> {
    use kizuna_churn::RiskLevel;
    let settings = crate::settings(config, &args.serve)?;
    let store = crate::data::open_store(&settings).await?;
    let as_of = args.as_of.unwrap_or_else(today);
    let stored = kizuna_tools::churn::latest_model(&store)
        .await?
        .ok_or(kizuna_tools::churn::ChurnError::NoModel)?;
    let min = match args.min_risk.as_deref() {
        Some(s) => Some(RiskLevel::parse(s).with_context(|| format!("unknown risk level {s:?}"))?),
        None => None,
    };
    let mut predictions = match &args.customer {
        Some(id) => {
            let c = kizuna_tools::crm::get_customer(&store, id)
                .await?
                .with_context(|| format!("no customer {id}"))?;
            vec![kizuna_tools::churn::predict(&store, &stored, &c, as_of).await?]
        }
        None => kizuna_tools::churn::predict_all(&store, &stored, as_of).await?,
    };
    predictions.retain(|p| min.is_none_or(|m| p.risk_level >= m));
    predictions.truncate(args.limit);
    if args.json {
        println!("{}", serde_json::to_string(&predictions)?);
        return Ok(());
    }
    for p in &predictions {
        let factors: Vec<String> = p
            .top_risk_factors
            .iter()
            .map(|f| {
                let value = f.value.map_or("—".to_string(), |v| format!("{v:.2}"));
                format!("{}={value} (+{:.2})", f.feature, f.contribution)
            })
            .collect();
        let actions: Vec<&str> = p
            .recommended_actions
            .iter()
            .map(|a| a.action.as_str())
            .collect();
        println!(
            "{}  {}  {:.3}  {}  factors: {}  plan: {}",
            p.customer_id,
            p.name,
            p.probability,
            p.risk_level.as_str(),
            factors.join(", "),
            actions.join(", ")
        );
    }
    eprintln!(
        "[churn] model v{} (as of {}), {} accounts",
        stored.version,
        stored.as_of,
        predictions.len()
    );
    Ok(())
}

fn evaluate(args: EvaluateArgs) -> anyhow::Result<()> {
    let ds = Dataset::from_csv_path(&args.data, &args.label, args.id.as_deref())
        .with_context(|| format!("cannot load {}", args.data.display()))?;
    let params = Params {
        trees: args.trees,
        learning_rate: args.learning_rate,
        max_depth: args.max_depth,
        parallel: !args.single_thread,
        ..Params::default()
    };
    let report = cross_validate(&ds, args.folds, args.seed, &params)?;
    if let Some(path) = &args.folds_out {
        let mut out = String::from("row,fold\n");
        for (i, f) in report.fold_of_row.iter().enumerate() {
            out.push_str(&format!("{i},{f}\n"));
        }
        std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["params"] = serde_json::to_value(&params)?;
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    println!(
        "{} rows ({} churned, {:.1}%), {} features, {}-fold stratified (seed {})",
        report.rows,
        report.positives,
        100.0 * report.positives as f64 / report.rows as f64,
        report.features,
        report.folds,
        report.seed
    );
    println!("fold  rows   ROC-AUC  PR-AUC  ECE     train s");
    for f in &report.per_fold {
        println!(
            "{:>4}  {:>5}  {:.4}   {:.4}  {:.4}  {:.3}",
            f.fold + 1,
            f.test_rows,
            f.roc_auc,
            f.pr_auc,
            f.calibration_error,
            f.train_seconds
        );
    }
    println!(
        "mean        {:.4}   {:.4}  {:.4}  {:.3} (total)",
        report.roc_auc, report.pr_auc, report.calibration_error, report.train_seconds
    );
    Ok(())
}
