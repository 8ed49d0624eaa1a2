import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import * as sdk from "../../src/index.js";
import { PACKAGE_DIR, readJson } from "../support/paths.js";
import { expand, loadVectors, matches, plan } from "../support/vectors.js";

test("the version sent in every batch is the package's", () => {
  assert.equal(sdk.SDK_VERSION, readJson<{ version: string }>(join(PACKAGE_DIR, "package.json")).version);
});

test("the package entry point exports the public API", () => {
  for (const name of ["Tally", "Session", "Transport", "QuotaClient", "QuotaExceededError", "TallyDeliveryError", "toWire", "uuidv7", "usageFromResponse", "usageFromAnthropic", "usageFromOpenAIChat", "StreamUsage", "EVENT_TYPES"]) {
    assert.ok(name in sdk, name);
  }
});

test("the vector runner's subset match and placeholders behave as sdk-spec describes", () => {
  assert.ok(matches({ a: 1, b: "*" }, { a: 1, b: [2], c: 3 }));
  assert.ok(!matches({ a: 1 }, { a: 2 }));
  assert.ok(!matches([1], [1, 2]), "arrays must have the same length");
  assert.ok(!matches({ a: null }, {}));
  assert.ok(matches({ a: null }, { a: null }));
  const now = Date.parse("2026-11-22T10:00:00.000Z");
  assert.deepEqual(expand({ t: "{{now-1m}}", f: "{{now+2d}}", r: "{{repeat:ab:3}}" }, now), {
    t: "2026-11-22T09:59:00.000Z",
    f: "2026-11-24T10:00:00.000Z",
    r: "ababab",
  });
  const events = expand("{{events:2}}", now) as Array<{ event_id: string }>;
  assert.deepEqual(events.map((e) => e.event_id), ["00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"]);
});

test("every shared vector has a plan; those that do not apply say why", () => {
  const vectors = loadVectors();
  assert.ok(vectors.length >= 40);
  const kinds = new Map<string, number>();
  for (const vector of vectors) {
    const how = plan(vector, expand(vector.request.body));
    kinds.set(how.kind, (kinds.get(how.kind) ?? 0) + 1);
    if (how.kind === "not_applicable") assert.ok(how.why.length > 10);
  }
  assert.ok((kinds.get("send") ?? 0) >= 40, `send: ${kinds.get("send")}`);
  assert.equal(kinds.get("split"), 1);
  assert.equal(kinds.get("no_key"), 1);
});
