//! Branch-free element-wise math for the encoder's hot loops. Written so that LLVM
//! vectorises it: no calls into libm, no data-dependent branches, reductions split over
//! independent lanes. Accuracy is far below the model's 4-bit quantisation noise.

use std::f32::consts::{FRAC_1_SQRT_2, LOG2_E};

const LANES: usize = 8;

/// `e^x` for `x <= 0`; inputs below -87 give about 1e-38 instead of denormals.
/// Relative error below 3e-7.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    // Cody–Waite range reduction: x = n·ln2 + r with |r| <= ln2/2, e^x = 2^n · e^r.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer without a branch.
    const ROUNDER: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let shifted = x * LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    // The integer n also sits in the low mantissa bits of `shifted`; reading it from there
    // avoids a float-to-int conversion, whose saturating semantics do not vectorise.
    let n_bits = shifted.to_bits().wrapping_sub(ROUNDER.to_bits());
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor series of e^r to degree 7 (|r| < 0.35: truncation error < 1e-8).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    p * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// GELU with the exact-erf definition, `0.5·x·(1 + erf(x/√2))`. erfc is evaluated with
/// Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7), which also avoids the
/// cancellation of `1 + erf` for negative inputs.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_7;
    const A4: f32 = -1.453_152_1;
    const A5: f32 = 1.061_405_4;
    let z = x.abs() * FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let erfc = t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5)))) * exp_nonpositive(-z * z);
    let one_plus_erf = if x >= 0.0 { 2.0 - erfc } else { erfc };
    0.5 * x * one_plus_erf
}

/// Sum over independent lanes (vectorisable; order differs from a sequential sum).
#[inline(always)]
pub(crate) fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Maximum over independent lanes; `-inf` for an empty slice.
#[inline(always)]
pub(crate) fn max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    lanes.iter().fold(tail, |m, &v| if v > m { v } else { m })
}

/// In-place LayerNorm of one row (two-pass mean and variance).
#[inline(always)]
pub(crate) fn layer_norm(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let mut lanes = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += (v - mean) * (v - mean);
        }
    }
    let var = (lanes.iter().sum::<f32>() + tail) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(from: f32, to: f32, steps: usize) -> impl Iterator<Item = f32> {
        (0..=steps).map(move |i| from + (to - from) * i as f32 / steps as f32)
    }

    #[test]
    fn exp_matches_std_within_relative_error() {
        for x in grid(-87.0, 0.0, 200_000) {
            let (ours, exact) = (exp_nonpositive(x), f64::from(x).exp());
            let rel = ((f64::from(ours) - exact) / exact).abs();
            assert!(rel < 3e-7, "exp({x}) = {ours}, exact {exact}");
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1000.0) < 1e-37);
    }

    #[test]
    fn gelu_matches_erf_definition() {
        for x in grid(-12.0, 12.0, 200_000) {
            let xd = f64::from(x);
            let exact = 0.5 * xd * (1.0 + libm::erf(xd / std::f64::consts::SQRT_2));
            let err = (f64::from(gelu(x)) - exact).abs();
            assert!(
                err < 2e-6 * (1.0 + xd.abs()),
                "gelu({x}) = {}, exact {exact}",
                gelu(x)
            );
        }
        assert_eq!(gelu(0.0), 0.0);
        assert!(gelu(-30.0).abs() < 1e-30);
    }

    #[test]
    fn reductions_and_layer_norm() {
        let values: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.25).collect();
        assert!((sum(&values) - values.iter().sum::<f32>()).abs() < 1e-5);
        assert_eq!(max(&values), 4.5);
        assert_eq!(max(&values[..3]), -4.0);
        assert_eq!(max(&[]), f32::NEG_INFINITY);

        let mut row = values.clone();
        let gamma = vec![2.0; row.len()];
        let beta = vec![1.0; row.len()];
        layer_norm(&mut row, &gamma, &beta, 1e-12);
        let normalized: Vec<f32> = row.iter().map(|v| (v - 1.0) / 2.0).collect();
        let mean = normalized.iter().sum::<f32>() / 37.0;
        let var = normalized.iter().map(|v| v * v).sum::<f32>() / 37.0;
        assert!(
            mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
            "{mean} {var}"
        );
    }
}
