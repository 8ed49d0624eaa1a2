/**
 * The shared test vectors of sdk-spec/vectors: loading, placeholder expansion and the subset
 * match, as the file's `description` defines them, and which of them concern the requests this
 * SDK builds.
 */
import { join } from "node:path";
import type { TallyEvent } from "../../src/events.js";
import { SPEC_DIR, readJson } from "./paths.js";

export interface Vector {
  name: string;
  request: {
    method: string;
    path: string;
    key: "ingest" | "read" | "none" | "invalid";
    body?: unknown;
    raw?: string;
    encoding?: string;
    headers?: Record<string, string>;
  };
  expect: { status: number; body?: unknown };
}

/** The write-path vectors (`batch.json`); the quota and read vectors need a seeded server. */
export function loadVectors(): Vector[] {
  return readJson<{ cases: Vector[] }>(join(SPEC_DIR, "vectors", "batch.json")).cases;
}

/** Expands `{{now±N[dhm]}}`, `{{repeat:C:N}}` and `{{events:N}}`. */
export function expand(value: unknown, now: number = Date.now()): unknown {
  if (typeof value === "string" && value.startsWith("{{") && value.endsWith("}}")) {
    return placeholder(value.slice(2, -2), now);
  }
  if (Array.isArray(value)) return value.map((v) => expand(v, now));
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, expand(v, now)]));
  }
  return value;
}

function placeholder(spec: string, now: number): unknown {
  const time = /^now(?:([+-])(\d+)([dhm]))?$/.exec(spec);
  if (time) {
    const unit = { d: 86_400_000, h: 3_600_000, m: 60_000 }[time[3] as "d" | "h" | "m"] ?? 0;
    const offset = time[1] ? (time[1] === "-" ? -1 : 1) * Number(time[2]) * unit : 0;
    return new Date(now + offset).toISOString();
  }
  const repeat = /^repeat:(.*):(\d+)$/s.exec(spec);
  if (repeat) return repeat[1]!.repeat(Number(repeat[2]));
  const events = /^events:(\d+)$/.exec(spec);
  if (events) {
    return Array.from({ length: Number(events[1]) }, (_, i) => ({
      event_id: `00000000-0000-0000-0000-${(i + 1).toString(16).padStart(12, "0")}`,
      type: "custom",
      timestamp: new Date(now - 60_000).toISOString(),
      session_id: "s",
      account_id: "a",
    }));
  }
  throw new Error(`unknown placeholder {{${spec}}}`);
}

/** `expected` is a subset of `actual`: keys given match, arrays have equal length, "*" is anything. */
export function matches(expected: unknown, actual: unknown): boolean {
  if (expected === "*") return true;
  if (Array.isArray(expected)) {
    return Array.isArray(actual) && expected.length === actual.length && expected.every((e, i) => matches(e, actual[i]));
  }
  if (typeof expected === "object" && expected !== null) {
    if (typeof actual !== "object" || actual === null || Array.isArray(actual)) return false;
    return Object.entries(expected).every(([k, v]) => k in actual && matches(v, (actual as Record<string, unknown>)[k]));
  }
  return expected === actual;
}

/** How a vector is run against this SDK, or why it does not concern it. */
export type Plan =
  /** The vector's events go through the SDK's request building and delivery (`Transport`) as
   * they are; the server must answer as the vector says, and the SDK must report it so. */
  | { kind: "send"; key: "ingest" | "read" | "invalid"; gzip: boolean }
  /** More events than one request may carry: the SDK splits them, so every event is accepted
   * where the vector, sending them in one request, gets 413. */
  | { kind: "split" }
  /** The SDK refuses to be made without a key, so it never sends a request without one. */
  | { kind: "no_key" }
  | { kind: "not_applicable"; why: string };

/** `expandedBody` is the vector's body after `expand`. */
export function plan(vector: Vector, expandedBody: unknown): Plan {
  const { request, expect } = vector;
  if (request.raw !== undefined) {
    return { kind: "not_applicable", why: "a raw body: the SDK serializes every body itself, always a JSON object" };
  }
  const body = expandedBody as { batch?: unknown; sent_at?: unknown } | undefined;
  if (typeof body !== "object" || body === null || Array.isArray(body) || !Array.isArray(body.batch)) {
    return { kind: "not_applicable", why: "not a batch object: the SDK always sends {batch, sent_at, sdk}" };
  }
  if (body.batch.length === 0) {
    return { kind: "not_applicable", why: "an empty batch: the SDK sends no request when nothing is queued" };
  }
  if ("sent_at" in body) {
    return { kind: "not_applicable", why: "a given sent_at: the SDK sets sent_at from its own clock" };
  }
  if (request.headers && Object.keys(request.headers).length > 0) {
    return { kind: "not_applicable", why: "hand-set headers: the SDK sets Content-Type and Content-Encoding itself, matching the body" };
  }
  if (request.encoding !== undefined && request.encoding !== "gzip") {
    return { kind: "not_applicable", why: `${request.encoding} encoding: the SDK compresses with gzip only (Node 20's zlib has no zstd)` };
  }
  if (request.key === "none") return { kind: "no_key" };
  if (expect.status === 413 && (expect.body as { error?: { code?: string } })?.error?.code === "payload_too_large" && body.batch.length > 1000) {
    return { kind: "split" };
  }
  return { kind: "send", key: request.key, gzip: request.encoding === "gzip" };
}

const WIRE_FIELDS = [
  "event_id", "type", "timestamp", "session_id", "account_id", "trace_id", "span_id", "parent_span_id",
  "operation", "model", "provider", "usage", "cost_usd", "duration_ms", "time_to_first_token_ms",
  "status", "tool", "error", "content", "attributes",
];

/**
 * A wire event as the typed API takes it (camelCase), for vectors whose events the typed API
 * can express; fields it has no name for are left out.
 */
export function fromWire(e: Record<string, any>): TallyEvent {
  const typed: Record<string, unknown> = {
    type: e.type,
    eventId: e.event_id,
    timestamp: e.timestamp,
    sessionId: e.session_id,
    accountId: e.account_id,
    traceId: e.trace_id,
    spanId: e.span_id,
    parentSpanId: e.parent_span_id,
    operation: e.operation,
    model: e.model,
    provider: e.provider,
    costUsd: e.cost_usd,
    durationMs: e.duration_ms,
    timeToFirstTokenMs: e.time_to_first_token_ms,
    status: e.status,
    error: e.error,
    content: e.content,
    attributes: e.attributes,
  };
  if (e.usage) {
    typed.usage = {
      inputTokens: e.usage.input_tokens,
      outputTokens: e.usage.output_tokens,
      cacheReadTokens: e.usage.cache_read_tokens,
      cacheWriteTokens: e.usage.cache_write_tokens,
    };
  }
  if (e.tool) typed.tool = { name: e.tool.name, callId: e.tool.call_id };
  return Object.fromEntries(Object.entries(typed).filter(([, v]) => v !== undefined)) as unknown as TallyEvent;
}

/** What the typed API sends for a wire event: the same, less what the server ignores anyway. */
export function typedWire(e: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(e).filter(([k, v]) => WIRE_FIELDS.includes(k) && v !== ""));
}
