// Writes need consent (issue 13): a signed-in customer asks for a concrete slot; the widget
// shows the proposal with 「はい、お願いします」/「やめておきます」 buttons and nothing is
// booked; tapping yes sends that text and only then is the measurement booked.
// No model turns: the planner proposes and the tool books.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  KizunaServer,
  REPLY_TIMEOUT_MS,
  artifactPath,
  launchBrowser,
  recordFrames,
  waitOnline,
  widget,
} from "./harness.mjs";

/** A bookable day (3–4 days ahead, never a Sunday) as 「M月D日」 in JST. */
function bookableDay() {
  const jst = new Date(Date.now() + 9 * 3600 * 1000);
  jst.setUTCDate(jst.getUTCDate() + 3);
  if (jst.getUTCDay() === 0) jst.setUTCDate(jst.getUTCDate() + 1);
  return `${jst.getUTCMonth() + 1}月${jst.getUTCDate()}日`;
}

describe("consent before a booking", { timeout: 600_000 }, () => {
  let server;
  let browser;
  let page;
  let frames;

  before(async () => {
    server = await KizunaServer.start();
    const token = server.token("customer", "C-1001", "山田");
    browser = await launchBrowser();
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "ja-JP" });
    await context.addInitScript((t) => {
      window.kizunaConfig = { token: t };
    }, token);
    page = await context.newPage();
    frames = recordFrames(page);
    await page.goto(server.url);
    await waitOnline(page);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  test("a proposal with buttons; only the yes books", async () => {
    const w = widget(page);
    await w.launcher.click();
    const day = bookableDay();
    const before = frames.received.length;
    await w.input.fill(`${day}の13時に、スタンダードプランで予約したいです`);
    await w.input.press("Enter");
    await w.botReplies.first().waitFor({ timeout: REPLY_TIMEOUT_MS });
    const proposal = frames.received.slice(before).find((f) => f.type === "reply");
    assert.equal(proposal.proposal?.tool, "book_measurement", JSON.stringify(proposal));
    assert.deepEqual(proposal.tool_calls, [], "nothing was written");
    assert.match(proposal.text, new RegExp(day));

    const yes = w.botReplies.first().locator("button.kz-quick", { hasText: "はい" });
    assert.equal(await w.botReplies.first().locator("button.kz-quick").count(), 2);
    await page.screenshot({ path: artifactPath("widget-consent-proposal.png") });

    const afterProposal = frames.received.length;
    await yes.click();
    await w.userMessages.nth(1).waitFor();
    assert.equal(await w.userMessages.nth(1).locator(".kz-bubble").innerText(), "はい、お願いします");
    await w.botReplies.nth(1).waitFor({ timeout: REPLY_TIMEOUT_MS });
    const booked = frames.received.slice(afterProposal).find((f) => f.type === "reply");
    const call = booked.tool_calls.find((c) => c.name === "book_measurement");
    assert.ok(call?.ok, JSON.stringify(booked));
    assert.match(booked.text, /予約番号/);
    await page.screenshot({ path: artifactPath("widget-consent-booked.png") });
  });
});
