import assert from "node:assert/strict";
import { test } from "node:test";
import { UuidV7Generator, uuidv7, uuidv7Timestamp } from "../../src/uuid.js";

const V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test("a v7 id carries its millisecond timestamp, version 7 and variant 10", () => {
  for (const ms of [0, 1, 1_700_000_000_123, 2 ** 40 + 5, 2 ** 48 - 1]) {
    const id = new UuidV7Generator(() => ms).next();
    assert.match(id, V7);
    assert.equal(uuidv7Timestamp(id), ms);
  }
  const before = Date.now();
  const id = uuidv7();
  assert.match(id, V7);
  const at = uuidv7Timestamp(id)!;
  assert.ok(at >= before && at <= Date.now(), `timestamp ${at} not within the call`);
});

test("ids of one generator sort in the order they were made, within a millisecond and across", () => {
  let now = 1_800_000_000_000;
  const gen = new UuidV7Generator(() => now);
  const ids: string[] = [];
  for (let i = 0; i < 20_000; i++) {
    if (i % 5000 === 0) now += 1;
    ids.push(gen.next());
  }
  assert.deepEqual([...ids].sort(), ids);
  assert.equal(new Set(ids).size, ids.length);
});

test("a clock that goes back does not break the order", () => {
  const times = [5000, 5000, 4000, 3000, 5001];
  const gen = new UuidV7Generator(() => times.shift() ?? 6000);
  const ids = Array.from({ length: 6 }, () => gen.next());
  assert.deepEqual([...ids].sort(), ids);
  assert.equal(uuidv7Timestamp(ids[3]!), 5000, "earlier clock readings reuse the last millisecond");
});

test("when the counter runs out within a millisecond, the next millisecond is used", () => {
  // Random bytes of 0xff put the counter at its highest starting value (2047).
  const gen = new UuidV7Generator(() => 1000, (b) => b.fill(0xff));
  const ids = Array.from({ length: 4100 }, () => gen.next());
  assert.deepEqual([...ids].sort(), ids);
  assert.equal(uuidv7Timestamp(ids[0]!), 1000);
  assert.equal(uuidv7Timestamp(ids[4099]!), 1001);
  for (const id of ids) assert.match(id, V7);
});

test("random bits differ between ids", () => {
  const ids = new Set(Array.from({ length: 1000 }, () => uuidv7().slice(19)));
  assert.equal(ids.size, 1000);
});

test("uuidv7Timestamp refuses what is not a v7 id", () => {
  assert.equal(uuidv7Timestamp("0193a1b2-0000-4000-8000-000000000000"), undefined);
  assert.equal(uuidv7Timestamp("not-a-uuid"), undefined);
});
