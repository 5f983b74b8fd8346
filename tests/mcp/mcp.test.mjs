// The MCP server driven by the official TypeScript SDK (@modelcontextprotocol/sdk, pinned in
// package-lock.json): `kizuna mcp` over stdio and /mcp on `kizuna serve` over Streamable HTTP.
// Real binary, real SQLite database with the demo customers, real knowledge index (one FAQ
// file, ingested with the real embedder). Run by scripts/test-mcp (scripts/test runs it).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError, ErrorCode } from "@modelcontextprotocol/sdk/types.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.KIZUNA_TEST_BIN ?? join(ROOT, "target/release/kizuna");
const SECRET = "mcp-test-secret-0123456789abcdef0123456789";

const MANAGER_TOOLS = ["list_at_risk_accounts", "lookup_health", "generate_followup", "recommend_upsell", "segment_customers"];
const PUBLIC_TOOLS = ["recommend_plan", "plan_info", "check_availability", "search_knowledge"];

let work;
let env;
let server;
let baseUrl;

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

function kizuna(args, dataDir = env.KIZUNA_DATA_DIR) {
  return execFileSync(BIN, args, { cwd: ROOT, env: { ...env, KIZUNA_DATA_DIR: dataDir }, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
}

const token = (role, subject) => kizuna(["token", "--role", role, "--subject", subject, "--ttl-secs", "3600"]);

async function waitHealthy(url, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`kizuna serve did not come up at ${url}`);
}

before(async () => {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build it (scripts/setup)`);
  work = mkdtempSync(join(tmpdir(), "kizuna-mcp-"));
  // One real FAQ file as the knowledge content: ingesting it takes seconds, not minutes.
  const content = join(work, "content");
  mkdirSync(join(content, "faq"), { recursive: true });
  cpSync(join(ROOT, "knowledge/content/faq/price.yaml"), join(content, "faq/price.yaml"));
  const config = join(work, "kizuna.toml");
  writeFileSync(config, `[knowledge]\ncontent_dir = ${JSON.stringify(content)}\n`);
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  env = { ...process.env };
  for (const name of ["DATABASE_URL", "KIZUNA_MCP_TOKEN"]) delete env[name];
  Object.assign(env, {
    KIZUNA_CONFIG: config,
    KIZUNA_DATA_DIR: join(work, "data"),
    KIZUNA_TOKEN_SECRET: SECRET,
    KIZUNA_LISTEN: `127.0.0.1:${port}`,
    // No model is needed for tool calls; an unreachable endpoint keeps start-up fast.
    KIZUNA_LLM: "openai",
    KIZUNA_OPENAI_BASE_URL: "http://127.0.0.1:9/v1",
    KIZUNA_LOG: "warn",
  });
  // `kizuna mcp` gets its own data dir: the in-process knowledge index is held by the
  // running server (one process per index; docs/mcp.md).
  for (const dataDir of [env.KIZUNA_DATA_DIR, join(work, "stdio-data")]) {
    kizuna(["import", "customers", join(ROOT, "demo/customers.csv")], dataDir);
    kizuna(["ingest"], dataDir);
  }
  server = spawn(BIN, ["serve"], { cwd: ROOT, env, stdio: ["ignore", "ignore", "inherit"] });
  await waitHealthy(baseUrl, 120_000);
});

after(async () => {
  if (server && server.exitCode === null) {
    const exited = new Promise((ok) => server.on("exit", ok));
    server.kill("SIGTERM");
    await exited;
  }
  if (work) rmSync(work, { recursive: true, force: true, maxRetries: 5 });
});

async function stdioClient(mcpToken) {
  const childEnv = { ...env, KIZUNA_DATA_DIR: join(work, "stdio-data") };
  if (mcpToken) childEnv.KIZUNA_MCP_TOKEN = mcpToken;
  const client = new Client({ name: "kizuna-test", version: "0.0.0" });
  await client.connect(new StdioClientTransport({ command: BIN, args: ["mcp"], cwd: ROOT, env: childEnv, stderr: "inherit" }));
  return client;
}

async function httpClient(bearer) {
  const headers = bearer ? { Authorization: `Bearer ${bearer}` } : {};
  const client = new Client({ name: "kizuna-test", version: "0.0.0" });
  await client.connect(new StreamableHTTPClientTransport(new URL(`${baseUrl}/mcp`), { requestInit: { headers } }));
  return client;
}

const toolNames = async (client) => (await client.listTools()).tools.map((t) => t.name).sort();

async function assertRefused(promise) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof McpError, `expected an MCP error, got ${e}`);
    assert.equal(e.code, ErrorCode.InvalidParams);
    return true;
  });
}

for (const transport of ["stdio", "http"]) {
  const connect = transport === "stdio" ? stdioClient : httpClient;

  describe(`MCP over ${transport}`, () => {
    test("a manager is offered and can call the manager tools", async () => {
      const client = await connect(token("manager", "csm-1"));
      try {
        assert.equal(client.getServerVersion()?.name, "kizuna");
        const names = await toolNames(client);
        for (const name of [...MANAGER_TOOLS, ...PUBLIC_TOOLS]) assert.ok(names.includes(name), `${name} missing from ${names}`);
        assert.ok(!names.includes("escalate_to_human"), "chat-only tools are not offered");
        const listed = (await client.listTools()).tools.find((t) => t.name === "lookup_health");
        assert.equal(listed.inputSchema.type, "object");
        assert.ok(listed.description.length > 0);

        const atRisk = await client.callTool({ name: "list_at_risk_accounts", arguments: {} });
        assert.notEqual(atRisk.isError, true, JSON.stringify(atRisk.content));
        const accounts = atRisk.structuredContent.accounts;
        assert.ok(Array.isArray(accounts) && accounts.length > 0, JSON.stringify(atRisk.structuredContent).slice(0, 300));

        const health = await client.callTool({ name: "lookup_health", arguments: { customer_id: "C-1001" } });
        assert.notEqual(health.isError, true, JSON.stringify(health.content));
        assert.match(JSON.stringify(health.structuredContent), /C-1001/);
      } finally {
        await client.close();
      }
    });

    test("a customer sees its own tools only and is refused the manager tools", async () => {
      const client = await connect(token("customer", "C-1001"));
      try {
        const names = await toolNames(client);
        for (const name of MANAGER_TOOLS) assert.ok(!names.includes(name), `${name} offered to a customer`);
        assert.ok(names.includes("my_account") && names.includes("book_measurement"), String(names));
        await assertRefused(client.callTool({ name: "list_at_risk_accounts", arguments: {} }));
        await assertRefused(client.callTool({ name: "lookup_health", arguments: { customer_id: "C-1002" } }));

        const mine = await client.callTool({ name: "my_account", arguments: {} });
        assert.notEqual(mine.isError, true, JSON.stringify(mine.content));
        assert.match(JSON.stringify(mine.structuredContent), /C-1001/);
        assert.doesNotMatch(JSON.stringify(mine.structuredContent), /C-1002/);
      } finally {
        await client.close();
      }
    });

    test("without a token only the public tools, knowledge search and public FAQ", async () => {
      const client = await connect(undefined);
      try {
        assert.deepEqual(await toolNames(client), [...PUBLIC_TOOLS].sort());
        await assertRefused(client.callTool({ name: "my_account", arguments: {} }));

        const found = await client.callTool({ name: "search_knowledge", arguments: { query: "一番安いプランはどれですか", limit: 3 } });
        assert.notEqual(found.isError, true, JSON.stringify(found.content));
        const passages = found.structuredContent.passages;
        assert.ok(passages.length > 0 && passages.every((p) => p.doc_id.startsWith("faq-price-")), JSON.stringify(passages));
        assert.match(found.content[0].text, /8,800円/);

        const resources = (await client.listResources()).resources;
        assert.ok(resources.some((r) => r.uri === "kizuna://faq/faq-price-001"), JSON.stringify(resources.map((r) => r.uri)));
        const read = await client.readResource({ uri: "kizuna://faq/faq-price-001" });
        assert.match(read.contents[0].text, /スタンダードプラン：12,800円/);
      } finally {
        await client.close();
      }
    });
  });
}

test("a customer's write tool only previews until confirmed", async () => {
  const client = await stdioClient(token("customer", "C-1001"));
  try {
    const tool = (await client.listTools()).tools.find((t) => t.name === "book_measurement");
    assert.equal(tool.inputSchema.properties.confirm.type, "boolean");
    assert.equal(tool.annotations.readOnlyHint, false);
    const free = await client.callTool({ name: "check_availability", arguments: { preferred_time: "any" } });
    const slot = free.structuredContent.candidates[0];
    assert.ok(slot, JSON.stringify(free.structuredContent));
    const args = { slot_start: slot.slot_id, plan: "standard" };
    const preview = await client.callTool({ name: "book_measurement", arguments: args });
    assert.notEqual(preview.isError, true, JSON.stringify(preview.content));
    assert.equal(preview.structuredContent.preview, true);
    assert.match(preview.content[0].text, /confirm/);
    // Nothing was booked: the slot still has as many seats.
    const again = await client.callTool({ name: "check_availability", arguments: { preferred_time: "any" } });
    assert.equal(again.structuredContent.candidates[0].remaining, slot.remaining);
    const booked = await client.callTool({ name: "book_measurement", arguments: { ...args, confirm: true } });
    assert.notEqual(booked.isError, true, JSON.stringify(booked.content));
    assert.equal(booked.structuredContent.preview, undefined);
    const after = await client.callTool({ name: "check_availability", arguments: { preferred_time: "any" } });
    const same = after.structuredContent.candidates.find((c) => c.slot_id === slot.slot_id);
    assert.ok(!same || same.remaining === slot.remaining - 1, JSON.stringify(after.structuredContent));
  } finally {
    await client.close();
  }
});

test("a bad bearer token is a 401 before the protocol", async () => {
  const forged = token("manager", "csm-1").slice(0, -4) + "AAAA";
  const response = await fetch(`${baseUrl}/mcp`, {
    method: "POST",
    headers: { Authorization: `Bearer ${forged}`, "Content-Type": "application/json", Accept: "application/json, text/event-stream" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "t", version: "0" } } }),
  });
  assert.equal(response.status, 401);
  assert.equal(response.headers.get("www-authenticate"), "Bearer");
  await assert.rejects(httpClient(forged));
});

test("stdio refuses to start with an invalid KIZUNA_MCP_TOKEN", async () => {
  const child = spawn(BIN, ["mcp"], { cwd: ROOT, env: { ...env, KIZUNA_DATA_DIR: join(work, "stdio-data"), KIZUNA_MCP_TOKEN: "v1.garbage.token" }, stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const code = await new Promise((ok) => child.on("exit", ok));
  assert.notEqual(code, 0);
  assert.match(stderr, /KIZUNA_MCP_TOKEN/);
});
