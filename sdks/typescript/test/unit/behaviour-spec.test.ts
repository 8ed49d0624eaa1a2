/**
 * The client against `sdk-spec/sdk-behaviour.json`, the table every Tally SDK follows: its
 * defaults, the batch caps and what triggers a batch, the queue bound, the backoff, the give-up
 * rule, what each kind of answer leads to, and what `stats()` counts.
 */
import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { join } from "node:path";
import { test } from "node:test";
import { gunzipSync } from "node:zlib";
import { CLIENT_DEFAULTS, type TallyOptions } from "../../src/client.js";
import { Transport, TRANSPORT_DEFAULTS } from "../../src/transport.js";
import { answerAccepted, json, waitFor, type Recorded } from "../support/fake-server.js";
import { fakeIngest } from "../support/fake-ingest.js";
import { readJson, SPEC_DIR } from "../support/paths.js";

interface SdkOption {
  option: string | null;
  unit: string;
}
interface Setting {
  name: string;
  value: number | null;
  unit: string;
  typescript: SdkOption;
}
interface Spec {
  server_limits: { max_batch_events: number; max_body_bytes: number };
  settings: Setting[];
  answers: Array<{ answer: string; outcome: string }>;
  stats: { counters: Array<{ name: string; typescript: string[] }> };
}

const spec = readJson<Spec>(join(SPEC_DIR, "sdk-behaviour.json"));
/** Settings with no option; the backoff test checks them. */
const FIXED = new Set(["retry_multiplier", "retry_jitter"]);

/** A setting's value in the unit this SDK's option takes (null, no limit, is Infinity here). */
function value(name: string): number {
  const setting = spec.settings.find((s) => s.name === name);
  assert.ok(setting, `${name} is in the table`);
  if (setting.value === null) return Number.POSITIVE_INFINITY;
  const [from, to] = [setting.unit, setting.typescript.unit];
  if (from === to) return setting.value;
  if (from === "s" && to === "ms") return setting.value * 1000;
  throw new Error(`${name}: no conversion from ${from} to ${to}`);
}

/** Clients with the defaults, but quick retries unless told otherwise. */
const ingest = fakeIngest({ initialDelayMs: 2, maxDelayMs: 10 });
const client = (options: TallyOptions = {}) => ingest.client(options);

const custom = (i: number) => ({ type: "custom" as const, sessionId: "s", accountId: "a", attributes: { i } });
const bodyOf = (r: Recorded) => (r.headers["content-encoding"] === "gzip" ? gunzipSync(r.raw) : r.raw);
const unavailable = (res: ServerResponse, headers: Record<string, string> = {}) =>
  json(res, 503, { error: { code: "unavailable", message: "m" } }, headers);

test("every default is the table's", () => {
  const defaults: Record<string, number> = { ...CLIENT_DEFAULTS, ...TRANSPORT_DEFAULTS };
  for (const setting of spec.settings) {
    const option = setting.typescript.option;
    if (option === null) {
      assert.ok(FIXED.has(setting.name), `${setting.name} is fixed, and no test here checks it`);
      continue;
    }
    const key = option.replace(/^retry\./, "");
    assert.ok(key in defaults, `${setting.name}: no default for ${option}`);
    assert.equal(defaults[key], value(setting.name), option);
  }
  assert.ok(value("max_batch_events") <= spec.server_limits.max_batch_events);
  assert.ok(value("max_batch_bytes") <= spec.server_limits.max_body_bytes);
});

test("the backoff follows the table", () => {
  const withRandom = (r: number) => new Transport({ endpoint: "http://x", apiKey: "k", random: () => r });
  const [low, high] = [withRandom(0), withRandom(1 - 1e-12)];
  const [first, cap, factor] = [value("retry_initial_delay"), value("retry_max_delay"), value("retry_multiplier")];
  const [jitter, longest] = [value("retry_jitter"), value("max_retry_after")];
  assert.equal(high.delay(1), first);
  assert.equal(low.delay(1), Math.round(first * (1 - jitter)));
  assert.equal(high.delay(2), first * factor);
  assert.equal(high.delay(3), first * factor ** 2);
  assert.equal(high.delay(60), cap);
  assert.equal(low.delay(60), Math.round(cap * (1 - jitter)));
  assert.equal(low.delay(1, first * 3), first * 3, "Retry-After is a floor");
  assert.equal(low.delay(1, longest * 10), longest);
});

test("a batch goes once flush_at events wait, and holds at most max_batch_events", async () => {
  const size = value("max_batch_events");
  assert.equal(value("flush_at"), size, "one option, maxBatchEvents, is both");
  const tally = client({ flushIntervalMs: 60_000 });
  for (let i = 0; i < 2 * size + 7; i++) tally.record(custom(i));
  await waitFor(() => ingest.server.events().length === 2 * size, 5000, "the full batches, without the interval");
  await tally.flush();
  assert.deepEqual(ingest.server.batches().map((b) => b.batch.length), [size, size, 7]);
});

test("a batch body stays within max_batch_bytes, and a full one goes at once", async () => {
  const cap = value("max_batch_bytes");
  const tally = client({ flushIntervalMs: 60_000 });
  for (let i = 0; i < 45; i++) tally.record({ ...custom(i), content: "x".repeat(200_000) });
  await waitFor(() => ingest.server.requests.length >= 1, 5000, "a batch full by its bytes, no flush asked");
  await tally.flush();
  const batches = ingest.server.batches();
  const bodies = ingest.server.requests.map(bodyOf);
  assert.ok(bodies.length >= 3, `${bodies.length} requests`);
  bodies.forEach((body, i) => {
    assert.ok(body.length <= cap, `a body of ${body.length} bytes`);
    const next = batches[i + 1]?.batch[0];
    if (next) assert.ok(body.length + 1 + Buffer.byteLength(JSON.stringify(next)) > cap, "the batch was full: its next event did not fit");
  });
  assert.equal(ingest.server.events().length, 45);
});

test("max_batch_bytes counts the whole body to the byte", async () => {
  // Events of equal size, large enough that three pass the client's smallest maxBatchBytes (1 KiB).
  const sized = (i: number) => ({ ...custom(i), content: "y".repeat(500) });
  const probe = client({ gzipMinBytes: Number.MAX_SAFE_INTEGER });
  for (let i = 0; i < 3; i++) probe.record(sized(i));
  await probe.flush();
  const three = ingest.server.requests[0]!.raw.length; // the envelope, three events, two commas
  for (const [cap, sizes] of [
    [three, [3, 3, 3]],
    [three - 1, [2, 2, 2, 2, 1]],
  ] as const) {
    ingest.server.requests.length = 0;
    const tally = client({ gzipMinBytes: Number.MAX_SAFE_INTEGER, maxBatchBytes: cap, flushIntervalMs: 60_000 });
    for (let i = 0; i < 9; i++) tally.record(sized(i));
    await tally.flush();
    assert.deepEqual(ingest.server.batches().map((b) => b.batch.length), sizes, `cap ${cap}`);
    assert.ok(Math.max(...ingest.server.requests.map((r) => r.raw.length)) <= cap);
  }
});

test("the queue holds max_queue_events and drops the rest", async () => {
  ingest.server.handler = () => {}; // never answers: the first batch stays in flight
  const tally = client({ flushIntervalMs: 60_000 });
  for (let i = 0; i < value("flush_at"); i++) tally.record(custom(i));
  await waitFor(() => tally.stats().inFlight === value("flush_at"), 5000, "a full batch in flight");
  const bound = value("max_queue_events");
  const kept = Array.from({ length: bound + 5 }, (_, i) => tally.record(custom(i)) !== undefined);
  assert.equal(kept.filter(Boolean).length, bound);
  assert.deepEqual(kept.slice(bound), [false, false, false, false, false]);
  assert.equal(tally.stats().dropped, 5);
});

test("no attempt limit unless the table sets one", async () => {
  const limit = value("max_attempts");
  const failures = Number.isFinite(limit) ? limit : 15;
  ingest.server.handler = (req, res, index) => (index < failures ? unavailable(res) : answerAccepted(req, res));
  const result = await new Transport({ endpoint: ingest.server.url, apiKey: "k", retry: { initialDelayMs: 2, maxDelayMs: 10 } }).deliver(['{"n":1}']);
  if (Number.isFinite(limit)) {
    assert.deepEqual([result.failed, result.requests, result.error?.reason], [1, limit, "retries_exhausted"]);
  } else {
    assert.deepEqual([result.accepted, result.requests, result.error], [1, failures + 1, undefined]);
  }
});

test("a batch is given up when its next attempt would start past max_retry_elapsed", async () => {
  ingest.server.handler = (_req, res) => unavailable(res, { "retry-after": "1" });
  const transport = new Transport({ endpoint: ingest.server.url, apiKey: "k", retry: { initialDelayMs: 2, maxDelayMs: 10, maxElapsedMs: 1500 } });
  const started = Date.now();
  const result = await transport.deliver(['{"n":1}']);
  // Attempts at 0 s and 1 s (Retry-After); a third would start at 2 s, past 1.5 s.
  const took = Date.now() - started;
  assert.equal(result.requests, 2);
  assert.ok(took >= 990 && took < 1500, `gave up after ${took} ms`);
  assert.deepEqual([result.failed, result.error?.reason, result.error?.status], [1, "retries_exhausted", 503]);
});

const STATUSES: Record<string, Array<number | "drop">> = {
  "2xx": [200],
  "429": [429],
  "5xx": [500, 502, 503],
  no_answer: ["drop"],
  "413": [413],
  "4xx": [400, 401, 403, 404, 415],
};

test("every kind of answer in the table is tried", () => {
  assert.deepEqual(Object.keys(STATUSES).sort(), spec.answers.map((a) => a.answer).sort());
});

for (const { answer, outcome } of spec.answers) {
  for (const status of STATUSES[answer] ?? []) {
    test(`${status} (${answer}) leads to ${outcome}`, async () => {
      ingest.server.handler = (req, res, index) => {
        const count = (req.json as { batch: unknown[] }).batch.length;
        if (status === "drop") return index === 0 ? void res.socket?.destroy() : answerAccepted(req, res);
        if (status === 200 || (status === 413 && count <= 2) || (status !== 413 && index > 0)) return answerAccepted(req, res);
        json(res, status, { error: { code: "some_code", message: "m" } });
      };
      let errors = 0;
      const tally = client({ maxBatchEvents: 4, onError: () => (errors += 1) });
      for (let i = 0; i < 4; i++) tally.record(custom(i));
      await tally.flush();
      const { accepted, failed, retries } = tally.stats();
      const expected = {
        delivered: [[4], 4, 0, 0],
        retry: [[4, 4], 4, 0, 1],
        split: [[4, 2, 2], 4, 0, 0],
        give_up: [[4], 0, 4, 0],
      }[outcome];
      assert.ok(expected, `an outcome this test knows: ${outcome}`);
      assert.deepEqual([ingest.server.batches().map((b) => b.batch.length), accepted, failed, retries], expected);
      assert.equal(errors, outcome === "give_up" ? 1 : 0);
    });
  }
}

test("stats() has the table's counters, and every record ends in one of them", async () => {
  const counters = spec.stats.counters;
  const tally = client({ maxBatchEvents: 2, flushIntervalMs: 60_000 });
  assert.deepEqual(Object.keys(tally.stats()).sort(), counters.flatMap((c) => c.typescript).sort());
  ingest.server.handler = (req, res, index) => {
    const ids = (req.json as { batch: Array<{ event_id: string }> }).batch.map((e) => e.event_id);
    if (index === 0) json(res, 200, { accepted: 1, rejected: [{ index: 1, event_id: ids[1], code: "too_long", field: "account_id", message: "m" }] });
    else json(res, 400, { error: { code: "invalid_batch", message: "m" } });
  };
  for (let i = 0; i < 4; i++) tally.record(custom(i));
  await tally.close();
  assert.equal(tally.record(custom(4)), undefined);
  const returned = 5;
  const stats = tally.stats() as unknown as Record<string, number>;
  const counted = Object.fromEntries(counters.map((c) => [c.name, c.typescript.reduce((n, field) => n + stats[field]!, 0)]));
  assert.deepEqual(counted, { enqueued: 4, accepted: 1, rejected: 1, dropped: 1, failed: 2, pending: 0, requests: 2, retries: 0 });
  assert.equal(returned, counted.accepted! + counted.rejected! + counted.dropped! + counted.failed! + counted.pending!);
});
