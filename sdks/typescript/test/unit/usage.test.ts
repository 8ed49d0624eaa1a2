import assert from "node:assert/strict";
import { test } from "node:test";
import {
  carriesOutput,
  mapUsage,
  StreamUsage,
  usageFromAnthropic,
  usageFromOpenAIChat,
  usageFromResponse,
  usageShape,
} from "../../src/usage.js";
import { toWire } from "../../src/events.js";
import { schemaErrors } from "../support/schema.js";

test("OpenAI chat: prompt_tokens already include the cached tokens", () => {
  const response = {
    id: "chatcmpl-1",
    object: "chat.completion",
    model: "gpt-4o-2024-08-06",
    usage: {
      prompt_tokens: 2006,
      completion_tokens: 300,
      total_tokens: 2306,
      prompt_tokens_details: { cached_tokens: 1920, audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 64 },
    },
  };
  assert.deepEqual(usageFromResponse(response, "openai"), {
    inputTokens: 2006,
    outputTokens: 300,
    cacheReadTokens: 1920,
    cacheWriteTokens: 0,
  });
});

test("OpenAI Responses API: input_tokens already include the cached tokens", () => {
  const response = {
    object: "response",
    usage: { input_tokens: 1500, input_tokens_details: { cached_tokens: 1024 }, output_tokens: 90, output_tokens_details: { reasoning_tokens: 10 }, total_tokens: 1590 },
  };
  assert.deepEqual(usageFromResponse(response, "openai"), {
    inputTokens: 1500,
    outputTokens: 90,
    cacheReadTokens: 1024,
    cacheWriteTokens: 0,
  });
});

test("Anthropic: input_tokens exclude the cache, so Tally's input is input + cache read + cache write", () => {
  const response = {
    id: "msg_1",
    type: "message",
    model: "claude-sonnet-4-20250514",
    usage: { input_tokens: 50, cache_read_input_tokens: 2000, cache_creation_input_tokens: 248, output_tokens: 503 },
  };
  const usage = usageFromResponse(response, "anthropic");
  assert.deepEqual(usage, { inputTokens: 2298, outputTokens: 503, cacheReadTokens: 2000, cacheWriteTokens: 248 });
  // The server's rule (input >= cache read + cache write) holds for the mapped usage.
  const wire = toWire({ type: "llm_response", sessionId: "s", accountId: "a", model: "m", provider: "anthropic", usage });
  assert.deepEqual(schemaErrors("event", wire), []);
  assert.ok(wire.usage!.input_tokens >= wire.usage!.cache_read_tokens + wire.usage!.cache_write_tokens);
});

test("Anthropic without cache activity, and with null cache fields", () => {
  assert.deepEqual(usageFromAnthropic({ input_tokens: 12, output_tokens: 5 }), {
    inputTokens: 12,
    outputTokens: 5,
    cacheReadTokens: 0,
    cacheWriteTokens: 0,
  });
  assert.deepEqual(usageFromResponse({ usage: { input_tokens: 12, output_tokens: 5, cache_read_input_tokens: null, cache_creation_input_tokens: null } }), {
    inputTokens: 12,
    outputTokens: 5,
    cacheReadTokens: 0,
    cacheWriteTokens: 0,
  });
});

test("the same cache fields read differently per provider convention", () => {
  // 1000 cached of 1200 prompt tokens (OpenAI) vs 200 uncached + 1000 cache reads (Anthropic).
  const openai = usageFromOpenAIChat({ prompt_tokens: 1200, completion_tokens: 1, prompt_tokens_details: { cached_tokens: 1000 } });
  const anthropic = usageFromAnthropic({ input_tokens: 200, output_tokens: 1, cache_read_input_tokens: 1000 });
  assert.deepEqual(openai, anthropic);
});

test("Gemini usageMetadata: thoughts count as output", () => {
  const response = { usageMetadata: { promptTokenCount: 900, cachedContentTokenCount: 512, candidatesTokenCount: 40, thoughtsTokenCount: 60 } };
  assert.deepEqual(usageFromResponse(response, "google"), { inputTokens: 900, outputTokens: 100, cacheReadTokens: 512, cacheWriteTokens: 0 });
});

test("shape detection, with the provider breaking the one tie", () => {
  assert.equal(usageShape({ prompt_tokens: 1 }), "openai_chat");
  assert.equal(usageShape({ input_tokens: 1, cache_read_input_tokens: 0 }), "anthropic");
  assert.equal(usageShape({ input_tokens: 1, input_tokens_details: {} }), "openai_responses");
  assert.equal(usageShape({ input_tokens: 1, output_tokens: 2 }, "anthropic"), "anthropic");
  assert.equal(usageShape({ input_tokens: 1, output_tokens: 2 }, "openai"), "openai_responses");
  assert.equal(usageShape({ foo: 1 }), undefined);
  assert.equal(mapUsage({ foo: 1 }), undefined);
  assert.equal(usageFromResponse("text"), undefined);
  assert.equal(usageFromResponse({ choices: [] }), undefined);
});

test("OpenAI chat stream: usage arrives in the last chunk; role-only chunks carry no output", () => {
  const chunks = [
    { object: "chat.completion.chunk", choices: [{ index: 0, delta: { role: "assistant", content: "" } }], usage: null },
    { object: "chat.completion.chunk", choices: [{ index: 0, delta: { content: "Hel" } }], usage: null },
    { object: "chat.completion.chunk", choices: [{ index: 0, delta: {}, finish_reason: "stop" }], usage: null },
    { object: "chat.completion.chunk", choices: [], usage: { prompt_tokens: 40, completion_tokens: 9, prompt_tokens_details: { cached_tokens: 0 } } },
  ];
  assert.deepEqual(chunks.map(carriesOutput), [false, true, false, false]);
  const tracker = new StreamUsage("openai");
  chunks.forEach((c) => tracker.add(c));
  assert.deepEqual(tracker.usage(), { inputTokens: 40, outputTokens: 9, cacheReadTokens: 0, cacheWriteTokens: 0 });
});

test("Anthropic stream: message_start then cumulative message_delta counts", () => {
  const events = [
    { type: "message_start", message: { id: "m", model: "claude", usage: { input_tokens: 30, cache_read_input_tokens: 1000, cache_creation_input_tokens: 0, output_tokens: 1 } } },
    { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
    { type: "ping" },
    { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Hi" } },
    { type: "content_block_stop", index: 0 },
    { type: "message_delta", delta: { stop_reason: "end_turn" }, usage: { output_tokens: 15 } },
    { type: "message_stop" },
  ];
  assert.deepEqual(events.map(carriesOutput), [false, false, false, true, false, true, true]);
  const tracker = new StreamUsage("anthropic");
  events.forEach((e) => tracker.add(e));
  assert.deepEqual(tracker.usage(), { inputTokens: 1030, outputTokens: 15, cacheReadTokens: 1000, cacheWriteTokens: 0 });
});

test("OpenAI Responses stream: usage in response.completed", () => {
  const events = [
    { type: "response.created", response: { id: "r", usage: null } },
    { type: "response.output_text.delta", delta: "Hi" },
    { type: "response.completed", response: { id: "r", usage: { input_tokens: 20, input_tokens_details: { cached_tokens: 8 }, output_tokens: 3 } } },
  ];
  assert.deepEqual(events.map(carriesOutput), [false, true, true]);
  const tracker = new StreamUsage("openai");
  events.forEach((e) => tracker.add(e));
  assert.deepEqual(tracker.usage(), { inputTokens: 20, outputTokens: 3, cacheReadTokens: 8, cacheWriteTokens: 0 });
});

test("a stream without usage reports none", () => {
  const tracker = new StreamUsage();
  ["a", "b"].forEach((c) => tracker.add(c));
  assert.equal(tracker.usage(), undefined);
  assert.equal(carriesOutput("a"), true);
});
