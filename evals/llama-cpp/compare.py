#!/usr/bin/env python3
"""Side-by-side table of two engine benchmark results files (kizuna vs llama.cpp).

usage: compare.py KIZUNA_JSON LLAMA_JSON [--markdown OUT]

Both files have the shape written by `kizuna bench engine --json-out` and llama_bench.py.
Ratios are kizuna / llama.cpp for speeds (tok/s) and llama.cpp / kizuna for times (TTFT, load)
and memory (peak RSS), so a ratio > 1 always means kizuna is better (faster or smaller).
Prints Markdown; --markdown also writes it to OUT.
Standard library only.
"""

import argparse
import json
import os
import subprocess
import sys


def machine() -> str:
    model, cpus = None, None
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "Model name" and model is None:
                model = val.strip()
            elif key.strip() == "CPU(s)" and cpus is None:
                cpus = val.strip()
    except OSError:
        pass
    cpus = cpus or str(os.cpu_count())
    return f"{model or 'unknown CPU'}, {cpus} CPUs (nproc {os.cpu_count()})"


def fnum(x, fmt="{:.2f}"):
    return "n/a" if x is None else fmt.format(x)


def ratio(a, b):
    """a / b, or None when either is missing or zero."""
    if not a or not b:
        return None
    return a / b


def fratio(r):
    return "n/a" if r is None else f"{r:.2f}x"


def agreement(ka: str, kb: str) -> str:
    """Whether the two greedy outputs agree; informational (different kernels can legitimately
    flip a near-tie argmax)."""
    if ka is None or kb is None:
        return "n/a"
    if ka == kb:
        return f"same ({len(ka)} chars)"
    n = 0
    for x, y in zip(ka, kb):
        if x != y:
            break
        n += 1
    shorter = min(len(ka), len(kb))
    if n == shorter:
        return f"prefix: agree on {n} chars, one output is longer"
    return f"agree on first {n} chars"


def esc(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", "\\n")


def build(k: dict, l: dict) -> str:
    kname = k.get("engine", "kizuna")
    lname = l.get("engine", "llama.cpp")
    lines = []
    lines.append("# Engine benchmark: kizuna vs llama.cpp")
    lines.append("")
    lines.append(f"- machine: {machine()}")
    th_k, th_l = k.get("threads"), l.get("threads")
    th = f"{th_k}" if th_k == th_l else f"kizuna {th_k}, llama.cpp {th_l} (DIFFERENT)"
    lines.append(f"- threads: {th}")
    lines.append(f"- kizuna engine: {kname}")
    lines.append(f"- llama.cpp engine: {lname}")
    if k.get("model") or l.get("model"):
        lines.append(f"- model: {k.get('model') or l.get('model')}")
    lines.append("- ratio > 1 means kizuna is better: faster or smaller (speeds: kizuna/llama.cpp; "
                 "times and memory: llama.cpp/kizuna)")
    lines.append("")

    lines.append("| | kizuna | llama.cpp | ratio |")
    lines.append("|---|---:|---:|---:|")
    kl, ll = k.get("load_s"), l.get("load_s")
    lines.append(f"| load time (s) | {fnum(kl)} | {fnum(ll)} | {fratio(ratio(ll, kl))} |")
    kr, lr = k.get("peak_rss_mib"), l.get("peak_rss_mib")
    lines.append(f"| peak RSS (MiB) | {fnum(kr, '{:.0f}')} | {fnum(lr, '{:.0f}')} | "
                 f"{fratio(ratio(lr, kr))} |")
    lines.append("")

    lines.append("| prompt | prompt tok | cached | TTFT kizuna (s) | TTFT llama.cpp (s) | TTFT ratio "
                 "| prefill kizuna (tok/s) | prefill llama.cpp (tok/s) | prefill ratio "
                 "| decode kizuna (tok/s) | decode llama.cpp (tok/s) | decode ratio |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    kres = {r["name"]: r for r in k.get("results", [])}
    lres = {r["name"]: r for r in l.get("results", [])}
    names = [r["name"] for r in k.get("results", [])]
    names += [n for n in lres if n not in kres]
    notes = []
    agree_rows = []
    for n in names:
        a, b = kres.get(n), lres.get(n)
        if a is None or b is None:
            notes.append(f"- `{n}` is only in the {'llama.cpp' if a is None else 'kizuna'} results")
            continue

        def both(key, fmt="{}"):
            x, y = a.get(key), b.get(key)
            if x == y:
                return fmt.format(x)
            return f"{fmt.format(x)} / {fmt.format(y)}"

        if a.get("prompt_tokens") != b.get("prompt_tokens"):
            notes.append(f"- `{n}`: prompt tokens differ (kizuna {a.get('prompt_tokens')}, "
                         f"llama.cpp {b.get('prompt_tokens')}): tokenization does not match")
        if a.get("cached_tokens") != b.get("cached_tokens"):
            notes.append(f"- `{n}`: cached tokens differ (kizuna {a.get('cached_tokens')}, "
                         f"llama.cpp {b.get('cached_tokens')})")
        lines.append(
            f"| {n} | {both('prompt_tokens')} | {both('cached_tokens')} "
            f"| {fnum(a.get('ttft_s'), '{:.3f}')} | {fnum(b.get('ttft_s'), '{:.3f}')} "
            f"| {fratio(ratio(b.get('ttft_s'), a.get('ttft_s')))} "
            f"| {fnum(a.get('prefill_tok_s'), '{:.1f}')} | {fnum(b.get('prefill_tok_s'), '{:.1f}')} "
            f"| {fratio(ratio(a.get('prefill_tok_s'), b.get('prefill_tok_s')))} "
            f"| {fnum(a.get('decode_tok_s'), '{:.2f}')} | {fnum(b.get('decode_tok_s'), '{:.2f}')} "
            f"| {fratio(ratio(a.get('decode_tok_s'), b.get('decode_tok_s')))} |")
        ta, tb = a.get("text"), b.get("text")
        agree_rows.append(
            f"| {n} | {agreement(ta, tb)} | {both('decode_tokens')} "
            f"| {esc((ta or '')[:60])} | {esc((tb or '')[:60])} |")

    lines.append("")
    lines.append("Greedy outputs (informational: kernels differ, so a near-tie can flip):")
    lines.append("")
    lines.append("| prompt | agreement | decode tokens | kizuna starts | llama.cpp starts |")
    lines.append("|---|---|---:|---|---|")
    lines.extend(agree_rows)
    if notes:
        lines.append("")
        lines.append("Notes:")
        lines.extend(notes)
    lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description="Compare kizuna and llama.cpp benchmark results.")
    ap.add_argument("kizuna_json")
    ap.add_argument("llama_json")
    ap.add_argument("--markdown", metavar="OUT", help="also write the table to OUT")
    args = ap.parse_args()
    with open(args.kizuna_json) as f:
        k = json.load(f)
    with open(args.llama_json) as f:
        l = json.load(f)
    md = build(k, l)
    if args.markdown:
        os.makedirs(os.path.dirname(os.path.abspath(args.markdown)), exist_ok=True)
        with open(args.markdown, "w") as f:
            f.write(md)
    sys.stdout.write(md)


if __name__ == "__main__":
    main()
