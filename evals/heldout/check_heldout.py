#!/usr/bin/env python3
"""Validates the held-out transcript set (this directory) against shared/spec/transcripts.md.

Checks: every *.yaml parses; id == file name stem; ids unique; only spec keys; canonical tool
names; the six escalation reasons; `retrieved` ids exist in knowledge/content/faq; fixture
paths exist and every customer id named exists in the fixture; every user turn has an
`escalate` expectation; `escalation_reason` only with `escalate: true` and every
`escalate: true` has a reason; at most one escalation per conversation; `handed_over: true`
only at or after the escalating turn, every turn after it carries `handed_over: true`.
Prints the counts used in README.md.

Usage: python3 evals/heldout/check_heldout.py   (needs PyYAML)
"""
import collections
import csv
import datetime
import pathlib
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FAQ = ROOT / "knowledge" / "content" / "faq"

TOP = {"id", "title", "now", "fixtures", "actor", "turns"}
ACTOR = {"role", "customer_id"}
ROLES = {"customer", "anonymous", "manager"}
EXPECT = {"escalate", "handed_over", "escalation_reason", "tools_called", "tools_not_called", "retrieved",
          "reply_contains", "reply_contains_any", "reply_not_contains", "mentions_customers", "not_mentions_customers"}
LISTS = EXPECT - {"escalate", "handed_over", "escalation_reason"}
REASONS = {"legal", "negative_sentiment", "refund_or_cancel", "complaint", "unresolved", "customer_request"}
TOOLS = {"recommend_plan", "check_availability", "book_measurement", "cancel_booking", "lookup_health",
         "list_at_risk_accounts", "recommend_upsell", "generate_followup", "escalate_to_human",
         "predict_churn", "customer_insight"}
MAX_TURNS = 5  # evals/transcripts/check.py accepts 1–5 turns; this set stays within that


class Loader(yaml.SafeLoader):
    pass


Loader.yaml_implicit_resolvers = {
    k: [(t, r) for t, r in v if t != "tag:yaml.org,2002:timestamp"] for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def main():
    errors = []
    faq_ids = {e["id"] for p in FAQ.glob("*.yaml") for e in yaml.safe_load(p.read_text(encoding="utf-8"))}
    ids = collections.Counter()
    c = collections.Counter()
    reasons = collections.Counter()
    groups = collections.Counter()
    roles = collections.Counter()
    kinds = collections.Counter()
    for path in sorted(HERE.glob("*.yaml")):
        name = path.name
        try:
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
        except yaml.YAMLError as e:
            errors.append(f"{name}: does not parse: {e}")
            continue
        if not isinstance(doc, dict):
            errors.append(f"{name}: not a mapping")
            continue
        if set(doc) - TOP:
            errors.append(f"{name}: unknown keys {sorted(set(doc) - TOP)}")
        if doc.get("id") != path.stem:
            errors.append(f"{name}: id is not the file name stem")
        ids[doc.get("id")] += 1
        groups[path.stem.split("-")[1]] += 1
        try:
            datetime.datetime.fromisoformat(str(doc.get("now")))
        except ValueError:
            errors.append(f"{name}: bad now")
        customers = {}
        fx = doc.get("fixtures") or {}
        if set(fx) - {"customers"}:
            errors.append(f"{name}: unknown fixture keys")
        if "customers" in fx:
            p = path.parent / fx["customers"]
            if not p.is_file():
                errors.append(f"{name}: fixture {fx['customers']} missing")
            else:
                with open(p, encoding="utf-8", newline="") as f:
                    customers = {r["id"]: r for r in csv.DictReader(f)}
        actor = doc.get("actor") or {}
        if actor.get("role") not in ROLES or set(actor) - ACTOR:
            errors.append(f"{name}: bad actor")
        roles[actor.get("role")] += 1
        if actor.get("role") == "customer" and actor.get("customer_id") not in customers:
            errors.append(f"{name}: actor {actor.get('customer_id')} not in fixtures")
        if actor.get("role") in ("customer", "manager") and not customers:
            errors.append(f"{name}: customer/manager actor without fixtures")
        turns = doc.get("turns")
        if not isinstance(turns, list) or not 1 <= len(turns) <= MAX_TURNS:
            errors.append(f"{name}: 1..{MAX_TURNS} turns required")
            continue
        escalated_at = None
        for n, t in enumerate(turns, 1):
            w = f"{name} turn {n}"
            if set(t) - {"user", "expect"} or not isinstance(t.get("user"), str) or not t["user"].strip():
                errors.append(f"{w}: needs a non-empty user and only user/expect")
                continue
            e = t.get("expect") or {}
            if set(e) - EXPECT:
                errors.append(f"{w}: unknown expectation keys {sorted(set(e) - EXPECT)}")
            for k in e:
                kinds[k] += 1
            c["user_turns"] += 1
            if not isinstance(e.get("escalate"), bool):
                errors.append(f"{w}: every user turn needs escalate: true|false")
                continue
            if e["escalate"]:
                if e.get("escalation_reason") not in REASONS:
                    errors.append(f"{w}: escalate true needs one of the six reasons")
                if escalated_at is not None:
                    errors.append(f"{w}: second escalation in one conversation")
                escalated_at = n
                c["esc_true"] += 1
                reasons[e.get("escalation_reason")] += 1
                c["esc_true_first_turn" if n == 1 else "esc_true_after_turns"] += 1
            else:
                if "escalation_reason" in e:
                    errors.append(f"{w}: reason without escalate: true")
                if escalated_at is None:
                    c["esc_false_bot_holds"] += 1
                    c[f"esc_false_{actor.get('role')}"] += 1
                else:
                    c["esc_false_after_handover"] += 1
            if "handed_over" in e:
                if not isinstance(e["handed_over"], bool):
                    errors.append(f"{w}: handed_over must be a bool")
                elif e["handed_over"] and escalated_at is None:
                    errors.append(f"{w}: handed_over true before any escalation")
                elif not e["handed_over"] and escalated_at is not None:
                    errors.append(f"{w}: handed_over false after an escalation")
            if escalated_at is not None and n > escalated_at and e.get("handed_over") is not True:
                errors.append(f"{w}: a turn after the escalation must say handed_over: true")
            for k in LISTS & set(e):
                v = e[k]
                if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
                    errors.append(f"{w}: {k} must be a non-empty list of strings")
                    continue
                if k.startswith("tools"):
                    errors.extend(f"{w}: tool {x!r} not canonical" for x in v if x not in TOOLS)
                if k == "retrieved":
                    errors.extend(f"{w}: unknown FAQ id {x}" for x in v if x not in faq_ids)
                if k.endswith("mentions_customers"):
                    errors.extend(f"{w}: {x} not in fixtures" for x in v if x not in customers)
            if set(e.get("tools_called", [])) & set(e.get("tools_not_called", [])):
                errors.append(f"{w}: tool both called and not called")
        c[f"turns_{len(turns)}"] += 1
    errors.extend(f"duplicate id {i}" for i, k in ids.items() if k > 1)
    for e in errors:
        print("ERROR", e)
    print(f"{sum(groups.values())} transcripts, {c['user_turns']} user turns")
    print("groups:", dict(sorted(groups.items())))
    print("actors:", dict(roles))
    print("conversation lengths:", {k: v for k, v in sorted(c.items()) if k.startswith("turns_")})
    print(f"escalate: false (bot holds the conversation): {c['esc_false_bot_holds']}"
          f"  [customer {c['esc_false_customer']}, anonymous {c['esc_false_anonymous']}, manager {c['esc_false_manager']}]")
    print(f"escalate: false after the hand-over (handed_over: true): {c['esc_false_after_handover']}")
    print(f"escalate: true: {c['esc_true']}  [on the first turn {c['esc_true_first_turn']}, after ordinary turns {c['esc_true_after_turns']}]")
    print("  by reason:", dict(sorted(reasons.items())))
    print("expectation keys:", dict(sorted(kinds.items())))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
