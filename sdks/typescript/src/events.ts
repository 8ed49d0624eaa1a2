/**
 * Events as callers write them (camelCase, typed per event type) and as they travel on the wire
 * (snake_case, DESIGN.md's wire contract), and the conversion between the two.
 */
import { toRfc3339, type TimeInput } from "./time.js";
import { uuidv7 } from "./uuid.js";

/** Every event type of the wire contract. */
export const EVENT_TYPES = [
  "session_start",
  "session_end",
  "user_message",
  "llm_request",
  "llm_response",
  "tool_call",
  "tool_result",
  "knowledge",
  "error",
  "artifact",
  "custom",
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export type AttributeValue = string | number | boolean;
/** A flat map; at most 64 entries, names up to 128 characters, strings up to 1024. */
export type Attributes = Record<string, AttributeValue>;
export type EventStatus = "ok" | "error";

/**
 * Token counts with OpenTelemetry GenAI semantics: `inputTokens` INCLUDES cache reads and cache
 * writes, so it is never smaller than their sum. (`usageFrom*` in `usage.ts` convert provider
 * responses, whose conventions differ, into this.)
 */
export interface TokenUsage {
  inputTokens?: number;
  outputTokens?: number;
  cacheReadTokens?: number;
  cacheWriteTokens?: number;
}

export interface ToolInfo {
  name: string;
  callId?: string;
}

/** What went wrong: a type, a message, or both. */
export type ErrorInfo =
  | { type: string; message?: string; stack?: string }
  | { type?: string; message: string; stack?: string };

/** Fields every event may carry. `eventId` and `timestamp` are filled in when absent. */
export interface EventFields {
  /** A UUID; a new UUID v7 when absent. Resending an event with the same id never counts it twice. */
  eventId?: string;
  /** When it happened; now when absent. Sent as RFC 3339 UTC with milliseconds. */
  timestamp?: TimeInput;
  sessionId: string;
  /** Who the usage is billed to (at most 128 characters). */
  accountId: string;
  traceId?: string;
  spanId?: string;
  parentSpanId?: string;
  /** The product feature (`conversation`, `email_draft`, ...). */
  operation?: string;
  model?: string;
  provider?: string;
  usage?: TokenUsage;
  /** The cost the caller computed, in USD; Tally keeps it beside its own. */
  costUsd?: number;
  durationMs?: number;
  timeToFirstTokenMs?: number;
  status?: EventStatus;
  tool?: ToolInfo;
  error?: ErrorInfo;
  /** Any JSON (redactable per project). */
  content?: unknown;
  attributes?: Attributes;
}

interface LlmFields {
  model: string;
  provider: string;
}

export type SessionStartEvent = EventFields & { type: "session_start" };
export type SessionEndEvent = EventFields & { type: "session_end" };
export type UserMessageEvent = EventFields & { type: "user_message" };
export type LlmRequestEvent = EventFields & LlmFields & { type: "llm_request" };
export type LlmResponseEvent = EventFields & LlmFields & { type: "llm_response" };
export type ToolCallEvent = EventFields & { type: "tool_call"; tool: ToolInfo };
export type ToolResultEvent = EventFields & { type: "tool_result"; tool: ToolInfo };
export type KnowledgeEvent = EventFields & { type: "knowledge" };
export type ErrorEvent = EventFields & { type: "error"; error: ErrorInfo };
export type ArtifactEvent = EventFields & { type: "artifact" };
export type CustomEvent = EventFields & { type: "custom" };

/** An event as the caller writes it: one member per event type, each with its required fields. */
export type TallyEvent =
  | SessionStartEvent
  | SessionEndEvent
  | UserMessageEvent
  | LlmRequestEvent
  | LlmResponseEvent
  | ToolCallEvent
  | ToolResultEvent
  | KnowledgeEvent
  | ErrorEvent
  | ArtifactEvent
  | CustomEvent;

/** `Omit` that keeps a union a union. */
export type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** An event inside a session: the session and account come from the session unless given. */
export type SessionEvent = DistributiveOmit<TallyEvent, "sessionId" | "accountId"> & {
  sessionId?: string;
  accountId?: string;
};

// ---- wire form ---------------------------------------------------------------------------

/** `usage` on the wire: always all four counters. */
export interface WireUsage {
  input_tokens: number;
  output_tokens: number;
  cache_read_tokens: number;
  cache_write_tokens: number;
}

/** One event as `POST /v1/batch` carries it and `GET /v1/sessions/{id}/timeline` returns it. */
export interface WireEvent {
  event_id: string;
  type: EventType;
  timestamp: string;
  session_id: string;
  account_id: string;
  trace_id?: string;
  span_id?: string;
  parent_span_id?: string;
  operation?: string;
  model?: string;
  provider?: string;
  usage?: WireUsage;
  cost_usd?: number;
  duration_ms?: number;
  time_to_first_token_ms?: number;
  status?: EventStatus;
  tool?: { name: string; call_id?: string };
  error?: { type?: string; message?: string; stack?: string };
  content?: unknown;
  attributes?: Attributes;
}

/** The body of `POST /v1/batch`. */
export interface WireBatch {
  batch: unknown[];
  sent_at: string;
  sdk: { name: string; version: string };
}

const STRING_FIELDS = [
  ["traceId", "trace_id"],
  ["spanId", "span_id"],
  ["parentSpanId", "parent_span_id"],
  ["operation", "operation"],
  ["model", "model"],
  ["provider", "provider"],
] as const;

/**
 * The wire form of an event. Fills `event_id` (UUID v7) and `timestamp` (now) when absent,
 * writes times as RFC 3339 UTC with milliseconds, rounds measured durations to whole
 * milliseconds, and leaves out what the server would read as absent (empty strings, `null`,
 * empty objects, an all-zero usage), so what the timeline returns equals what was sent.
 */
export function toWire(event: TallyEvent, now: number = Date.now()): WireEvent {
  const wire: WireEvent = {
    event_id: nonEmpty(event.eventId) ?? uuidv7(),
    type: event.type,
    timestamp: toRfc3339(event.timestamp ?? now),
    session_id: event.sessionId,
    account_id: event.accountId,
  };
  for (const [from, to] of STRING_FIELDS) {
    const value = nonEmpty(event[from]);
    if (value !== undefined) wire[to] = value;
  }
  const usage = wireUsage(event.usage);
  if (usage) wire.usage = usage;
  if (event.costUsd !== undefined && event.costUsd !== null) wire.cost_usd = event.costUsd;
  const duration = wholeMs(event.durationMs);
  if (duration !== undefined) wire.duration_ms = duration;
  const ttft = wholeMs(event.timeToFirstTokenMs);
  if (ttft !== undefined) wire.time_to_first_token_ms = ttft;
  if (event.status) wire.status = event.status;
  if (event.tool) {
    wire.tool = { name: event.tool.name };
    const callId = nonEmpty(event.tool.callId);
    if (callId !== undefined) wire.tool.call_id = callId;
  }
  if (event.error) {
    const error: NonNullable<WireEvent["error"]> = {};
    for (const key of ["type", "message", "stack"] as const) {
      const value = nonEmpty(event.error[key]);
      if (value !== undefined) error[key] = value;
    }
    wire.error = error;
  }
  if (event.content !== undefined && event.content !== null) wire.content = event.content;
  if (event.attributes && Object.keys(event.attributes).length > 0) {
    wire.attributes = { ...event.attributes };
  }
  return wire;
}

function nonEmpty(value: string | undefined | null): string | undefined {
  return typeof value === "string" && value.length > 0 ? value : undefined;
}

function wholeMs(value: number | undefined | null): number | undefined {
  if (typeof value !== "number" || !Number.isFinite(value)) return undefined;
  return Math.max(0, Math.round(value));
}

function wireUsage(usage: TokenUsage | undefined): WireUsage | undefined {
  if (!usage) return undefined;
  const wire: WireUsage = {
    input_tokens: usage.inputTokens ?? 0,
    output_tokens: usage.outputTokens ?? 0,
    cache_read_tokens: usage.cacheReadTokens ?? 0,
    cache_write_tokens: usage.cacheWriteTokens ?? 0,
  };
  const zero = Object.values(wire).every((n) => n === 0);
  return zero ? undefined : wire;
}
