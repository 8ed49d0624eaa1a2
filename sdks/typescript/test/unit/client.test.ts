import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { Tally, type TallyOptions } from "../../src/client.js";
import type { TallyDeliveryError } from "../../src/errors.js";
import type { EventRejection } from "../../src/transport.js";
import { answerAccepted, closedPort, json, waitFor } from "../support/fake-server.js";
import { fakeIngest } from "../support/fake-ingest.js";

const ingest = fakeIngest({ initialDelayMs: 5, maxDelayMs: 50 });
const client = (options: TallyOptions = {}) => ingest.client(options);

const custom = (i: number) => ({ type: "custom" as const, sessionId: "s", accountId: "a", attributes: { i } });

test("a full batch is sent at once, without waiting for the interval", async () => {
  const tally = client({ maxBatchEvents: 5, flushIntervalMs: 60_000 });
  for (let i = 0; i < 12; i++) tally.record(custom(i));
  await waitFor(() => ingest.server.events().length === 10, 2000, "two full batches");
  assert.deepEqual(ingest.server.batches().map((b) => b.batch.length), [5, 5]);
  assert.equal(tally.stats().queued, 2, "the rest waits for the interval");
  await tally.flush();
  assert.deepEqual(ingest.server.events().map((e) => (e.attributes as { i: number }).i), [...Array(12).keys()]);
});

test("a partial batch is sent once its oldest event is flushIntervalMs old", async () => {
  const tally = client({ maxBatchEvents: 100, flushIntervalMs: 150 });
  const start = Date.now();
  tally.record(custom(0));
  await new Promise((r) => setTimeout(r, 50));
  tally.record(custom(1));
  assert.equal(ingest.server.requests.length, 0);
  await waitFor(() => ingest.server.requests.length === 1, 2000, "the age flush");
  const waited = ingest.server.requests[0]!.at - start;
  assert.ok(waited >= 140 && waited < 1000, `sent after ${waited} ms`);
  assert.equal(ingest.server.events().length, 2);
});

test("batches stay within maxBatchBytes", async () => {
  const tally = client({ maxBatchEvents: 1000, maxBatchBytes: 4096, flushIntervalMs: 60_000 });
  for (let i = 0; i < 20; i++) tally.record({ ...custom(i), content: "x".repeat(900) });
  await tally.flush();
  const sizes = ingest.server.requests.map((r) => Buffer.byteLength(JSON.stringify(r.json)));
  assert.ok(ingest.server.requests.length >= 5, `${ingest.server.requests.length} requests`);
  for (const size of sizes) assert.ok(size <= 4096, `a body of ${size} bytes`);
  assert.equal(ingest.server.events().length, 20);
});

test("flush() resolves once what was queued is delivered; record() returns the event id", async () => {
  ingest.server.handler = (req, res) => void setTimeout(() => answerAccepted(req, res), 100);
  const tally = client({ flushIntervalMs: 60_000 });
  const ids = [tally.record(custom(0)), tally.record(custom(1))];
  await tally.flush();
  assert.equal(tally.stats().accepted, 2);
  assert.deepEqual(ingest.server.events().map((e) => e.event_id), ids);
  await tally.flush(); // nothing queued: resolves at once
});

test("a full queue drops new events and counts them, without throwing or waiting", async () => {
  ingest.server.handler = () => {}; // never answers: the first batch stays in flight
  const errors: TallyDeliveryError[] = [];
  const tally = client({ maxBatchEvents: 2, maxQueueEvents: 5, flushIntervalMs: 60_000, onError: (e) => errors.push(e) });
  tally.record(custom(0));
  tally.record(custom(1));
  await waitFor(() => tally.stats().inFlight === 2, 2000, "the first batch in flight");
  const results = Array.from({ length: 8 }, (_, i) => tally.record(custom(i + 2)));
  assert.equal(results.filter((r) => r !== undefined).length, 5);
  assert.deepEqual(results.slice(5), [undefined, undefined, undefined]);
  const stats = tally.stats();
  assert.equal(stats.dropped, 3);
  assert.equal(stats.queued, 5);
  assert.deepEqual(errors.map((e) => e.reason), ["queue_full"], "one report per episode");
});

test("the queue's byte bound drops too", () => {
  const tally = client({ maxQueueBytes: 4096, flushIntervalMs: 60_000, maxBatchEvents: 1000 });
  let kept = 0;
  for (let i = 0; i < 10; i++) if (tally.record({ ...custom(i), content: "y".repeat(1000) })) kept += 1;
  assert.ok(kept >= 3 && kept <= 4, `${kept} kept`);
  assert.equal(tally.stats().dropped, 10 - kept);
});

test("an event that cannot be serialized is dropped and reported, not thrown", () => {
  const errors: TallyDeliveryError[] = [];
  const tally = client({ onError: (e) => errors.push(e) });
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  assert.equal(tally.record({ ...custom(0), content: circular }), undefined);
  assert.equal(tally.record({ ...custom(0), content: { n: 10n } }), undefined);
  assert.deepEqual(errors.map((e) => e.reason), ["invalid_event", "invalid_event"]);
  assert.equal(tally.stats().dropped, 2);
});

test("an event over maxEventBytes is refused before sending with event_too_large", async () => {
  const rejections: EventRejection[] = [];
  const tally = client({ maxEventBytes: 1000, onRejected: (r) => rejections.push(...r) });
  const id = tally.record({ ...custom(0), eventId: "0193a1b2-0000-7000-8000-000000000070", content: "z".repeat(1000) });
  tally.record(custom(1));
  await tally.flush();
  assert.equal(id, undefined);
  assert.equal(rejections.length, 1);
  assert.equal(rejections[0]!.code, "event_too_large");
  assert.equal(rejections[0]!.eventId, "0193a1b2-0000-7000-8000-000000000070");
  assert.equal(ingest.server.events().length, 1, "its neighbour is sent");
  assert.equal(tally.stats().rejected, 1);
});

test("the server's per-event rejections reach onRejected and the counters", async () => {
  ingest.server.handler = (_req, res) =>
    json(res, 200, { accepted: 2, rejected: [{ index: 1, event_id: "e", code: "too_long", field: "account_id", message: "m" }] });
  const rejections: EventRejection[] = [];
  const tally = client({ onRejected: (r) => rejections.push(...r) });
  for (let i = 0; i < 3; i++) tally.record(custom(i));
  await tally.flush();
  assert.deepEqual(rejections.map((r) => [r.index, r.code, r.field, (r.event as { attributes: { i: number } }).attributes.i]), [[1, "too_long", "account_id", 1]]);
  const stats = tally.stats();
  assert.equal(stats.accepted, 2);
  assert.equal(stats.rejected, 1);
});

test("a callback that throws does not stop delivery", async () => {
  ingest.server.handler = (_req, res) => json(res, 200, { accepted: 0, rejected: [{ index: 0, event_id: null, code: "x", field: null, message: "m" }] });
  const tally = client({
    maxBatchEvents: 1,
    onRejected: () => {
      throw new Error("callback bug");
    },
  });
  tally.record(custom(0));
  tally.record(custom(1));
  await tally.flush();
  assert.equal(ingest.server.requests.length, 2);
});

test("a refused batch (401) is reported once, not retried, and the next batch still goes", async () => {
  ingest.server.handler = (req, res, index) =>
    index === 0 ? json(res, 401, { error: { code: "unauthorized", message: "m" } }) : answerAccepted(req, res);
  const errors: TallyDeliveryError[] = [];
  const tally = client({ maxBatchEvents: 2, onError: (e) => errors.push(e) });
  for (let i = 0; i < 4; i++) tally.record(custom(i));
  await tally.flush();
  assert.equal(ingest.server.requests.length, 2);
  assert.deepEqual(errors.map((e) => [e.reason, e.status, e.code, e.events]), [["refused", 401, "unauthorized", 2]]);
  const stats = tally.stats();
  assert.equal(stats.failed, 2);
  assert.equal(stats.accepted, 2);
});

test("while the server is down events wait and retries are counted; they all go once it is back", async () => {
  let up = false;
  const delivered: unknown[] = [];
  ingest.server.handler = (req, res) => {
    if (!up) return json(res, 503, { error: { code: "unavailable", message: "m" } }, { "retry-after": "0" });
    delivered.push(...(req.json as { batch: Array<{ event_id: string }> }).batch.map((e) => e.event_id));
    answerAccepted(req, res);
  };
  const tally = client({ maxBatchEvents: 3, flushIntervalMs: 10 });
  const ids = Array.from({ length: 9 }, (_, i) => tally.record(custom(i)));
  await waitFor(() => tally.stats().retries >= 3, 3000, "retries");
  assert.equal(delivered.length, 0);
  up = true;
  await tally.flush();
  assert.deepEqual(delivered, ids, "every event once, in order");
  assert.equal(tally.stats().accepted, 9);
  assert.equal(tally.stats().failed, 0);
});

test("close() sends what is queued, then refuses new events", async () => {
  const errors: TallyDeliveryError[] = [];
  const tally = client({ flushIntervalMs: 60_000, onError: (e) => errors.push(e) });
  tally.record(custom(0));
  await tally.close();
  assert.equal(ingest.server.events().length, 1);
  assert.equal(tally.record(custom(1)), undefined);
  assert.deepEqual(errors.map((e) => e.reason), ["closed"]);
  assert.equal(tally.stats().dropped, 1);
});

test("close() waits at most its timeout when Tally is unreachable, and reports what it gave up", async () => {
  const errors: TallyDeliveryError[] = [];
  const tally = client({ endpoint: `http://127.0.0.1:${await closedPort()}`, maxBatchEvents: 2, onError: (e) => errors.push(e) });
  for (let i = 0; i < 5; i++) tally.record(custom(i));
  const started = Date.now();
  await tally.close({ timeoutMs: 300 });
  const took = Date.now() - started;
  assert.ok(took >= 290 && took < 1500, `close took ${took} ms`);
  assert.equal(tally.stats().failed, 5);
  assert.equal(errors.reduce((n, e) => n + (e.reason === "shutdown" ? e.events : 0), 0), 5);
});

test("the constructor needs a key", () => {
  const saved = process.env.TALLY_API_KEY;
  delete process.env.TALLY_API_KEY;
  try {
    assert.throws(() => new Tally({ handleProcessExit: false }), TypeError);
  } finally {
    if (saved !== undefined) process.env.TALLY_API_KEY = saved;
  }
});

// ---- process exit -------------------------------------------------------------------------

const CHILD = join(fileURLToPath(new URL(".", import.meta.url)), "..", "support", "exit-child.js");

interface ChildOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function runChild(mode: string, endpoint: string, onStdout?: (text: string, child: ReturnType<typeof spawn>) => void): Promise<ChildOutcome> {
  const started = Date.now();
  const child = spawn(process.execPath, [CHILD, mode, endpoint], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => {
    stdout += d.toString();
    onStdout?.(stdout, child);
  });
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const killer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  return new Promise((resolve) =>
    child.on("close", (code, signal) => {
      clearTimeout(killer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    }),
  );
}

test("a process that simply ends delivers its queued events first (beforeExit)", async () => {
  const outcome = await runChild("natural", ingest.server.url);
  assert.equal(outcome.code, 0, outcome.stderr);
  assert.equal(ingest.server.events().length, 3);
});

test("an idle client does not keep the process alive", async () => {
  const outcome = await runChild("idle", ingest.server.url);
  assert.equal(outcome.code, 0, outcome.stderr);
  assert.ok(outcome.ms < 5000, `took ${outcome.ms} ms`);
  assert.equal(ingest.server.requests.length, 0);
});

test("SIGTERM: queued events are delivered, then the process ends by the signal", async () => {
  const outcome = await runChild("signal", ingest.server.url, (out, child) => {
    if (out.includes("ready") && !child.killed) child.kill("SIGTERM");
  });
  assert.equal(outcome.signal, "SIGTERM", `code ${outcome.code} ${outcome.stderr}`);
  assert.equal(ingest.server.events().length, 3);
});

test("SIGTERM with the application's own handler: events delivered, the application decides when to end", async () => {
  const outcome = await runChild("signal-app-handler", ingest.server.url, (out, child) => {
    if (out.includes("ready") && !child.killed) child.kill("SIGTERM");
  });
  assert.equal(outcome.signal, null);
  assert.equal(outcome.code, 0, outcome.stderr);
  assert.match(outcome.stdout, /app handler/);
  assert.equal(ingest.server.events().length, 3);
});

test("exit with Tally unreachable waits no longer than shutdownTimeoutMs", async () => {
  const outcome = await runChild("unreachable", `http://127.0.0.1:${await closedPort()}`);
  assert.equal(outcome.code, 0, outcome.stderr);
  assert.match(outcome.stderr, /onError shutdown 3/);
  assert.ok(outcome.ms < 4000, `took ${outcome.ms} ms`);
});
