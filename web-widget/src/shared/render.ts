// Turns transcript entries into DOM, for the widget and the console alike.

import { formatYen, h, isHttpUrl } from "./dom";
import type { QuickReply, Source, ToolCall } from "./frames";
import { STRINGS } from "./strings";
import type { Entry } from "./transcript";

export interface RenderOptions {
  /** "customer": the widget (the user is "you"); "operator": the console. */
  perspective: "customer" | "operator";
  /** When set, booking candidates become buttons that call it with the message to send. */
  onSlot?: (message: string, button: HTMLButtonElement) => void;
}

export function renderEntry(entry: Entry, options: RenderOptions): HTMLElement {
  if (entry.kind === "status") {
    return h(
      "div",
      { class: "kz-system", "data-key": entry.key, "data-status": entry.status },
      entry.text || STRINGS.statusLine(entry.status ?? ""),
    );
  }
  const operator = options.perspective === "operator";
  const el = h("div", {
    class: `kz-msg kz-msg--${entry.kind}${entry.streaming ? " kz-streaming" : ""}`,
    "data-key": entry.key,
    "data-seq": entry.seq !== undefined ? String(entry.seq) : undefined,
    "data-client-id": entry.clientId,
    "data-state": entry.userState,
  });
  const author = authorLabel(entry, operator);
  if (author) el.append(h("div", { class: "kz-author" }, author));
  const bubble = h("div", { class: "kz-bubble" });
  if (entry.text === null) {
    bubble.classList.add("kz-unknown");
    bubble.textContent = operator ? STRINGS.unknownTextOperator : STRINGS.unknownText;
  } else {
    bubble.textContent = entry.text;
  }
  el.append(bubble);
  if (entry.kind === "bot" && !entry.streaming) {
    for (const card of toolCards(entry.toolCalls ?? [], options)) el.append(card);
    const quick = quickReplies(entry.quickReplies ?? [], options);
    if (quick) el.append(quick);
    const sources = sourceList(entry.sources ?? []);
    if (sources) el.append(sources);
  }
  if (entry.kind === "user" && entry.userState && entry.userState !== "sent") {
    const label =
      entry.userState === "queued" ? STRINGS.queued : entry.userState === "sending" ? STRINGS.sending : STRINGS.failed;
    el.append(h("div", { class: "kz-meta" }, label));
  }
  return el;
}

function authorLabel(entry: Entry, operator: boolean): string | null {
  switch (entry.kind) {
    case "user":
      return operator ? STRINGS.customer : null;
    case "bot":
      return STRINGS.bot;
    case "human":
      return entry.agentName ? `${STRINGS.staff} ${entry.agentName}` : STRINGS.staff;
    case "proactive":
      return STRINGS.proactiveLabel;
    default:
      return null;
  }
}

/** The last successful call of each tool, in call order. */
function latestCalls(calls: ToolCall[]): ToolCall[] {
  const byName = new Map<string, ToolCall>();
  for (const call of calls) {
    if (call.ok && call.result && typeof call.result === "object") {
      byName.delete(call.name);
      byName.set(call.name, call);
    }
  }
  return [...byName.values()];
}

function toolCards(calls: ToolCall[], options: RenderOptions): HTMLElement[] {
  const cards: HTMLElement[] = [];
  for (const call of latestCalls(calls)) {
    const result = call.result as Record<string, unknown>;
    const card =
      call.name === "recommend_plan"
        ? planCard(result)
        : call.name === "check_availability"
          ? slotsCard(result, options)
          : null;
    if (card) cards.push(card);
  }
  return cards;
}

function planCard(result: Record<string, unknown>): HTMLElement | null {
  const name = typeof result.name === "string" ? result.name : null;
  if (!name) return null;
  const price =
    typeof result.price === "string"
      ? result.price
      : typeof result.price_jpy === "number"
        ? formatYen(result.price_jpy)
        : null;
  const hours = typeof result.measurement_hours === "number" ? result.measurement_hours : null;
  const features = Array.isArray(result.features)
    ? result.features.filter((f): f is string => typeof f === "string").slice(0, 4)
    : [];
  return h(
    "div",
    { class: "kz-card kz-plan", "data-plan": typeof result.plan === "string" ? result.plan : undefined },
    h("div", { class: "kz-card-label" }, STRINGS.recommended),
    h("div", { class: "kz-plan-name" }, name),
    price ? h("div", { class: "kz-plan-price" }, price) : null,
    hours !== null ? h("div", { class: "kz-plan-meta" }, STRINGS.measurementHours(hours)) : null,
    features.length ? h("ul", { class: "kz-plan-features" }, ...features.map((f) => h("li", null, f))) : null,
  );
}

interface Candidate {
  slot_id?: string;
  label: string;
  remaining?: number;
}

function slotsCard(result: Record<string, unknown>, options: RenderOptions): HTMLElement | null {
  const candidates = Array.isArray(result.candidates)
    ? (result.candidates as unknown[]).filter(
        (c): c is Candidate => !!c && typeof (c as Candidate).label === "string",
      )
    : [];
  if (candidates.length === 0) return null;
  const list = h("div", { class: "kz-slot-list" });
  for (const candidate of candidates) {
    // "11月25日(水) 13:00〜" → "11月25日(水) 13:00"
    const label = candidate.label.replace(/[〜~]\s*$/, "").trim();
    const remaining =
      typeof candidate.remaining === "number" ? h("small", null, STRINGS.slotRemaining(candidate.remaining)) : null;
    if (options.onSlot) {
      const onSlot = options.onSlot;
      const button = h(
        "button",
        { type: "button", class: "kz-slot", "data-slot-id": candidate.slot_id },
        h("span", null, label),
        remaining,
      ) as HTMLButtonElement;
      button.addEventListener("click", () => onSlot(STRINGS.bookSlot(label), button));
      list.append(button);
    } else {
      list.append(h("span", { class: "kz-slot" }, h("span", null, label), remaining));
    }
  }
  return h(
    "div",
    { class: "kz-card kz-slots" },
    h("div", { class: "kz-card-label" }, STRINGS.slotsTitle),
    list,
    options.onSlot ? h("div", { class: "kz-hint" }, STRINGS.slotsHint) : null,
  );
}

/** Buttons that send their text (consent to a proposal, a clarifying question's choices). */
function quickReplies(replies: QuickReply[], options: RenderOptions): HTMLElement | null {
  const valid = replies.filter((r) => typeof r.label === "string" && typeof r.text === "string");
  if (valid.length === 0 || !options.onSlot) return null;
  const onSlot = options.onSlot;
  const list = h("div", { class: "kz-slot-list kz-quick-replies" });
  for (const reply of valid) {
    const button = h("button", { type: "button", class: "kz-slot kz-quick" }, reply.label) as HTMLButtonElement;
    button.addEventListener("click", () => onSlot(reply.text, button));
    list.append(button);
  }
  return list;
}

function sourceList(sources: Source[]): HTMLElement | null {
  const seen = new Set<string>();
  const items: HTMLElement[] = [];
  for (const source of sources) {
    const title = source.title || source.doc_id;
    if (!title || seen.has(title)) continue;
    seen.add(title);
    items.push(
      isHttpUrl(source.url)
        ? h("a", { class: "kz-source", href: source.url, target: "_blank", rel: "noopener noreferrer" }, title)
        : h("span", { class: "kz-source" }, title),
    );
  }
  if (items.length === 0) return null;
  return h("div", { class: "kz-sources" }, h("span", { class: "kz-sources-label" }, `${STRINGS.sources}:`), ...items);
}
