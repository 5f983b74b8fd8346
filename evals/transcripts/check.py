#!/usr/bin/env python3
"""Checks the transcript set against shared/spec/transcripts.md and its fixtures.

- every `*.yaml` here parses, has `id` equal to its file name stem, ids are unique;
- only the spec's keys are used; tool names are canonical; escalation reasons are the six;
- `retrieved` ids exist in knowledge/content; fixture paths exist;
- customer ids named by actors, proactive turns and customer expectations exist in the
  fixtures they load;
- the health table in fixtures/README.md matches the scores recomputed here from
  fixtures/customers.csv with the rules of crm-import.md (as of `AS_OF`).
Prints counts per group (the id prefix before the first "-").

Usage: python3 evals/transcripts/check.py  (from anywhere; needs PyYAML)
"""
import collections
import csv
import datetime
import pathlib
import re
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONTENT = ROOT / "knowledge" / "content"
AS_OF = datetime.date(2026, 11, 21)

TOP_KEYS = {"id", "title", "now", "fixtures", "actor", "turns"}
FIXTURE_KEYS = {"customers"}
ACTOR_KEYS = {"role", "customer_id"}
ROLES = {"customer", "anonymous", "manager"}
TURN_KEYS = {"user", "proactive", "expect"}
PROACTIVE_KEYS = {"trigger", "customer_id"}
TRIGGERS = {"health_red", "usage_drop", "payment_overdue", "low_nps", "renewal_90d"}
EXPECT_KEYS = {
    "escalate",
    "handed_over",
    "escalation_reason",
    "tools_called",
    "tools_not_called",
    "retrieved",
    "reply_contains",
    "reply_contains_any",
    "reply_not_contains",
    "mentions_customers",
    "not_mentions_customers",
}
LIST_KEYS = EXPECT_KEYS - {"escalate", "handed_over", "escalation_reason"}
REASONS = {"legal", "negative_sentiment", "refund_or_cancel", "complaint", "unresolved", "customer_request"}
TOOLS = {
    "recommend_plan",
    "check_availability",
    "book_measurement",
    "cancel_booking",
    "lookup_health",
    "list_at_risk_accounts",
    "recommend_upsell",
    "generate_followup",
    "escalate_to_human",
    "predict_churn",
    "customer_insight",
}


class NoTimestampLoader(yaml.SafeLoader):
    """Reads `now:` as the string it is in the file (YAML 1.2 has no timestamp type)."""


NoTimestampLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def knowledge_ids():
    ids = set()
    for path in sorted((CONTENT / "faq").glob("*.yaml")):
        ids.update(entry["id"] for entry in yaml.safe_load(path.read_text(encoding="utf-8")))
    for path in sorted((CONTENT / "scenarios").glob("*.md")):
        ids.add(yaml.safe_load(path.read_text(encoding="utf-8").split("---")[1])["id"])
    for path in sorted((CONTENT / "templates").glob("*.yaml")):
        ids.update(entry["id"] for entry in yaml.safe_load(path.read_text(encoding="utf-8")))
    return ids


# ── health score (crm-import.md), written independently of the Rust implementation ──
def opt_float(value):
    return float(value) if value not in ("", None) else None


def opt_int(value):
    return int(value) if value not in ("", None) else None


def health(row, as_of=AS_OF):
    used = opt_int(row["measurements_30d"]) or 0
    quota = opt_int(row["monthly_measurements"])
    if quota:
        # Integer comparisons so that 14/20 is exactly 0.7.
        if used >= quota:
            usage = 35
        elif used * 10 >= quota * 7:
            usage = 25
        elif used * 2 >= quota:
            usage = 15
        else:
            usage = 5
    else:
        usage = 35 if used > 0 else 5
    login = datetime.date.fromisoformat(row["last_login"]) if row["last_login"] else None
    days = (as_of - login).days if login else None
    login_points = 10 if days is not None and days <= 7 else 5 if days is not None and days <= 14 else 0
    engagement = round(
        login_points + (opt_float(row["report_view_rate"]) or 0) * 10 + (opt_float(row["feature_adoption"]) or 0) * 5,
        2,
    )
    csat = opt_float(row["csat"])
    support = 10 if csat is None else 20 if csat >= 4.5 else 15 if csat >= 4.0 else 10 if csat >= 3.0 else 5
    if (opt_int(row["escalations_30d"]) or 0) >= 2:
        support = max(support - 5, 0)
    overdue = opt_int(row["payment_overdue_days"]) or 0
    payment = 20 if overdue <= 0 else 15 if overdue <= 7 else 10 if overdue <= 14 else 5 if overdue <= 30 else 0
    total = round(usage + engagement + support + payment, 2)
    status = "red" if total <= 40 else "yellow" if total <= 70 else "green"
    return {"usage": usage, "engagement": engagement, "support": support, "payment": payment, "total": total, "status": status}


def fmt(x):
    return f"{x:.2f}".rstrip("0").rstrip(".")


def load_customers(path):
    with open(path, encoding="utf-8", newline="") as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def check_readme_table(customers, errors):
    """Each B2B row of the table must carry the recomputed components, total and status."""
    readme = (HERE / "fixtures" / "README.md").read_text(encoding="utf-8")
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and re.fullmatch(r"B-\d{4}", cells[0]):
            rows[cells[0]] = cells
    for cid, row in customers.items():
        if row["kind"] != "b2b":
            continue
        if cid not in rows:
            errors.append(f"fixtures/README.md: no health row for {cid}")
            continue
        h = health(row)
        expected = [fmt(h["usage"]), fmt(h["engagement"]), fmt(h["support"]), fmt(h["payment"]), fmt(h["total"]), h["status"]]
        got = rows[cid][-6:]
        if got != expected:
            errors.append(f"fixtures/README.md: {cid} says {got}, recomputed {expected}")


def check_list(value, where, errors):
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        errors.append(f"{where}: must be a non-empty list of strings")
        return []
    return value


def check_transcript(path, doc, docs_known, errors):
    name = path.name
    if not isinstance(doc, dict):
        errors.append(f"{name}: not a mapping")
        return
    unknown = set(doc) - TOP_KEYS
    if unknown:
        errors.append(f"{name}: unknown keys {sorted(unknown)}")
    if doc.get("id") != path.stem:
        errors.append(f"{name}: id {doc.get('id')!r} is not the file name stem")
    if "now" in doc:
        try:
            datetime.datetime.fromisoformat(str(doc["now"]))
        except ValueError:
            errors.append(f"{name}: now {doc['now']!r} is not RFC 3339")
    customers = {}
    fixtures = doc.get("fixtures") or {}
    if set(fixtures) - FIXTURE_KEYS:
        errors.append(f"{name}: unknown fixture keys {sorted(set(fixtures) - FIXTURE_KEYS)}")
    if "customers" in fixtures:
        fixture = path.parent / fixtures["customers"]
        if not fixture.is_file():
            errors.append(f"{name}: fixture {fixtures['customers']} does not exist")
        else:
            customers = load_customers(fixture)

    def known_customer(cid, where):
        if cid not in customers:
            errors.append(f"{name}: {where} names {cid}, which is not in the fixtures")

    actor = doc.get("actor")
    if not isinstance(actor, dict) or actor.get("role") not in ROLES or set(actor) - ACTOR_KEYS:
        errors.append(f"{name}: actor must have role customer|anonymous|manager and no other keys than {sorted(ACTOR_KEYS)}")
        actor = {}
    if actor.get("role") == "customer":
        if not actor.get("customer_id"):
            errors.append(f"{name}: a customer actor needs customer_id")
        else:
            known_customer(actor["customer_id"], "actor")
    turns = doc.get("turns")
    if not isinstance(turns, list) or not 1 <= len(turns) <= 5:
        errors.append(f"{name}: turns must be a list of 1 to 5 turns")
        return
    for n, turn in enumerate(turns, 1):
        where = f"{name} turn {n}"
        if not isinstance(turn, dict) or set(turn) - TURN_KEYS:
            errors.append(f"{where}: unknown keys")
            continue
        if ("user" in turn) == ("proactive" in turn):
            errors.append(f"{where}: exactly one of user / proactive")
        if "user" in turn and not (isinstance(turn["user"], str) and turn["user"].strip()):
            errors.append(f"{where}: user must be a non-empty string")
        if "proactive" in turn:
            p = turn["proactive"]
            if not isinstance(p, dict) or set(p) != PROACTIVE_KEYS or p.get("trigger") not in TRIGGERS:
                errors.append(f"{where}: proactive needs trigger (one of {sorted(TRIGGERS)}) and customer_id")
            else:
                known_customer(p["customer_id"], "proactive")
        expect = turn.get("expect")
        if not isinstance(expect, dict) or not expect:
            errors.append(f"{where}: expect must be a non-empty mapping")
            continue
        if set(expect) - EXPECT_KEYS:
            errors.append(f"{where}: unknown expectation keys {sorted(set(expect) - EXPECT_KEYS)}")
        for flag in ("escalate", "handed_over"):
            if flag in expect and not isinstance(expect[flag], bool):
                errors.append(f"{where}: {flag} must be true or false")
        if expect.get("escalate") is True and expect.get("handed_over") is False:
            errors.append(f"{where}: a turn that escalates leaves people holding the conversation")
        if "escalation_reason" in expect:
            if expect["escalation_reason"] not in REASONS:
                errors.append(f"{where}: reason {expect['escalation_reason']!r} is not one of the six")
            if expect.get("escalate") is not True:
                errors.append(f"{where}: escalation_reason without escalate: true")
        for key in LIST_KEYS & set(expect):
            values = check_list(expect[key], f"{where} {key}", errors)
            if key in ("tools_called", "tools_not_called"):
                for tool in values:
                    if tool not in TOOLS:
                        errors.append(f"{where}: {tool!r} is not a canonical tool name")
            if key == "retrieved":
                for doc_id in values:
                    if doc_id not in docs_known:
                        errors.append(f"{where}: retrieved id {doc_id!r} is not in knowledge/content")
            if key in ("mentions_customers", "not_mentions_customers"):
                for cid in values:
                    known_customer(cid, key)
        called = set(expect.get("tools_called", []))
        if called & set(expect.get("tools_not_called", [])):
            errors.append(f"{where}: a tool is both called and not called")
        both = set(expect.get("mentions_customers", [])) & set(expect.get("not_mentions_customers", []))
        if both:
            errors.append(f"{where}: {sorted(both)} both mentioned and not mentioned")


def main():
    """Checks this directory, or the directories given (their fixtures paths resolve
    relative to each file; the health table check is this directory's)."""
    errors = []
    docs_known = knowledge_ids()
    ids = collections.Counter()
    groups = collections.Counter()
    turns = 0
    dirs = [pathlib.Path(a) for a in sys.argv[1:]] or [HERE]
    for path in sorted(p for d in dirs for p in d.glob("*.yaml")):
        try:
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=NoTimestampLoader)
        except yaml.YAMLError as e:
            errors.append(f"{path.name}: does not parse: {e}")
            continue
        check_transcript(path, doc, docs_known, errors)
        if isinstance(doc, dict):
            ids[doc.get("id")] += 1
            groups[path.stem.split("-")[0]] += 1
            turns += len(doc.get("turns") or [])
    errors.extend(f"duplicate id {i}" for i, n in ids.items() if n > 1)
    check_readme_table(load_customers(HERE / "fixtures" / "customers.csv"), errors)
    for e in errors:
        print("ERROR", e)
    print(f"{sum(groups.values())} transcripts, {turns} turns")
    for group, n in sorted(groups.items()):
        print(f"  {group:<8} {n}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
