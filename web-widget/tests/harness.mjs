// Test harness: a real `target/release/kizuna serve` per test file (free port, temporary data
// directory, the built widget as its web directory) and Debian's Chromium through
// playwright-core. The server can be killed with SIGKILL and restarted on the same port and data.

import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, closeSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const WIDGET_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const ROOT = resolve(WIDGET_DIR, "..");
export const BIN = process.env.KIZUNA_TEST_BIN ?? join(ROOT, "target/release/kizuna");
export const WEB_DIR = join(WIDGET_DIR, "dist");
export const ARTIFACTS = join(WIDGET_DIR, "test-artifacts");
export const CHROMIUM = process.env.KIZUNA_TEST_CHROMIUM ?? "/usr/bin/chromium";

/** The local model answers in a few seconds to ~30 s on 2 busy cores: be generous. */
export const REPLY_TIMEOUT_MS = 120_000;
const READY_TIMEOUT_MS = 180_000;

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function serverEnv(extra) {
  const env = { ...process.env };
  // Isolation: the test server must not pick up a developer's database, secret or config.
  for (const name of ["DATABASE_URL", "KIZUNA_CONFIG", "KIZUNA_TOKEN_SECRET", "KIZUNA_LISTEN", "KIZUNA_DATA_DIR"]) {
    delete env[name];
  }
  return { ...env, KIZUNA_LOG_FORMAT: "text", RUST_LOG: process.env.RUST_LOG ?? "info", ...extra };
}

export class KizunaServer {
  constructor(port, dataDir) {
    this.port = port;
    this.dataDir = dataDir;
    this.url = `http://127.0.0.1:${port}`;
    this.logPath = join(dataDir, "server.log");
    this.child = null;
    this.exited = null;
  }

  /** Starts a server on a free port with a fresh data directory and waits for /readyz. */
  static async start() {
    if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build it with scripts/setup`);
    if (!existsSync(join(WEB_DIR, "widget.js"))) {
      throw new Error(`${WEB_DIR}/widget.js is missing: run npm ci && npm run build in web-widget/`);
    }
    const dataDir = mkdtempSync(join(tmpdir(), "kizuna-browser-"));
    const server = new KizunaServer(await freePort(), dataDir);
    await server.launch();
    return server;
  }

  get env() {
    return serverEnv({
      KIZUNA_LISTEN: `127.0.0.1:${this.port}`,
      KIZUNA_DATA_DIR: this.dataDir,
      KIZUNA_WEB_DIR: WEB_DIR,
    });
  }

  async launch() {
    const log = openSync(this.logPath, "a");
    this.child = spawn(BIN, ["serve"], { cwd: ROOT, env: this.env, stdio: ["ignore", log, log] });
    closeSync(log);
    this.exited = new Promise((r) => this.child.once("exit", (code, signal) => r({ code, signal })));
    const deadline = Date.now() + READY_TIMEOUT_MS;
    let lastError = "";
    while (Date.now() < deadline) {
      const exit = await Promise.race([this.exited, sleep(250).then(() => null)]);
      if (exit) throw new Error(`kizuna serve exited (${JSON.stringify(exit)}):\n${this.logTail()}`);
      try {
        const response = await fetch(`${this.url}/readyz`);
        if (response.ok) return;
        lastError = `readyz ${response.status}`;
      } catch (error) {
        lastError = String(error);
      }
    }
    throw new Error(`kizuna serve not ready after ${READY_TIMEOUT_MS} ms (${lastError}):\n${this.logTail()}`);
  }

  /** SIGKILL: no graceful shutdown, no socket close frames. */
  async kill9() {
    if (!this.child) return;
    this.child.kill("SIGKILL");
    await this.exited;
    this.child = null;
  }

  /** Starts again on the same port and data directory. */
  async restart() {
    await this.kill9();
    await this.launch();
  }

  async stop() {
    if (this.child) {
      this.child.kill("SIGTERM");
      const exit = await Promise.race([this.exited, sleep(10_000).then(() => null)]);
      if (!exit) await this.kill9();
      this.child = null;
    }
    if (!process.env.KIZUNA_TEST_KEEP_DATA) rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** A signed token from `kizuna token`, using this server's data directory (same secret). */
  token(role, subject, name) {
    const args = ["token", "--role", role, "--subject", subject];
    if (name) args.push("--name", name);
    return execFileSync(BIN, args, { cwd: ROOT, env: this.env, encoding: "utf8" }).trim();
  }

  logTail(lines = 40) {
    try {
      return readFileSync(this.logPath, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "(no server log)";
    }
  }
}

/** Chromium from Debian; fails with a clear message when it is not installed. */
export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: install it with \`apt-get install -y chromium\``);
  }
  const args = ["--disable-dev-shm-usage", "--disable-gpu", "--lang=ja-JP"];
  if (process.getuid?.() === 0) args.push("--no-sandbox");
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args });
}

/**
 * Records the websocket frames a page sends and receives (parsed JSON), in arrival order.
 * Frames survive reloads; `sent`/`received` list them, `mark()` lets a test look only at later ones.
 */
export function recordFrames(page) {
  const log = { sent: [], received: [] };
  page.on("websocket", (ws) => {
    if (!ws.url().endsWith("/ws")) return;
    ws.on("framesent", ({ payload }) => log.sent.push(parse(payload)));
    ws.on("framereceived", ({ payload }) => log.received.push(parse(payload)));
  });
  return log;
}

function parse(payload) {
  try {
    return JSON.parse(typeof payload === "string" ? payload : payload.toString("utf8"));
  } catch {
    return { type: "unparsable" };
  }
}

export function artifactPath(name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  return join(ARTIFACTS, name);
}

/** Locators inside the widget's (open) shadow root; Playwright's CSS engine pierces it. */
export function widget(page) {
  return {
    launcher: page.locator("kizuna-widget .kz-launcher"),
    badge: page.locator("kizuna-widget .kz-badge"),
    panel: page.locator("kizuna-widget .kz-panel"),
    input: page.locator("kizuna-widget .kz-input"),
    send: page.locator("kizuna-widget .kz-send"),
    conn: page.locator("kizuna-widget .kz-conn"),
    banner: page.locator("kizuna-widget .kz-banner"),
    typing: page.locator("kizuna-widget .kz-typing"),
    userMessages: page.locator("kizuna-widget .kz-msg--user"),
    botReplies: page.locator("kizuna-widget .kz-msg--bot[data-seq]"),
    humanMessages: page.locator("kizuna-widget .kz-msg--human"),
    systemLines: page.locator("kizuna-widget .kz-system"),
  };
}

/** Opens the demo page and waits until the widget is connected. */
export async function openDemo(page, server, path = "/") {
  await page.goto(`${server.url}${path}`);
  await waitOnline(page);
}

/** Waits until the widget on the page has a welcomed connection. */
export async function waitOnline(page, timeout = 30_000) {
  await page.locator('kizuna-widget .kz-conn[data-state="online"]').waitFor({ state: "attached", timeout });
}

/** The widget's stored state (localStorage), parsed. */
export async function savedState(page) {
  return page.evaluate(() => {
    const key = Object.keys(localStorage).find((k) => k.startsWith("kizuna:"));
    return key ? JSON.parse(localStorage.getItem(key)) : null;
  });
}
