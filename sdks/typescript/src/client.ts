/**
 * The Tally client: a bounded in-memory queue of events, sent in batches when the queue holds
 * `maxBatchEvents` events (or `maxBatchBytes`) or its oldest event is `flushIntervalMs` old,
 * one batch at a time, with retries. Recording never blocks and never throws: when the queue is
 * full new events are dropped and counted. The defaults are those of every Tally SDK, from
 * `sdk-spec/sdk-behaviour.json`.
 */
import { TallyDeliveryError, type DeliveryFailure } from "./errors.js";
import { toWire, type TallyEvent } from "./events.js";
import { registerForExit, unregisterForExit, type ExitParticipant } from "./exit.js";
import { meter, type MeterCall, type MeterOptions } from "./meter.js";
import { QuotaClient, type QuotaCheckRequest, type QuotaOptions, type QuotaResult } from "./quota.js";
import { Session, type SessionOptions } from "./session.js";
import { ENVELOPE_BYTES, Transport, type DeliveryResult, type EventRejection, type RetryOptions } from "./transport.js";

export interface TallyOptions {
  /** A project key with the `ingest` scope (default: `TALLY_API_KEY`). */
  apiKey?: string;
  /** The ingest base URL (default: `TALLY_ENDPOINT`, else `http://127.0.0.1:8080`). */
  endpoint?: string;
  /** Most events per request, and a batch goes as soon as this many wait (default 500, at most 1000, the server's limit). */
  maxBatchEvents?: number;
  /** Most bytes of a request's JSON body before compression, envelope included (default 4 MiB; the server allows 5 MiB). */
  maxBatchBytes?: number;
  /** Longest an event waits in the queue before its batch is sent (default 1000 ms). */
  flushIntervalMs?: number;
  /** Most events held in the queue; more are dropped and counted (default 10 000). */
  maxQueueEvents?: number;
  /** Most bytes held in the queue; more are dropped and counted (default 32 MiB). */
  maxQueueBytes?: number;
  /** Largest event; a larger one is refused before sending with `event_too_large` (default 256 KiB, the server's default). */
  maxEventBytes?: number;
  /** Requests of at least this many bytes are gzip-compressed (default 1024). */
  gzipMinBytes?: number;
  /** Time limit of one request (default 10 s). */
  requestTimeoutMs?: number;
  retry?: RetryOptions;
  /** How long `close()` and the flush at process exit wait for delivery (default 5 s). */
  shutdownTimeoutMs?: number;
  /** Flush on `beforeExit`, and close on SIGTERM/SIGINT (default true). */
  handleProcessExit?: boolean;
  /** Quota checks: fail open or closed, time limit. */
  quota?: QuotaOptions;
  /** `meter()` checks the quota before the call unless told otherwise (default true). */
  meterChecksQuota?: boolean;
  /** Events the server refused one by one (default: a warning on the console). */
  onRejected?: (rejections: EventRejection[]) => void;
  /** Events dropped or not delivered (default: a warning on the console). */
  onError?: (error: TallyDeliveryError) => void;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof globalThis.fetch;
}

/** Counters since the client was made. */
export interface TallyStats {
  /** Events waiting in the queue. */
  queued: number;
  /** Events in the request being sent (or retried). */
  inFlight: number;
  /** Events taken into the queue. */
  enqueued: number;
  /** Events the server accepted. */
  accepted: number;
  /** Events refused one by one (by the server, or by the client for their size). */
  rejected: number;
  /** Events dropped before the queue (queue full, client closed, not serializable). */
  dropped: number;
  /** Queued events that were not delivered (refused batch, retries exhausted, shutdown). */
  failed: number;
  /** HTTP requests made, retries included. */
  requests: number;
  /** Attempts that were retried. */
  retries: number;
}

interface Queued {
  json: string;
  bytes: number;
  seq: number;
  at: number;
}

const MiB = 1024 * 1024;

/** The client's defaults: the values of `sdk-spec/sdk-behaviour.json`. */
export const CLIENT_DEFAULTS = {
  maxBatchEvents: 500,
  maxBatchBytes: 4 * MiB,
  flushIntervalMs: 1000,
  maxQueueEvents: 10_000,
  maxQueueBytes: 32 * MiB,
  maxEventBytes: 256 * 1024,
  shutdownTimeoutMs: 5000,
} as const;

export class Tally implements ExitParticipant {
  readonly endpoint: string;
  private readonly transport: Transport;
  private readonly quota: QuotaClient;
  private readonly opts: {
    maxBatchEvents: number;
    maxBatchBytes: number;
    flushIntervalMs: number;
    maxQueueEvents: number;
    maxQueueBytes: number;
    maxEventBytes: number;
    shutdownTimeoutMs: number;
    meterChecksQuota: boolean;
  };
  private readonly onRejected: (rejections: EventRejection[]) => void;
  private readonly onError: (error: TallyDeliveryError) => void;
  private readonly handleExit: boolean;

  private queue: Queued[] = [];
  private queuedBytes = 0;
  /** Sequence number of the last event queued, and of the last one done with (sent or given up). */
  private lastSeq = 0;
  private doneSeq = 0;
  private waiters: Array<{ seq: number; resolve: () => void }> = [];
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private abort = new AbortController();
  private closing: Promise<void> | undefined;
  private exitFlush: Promise<void> | undefined;
  private queueFull = false;
  private readonly counters = {
    enqueued: 0,
    accepted: 0,
    rejected: 0,
    dropped: 0,
    failed: 0,
    requests: 0,
    retries: 0,
    inFlight: 0,
  };

  constructor(options: TallyOptions = {}) {
    const apiKey = options.apiKey ?? process.env.TALLY_API_KEY;
    if (!apiKey) throw new TypeError("Tally needs an API key (apiKey or TALLY_API_KEY)");
    this.endpoint = options.endpoint ?? process.env.TALLY_ENDPOINT ?? "http://127.0.0.1:8080";
    this.opts = {
      maxBatchEvents: clamp(options.maxBatchEvents ?? CLIENT_DEFAULTS.maxBatchEvents, 1, 1000),
      maxBatchBytes: Math.max(1024, options.maxBatchBytes ?? CLIENT_DEFAULTS.maxBatchBytes),
      flushIntervalMs: Math.max(0, options.flushIntervalMs ?? CLIENT_DEFAULTS.flushIntervalMs),
      maxQueueEvents: Math.max(1, options.maxQueueEvents ?? CLIENT_DEFAULTS.maxQueueEvents),
      maxQueueBytes: Math.max(1024, options.maxQueueBytes ?? CLIENT_DEFAULTS.maxQueueBytes),
      maxEventBytes: Math.max(1, options.maxEventBytes ?? CLIENT_DEFAULTS.maxEventBytes),
      shutdownTimeoutMs: Math.max(0, options.shutdownTimeoutMs ?? CLIENT_DEFAULTS.shutdownTimeoutMs),
      meterChecksQuota: options.meterChecksQuota ?? true,
    };
    this.onRejected = options.onRejected ?? warnRejected;
    this.onError = options.onError ?? warnError;
    this.transport = new Transport({
      endpoint: this.endpoint,
      apiKey,
      gzipMinBytes: options.gzipMinBytes,
      requestTimeoutMs: options.requestTimeoutMs,
      retry: options.retry,
      fetch: options.fetch,
      onRetry: () => {
        this.counters.retries += 1;
      },
    });
    this.quota = new QuotaClient(this.endpoint, apiKey, options.quota, options.fetch);
    this.handleExit = options.handleProcessExit ?? true;
    if (this.handleExit) registerForExit(this);
  }

  /**
   * Queues an event and returns its `event_id`, or `undefined` when it was dropped (queue full,
   * client closed, not serializable, too large). Never throws, never waits.
   */
  record(event: TallyEvent): string | undefined {
    if (this.closing) {
      this.drop("closed", "the client is closed; event dropped");
      return undefined;
    }
    let id: string;
    let json: string;
    try {
      const wire = toWire(event);
      id = wire.event_id;
      json = JSON.stringify(wire);
    } catch (err) {
      this.drop("invalid_event", `event cannot be serialized: ${err instanceof Error ? err.message : String(err)}`);
      return undefined;
    }
    const bytes = Buffer.byteLength(json, "utf8");
    if (bytes > this.opts.maxEventBytes) {
      this.counters.rejected += 1;
      this.callback(() =>
        this.onRejected([
          {
            index: -1,
            eventId: id,
            code: "event_too_large",
            field: null,
            message: `event is ${bytes} bytes; at most ${this.opts.maxEventBytes} are allowed`,
            event: JSON.parse(json) as unknown,
          },
        ]),
      );
      return undefined;
    }
    if (this.queue.length >= this.opts.maxQueueEvents || this.queuedBytes + bytes > this.opts.maxQueueBytes) {
      this.counters.dropped += 1;
      if (!this.queueFull) {
        this.queueFull = true; // one report per episode, not one per event
        this.report(new TallyDeliveryError("the event queue is full; new events are dropped", "queue_full", 1));
      }
      return undefined;
    }
    this.queueFull = false;
    this.queue.push({ json, bytes, seq: ++this.lastSeq, at: Date.now() });
    this.queuedBytes += bytes;
    this.counters.enqueued += 1;
    if (this.fullBatchWaits()) {
      setImmediate(() => this.kick());
    } else {
      this.arm();
    }
    return id;
  }

  /** A session of an account: its events share the session id (and `session_start` is recorded unless `start: false`). */
  session(options: SessionOptions): Session {
    return new Session(this, options);
  }

  /** Checks the account's quota. Never throws; see `QuotaOptions.failOpen`. */
  check(request: QuotaCheckRequest, options?: QuotaOptions & { signal?: AbortSignal }): Promise<QuotaResult> {
    return this.quota.check(request, options);
  }

  /**
   * Checks the quota, runs the LLM call, and records `llm_request` and `llm_response` (or
   * `error`) with the call's duration, time to first token (streams) and token usage.
   */
  meter<T>(options: MeterOptions, call: (context: MeterCall) => T | Promise<T>): Promise<T> {
    return meter(this, options, call, this.opts.meterChecksQuota);
  }

  /**
   * Sends everything queued so far and resolves once each of those events was delivered or
   * given up. With `timeoutMs`, stops waiting then (delivery goes on).
   */
  async flush(options: { timeoutMs?: number } = {}): Promise<void> {
    const seq = this.lastSeq;
    if (this.doneSeq >= seq) return;
    const done = new Promise<void>((resolve) => this.waiters.push({ seq, resolve }));
    this.kick();
    if (options.timeoutMs === undefined) return done;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, options.timeoutMs)));
    await Promise.race([done, timeout]);
    clearTimeout(timer);
  }

  /**
   * Stops taking events, sends what is queued, and waits for it at most `timeoutMs` (default
   * `shutdownTimeoutMs`); what is still undelivered then is given up and reported.
   */
  close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.closing) {
      this.closing = this.shutdown(options.timeoutMs ?? this.opts.shutdownTimeoutMs);
    }
    return this.closing;
  }

  stats(): TallyStats {
    const { inFlight, ...rest } = this.counters;
    return { queued: this.queue.length, inFlight, ...rest };
  }

  /** @internal Queued or in-flight events. */
  hasPendingWork(): boolean {
    return this.queue.length > 0 || this.running !== undefined;
  }

  /** @internal The flush on `beforeExit`: bounded by `shutdownTimeoutMs`. */
  flushForExit(): Promise<void> {
    if (!this.exitFlush) {
      this.exitFlush = this.bounded(this.opts.shutdownTimeoutMs).finally(() => {
        this.exitFlush = undefined;
      });
    }
    return this.exitFlush;
  }

  private async shutdown(timeoutMs: number): Promise<void> {
    if (this.handleExit) unregisterForExit(this);
    await this.bounded(timeoutMs);
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Flushes; when `timeoutMs` passes first, aborts delivery and gives the rest up. */
  private async bounded(timeoutMs: number): Promise<void> {
    const abort = this.abort;
    // A referenced timer: the process stays up while this waits, and no longer.
    const deadline = setTimeout(() => abort.abort(), timeoutMs);
    try {
      await this.flush();
    } finally {
      clearTimeout(deadline);
      if (abort.signal.aborted) this.abort = new AbortController();
    }
  }

  private arm(): void {
    if (this.timer || this.running || this.queue.length === 0) return;
    const age = Date.now() - this.queue[0]!.at;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.kick();
      },
      Math.max(0, this.opts.flushIntervalMs - age),
    );
    this.timer.unref();
  }

  private kick(): void {
    if (this.running) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.running = this.run().finally(() => {
      this.running = undefined;
      if (this.due()) this.kick();
      else this.arm();
    });
  }

  /** Whether a batch should go now. */
  private due(): boolean {
    const first = this.queue[0];
    if (!first) return false;
    return (
      this.waiters.length > 0 ||
      this.closing !== undefined ||
      this.fullBatchWaits() ||
      Date.now() - first.at >= this.opts.flushIntervalMs
    );
  }

  /** Whether the queue holds a full batch: `maxBatchEvents` events, or a body of `maxBatchBytes`. */
  private fullBatchWaits(): boolean {
    const count = this.queue.length;
    if (count >= this.opts.maxBatchEvents) return true;
    return count > 0 && ENVELOPE_BYTES + this.queuedBytes + (count - 1) >= this.opts.maxBatchBytes;
  }

  private async run(): Promise<void> {
    while (this.due()) {
      const batch = this.take();
      this.counters.inFlight = batch.length;
      let result: DeliveryResult;
      try {
        result = await this.transport.deliver(
          batch.map((q) => q.json),
          this.abort.signal,
        );
      } catch (err) {
        // deliver() does not throw; if it ever does, the batch counts as failed.
        result = {
          accepted: 0,
          rejected: [],
          failed: batch.length,
          requests: 0,
          error: new TallyDeliveryError(String(err), "retries_exhausted", batch.length, undefined, undefined, { cause: err }),
        };
      }
      this.counters.inFlight = 0;
      this.counters.requests += result.requests;
      this.counters.accepted += result.accepted;
      this.counters.rejected += result.rejected.length;
      this.counters.failed += result.failed;
      if (result.rejected.length > 0) this.callback(() => this.onRejected(result.rejected));
      if (result.error) this.report(result.error);
      this.finished(batch[batch.length - 1]!.seq);
    }
    if (this.queue.length === 0) this.finished(this.lastSeq);
  }

  /** The next batch: up to `maxBatchEvents` events and a body of `maxBatchBytes`, at least one event. */
  private take(): Queued[] {
    let count = 0;
    let bytes = ENVELOPE_BYTES;
    for (const item of this.queue) {
      if (count >= this.opts.maxBatchEvents) break;
      const added = item.bytes + (count > 0 ? 1 : 0); // the comma before it
      if (count > 0 && bytes + added > this.opts.maxBatchBytes) break;
      bytes += added;
      count += 1;
    }
    const batch = this.queue.splice(0, count);
    for (const item of batch) this.queuedBytes -= item.bytes;
    return batch;
  }

  private finished(seq: number): void {
    this.doneSeq = Math.max(this.doneSeq, seq);
    const still: typeof this.waiters = [];
    for (const waiter of this.waiters) {
      if (waiter.seq <= this.doneSeq) waiter.resolve();
      else still.push(waiter);
    }
    this.waiters = still;
  }

  private drop(reason: DeliveryFailure, message: string): void {
    this.counters.dropped += 1;
    this.report(new TallyDeliveryError(message, reason, 1));
  }

  private report(error: TallyDeliveryError): void {
    this.callback(() => this.onError(error));
  }

  private callback(fn: () => void): void {
    try {
      fn();
    } catch {
      // A throwing callback must not stop delivery.
    }
  }
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, Math.floor(value)));
}

function warnRejected(rejections: EventRejection[]): void {
  const first = rejections[0];
  if (!first) return;
  console.warn(
    `[tally] ${rejections.length} event(s) refused; first: ${first.code}` +
      `${first.field ? ` (${first.field})` : ""}: ${first.message}`,
  );
}

function warnError(error: TallyDeliveryError): void {
  console.warn(`[tally] ${error.message}`);
}
