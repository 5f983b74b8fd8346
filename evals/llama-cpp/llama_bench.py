#!/usr/bin/env python3
"""llama.cpp side of the engine benchmark (see README.md in this folder).

Runs the prompts written by `kizuna bench engine --prompts-out` through llama.cpp (via
llama-cpp-python's low-level API) on the same GGUF with the same thread count, greedy, and
writes the results in the same JSON shape as `kizuna bench engine --json-out`.

Timing, per prompt (tokenization is never timed):
  - cached_tokens: prompt tokens whose KV entries are reused from the previous evaluation (the
    prompt's `warmup` text, evaluated untimed just before). A prompt without warmup starts from
    an empty KV cache. At least one prompt token is always evaluated, to get fresh logits.
  - ttft_s: evaluating the prompt_tokens - cached_tokens remaining tokens (prefill) plus picking
    the first token (argmax over the last logits).
  - prefill_tok_s = prefill_tokens / ttft_s.
  - decode: each further token is one single-token forward pass + argmax. decode_tokens is the
    number of those passes (generated tokens minus the first, counting a sampled stop token),
    decode_s their total time, decode_tok_s = decode_tokens / decode_s. Generation stops at an
    end-of-generation token (<|im_end|>, <|endoftext|>) or after max_tokens generated tokens.
  - text: the generated tokens without the stop token, detokenized.
"""

import argparse
import ctypes
import json
import os
import platform
import sys
import time

import numpy as np

try:
    import llama_cpp
    from llama_cpp import Llama
except ImportError:  # pragma: no cover - message for people running it outside the venv
    sys.exit("llama_cpp not importable: run evals/llama-cpp/install.sh and use "
             "evals/llama-cpp/.venv/bin/python")


def peak_rss_mib() -> float:
    """Peak resident set size of this process (VmHWM), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_now_mib() -> dict:
    """Current resident memory split into anonymous and file-backed (mmap-ed weights) parts."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":")[0]
                if key in ("RssAnon", "RssFile"):
                    out[key] = int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return {"rss_anon_mib": out.get("RssAnon"), "rss_file_mib": out.get("RssFile")}


def common_prefix(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Engine:
    def __init__(self, model: str, threads: int, n_ctx: int, n_batch: int, use_mmap: bool):
        t0 = time.perf_counter()
        self.llm = Llama(
            model_path=model,
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=n_batch,
            n_gpu_layers=0,
            use_mmap=use_mmap,
            logits_all=False,
            verbose=False,
        )
        self.load_s = time.perf_counter() - t0
        self.n_vocab = self.llm.n_vocab()
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.stop_ids = {self.llm.token_eos()}
        for special in ("<|im_end|>", "<|endoftext|>"):
            ids = self.tokenize(special)
            if len(ids) == 1:
                self.stop_ids.add(ids[0])

    def tokenize(self, text: str):
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def is_stop(self, tok: int) -> bool:
        if tok in self.stop_ids:
            return True
        try:
            return bool(llama_cpp.llama_vocab_is_eog(self.vocab, tok))
        except Exception:
            return False

    def argmax_last(self) -> int:
        """Greedy pick from the logits of the last evaluated token."""
        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        logits = np.ctypeslib.as_array(
            ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,))
        return int(np.argmax(logits))

    def eval(self, tokens):
        self.llm.eval(tokens)

    def prepare(self, tokens) -> int:
        """Keeps the longest prefix of `tokens` already in the KV cache (leaving at least one
        token to evaluate), drops the rest; returns how many tokens are reused."""
        reuse = common_prefix(self.llm._input_ids.tolist(), tokens)
        reuse = min(reuse, len(tokens) - 1)
        # Llama.eval removes KV entries from position n_tokens on before decoding.
        self.llm.n_tokens = reuse
        return reuse


def run_prompt(engine: Engine, p: dict) -> dict:
    name = p["name"]
    max_tokens = int(p.get("max_tokens") or 64)
    prompt_ids = engine.tokenize(p["prompt"])
    if not prompt_ids:
        raise SystemExit(f"prompt {name!r} is empty")
    if len(prompt_ids) + max_tokens > engine.llm.n_ctx():
        raise SystemExit(f"prompt {name!r}: {len(prompt_ids)} tokens + max_tokens {max_tokens} "
                         f"exceed n_ctx {engine.llm.n_ctx()}; pass a larger --n-ctx")

    # Start from an empty cache, then (untimed) evaluate the warmup text if there is one.
    engine.llm.reset()
    warmup = p.get("warmup")
    if warmup:
        warm_ids = engine.tokenize(warmup)
        if warm_ids:
            engine.eval(warm_ids)

    # --- timed: prefill + first token --------------------------------------------------
    t0 = time.perf_counter()
    cached = engine.prepare(prompt_ids)
    engine.eval(prompt_ids[cached:])
    tok = engine.argmax_last()
    t1 = time.perf_counter()
    ttft = t1 - t0

    # --- timed: greedy decode ------------------------------------------------------------
    generated = [tok]
    while not engine.is_stop(tok) and len(generated) < max_tokens:
        engine.eval([tok])
        tok = engine.argmax_last()
        generated.append(tok)
    t2 = time.perf_counter()
    decode_s = t2 - t1
    decode_tokens = len(generated) - 1

    text_ids = generated[:-1] if engine.is_stop(generated[-1]) else generated
    text = engine.llm.detokenize(text_ids).decode("utf-8", errors="replace")
    prefill_tokens = len(prompt_ids) - cached
    return {
        "name": name,
        "prompt_tokens": len(prompt_ids),
        "cached_tokens": cached,
        "prefill_tokens": prefill_tokens,
        "ttft_s": ttft,
        "prefill_tok_s": prefill_tokens / ttft if ttft > 0 else 0.0,
        "decode_tokens": decode_tokens,
        "decode_s": decode_s,
        "decode_tok_s": decode_tokens / decode_s if decode_tokens and decode_s > 0 else 0.0,
        "stopped": "stop_token" if engine.is_stop(generated[-1]) else "max_tokens",
        "text": text,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", required=True, help="prompts JSON written by kizuna bench engine")
    ap.add_argument("--model", help="GGUF file (default: the prompts file's \"model\")")
    ap.add_argument("--threads", type=int, help="threads (default: the prompts file's, else nproc)")
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--n-batch", type=int, default=512)
    ap.add_argument("--no-mmap", action="store_true",
                    help="read the weights into memory instead of mmap-ing the file")
    ap.add_argument("--no-engine-warmup", action="store_true",
                    help="skip the untimed 1-token forward pass after loading")
    args = ap.parse_args()

    with open(args.prompts) as f:
        spec = json.load(f)
    model = args.model or spec.get("model")
    if not model:
        sys.exit("no model: pass --model")
    threads = args.threads or spec.get("threads") or os.cpu_count() or 1

    engine = Engine(model, threads, args.n_ctx, args.n_batch, use_mmap=not args.no_mmap)
    print(f"llama.cpp: loaded {model} in {engine.load_s:.2f}s, {threads} threads", file=sys.stderr)
    if not args.no_engine_warmup:
        # One untimed forward pass so that first-touch costs (page faults on the mmap-ed
        # weights, thread pool start) do not land on the first prompt.
        engine.llm.reset()
        engine.eval(engine.tokenize("<|im_start|>"))
        engine.argmax_last()
        engine.llm.reset()

    results = []
    for p in spec["prompts"]:
        r = run_prompt(engine, p)
        results.append(r)
        print(f"  {r['name']:<16} prompt {r['prompt_tokens']:>5} (cached {r['cached_tokens']:>5})"
              f"  ttft {r['ttft_s']:7.3f}s  prefill {r['prefill_tok_s']:8.1f} tok/s"
              f"  decode {r['decode_tokens']:>4} tok {r['decode_tok_s']:6.2f} tok/s",
              file=sys.stderr)

    out = {
        "engine": f"llama.cpp {llama_cpp.__version__} (llama-cpp-python)",
        "threads": threads,
        "load_s": engine.load_s,
        "peak_rss_mib": peak_rss_mib(),
        "model": model,
        "n_ctx": args.n_ctx,
        "n_batch": args.n_batch,
        "mmap": not args.no_mmap,
        # At the end of the run; with mmap, touched weight pages count as RssFile (page cache).
        **rss_now_mib(),
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
        "python": platform.python_version(),
        "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
    with open(args.json_out, "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=2)
        f.write("\n")
    print(f"llama.cpp: wrote {args.json_out} (peak RSS {out['peak_rss_mib']:.0f} MiB)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
