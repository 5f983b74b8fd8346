// History, reloads and crashes: the widget rebuilds its history from the server's replay, never
// shows a message twice, survives `kill -9` of the server, and delivers a message typed while
// the server was down exactly once. Model turns: 2.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  KizunaServer,
  REPLY_TIMEOUT_MS,
  artifactPath,
  launchBrowser,
  openDemo,
  recordFrames,
  waitOnline,
  savedState,
  widget,
} from "./harness.mjs";

const FIRST = "深夜の足音の測定はどのプランがおすすめですか？";
const OFFLINE = "夜の話し声も気になります。料金はいくらですか？";

/** Every message in the panel, in order: kind, seq and text. */
async function transcript(page) {
  return page.evaluate(() =>
    Array.from(document.querySelector("kizuna-widget").shadowRoot.querySelectorAll(".kz-msg[data-key]")).map((el) => ({
      key: el.getAttribute("data-key"),
      seq: el.getAttribute("data-seq"),
      text: el.querySelector(".kz-bubble").textContent,
    })),
  );
}

function assertNoDuplicates(entries) {
  const keys = entries.map((e) => e.key);
  assert.equal(new Set(keys).size, keys.length, `duplicate entries: ${keys.join(", ")}`);
  const seqs = entries.map((e) => e.seq).filter(Boolean);
  assert.equal(new Set(seqs).size, seqs.length, `duplicate seqs: ${seqs.join(", ")}`);
}

describe("history, reloads and server crashes", { timeout: 900_000 }, () => {
  let server;
  let browser;
  let page;
  let frames;

  before(async () => {
    server = await KizunaServer.start();
    browser = await launchBrowser();
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "ja-JP" });
    page = await context.newPage();
    frames = recordFrames(page);
    await openDemo(page, server);
    await widget(page).launcher.click();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  test("a reload rebuilds the history from the server, without duplicates", async () => {
    const w = widget(page);
    await w.input.fill(FIRST);
    await w.input.press("Enter");
    await w.botReplies.first().waitFor({ timeout: REPLY_TIMEOUT_MS });
    const before = await transcript(page);
    assert.equal(before.length, 2);
    assertNoDuplicates(before);
    const saved = await savedState(page);
    assert.ok(saved.conversationId);
    assert.equal(saved.outbox.length, 0);

    const sentBeforeReload = frames.sent.length;
    await page.reload();
    await waitOnline(page);
    await w.botReplies.first().waitFor();
    // The panel stays open across navigation in this tab.
    assert.equal(await w.panel.isVisible(), true);
    const hello = frames.sent.slice(sentBeforeReload).find((f) => f.type === "hello");
    assert.equal(hello.conversation_id, saved.conversationId);
    assert.equal(hello.last_seq, 0, "a fresh page asks for the whole history");
    await page.waitForTimeout(500);
    assert.deepEqual(await transcript(page), before);

    // Navigating to another page of the site: the same conversation, once.
    await page.goto(`${server.url}/?page=2`);
    await waitOnline(page);
    await w.botReplies.first().waitFor();
    await page.waitForTimeout(500);
    assert.deepEqual(await transcript(page), before);
  });

  test("kill -9 of the server: reconnects, resumes, and delivers a message typed offline once", async () => {
    const w = widget(page);
    const before = await transcript(page);
    const lastSeqBefore = Math.max(...before.map((e) => Number(e.seq)));

    await server.kill9();
    await page.locator('kizuna-widget .kz-conn[data-state="offline"]').waitFor({ timeout: 30_000 });
    assert.match(await w.conn.innerText(), /再接続しています/);

    await w.input.fill(OFFLINE);
    await w.input.press("Enter");
    const pending = w.userMessages.filter({ hasText: OFFLINE });
    await pending.waitFor();
    assert.equal(await pending.getAttribute("data-state"), "queued");
    assert.match(await pending.innerText(), /送信待ち/);
    const queued = await savedState(page);
    assert.equal(queued.outbox.length, 1);
    const clientId = queued.outbox[0].id;
    assert.equal(queued.outbox[0].text, OFFLINE);
    await page.screenshot({ path: artifactPath("widget-desktop-offline.png") });

    const sentBeforeRestart = frames.sent.length;
    const receivedBeforeRestart = frames.received.length;
    await server.launch(); // same port, same data directory
    await waitOnline(page, 60_000);
    await w.userMessages.filter({ hasText: OFFLINE }).and(page.locator("[data-seq]")).waitFor({ timeout: 30_000 });
    assert.equal(await pending.getAttribute("data-state"), "sent");

    // Resumed from where it was, and the queued message went out with its original id.
    const sent = frames.sent.slice(sentBeforeRestart);
    const hello = sent.find((f) => f.type === "hello");
    assert.equal(hello.last_seq, lastSeqBefore, "a reconnect resumes after the last seq seen");
    const resent = sent.filter((f) => f.type === "message");
    assert.ok(resent.length >= 1);
    assert.ok(resent.every((f) => f.id === clientId && f.text === OFFLINE));

    await w.botReplies.nth(1).waitFor({ timeout: REPLY_TIMEOUT_MS });
    const received = frames.received.slice(receivedBeforeRestart);
    const storedAcks = received.filter((f) => f.type === "ack" && f.id === clientId && !f.duplicate);
    assert.equal(storedAcks.length, 1, "the server stored the message once");
    assert.equal(received.filter((f) => f.type === "reply" && f.reply_to === clientId).length, 1);

    const after = await transcript(page);
    assertNoDuplicates(after);
    assert.deepEqual(after.slice(0, before.length), before, "the earlier history is unchanged");
    assert.equal(after.filter((e) => e.text === OFFLINE).length, 1);
    assert.equal(after.length, 4);
    assert.equal((await savedState(page)).outbox.length, 0);

    // And a reload after all that shows the same four messages.
    await page.reload();
    await waitOnline(page);
    await w.botReplies.nth(1).waitFor();
    await page.waitForTimeout(500);
    assert.deepEqual(await transcript(page), after);
  });
});
