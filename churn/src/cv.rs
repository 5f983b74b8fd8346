//! Stratified k-fold cross-validation with a seed.

use std::time::Instant;

use serde::Serialize;

use crate::dataset::Dataset;
use crate::metrics::{expected_calibration_error, pr_auc, roc_auc};
use crate::model::{ChurnModel, ModelError, Params};

/// SplitMix64: a small, fixed pseudo-random sequence, so folds are the same on every machine
/// for a seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The fold (0..k) of each row: each class is shuffled with the seed and dealt round-robin,
/// so every fold has (within one row) the same share of churned rows.
pub fn stratified_folds(labels: &[f64], k: usize, seed: u64) -> Vec<usize> {
    assert!(k >= 2, "at least two folds");
    let mut rng = SplitMix64(seed);
    let mut folds = vec![0; labels.len()];
    let mut dealt = 0;
    for class in [1.0, 0.0] {
        let mut rows: Vec<usize> = (0..labels.len())
            .filter(|i| (labels[*i] > 0.5) == (class > 0.5))
            .collect();
        for i in (1..rows.len()).rev() {
            rows.swap(i, rng.below(i + 1));
        }
        for r in rows {
            folds[r] = dealt % k;
            dealt += 1;
        }
    }
    folds
}

#[derive(Debug, Clone, Serialize)]
pub struct FoldReport {
    pub fold: usize,
    pub train_rows: usize,
    pub test_rows: usize,
    pub roc_auc: f64,
    pub pr_auc: f64,
    pub calibration_error: f64,
    pub train_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CvReport {
    /// Mean over the folds.
    pub roc_auc: f64,
    pub pr_auc: f64,
    /// Expected calibration error (10 bins), mean over the folds.
    pub calibration_error: f64,
    pub folds: usize,
    pub seed: u64,
    pub rows: usize,
    pub positives: usize,
    pub features: usize,
    /// Training time summed over the folds.
    pub train_seconds: f64,
    pub per_fold: Vec<FoldReport>,
    /// Out-of-fold probability of each row.
    #[serde(skip)]
    pub out_of_fold: Vec<f64>,
    /// The fold of each row.
    #[serde(skip)]
    pub fold_of_row: Vec<usize>,
}

pub fn cross_validate(
    ds: &Dataset,
    k: usize,
    seed: u64,
    params: &Params,
) -> Result<CvReport, ModelError> {
    if k < 2 || k > ds.positives() || k > ds.rows() - ds.positives() {
        return Err(ModelError::Input(format!(
            "{k} folds need at least {k} churned and {k} retained rows"
        )));
    }
    let fold_of_row = stratified_folds(&ds.labels, k, seed);
    let mut out_of_fold = vec![f64::NAN; ds.rows()];
    let mut per_fold = Vec::with_capacity(k);
    for fold in 0..k {
        let train: Vec<usize> = (0..ds.rows()).filter(|i| fold_of_row[*i] != fold).collect();
        let test: Vec<usize> = (0..ds.rows()).filter(|i| fold_of_row[*i] == fold).collect();
        let y_train: Vec<f64> = train.iter().map(|i| ds.labels[*i]).collect();
        let y_test: Vec<f64> = test.iter().map(|i| ds.labels[*i]).collect();
        let x_train = ds.column_major(&train);
        let started = Instant::now();
        let model = ChurnModel::fit(ds.feature_names.clone(), &x_train, &y_train, params)?;
        let train_seconds = started.elapsed().as_secs_f64();
        let p = model.probabilities(&ds.column_major(&test), test.len());
        for (row, prob) in test.iter().zip(&p) {
            out_of_fold[*row] = *prob;
        }
        per_fold.push(FoldReport {
            fold,
            train_rows: train.len(),
            test_rows: test.len(),
            roc_auc: roc_auc(&p, &y_test).unwrap_or(f64::NAN),
            pr_auc: pr_auc(&p, &y_test).unwrap_or(f64::NAN),
            calibration_error: expected_calibration_error(&p, &y_test, 10),
            train_seconds,
        });
    }
    let mean = |f: fn(&FoldReport) -> f64| per_fold.iter().map(f).sum::<f64>() / k as f64;
    Ok(CvReport {
        roc_auc: mean(|f| f.roc_auc),
        pr_auc: mean(|f| f.pr_auc),
        calibration_error: mean(|f| f.calibration_error),
        folds: k,
        seed,
        rows: ds.rows(),
        positives: ds.positives(),
        features: ds.feature_names.len(),
        train_seconds: per_fold.iter().map(|f| f.train_seconds).sum(),
        per_fold,
        out_of_fold,
        fold_of_row,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Dataset;

    #[test]
    fn folds_are_stratified_seeded_and_cover_every_row() {
        let labels: Vec<f64> = (0..103).map(|i| f64::from(u8::from(i % 4 == 0))).collect();
        let a = stratified_folds(&labels, 5, 7);
        assert_eq!(a, stratified_folds(&labels, 5, 7), "same seed, same folds");
        assert_ne!(
            a,
            stratified_folds(&labels, 5, 8),
            "another seed shuffles differently"
        );
        let positives = labels.iter().filter(|y| **y > 0.5).count();
        for f in 0..5 {
            let rows = a.iter().filter(|x| **x == f).count();
            let pos = (0..labels.len())
                .filter(|i| a[*i] == f && labels[*i] > 0.5)
                .count();
            assert!((20..=21).contains(&rows), "fold {f}: {rows} rows");
            assert!(
                pos * 5 >= positives - 5 && pos * 5 <= positives + 5,
                "fold {f}: {pos}"
            );
        }
    }

    #[test]
    fn cross_validation_learns_a_clear_signal() {
        let (names, data, labels) = crate::model::tests::synthetic(1000);
        let rows = labels.len();
        let records: Vec<Vec<String>> = (0..rows)
            .map(|i| {
                let mut r: Vec<String> = (0..names.len())
                    .map(|j| {
                        let v = data[j * rows + i];
                        if v.is_nan() {
                            String::new()
                        } else {
                            v.to_string()
                        }
                    })
                    .collect();
                r.push(if labels[i] > 0.5 {
                    "yes".into()
                } else {
                    "no".into()
                });
                r
            })
            .collect();
        let mut headers = names.clone();
        headers.push("churned".into());
        let ds = Dataset::from_records(&headers, &records, "churned", None).unwrap();
        let report = cross_validate(&ds, 5, 1, &Params::default()).unwrap();
        assert!(report.roc_auc > 0.75, "{report:?}");
        assert!(report.pr_auc > 0.5);
        assert!(report.calibration_error < 0.15);
        assert_eq!(report.per_fold.len(), 5);
        assert!(report.out_of_fold.iter().all(|p| (0.0..=1.0).contains(p)));
        assert!(cross_validate(&ds, 1, 1, &Params::default()).is_err());
    }
}
