//! Gradient-boosted trees for churn (log-loss) with exact TreeSHAP contributions.

use forust_ml::gradientbooster::ContributionsMethod;
use forust_ml::objective::ObjectiveType;
use forust_ml::{GradientBooster, Matrix};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("training failed: {0}")]
    Train(String),
    #[error("bad input: {0}")]
    Input(String),
    #[error("model JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Training settings. The defaults are scikit-learn's `GradientBoostingClassifier`
/// defaults (100 trees, learning rate 0.1, depth 3), which the seed's model also starts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub trees: usize,
    pub learning_rate: f32,
    pub max_depth: usize,
    /// Minimum hessian sum in a leaf (log-loss: p(1−p) per row, so 1.0 is ≥ 4 rows).
    pub min_leaf_weight: f32,
    /// L2 regularisation on leaf weights.
    pub l2: f32,
    /// Histogram bins per feature.
    pub bins: u16,
    /// Train with all cores (rayon); off gives the same trees on one core.
    pub parallel: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            trees: 100,
            learning_rate: 0.1,
            max_depth: 3,
            min_leaf_weight: 1.0,
            l2: 1.0,
            bins: 64,
            parallel: true,
        }
    }
}

/// Per-feature contributions to one prediction's margin (log-odds):
/// `bias + Σ per_feature == margin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contributions {
    pub per_feature: Vec<f64>,
    pub bias: f64,
}

impl Contributions {
    pub fn total(&self) -> f64 {
        self.bias + self.per_feature.iter().sum::<f64>()
    }
}

/// A trained churn model: the trees and the names of the features they expect, in order.
#[derive(Serialize, Deserialize)]
pub struct ChurnModel {
    pub feature_names: Vec<String>,
    pub params: Params,
    booster: GradientBooster,
}

impl std::fmt::Debug for ChurnModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChurnModel")
            .field("feature_names", &self.feature_names)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

pub fn sigmoid(margin: f64) -> f64 {
    1.0 / (1.0 + (-margin).exp())
}

impl ChurnModel {
    /// Train on column-major data (`data[j * rows + i]` is feature `j` of row `i`); labels are
    /// 1.0 (churned) or 0.0.
    pub fn fit(
        feature_names: Vec<String>,
        data: &[f64],
        labels: &[f64],
        params: &Params,
    ) -> Result<Self, ModelError> {
        let rows = labels.len();
        let cols = feature_names.len();
        if rows == 0 || cols == 0 || data.len() != rows * cols {
            return Err(ModelError::Input(format!(
                "{} values for {rows} rows × {cols} features",
                data.len()
            )));
        }
        let mut booster = GradientBooster::default()
            .set_objective_type(ObjectiveType::LogLoss)
            .set_iterations(params.trees)
            .set_learning_rate(params.learning_rate)
            .set_max_depth(params.max_depth)
            .set_min_leaf_weight(params.min_leaf_weight)
            .set_l2(params.l2)
            .set_nbins(params.bins)
            .set_parallel(params.parallel);
        booster
            .fit_unweighted(&Matrix::new(data, rows, cols), labels, None)
            .map_err(|e| ModelError::Train(e.to_string()))?;
        Ok(ChurnModel {
            feature_names,
            params: params.clone(),
            booster,
        })
    }

    fn check_row(&self, row: &[f64]) -> Result<(), ModelError> {
        if row.len() == self.feature_names.len() {
            Ok(())
        } else {
            Err(ModelError::Input(format!(
                "{} values for {} features",
                row.len(),
                self.feature_names.len()
            )))
        }
    }

    /// Margins (log-odds) for column-major data with `rows` rows.
    pub fn margins(&self, data: &[f64], rows: usize) -> Vec<f64> {
        self.booster.predict(
            &Matrix::new(data, rows, self.feature_names.len()),
            self.params.parallel,
        )
    }

    pub fn probabilities(&self, data: &[f64], rows: usize) -> Vec<f64> {
        self.margins(data, rows).into_iter().map(sigmoid).collect()
    }

    pub fn margin(&self, row: &[f64]) -> Result<f64, ModelError> {
        self.check_row(row)?;
        Ok(self.booster.predict(&Matrix::new(row, 1, row.len()), false)[0])
    }

    pub fn probability(&self, row: &[f64]) -> Result<f64, ModelError> {
        self.margin(row).map(sigmoid)
    }

    /// Exact TreeSHAP contributions of each feature to this row's margin.
    pub fn contributions(&self, row: &[f64]) -> Result<Contributions, ModelError> {
        self.check_row(row)?;
        let mut all = self.booster.predict_contributions(
            &Matrix::new(row, 1, row.len()),
            ContributionsMethod::Shapley,
            false,
        );
        let bias = all.pop().unwrap_or(0.0);
        Ok(Contributions {
            per_feature: all,
            bias,
        })
    }

    pub fn trees(&self) -> usize {
        self.booster.trees.len()
    }

    pub fn to_json(&self) -> Result<String, ModelError> {
        Ok(serde_json::to_string(self)?)
    }

    pub fn from_json(json: &str) -> Result<Self, ModelError> {
        Ok(serde_json::from_str(json)?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small synthetic churn set: churn rises with low usage and overdue payment, with a
    /// missing value now and then. Column-major.
    pub(crate) fn synthetic(rows: usize) -> (Vec<String>, Vec<f64>, Vec<f64>) {
        let mut state = 42u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut usage = Vec::new();
        let mut overdue = Vec::new();
        let mut noise = Vec::new();
        let mut labels = Vec::new();
        for i in 0..rows {
            let u = next();
            let o = (next() * 40.0).floor();
            let z = next();
            let logit = 2.0 - 5.0 * u + 0.08 * o - 1.5;
            labels.push(f64::from(u8::from(next() < sigmoid(logit))));
            usage.push(if i % 17 == 0 { f64::NAN } else { u });
            overdue.push(o);
            noise.push(z);
        }
        let names = vec!["usage".into(), "overdue".into(), "noise".into()];
        let data = [usage, overdue, noise].concat();
        (names, data, labels)
    }

    #[test]
    fn contributions_add_up_to_the_margin() {
        let (names, data, labels) = synthetic(600);
        let model = ChurnModel::fit(names, &data, &labels, &Params::default()).unwrap();
        let rows = labels.len();
        for i in (0..rows).step_by(37) {
            let row: Vec<f64> = (0..3).map(|j| data[j * rows + i]).collect();
            let c = model.contributions(&row).unwrap();
            let m = model.margin(&row).unwrap();
            assert!(
                (c.total() - m).abs() < 1e-6,
                "row {i}: {} vs {m}",
                c.total()
            );
        }
        // including rows with a missing value
        let c = model.contributions(&[f64::NAN, 35.0, 0.5]).unwrap();
        assert!((c.total() - model.margin(&[f64::NAN, 35.0, 0.5]).unwrap()).abs() < 1e-6);
    }

    #[test]
    fn contributions_point_at_the_features_that_drive_churn() {
        let (names, data, labels) = synthetic(800);
        let model = ChurnModel::fit(names, &data, &labels, &Params::default()).unwrap();
        // Low usage and long overdue: both raise the margin; the noise feature barely moves it.
        let c = model.contributions(&[0.02, 39.0, 0.5]).unwrap();
        assert!(c.per_feature[0] > 0.0 && c.per_feature[1] > 0.0, "{c:?}");
        assert!(c.per_feature[2].abs() < c.per_feature[0].abs());
        assert!(
            model.probability(&[0.02, 39.0, 0.5]).unwrap()
                > model.probability(&[0.95, 0.0, 0.5]).unwrap()
        );
    }

    #[test]
    fn a_model_survives_a_json_round_trip() {
        let (names, data, labels) = synthetic(300);
        let model = ChurnModel::fit(names, &data, &labels, &Params::default()).unwrap();
        let back = ChurnModel::from_json(&model.to_json().unwrap()).unwrap();
        for row in [[0.1, 3.0, 0.2], [f64::NAN, 20.0, 0.9]] {
            assert_eq!(model.margin(&row).unwrap(), back.margin(&row).unwrap());
        }
        assert_eq!(back.feature_names, vec!["usage", "overdue", "noise"]);
        assert_eq!(back.trees(), 100);
    }

    #[test]
    fn rows_of_the_wrong_width_are_refused() {
        let (names, data, labels) = synthetic(100);
        let model = ChurnModel::fit(names, &data, &labels, &Params::default()).unwrap();
        assert!(model.margin(&[1.0]).is_err());
        assert!(
            ChurnModel::fit(vec!["a".into()], &[1.0, 2.0], &[1.0], &Params::default()).is_err()
        );
    }
}
