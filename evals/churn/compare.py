"""Kizuna's churn model and scikit-learn's GradientBoostingClassifier on the same folds.

Run through compare.sh, which fetches the data and prepares the Python environment.
Usage: compare.py KIZUNA_BINARY CSV LABEL ID FOLDS SEED
Kizuna writes its stratified fold assignment (--folds-out); scikit-learn trains on exactly
those folds with its defaults (100 trees, learning rate 0.1, depth 3, the same as Kizuna's).
Both get the same encoding: numbers as they are, two-valued text 0/1, other text one-hot;
scikit-learn's GradientBoostingClassifier takes no missing values, so blanks get the column
median there (Kizuna's trees route them as missing).
"""

import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import sklearn
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import average_precision_score, roc_auc_score

BLANK = {"", "na", "n/a", "nan", "null", "none"}
POSITIVE = {"1", "1.0", "yes", "y", "true", "t", "churned", "churn"}


def encode(path, label, id_col):
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    y = np.array([1.0 if r[label].strip().lower() in POSITIVE else 0.0 for r in rows])
    cols = []
    for name in rows[0].keys():
        if name in (label, id_col):
            continue
        cells = [r[name].strip() for r in rows]
        present = [c for c in cells if c.lower() not in BLANK]
        try:
            [float(c) for c in present]
            numeric = True
        except ValueError:
            numeric = False
        if numeric:
            v = np.array([float(c) if c.lower() not in BLANK else np.nan for c in cells])
            v[np.isnan(v)] = np.nanmedian(v)
            cols.append(v)
            continue
        values = sorted(set(present))
        if len(values) < 2 or len(values) > 64 or (len(values) > 2 and len(values) * 10 > len(rows) * 9):
            continue
        if len(values) == 2:
            cols.append(np.array([1.0 if c == values[1] else 0.0 for c in cells]))
        else:
            cols.extend(np.array([1.0 if c == v else 0.0 for c in cells]) for v in values)
    return np.column_stack(cols), y


def main():
    kizuna, data, label, id_col, folds, seed = sys.argv[1:7]
    folds, seed = int(folds), int(seed)
    with tempfile.TemporaryDirectory() as tmp:
        folds_file = os.path.join(tmp, "folds.csv")
        runs = {}
        for mode, extra in (("all cores", []), ("one core", ["--single-thread"])):
            started = time.perf_counter()
            out = subprocess.run(
                [kizuna, "churn", "evaluate", "--data", data, "--label", label, "--id", id_col,
                 "--folds", str(folds), "--seed", str(seed), "--json", "--folds-out", folds_file]
                + extra,
                check=True, capture_output=True, text=True,
            ).stdout
            runs[mode] = (json.loads(out), time.perf_counter() - started)
        with open(folds_file) as f:
            fold_of_row = np.array([int(r["fold"]) for r in csv.DictReader(f)])

    x, y = encode(data, label, id_col)
    sk_auc, sk_ap, sk_secs = [], [], []
    for k in range(folds):
        train, test = fold_of_row != k, fold_of_row == k
        model = GradientBoostingClassifier(random_state=seed)
        t = time.perf_counter()
        model.fit(x[train], y[train])
        sk_secs.append(time.perf_counter() - t)
        p = model.predict_proba(x[test])[:, 1]
        sk_auc.append(roc_auc_score(y[test], p))
        sk_ap.append(average_precision_score(y[test], p))

    kz, kz_wall = runs["all cores"]
    kz1, _ = runs["one core"]
    print(f"data: {data} ({len(y)} rows, {int(y.sum())} churned, {x.shape[1]} encoded features)")
    print(f"folds: {folds}-fold stratified, seed {seed} (Kizuna's assignment, shared)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; scikit-learn {sklearn.__version__}")
    print()
    print("fold  Kizuna AUC  sklearn AUC  Kizuna train s  sklearn train s")
    for k in range(folds):
        f = kz["per_fold"][k]
        print(f"{k + 1:>4}  {f['roc_auc']:.4f}      {sk_auc[k]:.4f}       {f['train_seconds']:.3f}           {sk_secs[k]:.3f}")
    print()
    print(f"{'':<28}{'ROC-AUC':>9}{'PR-AUC':>9}{'ECE':>8}{'train s':>10}")
    print(f"{'Kizuna (forust-ml, all cores)':<28}{kz['roc_auc']:>9.4f}{kz['pr_auc']:>9.4f}{kz['calibration_error']:>8.4f}{kz['train_seconds']:>10.3f}")
    print(f"{'Kizuna (one core)':<28}{kz1['roc_auc']:>9.4f}{kz1['pr_auc']:>9.4f}{kz1['calibration_error']:>8.4f}{kz1['train_seconds']:>10.3f}")
    print(f"{'scikit-learn GBC':<28}{np.mean(sk_auc):>9.4f}{np.mean(sk_ap):>9.4f}{'':>8}{sum(sk_secs):>10.3f}")
    gap = kz["roc_auc"] - np.mean(sk_auc)
    ok = kz["roc_auc"] >= 0.84 and gap >= -0.005 and kz1["train_seconds"] < sum(sk_secs)
    print()
    print(f"Kizuna − scikit-learn ROC-AUC: {gap:+.4f}; goal (AUC ≥ 0.84, within 0.005 or better, "
          f"faster on one core): {'met' if ok else 'NOT met'}")
    print(json.dumps({"kizuna": {"roc_auc": kz["roc_auc"], "pr_auc": kz["pr_auc"],
                                 "train_seconds": kz["train_seconds"],
                                 "train_seconds_one_core": kz1["train_seconds"]},
                      "sklearn": {"roc_auc": float(np.mean(sk_auc)), "pr_auc": float(np.mean(sk_ap)),
                                  "train_seconds": sum(sk_secs)}, "goal_met": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
