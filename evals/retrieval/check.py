#!/usr/bin/env python3
"""Checks dev.yaml and test.yaml against the knowledge base: YAML shape, every expected id exists,
audiences can see their expected documents, no duplicate questions. Prints counts.

Usage: python3 evals/retrieval/check.py  (from the repository root; needs PyYAML)
"""
import collections
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONTENT = ROOT / "knowledge" / "content"
SETS = [pathlib.Path(__file__).resolve().parent / name for name in ("dev.yaml", "test.yaml")]
VISIBLE = {"b2c": {"b2c", "all"}, "b2b": {"b2b", "all"}}


def known_documents():
    """Maps every FAQ and scenario id to its audience."""
    docs = {}
    for path in sorted((CONTENT / "faq").glob("*.yaml")):
        for entry in yaml.safe_load(path.read_text(encoding="utf-8")):
            docs[entry["id"]] = entry["audience"]
    for path in sorted((CONTENT / "scenarios").glob("*.md")):
        front = path.read_text(encoding="utf-8").split("---")[1]
        meta = yaml.safe_load(front)
        docs[meta["id"]] = meta["audience"]
    return docs


def topic(doc_id):
    parts = doc_id.split("-")
    return parts[1] if parts[0] == "faq" else "scenario"


def main():
    docs = known_documents()
    questions = [q for path in SETS for q in yaml.safe_load(path.read_text(encoding="utf-8"))]
    errors = []
    seen = set()
    per_topic = collections.Counter()
    covered = set()
    for i, item in enumerate(questions):
        where = f"#{i + 1} {item.get('q')!r}"
        if set(item) - {"q", "expected", "audience"} or not isinstance(item.get("q"), str):
            errors.append(f"{where}: bad keys or q")
            continue
        if item["q"] in seen:
            errors.append(f"{where}: duplicate question")
        seen.add(item["q"])
        expected = item.get("expected")
        if not isinstance(expected, list):
            errors.append(f"{where}: expected must be a list")
            continue
        if len(expected) != len(set(expected)):
            errors.append(f"{where}: repeated id")
        audience = item.get("audience")
        if audience is not None and audience not in VISIBLE:
            errors.append(f"{where}: audience must be b2c or b2b")
        for doc_id in expected:
            if doc_id not in docs:
                errors.append(f"{where}: unknown id {doc_id}")
            elif audience and docs[doc_id] not in VISIBLE[audience]:
                errors.append(f"{where}: {doc_id} ({docs[doc_id]}) hidden from {audience}")
            covered.add(doc_id)
        per_topic[topic(expected[0]) if expected else "off-topic"] += 1

    on_topic = sum(n for t, n in per_topic.items() if t != "off-topic")
    print(f"questions: {len(questions)}  on-topic: {on_topic}  "
          f"off-topic: {per_topic['off-topic']}")
    for name, count in sorted(per_topic.items()):
        print(f"  {name:<10} {count}")
    uncovered = sorted(set(docs) - covered)
    print(f"documents never expected: {len(uncovered)} of {len(docs)}")
    for doc_id in uncovered:
        print(f"  {doc_id}")
    for error in errors:
        print("ERROR", error, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
