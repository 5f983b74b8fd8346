#!/usr/bin/env python3
"""Writes demo/customers.csv: ~200 fictional ZENBU customers in the CRM import format
(shared/spec/crm-import.md), deterministic (fixed seed), python3 standard library only.

    python3 scripts/gen-demo-customers.py            # writes demo/customers.csv
    python3 scripts/gen-demo-customers.py --check    # fails if the committed file differs

As of 2026-11-21 the B2B accounts cover every health status (red, yellow, green), renewals
within 90 days, overdue payments of 7/14/21/35 days, detractors (NPS <= 6), opted-out
accounts and usage below 50 %. The first rows are fixed "anchor" accounts that demos and
transcripts can rely on (see demo/README.md); the rest are random with a fixed seed.
Every name is made up; emails use example.com / example.jp.
"""

import argparse
import csv
import datetime as dt
import io
import pathlib
import random
import sys

AS_OF = dt.date(2026, 11, 21)
SEED = 20261121
B2C_COUNT = 140
B2B_COUNT = 60

COLUMNS = [
    "id", "kind", "name", "email", "phone", "plan", "monthly_measurements", "mrr_jpy",
    "contract_end", "customer_since", "measurements_30d", "last_login", "report_view_rate",
    "feature_adoption", "csat", "nps", "escalations_30d", "payment_overdue_days", "opted_out",
]

FAMILY = ["佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤",
          "吉田", "山田", "佐々木", "山口", "松本", "井上", "木村", "林", "斎藤", "清水"]
GIVEN = ["花子", "太郎", "美咲", "健太", "陽菜", "翔太", "さくら", "大輔", "結衣", "拓也",
         "愛", "直樹", "彩", "誠", "真由美", "浩二", "恵", "隆", "由美", "亮"]
COMPANY_HEAD = ["さくら", "みなと", "青葉", "ひかり", "東雲", "若葉", "浜風", "大空", "緑ヶ丘",
                "千歳", "白樺", "朝日", "つばさ", "陽だまり", "桜川", "明星", "花水木", "港北",
                "星見", "椿"]
COMPANY_TAIL = ["不動産管理株式会社", "住宅管理株式会社", "プロパティマネジメント株式会社",
                "ハウジング株式会社", "コミュニティ管理株式会社", "アセット管理株式会社"]

# B2B plans: doubling the monthly measurements costs +40,000円/月 (seed 003 §5.4).
B2B_PLANS = [
    ("ビジネス10", 10, 40_000),
    ("ビジネス20", 20, 80_000),
    ("ビジネス40", 40, 120_000),
    ("エンタープライズ80", 80, 160_000),
]
B2C_PLANS = ["light", "standard", "premium"]


def iso(d):
    return d.isoformat() if d else ""


def rate(x):
    return "" if x is None else f"{x:.2f}"


PAST_COLUMNS = COLUMNS + ["churned_at"]


def row(**values):
    columns = PAST_COLUMNS if "churned_at" in values else COLUMNS
    return {c: values.get(c, "") for c in columns}


def b2b_health(r):
    """The spec's score, to check the generated data covers every status."""
    quota = int(r["monthly_measurements"] or 0)
    used = int(r["measurements_30d"] or 0)
    if quota > 0:
        usage = 35 if used >= quota else 25 if used * 10 >= quota * 7 else 15 if used * 2 >= quota else 5
    else:
        usage = 35 if used > 0 else 5
    login = dt.date.fromisoformat(r["last_login"]) if r["last_login"] else None
    days = (AS_OF - login).days if login else None
    engagement = (10 if days is not None and days <= 7 else 5 if days is not None and days <= 14 else 0)
    engagement += float(r["report_view_rate"] or 0) * 10 + float(r["feature_adoption"] or 0) * 5
    csat = float(r["csat"]) if r["csat"] else None
    support = 10 if csat is None else 20 if csat >= 4.5 else 15 if csat >= 4.0 else 10 if csat >= 3.0 else 5
    if int(r["escalations_30d"] or 0) >= 2:
        support = max(support - 5, 0)
    overdue = int(r["payment_overdue_days"] or 0)
    payment = 20 if overdue <= 0 else 15 if overdue <= 7 else 10 if overdue <= 14 else 5 if overdue <= 30 else 0
    total = round(usage + engagement + support + payment, 2)
    return "red" if total <= 40 else "yellow" if total <= 70 else "green"


def anchors():
    """Fixed accounts with known situations, for demos and transcripts."""
    d = lambda s: dt.date.fromisoformat(s)
    return [
        # B2C: a standard-plan customer who was measured and has a report.
        row(id="C-1001", kind="b2c", name="山田 花子", email="c1001@example.com",
            phone="000-0000-1001", plan="standard", customer_since=iso(d("2026-10-30")),
            measurements_30d=1, last_login=iso(d("2026-11-18")), report_view_rate=rate(1.0),
            csat="4.5", nps="9", escalations_30d=0, payment_overdue_days=0, opted_out="false"),
        # B2C: light plan, no measurement yet, opted out of outreach.
        row(id="C-1002", kind="b2c", name="佐藤 健太", email="c1002@example.jp", plan="light",
            customer_since=iso(d("2026-11-10")), measurements_30d=0,
            last_login=iso(d("2026-11-12")), escalations_30d=0, payment_overdue_days=0,
            opted_out="true"),
        # B2B usage drop: 6 of 20 measurements (30 %), yellow.
        row(id="B-2001", kind="b2b", name="さくら不動産管理株式会社", email="b2001@example.jp",
            phone="000-0000-2001", plan="ビジネス20", monthly_measurements=20, mrr_jpy=80_000,
            contract_end=iso(d("2027-06-30")), customer_since=iso(d("2025-07-01")),
            measurements_30d=6, last_login=iso(d("2026-11-05")), report_view_rate=rate(0.4),
            feature_adoption=rate(0.3), csat="4.0", nps="7", escalations_30d=0,
            payment_overdue_days=0, opted_out="false"),
        # B2B red: 35 days overdue, low usage, detractor, renews within 90 days.
        row(id="B-2002", kind="b2b", name="みなと住宅管理株式会社", email="b2002@example.jp",
            plan="ビジネス40", monthly_measurements=40, mrr_jpy=120_000,
            contract_end=iso(d("2027-01-31")), customer_since=iso(d("2024-02-01")),
            measurements_30d=8, last_login=iso(d("2026-10-20")), report_view_rate=rate(0.2),
            feature_adoption=rate(0.1), csat="2.8", nps="3", escalations_30d=2,
            payment_overdue_days=35, opted_out="false"),
        # B2B green near its quota: upgrade candidate.
        row(id="B-2003", kind="b2b", name="青葉プロパティマネジメント株式会社",
            email="b2003@example.jp", plan="ビジネス20", monthly_measurements=20,
            mrr_jpy=80_000, contract_end=iso(d("2027-09-30")),
            customer_since=iso(d("2025-01-15")), measurements_30d=19,
            last_login=iso(d("2026-11-20")), report_view_rate=rate(0.9),
            feature_adoption=rate(0.8), csat="4.7", nps="10", escalations_30d=0,
            payment_overdue_days=0, opted_out="false"),
        # B2B yellow with a detractor NPS and 14 days overdue.
        row(id="B-2004", kind="b2b", name="ひかりハウジング株式会社", email="b2004@example.jp",
            plan="ビジネス10", monthly_measurements=10, mrr_jpy=40_000,
            contract_end=iso(d("2027-03-31")), customer_since=iso(d("2025-04-01")),
            measurements_30d=7, last_login=iso(d("2026-11-10")), report_view_rate=rate(0.6),
            feature_adoption=rate(0.4), csat="3.5", nps="5", escalations_30d=1,
            payment_overdue_days=14, opted_out="false"),
        # B2B red and opted out: no proactive outreach.
        row(id="B-2005", kind="b2b", name="東雲コミュニティ管理株式会社",
            email="b2005@example.jp", plan="ビジネス20", monthly_measurements=20,
            mrr_jpy=80_000, contract_end=iso(d("2027-02-15")),
            customer_since=iso(d("2024-08-01")), measurements_30d=3,
            last_login=iso(d("2026-09-30")), report_view_rate=rate(0.1),
            feature_adoption=rate(0.0), csat="3.0", nps="4", escalations_30d=0,
            payment_overdue_days=21, opted_out="true"),
        # B2B enterprise, green, 7 days overdue: API integration candidate.
        row(id="B-2006", kind="b2b", name="若葉アセット管理株式会社", email="b2006@example.jp",
            plan="エンタープライズ80", monthly_measurements=80, mrr_jpy=160_000,
            contract_end=iso(d("2028-03-31")), customer_since=iso(d("2023-04-01")),
            measurements_30d=70, last_login=iso(d("2026-11-19")), report_view_rate=rate(0.85),
            feature_adoption=rate(0.7), csat="4.6", nps="9", escalations_30d=0,
            payment_overdue_days=7, opted_out="false"),
    ]


def random_b2c(rng, n):
    since = AS_OF - dt.timedelta(days=rng.randint(1, 540))
    measured_recently = (AS_OF - since).days <= 30 or rng.random() < 0.15
    login = since + dt.timedelta(days=rng.randint(0, max((AS_OF - since).days, 0)))
    surveyed = rng.random() < 0.6
    return row(
        id=f"C-{n}", kind="b2c", name=f"{rng.choice(FAMILY)} {rng.choice(GIVEN)}",
        email=f"c{n}@{rng.choice(['example.com', 'example.jp'])}",
        phone=f"000-0000-{n}" if rng.random() < 0.5 else "",
        plan=rng.choices(B2C_PLANS, weights=[3, 5, 2])[0],
        customer_since=iso(since),
        measurements_30d=1 if measured_recently else 0,
        last_login=iso(login) if rng.random() < 0.9 else "",
        report_view_rate=rate(rng.choice([0.0, 0.5, 1.0])) if rng.random() < 0.8 else "",
        csat=f"{rng.choice([2.0, 3.0, 3.5, 4.0, 4.5, 5.0]):.1f}" if surveyed else "",
        nps=str(rng.choices(range(11), weights=[1, 1, 1, 1, 1, 2, 3, 5, 7, 6, 5])[0]) if surveyed else "",
        escalations_30d=1 if rng.random() < 0.05 else 0,
        payment_overdue_days=0,
        opted_out="true" if rng.random() < 0.1 else "false",
    )


# Overdue days to spread over the random B2B accounts (besides the anchors').
OVERDUE_CYCLE = [0, 0, 0, 0, 0, 0, 7, 0, 14, 0, 21, 0, 35, 0, 3, 0, 45, 10]


def random_b2b(rng, n, i):
    name, quota, mrr = rng.choice(B2B_PLANS)
    profile = rng.choices(["healthy", "slipping", "at_risk"], weights=[5, 3, 2])[0]
    if profile == "healthy":
        usage = rng.uniform(0.75, 1.2)
        login_days = rng.randint(0, 7)
        views, adoption = rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0)
        csat = rng.choice([4.0, 4.3, 4.5, 4.8, 5.0, None])
        nps = rng.randint(7, 10)
    elif profile == "slipping":
        usage = rng.uniform(0.45, 0.85)
        login_days = rng.randint(5, 20)
        views, adoption = rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.6)
        csat = rng.choice([3.0, 3.5, 3.8, 4.0, None])
        nps = rng.randint(4, 8)
    else:
        usage = rng.uniform(0.0, 0.5)
        login_days = rng.choice([15, 21, 30, 45, 60, None])
        views, adoption = rng.uniform(0.0, 0.3), rng.uniform(0.0, 0.3)
        csat = rng.choice([1.5, 2.0, 2.5, 3.0, None])
        nps = rng.randint(0, 6)
    used = max(0, round(quota * usage))
    since = AS_OF - dt.timedelta(days=rng.randint(60, 1500))
    # Every sixth account renews within 90 days; the rest within about two years.
    contract_end = AS_OF + dt.timedelta(days=rng.randint(10, 90) if i % 6 == 0 else rng.randint(91, 700))
    company = f"{COMPANY_HEAD[i % len(COMPANY_HEAD)]}{COMPANY_TAIL[(i * 7 + n) % len(COMPANY_TAIL)]}"
    return row(
        id=f"B-{n}", kind="b2b", name=company, email=f"b{n}@example.jp",
        phone=f"000-0000-{n}" if rng.random() < 0.6 else "",
        plan=name, monthly_measurements=quota, mrr_jpy=mrr,
        contract_end=iso(contract_end), customer_since=iso(since),
        measurements_30d=used,
        last_login=iso(AS_OF - dt.timedelta(days=login_days)) if login_days is not None else "",
        report_view_rate=rate(views), feature_adoption=rate(adoption),
        csat=f"{csat:.1f}" if csat is not None else "",
        nps=str(nps),
        escalations_30d=rng.choice([0, 0, 0, 1, 2, 3]) if profile == "at_risk" else rng.choice([0, 0, 0, 1]),
        payment_overdue_days=OVERDUE_CYCLE[i % len(OVERDUE_CYCLE)],
        opted_out="true" if rng.random() < 0.08 else "false",
    )


def generate():
    rng = random.Random(SEED)
    rows = anchors()
    fixed = {r["id"] for r in rows}
    n = 1003
    while sum(r["kind"] == "b2c" for r in rows) < B2C_COUNT:
        if f"C-{n}" not in fixed:
            rows.append(random_b2c(rng, n))
        n += 1
    n, i = 2007, 0
    while sum(r["kind"] == "b2b" for r in rows) < B2B_COUNT:
        rows.append(random_b2b(rng, n, i))
        n, i = n + 1, i + 1
    return rows


# Past customers (demo/past_customers.csv): B2B accounts that left in the 12 months before
# AS_OF, with `churned_at`, for churn training. About 20 % a year (seed 003: B2B churn 20 %)
# of the 60 current accounts: 15 left. Their fields are as the CRM last had them, on the day
# they left. Most left at renewal after usage, logins and satisfaction fell; a few looked fine.
PAST_COUNT = 15
PAST_SEED = 20261122


def past_b2b(rng, n, i):
    name, quota, mrr = rng.choice(B2B_PLANS)
    churned = AS_OF - dt.timedelta(days=rng.randint(10, 360))
    profile = rng.choices(["at_risk", "slipping", "healthy"], weights=[6, 3, 1])[0]
    if profile == "healthy":
        usage, login_days = rng.uniform(0.7, 1.1), rng.randint(0, 10)
        views, adoption = rng.uniform(0.5, 0.9), rng.uniform(0.4, 0.9)
        csat, nps = rng.choice([4.0, 4.3, None]), rng.randint(6, 9)
    elif profile == "slipping":
        usage, login_days = rng.uniform(0.3, 0.7), rng.randint(10, 30)
        views, adoption = rng.uniform(0.2, 0.6), rng.uniform(0.1, 0.5)
        csat, nps = rng.choice([2.5, 3.0, 3.5, None]), rng.randint(3, 7)
    else:
        usage, login_days = rng.uniform(0.0, 0.35), rng.choice([20, 30, 45, 60, 90, None])
        views, adoption = rng.uniform(0.0, 0.3), rng.uniform(0.0, 0.3)
        csat, nps = rng.choice([1.5, 2.0, 2.5, 3.0, None]), rng.randint(0, 5)
    since = churned - dt.timedelta(days=rng.randint(200, 1400))
    # Most leave at the renewal date; some break the contract before it.
    contract_end = churned + dt.timedelta(days=rng.randint(0, 20) if rng.random() < 0.7 else rng.randint(21, 200))
    company = f"{COMPANY_HEAD[(i * 3 + 5) % len(COMPANY_HEAD)]}{COMPANY_TAIL[(i * 5 + n) % len(COMPANY_TAIL)]}"
    return row(
        id=f"B-{n}", kind="b2b", name=company, email=f"b{n}@example.jp",
        plan=name, monthly_measurements=quota, mrr_jpy=mrr,
        contract_end=iso(contract_end), customer_since=iso(since),
        measurements_30d=max(0, round(quota * usage)),
        last_login=iso(churned - dt.timedelta(days=login_days)) if login_days is not None else "",
        report_view_rate=rate(views), feature_adoption=rate(adoption),
        csat=f"{csat:.1f}" if csat is not None else "", nps=str(nps),
        escalations_30d=rng.choice([0, 1, 1, 2, 3]) if profile != "healthy" else 0,
        payment_overdue_days=rng.choice([0, 0, 7, 14, 21, 35, 45]) if profile == "at_risk" else rng.choice([0, 0, 0, 7]),
        opted_out="false", churned_at=iso(churned),
    )


def generate_past():
    rng = random.Random(PAST_SEED)
    return [past_b2b(rng, 2901 + i, i) for i in range(PAST_COUNT)]


def render(rows, columns=COLUMNS):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def summary(rows):
    b2b = [r for r in rows if r["kind"] == "b2b"]
    statuses = {}
    for r in b2b:
        s = b2b_health(r)
        statuses[s] = statuses.get(s, 0) + 1
    renewals = sum(
        0 <= (dt.date.fromisoformat(r["contract_end"]) - AS_OF).days <= 90 for r in b2b)
    overdue = sorted({int(r["payment_overdue_days"]) for r in rows if r["payment_overdue_days"]})
    low_usage = sum(int(r["measurements_30d"]) * 2 < int(r["monthly_measurements"]) for r in b2b)
    detractors = sum(r["nps"] != "" and float(r["nps"]) <= 6 for r in rows)
    opted_out = sum(r["opted_out"] == "true" for r in rows)
    return statuses, renewals, overdue, low_usage, detractors, opted_out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent.parent / "demo" / "customers.csv"))
    parser.add_argument("--check", action="store_true", help="compare with the existing file instead of writing")
    args = parser.parse_args()
    rows = generate()
    statuses, renewals, overdue, low_usage, detractors, opted_out = summary(rows)
    for needed in ("red", "yellow", "green"):
        if not statuses.get(needed):
            sys.exit(f"generated data has no {needed} account")
    for days in (7, 14, 21, 35):
        if days not in overdue:
            sys.exit(f"generated data has no payment {days} days overdue")
    path = pathlib.Path(args.out)
    past_path = path.with_name("past_customers.csv")
    for p, text in ((path, render(rows)), (past_path, render(generate_past(), PAST_COLUMNS))):
        if args.check:
            if not p.exists() or p.read_text(encoding="utf-8") != text:
                sys.exit(f"{p} is out of date: run scripts/gen-demo-customers.py")
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text, encoding="utf-8")
    print(f"{len(rows)} customers ({sum(r['kind'] == 'b2c' for r in rows)} b2c, "
          f"{sum(r['kind'] == 'b2b' for r in rows)} b2b) as of {AS_OF}: "
          f"health {dict(sorted(statuses.items()))}, renewals within 90 days {renewals}, "
          f"overdue days {overdue}, usage < 50% {low_usage}, NPS <= 6 {detractors}, "
          f"opted out {opted_out}")


if __name__ == "__main__":
    main()
