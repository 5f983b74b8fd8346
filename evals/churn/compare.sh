#!/usr/bin/env bash
# Side by side on the Telco churn data: `kizuna churn evaluate` and scikit-learn's
# GradientBoostingClassifier, same folds, both AUCs and both training times.
# Usage: evals/churn/compare.sh [FOLDS] [SEED]   (builds the release binary if missing)
# Prepares evals/churn/.venv (ignored) with pinned scikit-learn and fetches the data.
set -euo pipefail
cd "$(dirname "$0")"
FOLDS=${1:-5}
SEED=${2:-42}
ROOT=$(cd ../.. && pwd)
BIN=${KIZUNA_BIN:-$ROOT/target/release/kizuna}
./fetch_data.sh
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -c 'import sklearn' 2>/dev/null || .venv/bin/pip install --quiet \
  scikit-learn==1.9.1 numpy==2.4.6 scipy==1.17.1 joblib==1.6.0 threadpoolctl==3.8.0
if [ ! -x "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --bin kizuna)
fi
exec .venv/bin/python compare.py "$BIN" .data/Customer_Churn.csv Churn customerID "$FOLDS" "$SEED"
