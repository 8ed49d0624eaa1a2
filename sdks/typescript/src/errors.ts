import type { QuotaResult } from "./quota.js";

/** Base class of every error this package reports. */
export class TallyError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Why events did not reach Tally. */
export type DeliveryFailure =
  /** The server refused the whole batch with a 4xx other than 429 (bad key, bad body, ...). */
  | "refused"
  /** Retries on network errors, 5xx or 429 went on past `retry.maxElapsedMs` or `maxAttempts`. */
  | "retries_exhausted"
  /** `close()` or process exit gave up waiting (`shutdownTimeoutMs`). */
  | "shutdown"
  /** The queue was full (`maxQueueEvents` / `maxQueueBytes`); new events are dropped. */
  | "queue_full"
  /** The event could not be serialized, or is larger than `maxEventBytes`. */
  | "invalid_event"
  /** The client was closed before the event was recorded. */
  | "closed";

/** Events that were dropped or not delivered; passed to the `onError` callback. */
export class TallyDeliveryError extends TallyError {
  constructor(
    message: string,
    readonly reason: DeliveryFailure,
    /** How many events it concerns. */
    readonly events: number,
    /** The HTTP status and error code of the last answer, when there was one. */
    readonly status?: number,
    readonly code?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Thrown by `meter()` when the quota check refused the call; the LLM call did not run. */
export class QuotaExceededError extends TallyError {
  constructor(readonly result: QuotaResult) {
    super(`quota check refused the call: ${result.reason ?? "not allowed"}`);
  }
}
