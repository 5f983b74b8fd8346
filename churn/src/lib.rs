//! Kizuna's churn model.
//!
//! - [`dataset`]: a CSV (or rows built in code) becomes a numeric matrix: numeric columns as
//!   they are, two-valued text columns as 0/1, other text columns one-hot; blank cells are
//!   missing values, which the trees route on their own.
//! - [`model`]: gradient-boosted trees (the `forust-ml` crate, log-loss) with exact TreeSHAP
//!   contributions per prediction, which add up to the margin (log-odds).
//! - [`cv`] and [`metrics`]: stratified k-fold with a seed; ROC-AUC, PR-AUC (average
//!   precision) and expected calibration error.
//! - [`risk`]: the risk levels (critical ≥ 0.7, high ≥ 0.5, medium ≥ 0.3, low) and the
//!   retention plan per level and risk factor.
//!
//! Why `forust-ml` and not another crate: docs/churn.md.

pub mod cv;
pub mod dataset;
pub mod metrics;
pub mod model;
pub mod risk;

pub use cv::{cross_validate, stratified_folds, CvReport, FoldReport};
pub use dataset::{Dataset, DatasetError, Encoder};
pub use model::{ChurnModel, Contributions, ModelError, Params};
pub use risk::{retention_plan, top_factors, Factor, RetentionAction, RiskLevel};
