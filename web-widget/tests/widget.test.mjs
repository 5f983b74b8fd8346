// The embedded widget on the demo page, against a real `kizuna serve` with the local model:
// one-tag embed and isolation, IME-safe Enter, a streamed reply with a plan card and booking
// buttons, and the mobile layout. Model turns: 1 (plus one queued by the slot click at the end).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  KizunaServer,
  REPLY_TIMEOUT_MS,
  artifactPath,
  launchBrowser,
  openDemo,
  recordFrames,
  widget,
} from "./harness.mjs";

const PLAN_QUESTION = "上の階の足音が1ヶ月前から深夜にうるさいです。どのプランがおすすめですか？";
const SLOT_QUESTION = "来週の平日の夜で、空いている日時を教えてください";
// Nothing structured answers it (no knowledge is ingested in this data dir): the model writes.
const FREE_QUESTION = "上の階の人に、騒音のことをどう伝えたらいいでしょうか？";

describe("chat widget", { timeout: 600_000 }, () => {
  let server;
  let browser;
  let context;
  let page;
  let frames;

  before(async () => {
    server = await KizunaServer.start();
    browser = await launchBrowser();
    context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "ja-JP" });
    page = await context.newPage();
    frames = recordFrames(page);
    // Globals present before any page script runs, to find what the widget adds.
    await page.addInitScript(() => {
      Object.defineProperty(window, "__baselineGlobals", { value: Object.keys(window), enumerable: false });
    });
    await openDemo(page, server);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  test("one tag embeds it: a shadow root, one global, no style leaks either way", async () => {
    const w = widget(page);
    const isolation = await page.evaluate(() => {
      const host = document.querySelector("kizuna-widget");
      return {
        added: Object.keys(window).filter((k) => !window.__baselineGlobals.includes(k)),
        hasShadow: !!host?.shadowRoot,
        // The widget's CSS lives in its shadow root, never in the document.
        documentStyles: document.querySelectorAll("style, link[rel=stylesheet]").length,
        shadowStyles: host?.shadowRoot?.querySelectorAll("style").length,
        launcherOutside: document.querySelectorAll(".kz-launcher").length,
        pageButtonBackground: getComputedStyle(document.body.appendChild(document.createElement("button")))
          .backgroundColor,
      };
    });
    assert.deepEqual(isolation.added, ["Kizuna"]);
    assert.equal(isolation.hasShadow, true);
    assert.equal(isolation.documentStyles, 1, "only the demo page's own <style>");
    assert.equal(isolation.shadowStyles, 1);
    assert.equal(isolation.launcherOutside, 0, "widget nodes are not in the light DOM");
    // The demo page styles every <button> orange; the launcher keeps its own colour.
    assert.equal(isolation.pageButtonBackground, "rgb(249, 115, 22)");
    const launcherBackground = await w.launcher.evaluate((el) => getComputedStyle(el).backgroundColor);
    assert.equal(launcherBackground, "rgb(15, 118, 110)");
    assert.equal(await w.launcher.getAttribute("aria-label"), "チャットを開く");

    await w.launcher.click();
    await w.panel.waitFor({ state: "visible" });
    assert.match(await w.panel.innerText(), /ZENBU サポート/);
    assert.match(await w.input.getAttribute("placeholder"), /メッセージを入力/);
    await page.screenshot({ path: artifactPath("widget-desktop-open.png") });
  });

  test("Enter while an IME is composing never sends; Shift+Enter adds a line", async () => {
    const w = widget(page);
    const messagesSent = () => frames.sent.filter((f) => f.type === "message").length;
    const before = messagesSent();

    // A real composition through the browser's input pipeline (CDP), confirmed with Enter.
    await w.input.focus();
    const cdp = await context.newCDPSession(page);
    await cdp.send("Input.imeSetComposition", { text: "べんごし", selectionStart: 4, selectionEnd: 4 });
    await cdp.send("Input.dispatchKeyEvent", {
      type: "keyDown",
      key: "Enter",
      code: "Enter",
      windowsVirtualKeyCode: 229,
      nativeVirtualKeyCode: 229,
    });
    await cdp.send("Input.dispatchKeyEvent", { type: "keyUp", key: "Enter", code: "Enter", windowsVirtualKeyCode: 229 });
    await cdp.send("Input.insertText", { text: "弁護士" });
    assert.equal(await w.input.inputValue(), "弁護士");

    // Each signal on its own: isComposing alone, and keyCode 229 alone (Safari's order).
    const observed = await w.input.evaluate((el) => {
      const seen = [];
      const events = [
        new KeyboardEvent("keydown", { key: "Enter", code: "Enter", isComposing: true, bubbles: true, cancelable: true }),
        new KeyboardEvent("keydown", { key: "Enter", code: "Enter", keyCode: 229, bubbles: true, cancelable: true }),
      ];
      for (const event of events) {
        el.dispatchEvent(event);
        seen.push({ isComposing: event.isComposing, keyCode: event.keyCode, prevented: event.defaultPrevented });
      }
      return seen;
    });
    assert.deepEqual(observed, [
      { isComposing: true, keyCode: 0, prevented: false },
      { isComposing: false, keyCode: 229, prevented: false },
    ]);

    await w.input.press("Shift+Enter");
    await w.input.pressSequentially("について");
    assert.equal(await w.input.inputValue(), "弁護士\nについて");

    await page.waitForTimeout(1000);
    assert.equal(messagesSent(), before, "no message frame was sent");
    assert.equal(await w.userMessages.count(), 0, "no message bubble appeared");
    await w.input.fill("");
  });

  test("Enter sends; a plan question gets a plan card at once, a slot question booking buttons", async () => {
    const w = widget(page);
    const firstReceived = frames.received.length;

    await w.input.fill(PLAN_QUESTION);
    await w.input.press("Enter");
    assert.equal(await w.input.inputValue(), "", "the box is cleared");
    await w.userMessages.first().waitFor();
    assert.equal(await w.userMessages.first().locator(".kz-bubble").innerText(), PLAN_QUESTION);

    await w.botReplies.first().waitFor({ timeout: REPLY_TIMEOUT_MS });
    const reply = w.botReplies.first();
    const received = frames.received.slice(firstReceived);
    const replyFrame = received.find((f) => f.type === "reply");
    assert.equal(await reply.locator(".kz-bubble").innerText(), replyFrame.text.trim());
    // Answered from structure (issue 13): no model text streamed for it.
    assert.equal(received.filter((f) => f.type === "delta").length, 0);

    // recommend_plan → a plan card with name and price, from the tool result.
    const plan = replyFrame.tool_calls.find((c) => c.name === "recommend_plan");
    assert.ok(plan?.ok, "the agent ran recommend_plan");
    const card = reply.locator(".kz-plan");
    assert.equal(await card.locator(".kz-plan-name").innerText(), "スタンダードプラン");
    assert.equal(await card.locator(".kz-plan-price").innerText(), "12,800円");

    // check_availability → one button per candidate.
    const beforeSlots = frames.received.length;
    await w.input.fill(SLOT_QUESTION);
    await w.input.press("Enter");
    await w.botReplies.nth(1).waitFor({ timeout: REPLY_TIMEOUT_MS });
    const slotFrame = frames.received.slice(beforeSlots).find((f) => f.type === "reply");
    const slots = slotFrame.tool_calls.find((c) => c.name === "check_availability");
    assert.ok(slots?.ok, "the agent ran check_availability");
    const buttons = w.botReplies.nth(1).locator("button.kz-slot");
    assert.equal(await buttons.count(), slots.result.candidates.length);
    assert.ok((await buttons.count()) > 1);
    await page.screenshot({ path: artifactPath("widget-desktop-reply.png") });

    // Mobile width: the open panel covers the whole screen.
    await page.setViewportSize({ width: 375, height: 740 });
    const box = await w.panel.boundingBox();
    assert.deepEqual([box.x, box.y, box.width, box.height], [0, 0, 375, 740]);
    await page.screenshot({ path: artifactPath("widget-mobile-375.png") });
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  test("a booking button sends a message asking for that slot", async () => {
    const w = widget(page);
    const button = w.botReplies.nth(1).locator("button.kz-slot").first();
    const label = (await button.locator("span").first().innerText()).trim();
    assert.match(label, /^\d{1,2}月\d{1,2}日\(.\) \d{2}:\d{2}$/);
    const sentBefore = frames.sent.filter((f) => f.type === "message").length;
    await button.click();

    const expected = `${label} で予約をお願いします`;
    await w.userMessages.nth(2).waitFor();
    assert.equal(await w.userMessages.nth(2).locator(".kz-bubble").innerText(), expected);
    const sent = frames.sent.filter((f) => f.type === "message").slice(sentBefore);
    assert.equal(sent.length, 1);
    assert.equal(sent[0].text, expected);
    // One choice per card.
    assert.equal(await w.botReplies.nth(1).locator("button.kz-slot:disabled").count(), await w.botReplies.nth(1).locator("button.kz-slot").count());
    // The server stores it once.
    await w.userMessages.nth(2).and(page.locator("[data-seq]")).waitFor({ timeout: 15_000 });
    await w.botReplies.nth(2).waitFor({ timeout: REPLY_TIMEOUT_MS });
  });

  test("a free question: the model's reply streams in, then the final reply replaces it", async () => {
    const w = widget(page);
    // Watch the DOM: what the streaming bubble shows before the final reply lands.
    const repliesBefore = await w.botReplies.count();
    await page.evaluate((finalsBefore) => {
      const root = document.querySelector("kizuna-widget").shadowRoot;
      const seen = [];
      window.__kzStream = seen;
      new MutationObserver(() => {
        const streaming = root.querySelector(".kz-msg--bot.kz-streaming .kz-bubble");
        seen.push({
          streamingText: streaming ? streaming.textContent : null,
          finals: root.querySelectorAll(".kz-msg--bot[data-seq]").length - finalsBefore,
        });
      }).observe(root, { subtree: true, childList: true, characterData: true });
    }, repliesBefore);
    const firstReceived = frames.received.length;

    await w.input.fill(FREE_QUESTION);
    await w.input.press("Enter");
    await w.typing.waitFor({ state: "visible", timeout: 15_000 });
    await page.screenshot({ path: artifactPath("widget-desktop-typing.png") });
    await w.botReplies.nth(repliesBefore).waitFor({ timeout: REPLY_TIMEOUT_MS });
    const reply = w.botReplies.nth(repliesBefore);

    // Frames: deltas arrived before the final reply, which supersedes them.
    const received = frames.received.slice(firstReceived);
    const firstDelta = received.findIndex((f) => f.type === "delta");
    const replyIndex = received.findIndex((f) => f.type === "reply");
    assert.ok(firstDelta >= 0, "delta frames were received");
    assert.ok(firstDelta < replyIndex, "deltas came before the reply");
    const replyFrame = received[replyIndex];
    assert.equal(await reply.locator(".kz-bubble").innerText(), replyFrame.text.trim());

    // DOM: a streaming bubble with text existed before the final reply was drawn.
    const stream = await page.evaluate(() => window.__kzStream);
    const partial = stream.filter((s) => s.streamingText && s.finals === 0);
    assert.ok(partial.length >= 1, `streaming text was shown before the reply (${partial.length} updates)`);
    assert.equal(await page.locator("kizuna-widget .kz-streaming").count(), 0);
    assert.equal(await w.typing.isVisible(), false);
  });

  test("mobile: launcher first, then a full-screen panel", async () => {
    const mobile = await browser.newContext({
      viewport: { width: 375, height: 740 },
      deviceScaleFactor: 2,
      isMobile: true,
      hasTouch: true,
      locale: "ja-JP",
    });
    const phone = await mobile.newPage();
    await openDemo(phone, server);
    const w = widget(phone);
    const launcher = await w.launcher.boundingBox();
    assert.ok(launcher.x + launcher.width <= 375 && launcher.y + launcher.height <= 740);
    await phone.screenshot({ path: artifactPath("widget-mobile-375-closed.png") });
    await w.launcher.tap();
    const box = await w.panel.boundingBox();
    assert.deepEqual([box.x, box.y, box.width, box.height], [0, 0, 375, 740]);
    await w.launcher.waitFor({ state: "hidden" });
    await phone.locator("kizuna-widget .kz-close").tap();
    await w.launcher.waitFor({ state: "visible" });
    await mobile.close();
  });
});
