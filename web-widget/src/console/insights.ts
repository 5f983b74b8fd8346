// 「お客様の声」: the voice-of-the-customer report (GET /api/insights) drawn as plain SVG
// charts — topics (bar chart with counts and representative messages), escalations by
// reason over time (stacked bars per day), the sentiment trend (line) and the top
// unanswered questions (list). No charting library: a few rectangles, a polyline and text.

import { h } from "../shared/dom";
import type { InsightReport } from "./api";

const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element; text goes in through textContent only. */
function s(tag: string, attrs: Record<string, string | number> = {}, ...children: (Node | string)[]): SVGElement {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  for (const child of children) el.append(child);
  return el;
}

export const REASON_LABEL: Record<string, string> = {
  legal: "法的な相談",
  negative_sentiment: "強い不満",
  refund_or_cancel: "返金・解約",
  complaint: "苦情",
  unresolved: "未解決",
  customer_request: "担当者の希望",
};

const REASON_COLOR: Record<string, string> = {
  legal: "#7c3aed",
  negative_sentiment: "#dc2626",
  refund_or_cancel: "#ea580c",
  complaint: "#ca8a04",
  unresolved: "#2563eb",
  customer_request: "#0f766e",
};
const OTHER_COLOR = "#64748b";

const SIGNAL_LABEL: Record<string, string> = {
  low_score: "ナレッジに該当なし",
  fallback: "代替応答",
  unhelpful: "解決せず",
};

function shorten(text: string, max: number): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length <= max ? flat : `${flat.slice(0, max - 1)}…`;
}

function empty(message: string): HTMLElement {
  return h("p", { class: "muted insights-empty" }, message);
}

/** Topics: one horizontal bar per topic, its count and representative message. */
export function topicsChart(report: InsightReport): HTMLElement {
  const topics = report.topics.topics;
  if (!report.topics.model) return empty("埋め込みモデルが無効のため、話題は集計できません。");
  if (topics.length === 0) return empty("この期間のお客様のメッセージはありません。");
  const row = 34;
  const labelW = 360;
  const barW = 300;
  const width = labelW + barW + 60;
  const height = topics.length * row + 8;
  const max = Math.max(...topics.map((t) => t.count));
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": "話題ごとのメッセージ数",
    class: "chart chart-topics",
  });
  topics.forEach((t, i) => {
    const y = 4 + i * row;
    const w = Math.max(2, Math.round((t.count / max) * barW));
    const g = s("g", { class: "topic", "data-count": t.count });
    g.append(
      s("title", {}, [t.representative, ...t.examples].join("\n")),
      s("text", { x: 0, y: y + 20, class: "topic-label" }, shorten(t.representative, 28)),
      s("rect", { x: labelW, y: y + 6, width: w, height: row - 12, rx: 3, fill: "#0f766e", class: "bar" }),
      s("text", { x: labelW + w + 6, y: y + 20, class: "bar-value" }, `${t.count}件 (${Math.round(t.share * 100)}%)`),
    );
    svg.append(g);
  });
  return h("div", { class: "chart-wrap" }, svg);
}

/** Escalations: stacked bars per day, one colour per reason, with a legend. */
export function escalationsChart(report: InsightReport): HTMLElement {
  const days = report.escalations.by_day;
  if (report.escalations.total === 0) return empty("この期間のエスカレーションはありません。");
  const reasons = report.escalations.by_reason.map((r) => r.reason);
  const left = 30;
  const top = 10;
  const plotH = 160;
  const step = Math.max(8, Math.min(24, Math.floor(620 / Math.max(1, days.length))));
  const width = left + days.length * step + 10;
  const height = top + plotH + 40;
  const max = Math.max(1, ...days.map((d) => d.total));
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": "理由別エスカレーション件数の推移",
    class: "chart chart-escalations",
  });
  svg.append(
    s("line", { x1: left, y1: top + plotH, x2: width - 5, y2: top + plotH, stroke: "#94a3b8" }),
    s("text", { x: left - 6, y: top + 8, "text-anchor": "end", class: "axis" }, String(max)),
    s("text", { x: left - 6, y: top + plotH, "text-anchor": "end", class: "axis" }, "0"),
  );
  days.forEach((d, i) => {
    const x = left + i * step + 1;
    let y = top + plotH;
    for (const reason of reasons) {
      const n = d.reasons[reason] ?? 0;
      if (!n) continue;
      const hgt = (n / max) * plotH;
      y -= hgt;
      svg.append(
        s(
          "rect",
          { x, y, width: step - 2, height: hgt, fill: REASON_COLOR[reason] ?? OTHER_COLOR, class: "bar", "data-reason": reason, "data-day": d.period },
          s("title", {}, `${d.period} ${REASON_LABEL[reason] ?? reason}: ${n}件`),
        ),
      );
    }
    // A date under the first bar, then every 7th.
    if (i % 7 === 0) {
      svg.append(s("text", { x, y: top + plotH + 14, class: "axis" }, d.period.slice(5)));
    }
  });
  const legend = h(
    "ul",
    { class: "legend" },
    ...report.escalations.by_reason.map((r) =>
      h(
        "li",
        null,
        h("span", { class: "swatch", style: `background:${REASON_COLOR[r.reason] ?? OTHER_COLOR}` }),
        `${REASON_LABEL[r.reason] ?? r.reason} ${r.count}件`,
      ),
    ),
  );
  return h("div", { class: "chart-wrap" }, svg, legend);
}

/** Sentiment: the daily mean of P(positive) − P(negative), a line over −1…1. */
export function sentimentChart(report: InsightReport): HTMLElement {
  const days = report.sentiment;
  const points = days.map((d, i) => ({ i, d })).filter((p) => p.d.mean !== null && p.d.mean !== undefined);
  if (points.length === 0) return empty("この期間の感情データはありません。");
  const left = 30;
  const top = 10;
  const plotH = 140;
  const step = Math.max(8, Math.min(24, Math.floor(620 / Math.max(1, days.length))));
  const width = left + days.length * step + 10;
  const height = top + plotH + 30;
  const yOf = (v: number) => top + ((1 - v) / 2) * plotH;
  const xOf = (i: number) => left + i * step + step / 2;
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": "感情の推移（日ごとの平均）",
    class: "chart chart-sentiment",
  });
  svg.append(
    s("line", { x1: left, y1: yOf(0), x2: width - 5, y2: yOf(0), stroke: "#cbd5e1", "stroke-dasharray": "4 3" }),
    s("text", { x: left - 6, y: yOf(1) + 8, "text-anchor": "end", class: "axis" }, "+1"),
    s("text", { x: left - 6, y: yOf(0) + 4, "text-anchor": "end", class: "axis" }, "0"),
    s("text", { x: left - 6, y: yOf(-1), "text-anchor": "end", class: "axis" }, "−1"),
    s("polyline", {
      points: points.map((p) => `${xOf(p.i).toFixed(1)},${yOf(p.d.mean as number).toFixed(1)}`).join(" "),
      fill: "none",
      stroke: "#0f766e",
      "stroke-width": 2,
      class: "trend",
    }),
  );
  for (const p of points) {
    const negative = Math.round((p.d.negative_share ?? 0) * 100);
    svg.append(
      s(
        "circle",
        { cx: xOf(p.i), cy: yOf(p.d.mean as number), r: 3.5, fill: (p.d.mean as number) < 0 ? "#dc2626" : "#0f766e", class: "point", "data-day": p.d.date },
        s("title", {}, `${p.d.date}: ${p.d.messages}件、ネガティブ ${negative}%、平均 ${(p.d.mean as number).toFixed(2)}`),
      ),
    );
  }
  days.forEach((d, i) => {
    if (i % 7 === 0) svg.append(s("text", { x: xOf(i) - step / 2, y: top + plotH + 16, class: "axis" }, d.date.slice(5)));
  });
  return h("div", { class: "chart-wrap" }, svg);
}

/** Unanswered questions, most asked first: what to write into the FAQ next. */
export function unansweredList(report: InsightReport): HTMLElement {
  if (report.unanswered.length === 0) return empty("未回答の質問はありません。");
  return h(
    "ol",
    { class: "unanswered" },
    ...report.unanswered.map((q) =>
      h(
        "li",
        { "data-count": String(q.count) },
        h("span", { class: "unanswered-count" }, `${q.count}回`),
        h("span", { class: "unanswered-text" }, q.representative),
        h(
          "span",
          { class: "unanswered-meta muted" },
          [
            q.signals.map((x) => SIGNAL_LABEL[x] ?? x).join("・"),
            q.best_score === null ? "" : `最高スコア ${q.best_score.toFixed(2)}`,
          ]
            .filter(Boolean)
            .join(" / "),
        ),
        q.examples.length ? h("ul", { class: "unanswered-examples" }, ...q.examples.map((e) => h("li", null, e))) : null,
      ),
    ),
  );
}

/** The whole page into `target`. */
export function renderInsights(target: HTMLElement, report: InsightReport): void {
  const section = (id: string, title: string, body: HTMLElement) =>
    h("section", { class: "insights-section", id }, h("h3", null, title), body);
  target.replaceChildren(
    h(
      "p",
      { class: "muted insights-summary" },
      `${report.from.slice(0, 10)} 〜 ${report.to.slice(0, 10)}：お客様のメッセージ ${report.customer_messages}件、エスカレーション ${report.escalations.total}件`,
    ),
    section("insights-topics", "話題（メッセージのクラスタ）", topicsChart(report)),
    section("insights-escalations", "理由別エスカレーションの推移", escalationsChart(report)),
    section("insights-sentiment", "感情の推移", sentimentChart(report)),
    section("insights-unanswered", "未回答の質問（次のFAQ候補）", unansweredList(report)),
  );
}
