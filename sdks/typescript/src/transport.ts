/**
 * Request building and delivery of `POST /v1/batch`: the body, gzip above a size, and retries
 * with exponential backoff and jitter on network errors, 5xx and 429 (honouring `Retry-After`).
 * A retry resends the very same bytes, so the same event ids: the server counts them once.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { gzip as gzipCallback } from "node:zlib";
import { promisify } from "node:util";
import { TallyDeliveryError } from "./errors.js";
import { SDK_NAME, SDK_VERSION } from "./version.js";

const gzip = promisify(gzipCallback);

export interface RetryOptions {
  /** First backoff, before jitter (default 500 ms); it doubles with each attempt. */
  initialDelayMs?: number;
  /** Largest backoff, before jitter (default 30 s). */
  maxDelayMs?: number;
  /** Give a batch up once retrying it would go past this long since its first attempt (default 5 min). */
  maxElapsedMs?: number;
  /** Give a batch up after this many attempts (default: no limit but `maxElapsedMs`). */
  maxAttempts?: number;
  /** Longest `Retry-After` honoured (default 5 min); a longer one is cut to this. */
  maxRetryAfterMs?: number;
}

export interface TransportOptions {
  /** The ingest base URL, e.g. `http://127.0.0.1:8080`. */
  endpoint: string;
  /** A project key with the `ingest` scope. */
  apiKey: string;
  /** Bodies of at least this many bytes are sent gzip-compressed (default 1024). */
  gzipMinBytes?: number;
  /** Time limit of one attempt (default 10 s). */
  requestTimeoutMs?: number;
  retry?: RetryOptions;
  fetch?: typeof globalThis.fetch;
  /** A number in [0, 1) for the jitter (default `Math.random`). */
  random?: () => number;
  /** Told about every attempt that will be retried. */
  onRetry?: (info: RetryInfo) => void;
}

export interface RetryInfo {
  attempt: number;
  delayMs: number;
  status?: number;
  error?: unknown;
}

/** The rejection codes of the contract; newer servers may send others. */
export type RejectionCode =
  | "not_an_object"
  | "missing_field"
  | "invalid_type"
  | "invalid_value"
  | "too_long"
  | "unknown_event_type"
  | "duplicate_event_id"
  | "event_too_large"
  | "timestamp_in_future"
  | "timestamp_too_old"
  | "too_deep"
  | (string & {});

/** One event the server (or the client, for `event_too_large`) refused. */
export interface EventRejection {
  /** Position of the event in the request it was sent in (-1: refused before sending). */
  index: number;
  eventId: string | null;
  code: RejectionCode;
  /** The field at fault, e.g. `usage.input_tokens`; null when the event as a whole is. */
  field: string | null;
  message: string;
  /** The event as it was sent. */
  event: unknown;
}

/** What became of the events of one `deliver` call. */
export interface DeliveryResult {
  /** Events the server accepted (durable in Kafka). */
  accepted: number;
  /** Events the server refused one by one. */
  rejected: EventRejection[];
  /** Events that were not delivered (refused batch, retries exhausted, shutdown). */
  failed: number;
  /** Why the `failed` events were not delivered (the last reason if several). */
  error?: TallyDeliveryError;
  /** HTTP requests made, retries included. */
  requests: number;
}

/** The transport's defaults: the values of `sdk-spec/sdk-behaviour.json`. */
export const TRANSPORT_DEFAULTS = {
  gzipMinBytes: 1024,
  requestTimeoutMs: 10_000,
  initialDelayMs: 500,
  maxDelayMs: 30_000,
  maxElapsedMs: 5 * 60_000,
  maxAttempts: Number.POSITIVE_INFINITY,
  maxRetryAfterMs: 5 * 60_000,
} as const;

/** The body of a batch: the events, already serialized, inside the envelope. */
function batchJson(events: readonly string[], sentAt: Date): string {
  return (
    `{"batch":[${events.join(",")}],"sent_at":${JSON.stringify(sentAt.toISOString())},` +
    `"sdk":${JSON.stringify({ name: SDK_NAME, version: SDK_VERSION })}}`
  );
}

/** Bytes of a batch body around its events (every `sent_at` has the same length). */
export const ENVELOPE_BYTES = Buffer.byteLength(batchJson([], new Date(0)), "utf8");

export interface BuiltRequest {
  url: string;
  headers: Record<string, string>;
  body: Uint8Array;
  /** Size of the JSON before compression. */
  jsonBytes: number;
}

export class Transport {
  private readonly url: string;
  private readonly fetch: typeof globalThis.fetch;
  private readonly retry: Required<RetryOptions>;
  private readonly random: () => number;

  constructor(private readonly options: TransportOptions) {
    this.url = new URL("/v1/batch", options.endpoint).toString();
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.random = options.random ?? Math.random;
    const r = options.retry ?? {};
    this.retry = {
      initialDelayMs: r.initialDelayMs ?? TRANSPORT_DEFAULTS.initialDelayMs,
      maxDelayMs: r.maxDelayMs ?? TRANSPORT_DEFAULTS.maxDelayMs,
      maxElapsedMs: r.maxElapsedMs ?? TRANSPORT_DEFAULTS.maxElapsedMs,
      maxAttempts: r.maxAttempts ?? TRANSPORT_DEFAULTS.maxAttempts,
      maxRetryAfterMs: r.maxRetryAfterMs ?? TRANSPORT_DEFAULTS.maxRetryAfterMs,
    };
  }

  /**
   * The request for a batch of events, each already serialized as JSON. The events go in as
   * given, in order; the envelope adds `sent_at` and `sdk`.
   */
  async build(events: readonly string[], sentAt: Date = new Date()): Promise<BuiltRequest> {
    const plain = Buffer.from(batchJson(events, sentAt), "utf8");
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.options.apiKey}`,
      "content-type": "application/json",
      "user-agent": `${SDK_NAME}/${SDK_VERSION} node/${process.version}`,
    };
    let body: Uint8Array = plain;
    if (plain.length >= (this.options.gzipMinBytes ?? TRANSPORT_DEFAULTS.gzipMinBytes)) {
      body = await gzip(plain);
      headers["content-encoding"] = "gzip";
    }
    return { url: this.url, headers, body, jsonBytes: plain.length };
  }

  /**
   * Posts the events and retries until the server answers, a non-retryable answer comes, the
   * retry budget runs out or `signal` aborts. Never throws. A 413 splits the batch in halves.
   */
  async deliver(events: readonly string[], signal?: AbortSignal): Promise<DeliveryResult> {
    if (events.length === 0) return { accepted: 0, rejected: [], failed: 0, requests: 0 };
    const request = await this.build(events);
    const started = Date.now();
    let requests = 0;
    for (let attempt = 1; ; attempt++) {
      if (signal?.aborted) return this.failedResult(events.length, requests, shutdown(events.length));
      requests += 1;
      let status: number | undefined;
      let retryAfterMs: number | undefined;
      let failure: unknown;
      try {
        const timeout = AbortSignal.timeout(this.options.requestTimeoutMs ?? TRANSPORT_DEFAULTS.requestTimeoutMs);
        const response = await this.fetch(request.url, {
          method: "POST",
          headers: request.headers,
          body: request.body,
          signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
        });
        status = response.status;
        const text = await response.text();
        if (status >= 200 && status < 300) {
          return { ...this.accepted(text, events), requests };
        }
        if (status === 413 && events.length > 1) {
          const half = Math.ceil(events.length / 2);
          const first = await this.deliver(events.slice(0, half), signal);
          const second = await this.deliver(events.slice(half), signal);
          return merge(first, second, half, requests);
        }
        if (status !== 429 && status < 500) {
          const { code, message } = errorBody(text);
          const error = new TallyDeliveryError(
            `Tally refused a batch of ${events.length} events: ${status} ${code ?? ""} ${message ?? ""}`.trim(),
            "refused",
            events.length,
            status,
            code,
          );
          return this.failedResult(events.length, requests, error);
        }
        retryAfterMs = parseRetryAfter(response.headers.get("retry-after"));
      } catch (err) {
        if (signal?.aborted) return this.failedResult(events.length, requests, shutdown(events.length));
        failure = err; // network error or attempt timeout: retried
      }
      const delayMs = this.delay(attempt, retryAfterMs);
      if (attempt >= this.retry.maxAttempts || Date.now() - started + delayMs > this.retry.maxElapsedMs) {
        const error = new TallyDeliveryError(
          `gave up a batch of ${events.length} events after ${attempt} attempts: ` +
            (status !== undefined ? `last answer ${status}` : `last error ${describe(failure)}`),
          "retries_exhausted",
          events.length,
          status,
          undefined,
          { cause: failure },
        );
        return this.failedResult(events.length, requests, error);
      }
      this.options.onRetry?.({ attempt, delayMs, status, error: failure });
      try {
        await sleep(delayMs, undefined, { ref: false, signal });
      } catch {
        return this.failedResult(events.length, requests, shutdown(events.length));
      }
    }
  }

  /** Backoff before attempt `attempt + 1`: exponential, with jitter over its upper half. */
  delay(attempt: number, retryAfterMs?: number): number {
    const cap = Math.min(this.retry.maxDelayMs, this.retry.initialDelayMs * 2 ** (attempt - 1));
    const jittered = cap / 2 + this.random() * (cap / 2);
    if (retryAfterMs === undefined) return Math.round(jittered);
    return Math.round(Math.max(Math.min(retryAfterMs, this.retry.maxRetryAfterMs), jittered));
  }

  private accepted(text: string, events: readonly string[]): Omit<DeliveryResult, "requests"> {
    let body: { accepted?: unknown; rejected?: unknown };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      body = {};
    }
    const rejected: EventRejection[] = [];
    if (Array.isArray(body.rejected)) {
      for (const item of body.rejected as Array<Record<string, unknown>>) {
        const index = typeof item.index === "number" ? item.index : -1;
        rejected.push({
          index,
          eventId: typeof item.event_id === "string" ? item.event_id : null,
          code: String(item.code ?? "unknown"),
          field: typeof item.field === "string" ? item.field : null,
          message: String(item.message ?? ""),
          event: parseOrRaw(events[index]),
        });
      }
    }
    const accepted = typeof body.accepted === "number" ? body.accepted : events.length - rejected.length;
    return { accepted, rejected, failed: 0 };
  }

  private failedResult(count: number, requests: number, error: TallyDeliveryError): DeliveryResult {
    return { accepted: 0, rejected: [], failed: count, error, requests };
  }
}

function shutdown(count: number): TallyDeliveryError {
  return new TallyDeliveryError(`shutdown: ${count} events not delivered`, "shutdown", count);
}

function merge(a: DeliveryResult, b: DeliveryResult, offset: number, requests: number): DeliveryResult {
  return {
    accepted: a.accepted + b.accepted,
    rejected: [...a.rejected, ...b.rejected.map((r) => ({ ...r, index: r.index + offset }))],
    failed: a.failed + b.failed,
    error: b.error ?? a.error,
    requests: requests + a.requests + b.requests,
  };
}

function parseOrRaw(json: string | undefined): unknown {
  if (json === undefined) return undefined;
  try {
    return JSON.parse(json);
  } catch {
    return json;
  }
}

function errorBody(text: string): { code?: string; message?: string } {
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    return {
      code: typeof body.error?.code === "string" ? body.error.code : undefined,
      message: typeof body.error?.message === "string" ? body.error.message : undefined,
    };
  } catch {
    return { message: text.slice(0, 200) };
  }
}

/** `Retry-After` as milliseconds: delay-seconds or an HTTP date. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  return Number.isFinite(at) ? Math.max(0, at - now) : undefined;
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as { cause?: unknown }).cause;
    return cause instanceof Error ? `${err.message} (${cause.message})` : err.message;
  }
  return String(err);
}
