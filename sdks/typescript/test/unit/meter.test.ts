import assert from "node:assert/strict";
import { after, before, beforeEach, test } from "node:test";
import { Tally } from "../../src/client.js";
import { QuotaExceededError } from "../../src/errors.js";
import { answerAccepted, FakeServer, json } from "../support/fake-server.js";

let server: FakeServer;
let quotaAnswer: Record<string, unknown> | "hang";
let tally: Tally;
before(async () => {
  server = await FakeServer.start();
});
after(async () => {
  await tally?.close({ timeoutMs: 100 });
  await server.close();
});
beforeEach(async () => {
  await tally?.close({ timeoutMs: 100 });
  server.requests.length = 0;
  quotaAnswer = { allowed: true, reason: null, status: "ok", plan: "pro", limits: [], requires_upgrade: false, stale: false };
  server.handler = (req, res) => {
    if (req.url === "/v1/quota/check") {
      if (quotaAnswer === "hang") return;
      return json(res, 200, quotaAnswer);
    }
    answerAccepted(req, res);
  };
  tally = new Tally({ apiKey: "k", endpoint: server.url, handleProcessExit: false, flushIntervalMs: 60_000, quota: { timeoutMs: 150 } });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const base = { sessionId: "s-1", accountId: "acct-1", model: "gpt-4o", provider: "openai", operation: "chat" };

async function sent(): Promise<Array<Record<string, any>>> {
  await tally.flush();
  return server.events() as Array<Record<string, any>>;
}

test("a call: quota checked, llm_request and llm_response with one trace and span, duration and usage", async () => {
  const response = {
    object: "chat.completion",
    model: "gpt-4o-2024-08-06",
    usage: { prompt_tokens: 1200, completion_tokens: 300, prompt_tokens_details: { cached_tokens: 1000 } },
  };
  let seen: { traceId: string; spanId: string } | undefined;
  const out = await tally.meter({ ...base, estimatedTokens: 1500, attributes: { feature: "x" } }, async (ctx) => {
    seen = ctx;
    assert.equal(ctx.quota?.allowed, true);
    await sleep(60);
    return response;
  });
  assert.equal(out, response);
  const quota = server.requests.find((r) => r.url === "/v1/quota/check");
  assert.deepEqual(quota?.json, { account_id: "acct-1", model: "gpt-4o", operation: "chat", estimated_tokens: 1500 });
  const [req, res] = await sent();
  assert.equal(req!.type, "llm_request");
  assert.equal(res!.type, "llm_response");
  for (const e of [req!, res!]) {
    assert.equal(e.trace_id, seen!.traceId);
    assert.equal(e.span_id, seen!.spanId);
    assert.equal(e.model, "gpt-4o");
    assert.equal(e.provider, "openai");
    assert.equal(e.operation, "chat");
    assert.equal(e.session_id, "s-1");
  }
  assert.match(seen!.traceId, /^[0-9a-f]{32}$/);
  assert.match(seen!.spanId, /^[0-9a-f]{16}$/);
  assert.deepEqual(res!.usage, { input_tokens: 1200, output_tokens: 300, cache_read_tokens: 1000, cache_write_tokens: 0 });
  assert.equal(res!.status, "ok");
  assert.ok(res!.duration_ms >= 55 && res!.duration_ms < 1000, `duration ${res!.duration_ms}`);
  assert.deepEqual(res!.attributes, { feature: "x", response_model: "gpt-4o-2024-08-06" });
  assert.ok(Date.parse(res!.timestamp) - Date.parse(req!.timestamp) >= 55);
  assert.ok(req!.event_id < res!.event_id, "ids sort in order");
});

test("Anthropic responses are mapped: input includes cache reads and writes", async () => {
  await tally.meter({ ...base, model: "claude-sonnet-4", provider: "anthropic", checkQuota: false }, async () => ({
    type: "message",
    usage: { input_tokens: 20, cache_read_input_tokens: 3000, cache_creation_input_tokens: 500, output_tokens: 80 },
  }));
  const [, res] = await sent();
  assert.deepEqual(res!.usage, { input_tokens: 3520, output_tokens: 80, cache_read_tokens: 3000, cache_write_tokens: 500 });
  assert.equal(server.requests.filter((r) => r.url === "/v1/quota/check").length, 0, "checkQuota: false");
});

test("costUsd and a custom usage reader", async () => {
  await tally.meter(
    {
      ...base,
      usage: (r) => ({ inputTokens: (r as { tin: number }).tin, outputTokens: 2 }),
      costUsd: (usage) => (usage!.inputTokens! + usage!.outputTokens!) / 1e6,
    },
    () => ({ tin: 10 }),
  );
  const [, res] = await sent();
  assert.deepEqual(res!.usage, { input_tokens: 10, output_tokens: 2, cache_read_tokens: 0, cache_write_tokens: 0 });
  assert.equal(res!.cost_usd, 0.000012);
});

test("a failing call records an error event with the same ids and rethrows", async () => {
  class RateLimitError extends Error {}
  await assert.rejects(
    tally.meter(base, async () => {
      await sleep(20);
      throw new RateLimitError("429 from provider");
    }),
    RateLimitError,
  );
  const [req, err] = await sent();
  assert.equal(err!.type, "error");
  assert.equal(err!.status, "error");
  assert.equal(err!.trace_id, req!.trace_id);
  assert.equal(err!.span_id, req!.span_id);
  assert.equal(err!.error.type, "RateLimitError");
  assert.equal(err!.error.message, "429 from provider");
  assert.ok(err!.duration_ms >= 15);
});

test("a refused quota throws QuotaExceededError; the call does not run and nothing is recorded", async () => {
  quotaAnswer = { allowed: false, reason: "model_not_allowed", status: "exceeded", plan: "free", limits: [], requires_upgrade: true, stale: false };
  let ran = false;
  await assert.rejects(
    tally.meter(base, () => {
      ran = true;
      return {};
    }),
    (err: unknown) => err instanceof QuotaExceededError && err.result.reason === "model_not_allowed" && err.result.requiresUpgrade,
  );
  assert.equal(ran, false);
  assert.equal((await sent()).length, 0);
});

test("an unreachable quota check fails open by default and the call runs", async () => {
  quotaAnswer = "hang";
  let quotaSource: string | undefined;
  await tally.meter(base, (ctx) => {
    quotaSource = ctx.quota?.source;
    return {};
  });
  assert.equal(quotaSource, "fail_open");
  assert.equal((await sent()).length, 2);
});

async function* openaiStream(gapMs: number) {
  yield { object: "chat.completion.chunk", model: "gpt-4o-2024-08-06", choices: [{ index: 0, delta: { role: "assistant", content: "" } }], usage: null };
  await sleep(gapMs);
  yield { object: "chat.completion.chunk", choices: [{ index: 0, delta: { content: "Hello" } }], usage: null };
  await sleep(gapMs);
  yield { object: "chat.completion.chunk", choices: [{ index: 0, delta: { content: " world" } }], usage: null };
  yield { object: "chat.completion.chunk", choices: [], usage: { prompt_tokens: 50, completion_tokens: 2, prompt_tokens_details: { cached_tokens: 32 } } };
}

test("a stream: chunks pass through; time to first token, duration and usage recorded when it ends", async () => {
  const stream = await tally.meter(base, () => openaiStream(60));
  assert.equal((await sent()).length, 1, "only llm_request until the stream ends");
  const texts: string[] = [];
  for await (const chunk of stream) {
    const c = chunk as { choices: Array<{ delta: { content?: string } }> };
    if (c.choices[0]?.delta.content) texts.push(c.choices[0].delta.content);
  }
  assert.deepEqual(texts, ["Hello", " world"]);
  const [req, res] = await sent();
  assert.equal(res!.type, "llm_response");
  assert.equal(res!.span_id, req!.span_id);
  assert.deepEqual(res!.usage, { input_tokens: 50, output_tokens: 2, cache_read_tokens: 32, cache_write_tokens: 0 });
  // The first chunk that carries output comes after one gap, the end after two.
  const { time_to_first_token_ms: ttft, duration_ms: duration } = res!;
  assert.ok(ttft >= 55 && duration - ttft >= 55, `ttft ${ttft}, duration ${duration}`);
  assert.equal(res!.attributes.response_model, "gpt-4o-2024-08-06");
});

test("an Anthropic event stream: usage from message_start and message_delta", async () => {
  async function* events() {
    yield { type: "message_start", message: { model: "claude-sonnet-4", usage: { input_tokens: 10, cache_read_input_tokens: 90, cache_creation_input_tokens: 0, output_tokens: 1 } } };
    await sleep(30);
    yield { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Hi" } };
    yield { type: "message_delta", delta: { stop_reason: "end_turn" }, usage: { output_tokens: 12 } };
    yield { type: "message_stop" };
  }
  const stream = await tally.meter({ ...base, model: "claude-sonnet-4", provider: "anthropic" }, () => events());
  for await (const _ of stream) void _;
  const [, res] = await sent();
  assert.deepEqual(res!.usage, { input_tokens: 100, output_tokens: 12, cache_read_tokens: 90, cache_write_tokens: 0 });
  assert.ok(res!.time_to_first_token_ms >= 25);
});

test("a stream object keeps its own methods; stopping early records a cancelled response", async () => {
  class ProviderStream {
    #controller = "ctl";
    controller() {
      return this.#controller;
    }
    async *[Symbol.asyncIterator]() {
      yield* openaiStream(1);
    }
  }
  const stream = await tally.meter(base, () => new ProviderStream());
  assert.equal(stream.controller(), "ctl");
  for await (const _ of stream) break;
  const [, res] = await sent();
  assert.equal(res!.type, "llm_response");
  assert.equal(res!.attributes.stream_cancelled, true);
});

test("a stream that fails midway records an error", async () => {
  async function* broken() {
    yield { object: "chat.completion.chunk", choices: [{ index: 0, delta: { content: "a" } }] };
    throw new TypeError("connection reset");
  }
  const stream = await tally.meter(base, () => broken());
  await assert.rejects(async () => {
    for await (const _ of stream) void _;
  }, TypeError);
  const events = await sent();
  assert.deepEqual(events.map((e) => e.type), ["llm_request", "error"]);
  assert.equal(events[1]!.error.type, "TypeError");
});

test("session helpers: start, user message, tool call and result, metered call, end", async () => {
  const session = tally.session({ accountId: "acct-9", operation: "support" });
  session.userMessage({ text: "hi" });
  const found = await session.tool("search", async () => {
    await sleep(20);
    return ["doc-1"];
  }, { callId: "call-1", input: { q: "hi" }, captureOutput: true });
  assert.deepEqual(found, ["doc-1"]);
  await assert.rejects(session.tool("fetch", () => Promise.reject(new RangeError("bad url"))), RangeError);
  await session.meter({ model: "gpt-4o", provider: "openai" }, () => ({ usage: { prompt_tokens: 3, completion_tokens: 4 } }));
  session.end();
  const events = await sent();
  assert.deepEqual(events.map((e) => e.type), [
    "session_start",
    "user_message",
    "tool_call",
    "tool_result",
    "tool_call",
    "tool_result",
    "llm_request",
    "llm_response",
    "session_end",
  ]);
  for (const e of events) {
    assert.equal(e.session_id, session.sessionId);
    assert.equal(e.account_id, "acct-9");
    assert.equal(e.operation, "support");
  }
  const [, , call, result, call2, failed] = events;
  assert.deepEqual(call!.tool, { name: "search", call_id: "call-1" });
  assert.deepEqual(call!.content, { q: "hi" });
  assert.equal(result!.span_id, call!.span_id);
  assert.equal(result!.status, "ok");
  assert.deepEqual(result!.content, ["doc-1"]);
  assert.ok(result!.duration_ms >= 15);
  assert.equal(failed!.span_id, call2!.span_id);
  assert.equal(failed!.status, "error");
  assert.deepEqual(failed!.error, { type: "RangeError", message: "bad url" });
});
