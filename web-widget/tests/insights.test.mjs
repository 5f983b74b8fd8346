// 「お客様の声」 in the operator console: customers chat through the real widget (a plan
// question and a slot question answered from the tools, a legal question that escalates, an
// off-topic question the bot cannot answer), then a manager opens the insights tab and the
// SVG charts show those conversations: topics with counts and representative messages,
// escalations by reason per day, the sentiment line and the unanswered question.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { KizunaServer, REPLY_TIMEOUT_MS, artifactPath, launchBrowser, waitOnline, widget } from "./harness.mjs";

const PLAN_QUESTION = "上の階の足音が1ヶ月前から深夜にうるさいです。どのプランがおすすめですか？";
const SLOT_QUESTION = "来週の平日の夜で、空いている日時を教えてください";
const LEGAL = "弁護士に相談して訴えたいです";
const OFF_TOPIC = "明日の東京の天気を教えてください";
const SEEDED = [PLAN_QUESTION, SLOT_QUESTION, LEGAL, OFF_TOPIC];

describe("お客様の声 (voice of the customer)", { timeout: 900_000 }, () => {
  let server;
  let browser;
  let managerToken;

  before(async () => {
    server = await KizunaServer.start();
    managerToken = server.token("manager", "csm-1", "佐藤");
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  /** One signed-in customer's chat in the widget; waits for each reply. */
  async function chat(customerId, texts) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "ja-JP" });
    await context.addInitScript((token) => {
      window.kizunaConfig = { token };
    }, server.token("customer", customerId));
    const page = await context.newPage();
    await page.goto(server.url);
    await waitOnline(page);
    const w = widget(page);
    await w.launcher.click();
    for (const text of texts) {
      const before = await w.botReplies.count();
      await w.input.fill(text);
      await w.input.press("Enter");
      await w.botReplies.nth(before).waitFor({ timeout: REPLY_TIMEOUT_MS });
    }
    await context.close();
  }

  test("a manager sees the customers' topics, escalations, sentiment and unanswered questions", async () => {
    await chat("C-1001", [PLAN_QUESTION, SLOT_QUESTION]);
    await chat("C-1003", [LEGAL]);
    await chat("C-1004", [OFF_TOPIC]);

    const context = await browser.newContext({ viewport: { width: 1366, height: 1000 }, locale: "ja-JP" });
    const page = await context.newPage();

    // The API is the managers': a customer's token is refused.
    await page.goto(`${server.url}/console`);
    const refused = await page.evaluate(async (token) => {
      const r = await fetch("/api/insights?days=7", { headers: { Authorization: `Bearer ${token}` } });
      return r.status;
    }, server.token("customer", "C-1001"));
    assert.equal(refused, 403);

    await page.fill("#token", managerToken);
    await page.click("#login-form button[type=submit]");
    await page.locator("#app").waitFor({ state: "visible" });
    await page.click('[data-view="insights"]');
    await page.locator("#view-insights").waitFor({ state: "visible" });

    // Topics: one bar per topic; the counts add up to the four messages, and each label is
    // the start of a message a customer sent.
    const topics = page.locator("#insights-topics svg.chart-topics g.topic");
    await topics.first().waitFor({ timeout: 60_000 });
    const counts = await topics.evaluateAll((gs) => gs.map((g) => Number(g.getAttribute("data-count"))));
    assert.equal(counts.reduce((a, b) => a + b, 0), SEEDED.length, `topic counts ${counts}`);
    assert.equal(await page.locator("#insights-topics svg.chart-topics rect.bar").count(), counts.length);
    const labels = await page.locator("#insights-topics text.topic-label").allTextContents();
    for (const label of labels) {
      const stem = label.replace(/…$/, "");
      assert.ok(SEEDED.some((m) => m.startsWith(stem)), `topic label ${label} is a customer's message`);
    }
    assert.match(await page.locator("#insights-topics text.bar-value").first().textContent(), /^\d+件 \(\d+%\)$/);

    // Escalations: one legal bar, today, and the legend names it.
    const legal = page.locator('#insights-escalations svg.chart-escalations rect[data-reason="legal"]');
    assert.equal(await legal.count(), 1);
    assert.match(await legal.locator("title").textContent(), /法的な相談: 1件/);
    assert.match(await page.locator("#insights-escalations .legend").innerText(), /法的な相談 1件/);

    // Sentiment: a line with a point for today.
    const trend = page.locator("#insights-sentiment svg.chart-sentiment polyline.trend");
    assert.equal(await trend.count(), 1);
    assert.ok((await page.locator("#insights-sentiment circle.point").count()) >= 1);

    // Unanswered: the off-topic question the bot had no answer for.
    const unanswered = page.locator("#insights-unanswered ol.unanswered > li");
    assert.ok((await unanswered.count()) >= 1, "an unanswered question is listed");
    assert.match(await page.locator("#insights-unanswered").innerText(), /天気/);
    assert.doesNotMatch(await page.locator("#insights-unanswered").innerText(), /おすすめ/);

    await page.screenshot({ path: artifactPath("console-insights.png"), fullPage: true });
    await context.close();
  });
});
