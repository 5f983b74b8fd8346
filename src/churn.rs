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

pub async fn run(_config: Option<PathBuf>, cmd: ChurnCommand) -> anyhow::Result<()> {
    match cmd {
        ChurnCommand::Evaluate(args) => evaluate(args),
    }
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
