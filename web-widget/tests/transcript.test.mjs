// The transcript model on its own (no browser, no server): how frames become entries, and
// that nothing is ever shown twice.

import { before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { build } from "esbuild";
import { WIDGET_DIR } from "./harness.mjs";

let Transcript;

before(async () => {
  const out = join(mkdtempSync(join(tmpdir(), "kizuna-transcript-")), "transcript.mjs");
  await build({
    entryPoints: [join(WIDGET_DIR, "src/shared/transcript.ts")],
    bundle: true,
    format: "esm",
    platform: "neutral",
    outfile: out,
    logLevel: "warning",
  });
  ({ Transcript } = await import(pathToFileURL(out).href));
});

const ack = (seq, id, extra = {}) => ({ type: "ack", seq, id, message_id: `m-${id}`, ...extra });
const delta = (replyTo, index, text, extra = {}) => ({ type: "delta", reply_to: replyTo, index, text, ...extra });
const reply = (seq, replyTo, text, extra = {}) => ({
  type: "reply",
  seq,
  reply_to: replyTo,
  message_id: `r-${replyTo}-${seq}`,
  text,
  sources: [],
  tool_calls: [],
  fallback: null,
  ...extra,
});
const view = (t) => t.ordered().map((e) => [e.kind, e.seq ?? null, e.text, e.userState ?? null]);

describe("transcript", () => {
  test("streams deltas in order, ignores repeats, and lets the reply supersede them", () => {
    const t = new Transcript((id) => ({ a: "こんにちは" })[id]);
    t.addLocal("a", "こんにちは", "sending");
    t.apply(ack(1, "a"));
    assert.equal(t.awaitingReply(), true);
    t.apply(delta("a", 1, "いら"));
    t.apply(delta("a", 2, "っしゃい"));
    t.apply(delta("a", 2, "っしゃい")); // a repeated index is dropped
    assert.equal(t.get("b:a").text, "いらっしゃい");
    assert.equal(t.get("b:a").streaming, true);
    assert.equal(t.awaitingReply(), false, "streaming text replaces the typing indicator");
    const applied = t.apply(reply(2, "a", "いらっしゃいませ。"));
    assert.equal(applied.incoming.key, "b:a");
    assert.deepEqual(view(t), [
      ["user", 1, "こんにちは", "sent"],
      ["bot", 2, "いらっしゃいませ。", null],
    ]);
    // Late deltas and replays of the same frames change nothing.
    assert.deepEqual(t.apply(delta("a", 3, "!")).changed, []);
    assert.deepEqual(t.apply(reply(2, "a", "いらっしゃいませ。")).changed, []);
    assert.deepEqual(t.apply(ack(1, "a")).changed, []);
    assert.equal(t.ordered().length, 2);
  });

  test("a resume mid-reply replaces the partial text, then continues", () => {
    const t = new Transcript();
    t.apply(ack(1, "a", { text: "質問" }));
    t.apply(delta("a", 1, "途中"));
    t.apply(delta("a", 0, "途中までの全文", { replace: true }));
    t.apply(delta("a", 7, "の続き"));
    assert.equal(t.get("b:a").text, "途中までの全文の続き");
  });

  test("a rebuilt history takes texts from the local cache, else marks them unknown", () => {
    const t = new Transcript((id) => (id === "mine" ? "私の質問" : undefined));
    t.apply(ack(1, "mine"));
    t.apply(reply(2, "mine", "回答"));
    t.apply(ack(3, "elsewhere"));
    assert.equal(t.get("u:mine").text, "私の質問");
    assert.equal(t.get("u:elsewhere").text, null);
  });

  test("unacked messages stay last; a duplicate ack marks them sent", () => {
    const t = new Transcript();
    t.addLocal("late", "オフラインで書いた", "queued");
    t.apply(ack(1, "a", { text: "先の質問" }));
    t.apply(reply(2, "a", "先の回答"));
    assert.deepEqual(
      view(t).map((row) => row[2]),
      ["先の質問", "先の回答", "オフラインで書いた"],
    );
    t.apply({ type: "ack", id: "late", message_id: "m-late", duplicate: true, status: "pending" });
    assert.equal(t.get("u:late").userState, "sent");
    t.apply(ack(3, "late"));
    assert.equal(t.get("u:late").seq, 3);
    assert.equal(t.ordered().length, 3);
  });

  test("escalation: banner state, no typing, the holding text shown once", () => {
    const t = new Transcript();
    t.apply(ack(1, "a", { text: "弁護士に相談して訴えたいです" }));
    const holding = "法的なご相談につきましては、専門の担当者が対応いたします。";
    t.apply({ type: "status", seq: 2, status: "escalated", reason: "legal", message: holding });
    assert.equal(t.status, "escalated");
    assert.equal(t.awaitingReply(), false);
    const applied = t.apply(reply(3, "a", holding));
    assert.ok(applied.changed.includes("s:2"));
    assert.equal(t.get("s:2").text, null, "the status line falls back to its short label");
    t.apply({ type: "status", seq: 4, status: "human", message: "担当の佐藤が対応いたします。", agent_name: "佐藤" });
    assert.equal(t.agentName, "佐藤");
    t.apply(ack(5, "b", { text: "よろしくお願いします" }));
    assert.equal(t.awaitingReply(), false, "held messages get no bot reply");
    const human = t.apply({ type: "human", seq: 6, message_id: "h1", text: "承知しました。", agent_name: "佐藤" });
    assert.equal(human.incoming.kind, "human");
    assert.deepEqual(t.apply({ type: "human", seq: 6, message_id: "h1", text: "承知しました。" }).changed, []);
    t.apply({ type: "status", seq: 7, status: "closed" });
    t.apply(ack(8, "c", { text: "もう一つ質問です" }));
    assert.equal(t.awaitingReply(), false);
    t.apply({ type: "status", seq: 9, status: "bot" });
    assert.equal(t.awaitingReply(), true, "a closed conversation reopens with the bot");
  });

  test("proactive messages are incoming entries, deduplicated by message id", () => {
    const t = new Transcript();
    const frame = { type: "proactive", seq: 1, message_id: "p1", text: "測定レポートの見方をご案内します。", campaign_id: "c1", trigger: "report_ready" };
    const first = t.apply(frame);
    assert.equal(first.incoming.kind, "proactive");
    assert.equal(t.apply(frame).incoming, null);
    assert.equal(t.apply({ ...frame, seq: 2 }).incoming, null, "same message id under a new seq");
    assert.equal(t.ordered().length, 1);
  });
});
