//! Ranking and calibration metrics for a binary label (1.0 = churned).

/// Area under the ROC curve (Mann–Whitney, tied scores share their mean rank). `None` when
/// one class is absent.
pub fn roc_auc(scores: &[f64], labels: &[f64]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len());
    let positives = labels.iter().filter(|y| **y > 0.5).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        for k in &order[i..=j] {
            if labels[*k] > 0.5 {
                rank_sum += mean_rank;
            }
        }
        i = j + 1;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// Area under the precision–recall curve as average precision (scikit-learn's
/// `average_precision_score`: Σ (Rₙ − Rₙ₋₁)·Pₙ over the distinct score thresholds, highest
/// first). `None` without positives.
pub fn pr_auc(scores: &[f64], labels: &[f64]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len());
    let positives = labels.iter().filter(|y| **y > 0.5).count() as f64;
    if positives == 0.0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let (mut tp, mut seen, mut prev_recall, mut ap) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        for k in &order[i..=j] {
            seen += 1.0;
            if labels[*k] > 0.5 {
                tp += 1.0;
            }
        }
        let recall = tp / positives;
        ap += (recall - prev_recall) * (tp / seen);
        prev_recall = recall;
        i = j + 1;
    }
    Some(ap)
}

/// Expected calibration error over `bins` equal-width probability bins:
/// Σ (nᵦ / n)·|mean predicted − observed rate| per bin.
pub fn expected_calibration_error(probabilities: &[f64], labels: &[f64], bins: usize) -> f64 {
    assert_eq!(probabilities.len(), labels.len());
    if probabilities.is_empty() || bins == 0 {
        return 0.0;
    }
    let mut count = vec![0.0; bins];
    let mut predicted = vec![0.0; bins];
    let mut observed = vec![0.0; bins];
    for (p, y) in probabilities.iter().zip(labels) {
        let b = ((p.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        count[b] += 1.0;
        predicted[b] += p;
        observed[b] += if *y > 0.5 { 1.0 } else { 0.0 };
    }
    let n = probabilities.len() as f64;
    (0..bins)
        .filter(|b| count[*b] > 0.0)
        .map(|b| (predicted[b] - observed[b]).abs() / n)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_auc_of_perfect_random_and_inverted_rankings() {
        let y = [0.0, 0.0, 1.0, 1.0];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &y), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &y), Some(0.0));
        assert_eq!(roc_auc(&[0.5, 0.5, 0.5, 0.5], &y), Some(0.5));
        assert_eq!(roc_auc(&[0.1, 0.2], &[0.0, 0.0]), None);
    }

    #[test]
    fn roc_auc_matches_pairwise_count() {
        // positives 0.35, 0.8; negatives 0.1, 0.4, 0.35 → pairs won: 0.35>0.1, 0.35=0.35 (half),
        // 0.8 beats all three → (1 + 0.5 + 3) / 6
        let s = [0.1, 0.4, 0.35, 0.8, 0.35];
        let y = [0.0, 0.0, 1.0, 1.0, 0.0];
        assert!((roc_auc(&s, &y).unwrap() - 4.5 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn average_precision_matches_scikit_learn_example() {
        // sklearn docs: average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.8333…
        let ap = pr_auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]).unwrap();
        assert!((ap - 0.833_333_333).abs() < 1e-6, "{ap}");
        assert_eq!(pr_auc(&[0.3], &[0.0]), None);
    }

    #[test]
    fn calibration_error_is_zero_when_rates_match_and_large_when_not() {
        let p = [0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75];
        let y = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0];
        assert!(expected_calibration_error(&p, &y, 10) < 1e-12);
        let e = expected_calibration_error(&[0.9, 0.9], &[0.0, 0.0], 10);
        assert!((e - 0.9).abs() < 1e-12);
    }
}
