/**
 * End to end against the real stack: the SDK posts to a real tally-ingest on real Kafka, a real
 * tally-aggregator folds into ClickHouse, and what the read API returns is compared exactly with
 * what the SDK sent. Needs the local Kafka and ClickHouse running and the binaries built
 * (`make test` does both).
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { gunzipSync } from "node:zlib";
import { Tally, type TallyOptions } from "../../src/client.js";
import type { TallyDeliveryError } from "../../src/errors.js";
import { QuotaExceededError } from "../../src/errors.js";
import type { EventRejection } from "../../src/transport.js";
import { Transport } from "../../src/transport.js";
import { SDK_NAME, SDK_VERSION } from "../../src/version.js";
import { Stack, waitUntil } from "../support/stack.js";
import { expand, fromWire, loadVectors, matches, plan, typedWire } from "../support/vectors.js";

let stack: Stack;

before(
  async () => {
    stack = await Stack.start();
  },
  { timeout: 180_000 },
);

after(
  async () => {
    await stack?.stop();
  },
  { timeout: 120_000 },
);

interface Captured {
  url: string;
  headers: Record<string, string>;
  body: { batch: Array<Record<string, any>>; sent_at: string; sdk: unknown };
  status?: number;
}

/** A `fetch` that keeps every batch request the SDK makes (decoded) and its answer's status. */
function capturing(): { fetch: typeof fetch; requests: Captured[] } {
  const requests: Captured[] = [];
  const wrapped: typeof fetch = async (input, init) => {
    const headers = (init?.headers ?? {}) as Record<string, string>;
    let captured: Captured | undefined;
    if (String(input).endsWith("/v1/batch") && init?.body instanceof Uint8Array) {
      const raw = Buffer.from(init.body);
      const text = headers["content-encoding"] === "gzip" ? gunzipSync(raw) : raw;
      captured = { url: String(input), headers, body: JSON.parse(text.toString("utf8")) as Captured["body"] };
      requests.push(captured);
    }
    const response = await fetch(input, init);
    if (captured) captured.status = response.status;
    return response;
  };
  return { fetch: wrapped, requests };
}

function client(options: Partial<TallyOptions> = {}): Tally {
  return new Tally({
    apiKey: stack.keys.ingest,
    endpoint: stack.ingestUrl,
    handleProcessExit: false,
    meterChecksQuota: false,
    retry: { initialDelayMs: 50, maxDelayMs: 500, maxElapsedMs: 120_000 },
    ...options,
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A session's timeline once it holds `count` events (fails at once if it holds more). */
async function timeline(sessionId: string, count: number): Promise<Array<Record<string, any>>> {
  return waitUntil(
    `timeline of ${sessionId} with ${count} events`,
    async () => {
      // Every page joined: a page holds at most 1,000 events.
      const events: Array<Record<string, any>> = [];
      let cursor: string | null = null;
      do {
        const query: string = cursor ? `?cursor=${cursor}` : "";
        const { status, body } = await stack.get(`/v1/sessions/${encodeURIComponent(sessionId)}/timeline${query}`, stack.keys.read);
        if (status === 404) return undefined;
        assert.equal(status, 200, JSON.stringify(body));
        events.push(...body.events);
        cursor = body.next_cursor ?? null;
      } while (cursor);
      assert.ok(events.length <= count, `timeline holds ${events.length} events, ${count} were sent`);
      return events.length === count ? events : undefined;
    },
    60_000,
    250,
  );
}

async function rollup(sessionId: string): Promise<Record<string, any>> {
  const { status, body } = await stack.get(`/v1/sessions/${encodeURIComponent(sessionId)}`, stack.keys.read);
  assert.equal(status, 200, JSON.stringify(body));
  return body as Record<string, any>;
}

function byTimeThenId(a: Record<string, any>, b: Record<string, any>): number {
  return a.timestamp < b.timestamp ? -1 : a.timestamp > b.timestamp ? 1 : a.event_id < b.event_id ? -1 : a.event_id > b.event_id ? 1 : 0;
}

function usageTotals(events: Array<Record<string, any>>) {
  const sum = { input_tokens: 0, output_tokens: 0, cache_read_tokens: 0, cache_write_tokens: 0 };
  for (const e of events) for (const k of Object.keys(sum) as Array<keyof typeof sum>) sum[k] += e.usage?.[k] ?? 0;
  return sum;
}

// ---- the shared vectors ----------------------------------------------------------------------

describe("sdk-spec vectors that concern the requests the SDK builds", () => {
  for (const vector of loadVectors()) {
    test(vector.name, async (t) => {
      const body = expand(vector.request.body) as { batch: unknown[] } | undefined;
      const how = plan(vector, body);
      if (how.kind === "not_applicable") {
        t.skip(how.why);
        return;
      }
      if (how.kind === "no_key") {
        const saved = process.env.TALLY_API_KEY;
        delete process.env.TALLY_API_KEY;
        try {
          assert.throws(() => new Tally({ endpoint: stack.ingestUrl, handleProcessExit: false }), TypeError);
          assert.throws(() => new Tally({ apiKey: "", endpoint: stack.ingestUrl, handleProcessExit: false }), TypeError);
        } finally {
          if (saved !== undefined) process.env.TALLY_API_KEY = saved;
        }
        return;
      }
      const batch = body!.batch;
      const { fetch, requests } = capturing();
      if (how.kind === "split") {
        const tally = client({ fetch, maxBatchEvents: 1000, flushIntervalMs: 60_000, onError: () => {} });
        for (const e of batch as Array<Record<string, string>>) {
          tally.record({ type: "custom", eventId: e.event_id, timestamp: e.timestamp, sessionId: e.session_id!, accountId: e.account_id! });
        }
        await tally.close();
        assert.deepEqual(requests.map((r) => [r.body.batch.length, r.status]), [
          [1000, 200],
          [batch.length - 1000, 200],
        ]);
        assert.deepEqual(requests.flatMap((r) => r.body.batch), batch, "the events, unchanged and in order");
        const stats = tally.stats();
        assert.equal(stats.accepted, batch.length);
        assert.equal(stats.failed, 0);
        return;
      }
      const key = how.key === "ingest" ? stack.keys.ingest : how.key === "read" ? stack.keys.read : "not-a-key";
      const transport = new Transport({ endpoint: stack.ingestUrl, apiKey: key, fetch, gzipMinBytes: how.gzip ? 0 : Number.POSITIVE_INFINITY });
      const result = await transport.deliver(batch.map((e) => JSON.stringify(e)));

      // What the SDK built: the vector's events as they are, in the SDK's envelope.
      assert.equal(requests.length, 1, "one request: nothing retried");
      const sent = requests[0]!;
      assert.deepEqual(sent.body.batch, batch);
      assert.deepEqual(sent.body.sdk, { name: SDK_NAME, version: SDK_VERSION });
      assert.ok(Number.isFinite(Date.parse(sent.body.sent_at)));
      assert.equal(sent.headers["content-encoding"], how.gzip ? "gzip" : undefined);
      assert.equal(sent.status, vector.expect.status);

      // What the SDK reports: the server's answer, as the vector says.
      if (vector.expect.status === 200) {
        const answer = {
          accepted: result.accepted,
          rejected: result.rejected.map((r) => ({ index: r.index, event_id: r.eventId, code: r.code, field: r.field, message: r.message })),
        };
        assert.ok(matches(vector.expect.body, answer), `SDK reported ${JSON.stringify(answer)}, vector expects ${JSON.stringify(vector.expect.body)}`);
        assert.equal(result.failed, 0);
        for (const r of result.rejected) assert.deepEqual(r.event, batch[r.index], "a rejection carries its event");
        if (result.rejected.length === 0 && how.key === "ingest") {
          // Accepted whole: the typed API, given the same events, builds them the same way.
          const typed = capturing();
          const tally = client({ fetch: typed.fetch, maxBatchEvents: 1000, flushIntervalMs: 60_000, gzipMinBytes: how.gzip ? 0 : 1024 });
          for (const e of batch as Array<Record<string, unknown>>) tally.record(fromWire(e));
          await tally.close();
          assert.deepEqual(typed.requests.flatMap((r) => r.body.batch), (batch as Array<Record<string, unknown>>).map(typedWire));
          assert.equal(tally.stats().accepted, batch.length);
        }
      } else {
        assert.equal(result.failed, batch.length);
        assert.equal(result.error?.reason, "refused");
        assert.equal(result.error?.status, vector.expect.status);
        const answer = { error: { code: result.error?.code, message: result.error?.message } };
        assert.ok(matches(vector.expect.body, answer), `SDK reported ${JSON.stringify(answer)}`);
      }
    });
  }
});

// ---- a realistic session, read back ----------------------------------------------------------

test("a session recorded through the SDK comes back from the timeline exactly as sent", async () => {
  const { fetch, requests } = capturing();
  const rejections: EventRejection[] = [];
  const tally = client({ fetch, maxBatchEvents: 4, flushIntervalMs: 50, gzipMinBytes: 600, onRejected: (r) => rejections.push(...r) });
  const session = tally.session({ accountId: "acct-ts-1", operation: "support", attributes: { plan: "pro", seats: 3, trial: false } });
  session.userMessage({ text: "Where is my order #1234?" });

  // An OpenAI-shaped call, with cached prompt tokens.
  await session.meter({ model: "gpt-4o", provider: "openai", requestContent: { messages: 2 } }, async () => {
    await sleep(15);
    return {
      object: "chat.completion",
      model: "gpt-4o-2024-08-06",
      choices: [{ message: { role: "assistant", tool_calls: [{ id: "call_1" }] } }],
      usage: { prompt_tokens: 1200, completion_tokens: 40, prompt_tokens_details: { cached_tokens: 1024 } },
    };
  });
  const order = await session.tool("lookup_order", async () => {
    await sleep(5);
    return { id: 1234, status: "shipped" };
  }, { callId: "call_1", input: { id: 1234 }, captureOutput: true });
  session.record({ type: "knowledge", content: { source: "kb/shipping.md", score: 0.82 } });

  // An Anthropic-shaped stream, with cache reads and writes.
  const stream = await session.meter({ model: "claude-sonnet-4", provider: "anthropic" }, async () =>
    (async function* () {
      yield { type: "message_start", message: { model: "claude-sonnet-4-20250514", usage: { input_tokens: 35, cache_read_input_tokens: 2000, cache_creation_input_tokens: 300, output_tokens: 1 } } };
      await sleep(10);
      yield { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: `Order ${order.id} is ${order.status}.` } };
      yield { type: "message_delta", delta: { stop_reason: "end_turn" }, usage: { output_tokens: 25 } };
      yield { type: "message_stop" };
    })(),
  );
  for await (const _ of stream) void _;

  await assert.rejects(session.tool("send_email", async () => {
    throw new Error("SMTP unavailable");
  }), /SMTP/);
  await assert.rejects(
    session.meter({ model: "gpt-4o-mini", provider: "openai" }, async () => {
      throw Object.assign(new Error("Rate limit reached"), { name: "RateLimitError" });
    }),
  );
  session.record({ type: "artifact", content: { kind: "email_draft", words: 120 }, attributes: { format: "markdown" } });
  session.record({
    type: "custom",
    costUsd: 0.0021,
    durationMs: 840,
    status: "ok",
    attributes: { ratio: 0.25, big: 1234567890123, flag: true, label: "é ✓ \"quoted\"" },
    content: { nested: { list: [1, "two", null, { three: 3 }] } },
  });
  session.end();
  await tally.close();

  const stats = tally.stats();
  assert.deepEqual(rejections, []);
  assert.equal(stats.failed, 0);
  assert.equal(stats.dropped, 0);
  assert.ok(requests.some((r) => r.headers["content-encoding"] === "gzip"), "some requests were gzip-compressed");
  const sent = requests.flatMap((r) => r.body.batch);
  assert.equal(stats.accepted, sent.length);
  assert.deepEqual(
    sent.map((e) => e.type),
    ["session_start", "user_message", "llm_request", "llm_response", "tool_call", "tool_result", "knowledge", "llm_request", "llm_response", "tool_call", "tool_result", "llm_request", "error", "artifact", "custom", "session_end"],
  );

  const events = await timeline(session.sessionId, sent.length);
  assert.deepEqual(events, [...sent].sort(byTimeThenId));

  const summary = await waitUntil("the session rollup", async () => {
    const r = await rollup(session.sessionId);
    return r.event_count === sent.length && r.state === "ended" ? r : undefined;
  }, 30_000);
  assert.deepEqual(summary.usage, usageTotals(sent));
  assert.deepEqual(summary.usage, { input_tokens: 1200 + 2335, output_tokens: 65, cache_read_tokens: 3024, cache_write_tokens: 300 });
});

// ---- outages ---------------------------------------------------------------------------------

/** Events of `sessions` sessions with known usage; returns them by session. */
function workload(tally: Tally, prefix: string, sessions: number, perSession: number) {
  const ids = new Map<string, string[]>();
  const usage = new Map<string, { input_tokens: number; output_tokens: number; cache_read_tokens: number; cache_write_tokens: number }>();
  let n = 0;
  const record = () => {
    const s = `${prefix}-${n % sessions}`;
    const u = { input_tokens: 100 + n, output_tokens: n % 50, cache_read_tokens: (n % 3) * 10, cache_write_tokens: n % 2 };
    const id = tally.record({
      type: "llm_response",
      sessionId: s,
      accountId: `acct-${prefix}`,
      model: "gpt-4o",
      provider: "openai",
      usage: { inputTokens: u.input_tokens, outputTokens: u.output_tokens, cacheReadTokens: u.cache_read_tokens, cacheWriteTokens: u.cache_write_tokens },
      durationMs: n,
    });
    assert.ok(id, "recorded");
    ids.set(s, [...(ids.get(s) ?? []), id]);
    const t = usage.get(s) ?? { input_tokens: 0, output_tokens: 0, cache_read_tokens: 0, cache_write_tokens: 0 };
    for (const k of Object.keys(t) as Array<keyof typeof t>) t[k] += u[k];
    usage.set(s, t);
    n += 1;
  };
  return { ids, usage, record, total: sessions * perSession };
}

/** Every session holds exactly its events: the rollup counts each once, the timeline lists each once. */
async function assertExactlyOnce(w: ReturnType<typeof workload>): Promise<void> {
  await stack.waitFolded();
  for (const [session, ids] of w.ids) {
    const summary = await waitUntil(`rollup of ${session}`, async () => {
      const r = await rollup(session).catch(() => undefined);
      return r && r.event_count >= ids.length ? r : undefined;
    }, 60_000);
    assert.equal(summary.event_count, ids.length, `${session}: counted ${summary.event_count} of ${ids.length}`);
    assert.deepEqual(summary.usage, w.usage.get(session));
    const events = await timeline(session, ids.length);
    assert.deepEqual(events.map((e) => e.event_id).sort(), [...ids].sort());
  }
}

test("ingest killed (SIGKILL) mid-run and restarted on its port: every event delivered exactly once", async (t) => {
  const errors: TallyDeliveryError[] = [];
  const tally = client({ maxBatchEvents: 10, flushIntervalMs: 20, requestTimeoutMs: 3000, onError: (e) => errors.push(e) });
  const w = workload(tally, `kill-${stack.name}`, 5, 120);
  let producing = true;
  const producer = (async () => {
    while (producing && [...w.ids.values()].reduce((n, l) => n + l.length, 0) < w.total) {
      for (let i = 0; i < 10; i++) w.record();
      await sleep(50);
    }
  })();

  await waitUntil("a quarter accepted", async () => (tally.stats().accepted >= w.total / 4 ? true : undefined), 30_000, 5);
  // Kill while a request is in flight if one comes within two seconds.
  const deadline = Date.now() + 2000;
  while (tally.stats().inFlight === 0 && Date.now() < deadline) await sleep(1);
  const inFlight = tally.stats().inFlight;
  const retriesBefore = tally.stats().retries;
  await stack.killIngest();
  await waitUntil("the SDK to retry", async () => (tally.stats().retries > retriesBefore + 2 ? true : undefined), 30_000, 20);
  const acceptedWhileDown = tally.stats().accepted;
  await stack.startIngest();
  await producer.finally(() => (producing = false));
  await tally.flush();

  const stats = tally.stats();
  t.diagnostic(`killed with ${inFlight} events in flight; ${stats.retries} retries; ${acceptedWhileDown} accepted before the restart`);
  assert.deepEqual(errors, []);
  assert.equal(stats.accepted, w.total);
  assert.equal(stats.failed + stats.dropped + stats.rejected, 0);
  assert.ok(acceptedWhileDown < w.total, "events were still to deliver when ingest came back");
  await assertExactlyOnce(w);
});

test("answers lost after ingest accepted: the SDK resends the same ids and nothing counts twice", async (t) => {
  // SDK -> proxy -> ingest; the proxy forwards every request but drops every third answer.
  const acceptedById = new Map<string, number>();
  let forwarded = 0;
  const proxy: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const raw = Buffer.concat(chunks);
      const headers: Record<string, string> = {};
      for (const h of ["authorization", "content-type", "content-encoding"]) if (req.headers[h]) headers[h] = String(req.headers[h]);
      const answer = await fetch(`${stack.ingestUrl}${req.url}`, { method: req.method, headers, body: raw });
      const text = await answer.text();
      const n = ++forwarded;
      if (answer.status === 200) {
        const batch = JSON.parse((headers["content-encoding"] === "gzip" ? gunzipSync(raw) : raw).toString()).batch as Array<{ event_id: string }>;
        for (const e of batch) acceptedById.set(e.event_id, (acceptedById.get(e.event_id) ?? 0) + 1);
      }
      if (n % 3 === 1) {
        req.socket.destroy();
        return;
      }
      res.writeHead(answer.status, { "content-type": "application/json" });
      res.end(text);
    });
  });
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  try {
    const tally = client({ endpoint: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`, maxBatchEvents: 5, flushIntervalMs: 10 });
    const w = workload(tally, `lost-${stack.name}`, 3, 20);
    for (let i = 0; i < w.total; i++) w.record();
    await tally.close({ timeoutMs: 60_000 });
    const stats = tally.stats();
    assert.equal(stats.accepted, w.total);
    assert.equal(stats.failed, 0);
    const twice = [...acceptedById.values()].filter((c) => c > 1).length;
    t.diagnostic(`${forwarded} requests forwarded; ${twice} events accepted by ingest more than once`);
    assert.ok(twice >= 5, "resends reached ingest with the same event ids");
    assert.equal(acceptedById.size, w.total);
    await assertExactlyOnce(w);
  } finally {
    proxy.closeAllConnections();
    await new Promise((resolve) => proxy.close(resolve));
  }
});

// ---- quota -----------------------------------------------------------------------------------

test("quota check against the live ingest", async (t) => {
  const quota = stack.ingestConfig.quota as { default_plan: string; plans: Record<string, { limits: Record<string, number>; upgradable: boolean }> };
  const planName = quota.default_plan;
  const planConfig = quota.plans[planName]!;
  const tally = client({ quota: { timeoutMs: 3000, failOpen: false }, meterChecksQuota: true });
  const account = `acct-quota-${stack.name}`;

  const ok = await tally.check({ accountId: account, model: "gpt-4o", operation: "chat", estimatedTokens: 10 });
  assert.equal(ok.source, "server", String(ok.error));
  assert.equal(ok.allowed, true);
  assert.equal(ok.reason, null);
  assert.equal(ok.plan, planName);
  // The plan's limits, as configured, each read back typed; nothing used yet by a new account.
  const configured = Object.entries(planConfig.limits).sort();
  assert.deepEqual(ok.limits.map((l) => [l.name, l.limit] as [string, number | null]).sort(), configured);
  for (const limit of ok.limits) {
    assert.equal(limit.used, 0, limit.name);
    assert.equal(limit.remaining, limit.limit, limit.name);
  }
  assert.notEqual(ok.headers.limit, null, "X-Quota-Limit");
  assert.notEqual(ok.headers.remaining, null, "X-Quota-Remaining");

  const perRequest = planConfig.limits.tokens_per_request;
  if (perRequest !== undefined) {
    const refused = await tally.check({ accountId: account, model: "gpt-4o", estimatedTokens: perRequest + 1 });
    assert.equal(refused.source, "server");
    assert.equal(refused.allowed, false);
    assert.equal(refused.reason, "tokens_per_request_exceeded");
    assert.equal(refused.requiresUpgrade, planConfig.upgradable);

    let called = false;
    await assert.rejects(
      tally.meter({ sessionId: `q-${stack.name}`, accountId: account, model: "gpt-4o", provider: "openai", estimatedTokens: perRequest + 1 }, () => {
        called = true;
        return {};
      }),
      (err: unknown) => err instanceof QuotaExceededError && err.result.reason === "tokens_per_request_exceeded",
    );
    assert.equal(called, false);
  } else {
    t.diagnostic(`plan ${planName} has no tokens_per_request limit; the refusal case is not run`);
  }
  await tally.close();
});
