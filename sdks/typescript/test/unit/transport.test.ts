import assert from "node:assert/strict";
import { after, before, beforeEach, test } from "node:test";
import { gunzipSync } from "node:zlib";
import { parseRetryAfter, Transport, type TransportOptions } from "../../src/transport.js";
import { SDK_NAME, SDK_VERSION } from "../../src/version.js";
import { answerAccepted, closedPort, FakeServer, json } from "../support/fake-server.js";

let server: FakeServer;
before(async () => {
  server = await FakeServer.start();
});
after(() => server.close());
beforeEach(() => {
  server.requests.length = 0;
  server.handler = answerAccepted;
});

function transport(options: Partial<TransportOptions> = {}): Transport {
  return new Transport({
    endpoint: server.url,
    apiKey: "key-1",
    retry: { initialDelayMs: 5, maxDelayMs: 20, maxElapsedMs: 5000 },
    ...options,
  });
}

const events = (n: number) =>
  Array.from({ length: n }, (_, i) => JSON.stringify({ event_id: `id-${i}`, type: "custom", n: i, text: "x".repeat(i % 7) }));

test("the request: events in order and unchanged, sent_at, sdk, headers", async () => {
  const sent = events(3);
  const before = Date.now();
  const result = await transport({ gzipMinBytes: 1 << 20 }).deliver(sent);
  assert.deepEqual(result, { accepted: 3, rejected: [], failed: 0, requests: 1 });
  const [request] = server.requests;
  assert.equal(request!.method, "POST");
  assert.equal(request!.url, "/v1/batch");
  assert.equal(request!.headers.authorization, "Bearer key-1");
  assert.equal(request!.headers["content-type"], "application/json");
  assert.equal(request!.headers["content-encoding"], undefined);
  const body = request!.json as { batch: unknown[]; sent_at: string; sdk: unknown };
  assert.deepEqual(body.batch, sent.map((e) => JSON.parse(e) as unknown));
  assert.deepEqual(body.sdk, { name: SDK_NAME, version: SDK_VERSION });
  const sentAt = Date.parse(body.sent_at);
  assert.ok(sentAt >= before - 1 && sentAt <= Date.now(), body.sent_at);
  assert.match(body.sent_at, /\.\d{3}Z$/);
});

test("bodies from gzipMinBytes up are gzip-compressed, smaller ones are not", async () => {
  const sent = events(50);
  const plainSize = (await transport().build(sent)).jsonBytes;
  await transport({ gzipMinBytes: plainSize }).deliver(sent);
  await transport({ gzipMinBytes: plainSize + 1 }).deliver(sent);
  const [zipped, plain] = server.requests;
  assert.equal(zipped!.headers["content-encoding"], "gzip");
  assert.ok(zipped!.raw.length < plainSize);
  assert.equal(plain!.headers["content-encoding"], undefined);
  assert.equal(plain!.raw.length, plainSize);
  assert.deepEqual(JSON.parse(gunzipSync(zipped!.raw).toString()).batch, (plain!.json as { batch: unknown }).batch);
});

for (const [name, answer] of [
  ["503 with Retry-After", (res: Parameters<typeof json>[0]) => json(res, 503, { error: { code: "unavailable", message: "m" } }, { "retry-after": "0" })],
  ["500", (res: Parameters<typeof json>[0]) => json(res, 500, { error: { code: "internal", message: "m" } })],
  ["429", (res: Parameters<typeof json>[0]) => json(res, 429, { error: { code: "rate_limited", message: "m" } }, { "retry-after": "0" })],
  ["a dropped connection", (res: Parameters<typeof json>[0]) => void res.socket?.destroy()],
] as const) {
  test(`${name} is retried with the very same body until it is accepted`, async () => {
    server.handler = (request, response, index) => (index < 3 ? answer(response) : answerAccepted(request, response));
    const retries: number[] = [];
    const result = await transport({ gzipMinBytes: 0, onRetry: (i) => retries.push(i.attempt) }).deliver(events(4));
    assert.equal(result.accepted, 4);
    assert.equal(result.failed, 0);
    assert.equal(result.requests, 4);
    assert.deepEqual(retries, [1, 2, 3]);
    const bodies = server.requests.map((r) => r.raw.toString("base64"));
    assert.equal(new Set(bodies).size, 1, "every attempt sent identical bytes (same sent_at, same event ids)");
  });
}

test("an attempt that outlasts requestTimeoutMs is retried", async () => {
  server.handler = (request, response, index) => {
    if (index === 0) return; // never answered
    answerAccepted(request, response);
  };
  const result = await transport({ requestTimeoutMs: 100 }).deliver(events(1));
  assert.equal(result.accepted, 1);
  assert.equal(server.requests.length, 2);
});

test("Retry-After is waited out", async () => {
  server.handler = (request, response, index) =>
    index === 0 ? json(response, 503, { error: { code: "unavailable", message: "m" } }, { "retry-after": "1" }) : answerAccepted(request, response);
  const result = await transport().deliver(events(1));
  assert.equal(result.accepted, 1);
  const gap = server.requests[1]!.at - server.requests[0]!.at;
  assert.ok(gap >= 990, `resent after ${gap} ms, Retry-After said 1 s`);
});

for (const status of [400, 401, 403, 415]) {
  test(`${status} is not retried; the batch is reported as refused`, async () => {
    server.handler = (_req, res) => json(res, status, { error: { code: `code_${status}`, message: "no" } });
    const result = await transport().deliver(events(2));
    assert.equal(server.requests.length, 1);
    assert.equal(result.failed, 2);
    assert.equal(result.accepted, 0);
    assert.equal(result.error?.reason, "refused");
    assert.equal(result.error?.status, status);
    assert.equal(result.error?.code, `code_${status}`);
  });
}

test("413 splits the batch in halves until the parts fit; rejection indexes stay the batch's", async () => {
  server.handler = (request, response) => {
    const batch = (request.json as { batch: Array<{ n: number }> }).batch;
    if (batch.length > 3) return json(response, 413, { error: { code: "payload_too_large", message: "m" } });
    const rejected = batch
      .map((event, index) => ({ event, index }))
      .filter(({ event }) => event.n % 4 === 1)
      .map(({ event, index }) => ({ index, event_id: `id-${event.n}`, code: "invalid_value", field: "n", message: "m" }));
    json(response, 200, { accepted: batch.length - rejected.length, rejected });
  };
  const sent = events(10);
  const result = await transport().deliver(sent);
  assert.equal(result.accepted, 10 - 3);
  assert.equal(result.failed, 0);
  assert.deepEqual(
    result.rejected.map((r) => [r.index, r.eventId, (r.event as { n: number }).n]),
    [
      [1, "id-1", 1],
      [5, "id-5", 5],
      [9, "id-9", 9],
    ],
  );
  const posted = server.requests.filter((r) => r.json).flatMap((r) => (r.json as { batch: Array<{ n: number }> }).batch.length <= 3 ? (r.json as { batch: Array<{ n: number }> }).batch.map((e) => e.n) : []);
  assert.deepEqual(posted, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "each event delivered once, in order");
});

test("rejections are handed back with the event they concern", async () => {
  server.handler = (_req, res) =>
    json(res, 200, {
      accepted: 1,
      rejected: [{ index: 1, event_id: null, code: "a_code_from_a_newer_server", field: null, message: "m" }],
    });
  const result = await transport().deliver(events(2));
  assert.equal(result.accepted, 1);
  assert.deepEqual(result.rejected, [
    { index: 1, eventId: null, code: "a_code_from_a_newer_server", field: null, message: "m", event: JSON.parse(events(2)[1]!) as unknown },
  ]);
});

test("retries stop at maxAttempts or maxElapsedMs and the batch is reported", async () => {
  server.handler = (_req, res) => json(res, 503, { error: { code: "unavailable", message: "m" } });
  const byAttempts = await transport({ retry: { initialDelayMs: 1, maxAttempts: 3 } }).deliver(events(2));
  assert.equal(server.requests.length, 3);
  assert.equal(byAttempts.failed, 2);
  assert.equal(byAttempts.error?.reason, "retries_exhausted");
  assert.equal(byAttempts.error?.status, 503);

  const port = await closedPort();
  const started = Date.now();
  const byTime = await new Transport({
    endpoint: `http://127.0.0.1:${port}`,
    apiKey: "k",
    retry: { initialDelayMs: 10, maxDelayMs: 40, maxElapsedMs: 300 },
  }).deliver(events(1));
  assert.equal(byTime.error?.reason, "retries_exhausted");
  assert.ok(byTime.requests > 2, `${byTime.requests} attempts`);
  assert.ok(Date.now() - started < 1000);
});

test("an aborted signal stops the retries at once and reports a shutdown", async () => {
  server.handler = (_req, res) => json(res, 503, { error: { code: "unavailable", message: "m" } }, { "retry-after": "30" });
  const controller = new AbortController();
  const pending = transport({ retry: { maxElapsedMs: 60_000 } }).deliver(events(3), controller.signal);
  while (server.requests.length === 0) await new Promise((r) => setTimeout(r, 5));
  const started = Date.now();
  controller.abort();
  const result = await pending;
  assert.ok(Date.now() - started < 500);
  assert.equal(result.failed, 3);
  assert.equal(result.error?.reason, "shutdown");
});

test("backoff doubles up to its cap, with jitter over its upper half; Retry-After is a floor", () => {
  const low = new Transport({ endpoint: "http://x", apiKey: "k", retry: { initialDelayMs: 100, maxDelayMs: 1000 }, random: () => 0 });
  const high = new Transport({ endpoint: "http://x", apiKey: "k", retry: { initialDelayMs: 100, maxDelayMs: 1000 }, random: () => 0.999999 });
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((a) => low.delay(a)), [50, 100, 200, 400, 500, 500]);
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((a) => high.delay(a)), [100, 200, 400, 800, 1000, 1000]);
  assert.equal(low.delay(1, 2000), 2000);
  assert.equal(high.delay(6, 10), 1000);
});

test("Retry-After as seconds or as an HTTP date", () => {
  const now = Date.parse("2026-11-22T10:00:00Z");
  assert.equal(parseRetryAfter("2", now), 2000);
  assert.equal(parseRetryAfter("Sun, 22 Nov 2026 10:00:05 GMT", now), 5000);
  assert.equal(parseRetryAfter("soon", now), undefined);
  assert.equal(parseRetryAfter(null, now), undefined);
});
