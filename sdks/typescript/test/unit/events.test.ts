import assert from "node:assert/strict";
import { test } from "node:test";
import { EVENT_TYPES, toWire, type TallyEvent } from "../../src/events.js";
import { uuidv7Timestamp } from "../../src/uuid.js";
import { schemaErrors } from "../support/schema.js";

const base = { sessionId: "s-1", accountId: "acct-1" };

/** One event of every type, each with the fields its type requires. */
function oneOfEach(): TallyEvent[] {
  return EVENT_TYPES.map((type): TallyEvent => {
    switch (type) {
      case "llm_request":
      case "llm_response":
        return { ...base, type, model: "gpt-4o", provider: "openai" };
      case "tool_call":
      case "tool_result":
        return { ...base, type, tool: { name: "search" } };
      case "error":
        return { ...base, type, error: { message: "boom" } };
      default:
        return { ...base, type };
    }
  });
}

test("every event type builds a wire event the contract's JSON Schema accepts", () => {
  const events = oneOfEach();
  assert.equal(events.length, 11);
  for (const event of events) {
    const wire = toWire(event);
    assert.deepEqual(schemaErrors("event", wire), [], `${event.type}: ${JSON.stringify(wire)}`);
    assert.equal(wire.type, event.type);
    assert.ok(uuidv7Timestamp(wire.event_id) !== undefined, "event_id is a UUID v7");
    assert.match(wire.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  }
});

test("an event with every field maps each to its wire name and stays schema-valid", () => {
  const event: TallyEvent = {
    ...base,
    type: "llm_response",
    eventId: "0193a1b2-0000-7000-8000-0000000000aa",
    timestamp: "2026-11-22T11:00:00.120+01:00",
    traceId: "t",
    spanId: "sp",
    parentSpanId: "p",
    operation: "chat",
    model: "claude-sonnet-4",
    provider: "anthropic",
    usage: { inputTokens: 1200, outputTokens: 300, cacheReadTokens: 1000, cacheWriteTokens: 100 },
    costUsd: 0.0021,
    durationMs: 840.4,
    timeToFirstTokenMs: 120.6,
    status: "ok",
    tool: { name: "search", callId: "c-1" },
    error: { type: "X", message: "m", stack: "s" },
    content: { text: "hi", n: [1, 2] },
    attributes: { tier: "pro", retries: 2, cached: true },
  };
  const wire = toWire(event);
  assert.deepEqual(wire, {
    event_id: "0193a1b2-0000-7000-8000-0000000000aa",
    type: "llm_response",
    timestamp: "2026-11-22T10:00:00.120Z",
    session_id: "s-1",
    account_id: "acct-1",
    trace_id: "t",
    span_id: "sp",
    parent_span_id: "p",
    operation: "chat",
    model: "claude-sonnet-4",
    provider: "anthropic",
    usage: { input_tokens: 1200, output_tokens: 300, cache_read_tokens: 1000, cache_write_tokens: 100 },
    cost_usd: 0.0021,
    duration_ms: 840,
    time_to_first_token_ms: 121,
    status: "ok",
    tool: { name: "search", call_id: "c-1" },
    error: { type: "X", message: "m", stack: "s" },
    content: { text: "hi", n: [1, 2] },
    attributes: { tier: "pro", retries: 2, cached: true },
  });
  assert.deepEqual(schemaErrors("event", wire), []);
});

test("what the server reads as absent is left out, so the timeline returns what was sent", () => {
  const wire = toWire({
    ...base,
    type: "custom",
    operation: "",
    traceId: "",
    usage: { inputTokens: 0, outputTokens: 0 },
    content: null,
    attributes: {},
    costUsd: undefined,
  });
  assert.deepEqual(Object.keys(wire).sort(), ["account_id", "event_id", "session_id", "timestamp", "type"]);
});

test("a partial usage is sent with all four counters", () => {
  const wire = toWire({ ...base, type: "llm_response", model: "m", provider: "p", usage: { outputTokens: 7 } });
  assert.deepEqual(wire.usage, { input_tokens: 0, output_tokens: 7, cache_read_tokens: 0, cache_write_tokens: 0 });
});

test("times given as Date, epoch milliseconds or RFC 3339 with an offset become UTC with milliseconds", () => {
  const at = Date.UTC(2026, 10, 22, 10, 0, 0, 7);
  for (const timestamp of [new Date(at), at, "2026-11-22T12:00:00.007+02:00"]) {
    assert.equal(toWire({ ...base, type: "custom", timestamp }).timestamp, "2026-11-22T10:00:00.007Z");
  }
  // Without a timestamp: now.
  const before = Date.now();
  const now = Date.parse(toWire({ ...base, type: "custom" }).timestamp);
  assert.ok(now >= before && now <= Date.now());
  // A string that is not a time is kept, for the server to name.
  assert.equal(toWire({ ...base, type: "custom", timestamp: "yesterday" }).timestamp, "yesterday");
});

test("the caller's event object is not changed and later changes to it do not reach the wire event", () => {
  const attributes = { a: 1 };
  const event: TallyEvent = { ...base, type: "custom", attributes };
  const wire = toWire(event);
  attributes.a = 2;
  assert.deepEqual(wire.attributes, { a: 1 });
  assert.equal(event.eventId, undefined);
});

test("the schema check used above does refuse a bad event", () => {
  const wire = toWire({ ...base, type: "custom" });
  assert.notDeepEqual(schemaErrors("event", { ...wire, type: "llm_request" }), []);
  assert.notDeepEqual(schemaErrors("event", { ...wire, event_id: "nope" }), []);
});
