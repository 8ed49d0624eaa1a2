import assert from "node:assert/strict";
import { after, before, beforeEach, test } from "node:test";
import { QuotaClient } from "../../src/quota.js";
import { closedPort, FakeServer, json } from "../support/fake-server.js";

let server: FakeServer;
before(async () => {
  server = await FakeServer.start();
});
after(() => server.close());
beforeEach(() => {
  server.requests.length = 0;
});

const denied = {
  allowed: false,
  reason: "tokens_per_day_exceeded",
  status: "exceeded",
  plan: "free",
  limits: [
    { name: "tokens_per_day", window: "day", unit: "tokens", limit: 100000, used: 100250, remaining: 0, percent_used: 100.25, status: "exceeded", resets_at: "2026-11-23T00:00:00Z" },
    { name: "cost_per_month", window: "month", unit: "usd", limit: 5, used: 0.125, remaining: 4.875, percent_used: 2.5, status: "ok", resets_at: "2026-12-01T00:00:00Z" },
    { name: "requests_per_minute", window: "minute", limit: 60, used: 3, remaining: 57, resets_at: null },
  ],
  requires_upgrade: true,
  stale: false,
};

test("the request is the contract's, and a refusal comes back typed with the quota headers", async () => {
  server.handler = (_req, res) =>
    json(res, 200, denied, { "x-quota-limit": "100000", "x-quota-remaining": "0", "x-quota-reset": "50400" });
  const quota = new QuotaClient(server.url, "key-1");
  const result = await quota.check({ accountId: "acct-1", model: "gpt-4o", operation: "chat", estimatedTokens: 1200.4, estimatedCostUsd: 0.01 });
  const [request] = server.requests;
  assert.equal(request!.url, "/v1/quota/check");
  assert.equal(request!.method, "POST");
  assert.equal(request!.headers.authorization, "Bearer key-1");
  assert.deepEqual(request!.json, { account_id: "acct-1", model: "gpt-4o", operation: "chat", estimated_tokens: 1200, estimated_cost_usd: 0.01 });
  const { raw, ...typed } = result;
  assert.deepEqual(raw, denied);
  assert.deepEqual(typed, {
    allowed: false,
    reason: "tokens_per_day_exceeded",
    status: "exceeded",
    plan: "free",
    limits: [
      { name: "tokens_per_day", window: "day", unit: "tokens", limit: 100000, used: 100250, remaining: 0, percentUsed: 100.25, status: "exceeded", resetsAt: "2026-11-23T00:00:00Z" },
      { name: "cost_per_month", window: "month", unit: "usd", limit: 5, used: 0.125, remaining: 4.875, percentUsed: 2.5, status: "ok", resetsAt: "2026-12-01T00:00:00Z" },
      { name: "requests_per_minute", window: "minute", unit: null, limit: 60, used: 3, remaining: 57, percentUsed: null, status: null, resetsAt: null },
    ],
    requiresUpgrade: true,
    stale: false,
    headers: { limit: "100000", remaining: "0", reset: "50400" },
    source: "server",
  });
});

test("only the account is required; absent options are not sent", async () => {
  server.handler = (_req, res) => json(res, 200, { allowed: true, reason: null, status: "ok", plan: "pro", limits: [], requires_upgrade: false, stale: false });
  const result = await new QuotaClient(server.url, "k").check({ accountId: "acct-2" });
  assert.deepEqual(server.requests[0]!.json, { account_id: "acct-2" });
  assert.equal(result.allowed, true);
  assert.equal(result.reason, null);
  assert.equal(result.status, "ok");
});

test("reasons, statuses and fields this version does not know are passed through", async () => {
  const answer = { allowed: false, reason: "gpu_budget_exceeded", status: "frozen", plan: "team", limits: [], requires_upgrade: false, stale: true, region: "eu" };
  server.handler = (_req, res) => json(res, 200, answer);
  const result = await new QuotaClient(server.url, "k").check({ accountId: "a" });
  assert.equal(result.reason, "gpu_budget_exceeded");
  assert.equal(result.status, "frozen");
  assert.equal(result.stale, true);
  assert.deepEqual(result.raw, answer);
});

for (const [name, setup] of [
  ["Tally is unreachable", async () => `http://127.0.0.1:${await closedPort()}`],
  [
    "Tally is slower than the timeout",
    async () => {
      server.handler = (_req, res) => void setTimeout(() => json(res, 200, { allowed: false }), 2000);
      return server.url;
    },
  ],
  [
    "Tally answers 500",
    async () => {
      server.handler = (_req, res) => json(res, 500, { error: { code: "internal", message: "m" } });
      return server.url;
    },
  ],
  [
    "the answer is not a quota answer",
    async () => {
      server.handler = (_req, res) => json(res, 200, { ok: true });
      return server.url;
    },
  ],
] as const) {
  test(`when ${name}: fail open by default, fail closed when configured, within the timeout`, async () => {
    const endpoint = await setup();
    const started = Date.now();
    const open = await new QuotaClient(endpoint, "k", { timeoutMs: 200 }).check({ accountId: "a" });
    const closed = await new QuotaClient(endpoint, "k", { timeoutMs: 200, failOpen: false }).check({ accountId: "a" });
    const perCall = await new QuotaClient(endpoint, "k", { timeoutMs: 200 }).check({ accountId: "a" }, { failOpen: false });
    assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
    assert.deepEqual([open.allowed, open.source, open.reason], [true, "fail_open", "quota_unavailable"]);
    assert.deepEqual([closed.allowed, closed.source, closed.status], [false, "fail_closed", "exceeded"]);
    assert.equal(perCall.allowed, false);
    assert.ok(open.error instanceof Error);
  });
}
