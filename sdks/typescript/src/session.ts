/**
 * A session of one account: events recorded through it carry its session id, account and
 * operation. Helpers record a user message, a metered LLM call, a tool call, an error, the end.
 */
import type { Tally } from "./client.js";
import type { Attributes, EventFields, SessionEvent, TallyEvent } from "./events.js";
import { newSpanId } from "./ids.js";
import { errorInfo, type MeterCall, type MeterOptions } from "./meter.js";
import type { QuotaCheckRequest, QuotaOptions, QuotaResult } from "./quota.js";
import { uuidv7 } from "./uuid.js";

export interface SessionOptions {
  /** Default: a new UUID v7. */
  sessionId?: string;
  accountId: string;
  /** Default operation of the session's events. */
  operation?: string;
  /** Default trace of the session's events (default: each metered call starts its own). */
  traceId?: string;
  /** Attributes of `session_start`. */
  attributes?: Attributes;
  /** Record `session_start` now (default true); false to continue a session begun elsewhere. */
  start?: boolean;
}

/** Fields a helper lets the caller add to the event it records. */
export type ExtraFields = Omit<Partial<EventFields>, "sessionId" | "accountId">;

export interface ToolOptions extends ExtraFields {
  /** The LLM's id of the tool call, if any. */
  callId?: string;
  /** Recorded as the `content` of `tool_call`. */
  input?: unknown;
  /** Record the tool's return value as the `content` of `tool_result` (default false). */
  captureOutput?: boolean;
}

export class Session {
  readonly sessionId: string;
  readonly accountId: string;
  readonly operation: string | undefined;
  readonly traceId: string | undefined;

  constructor(
    private readonly client: Tally,
    options: SessionOptions,
  ) {
    this.sessionId = options.sessionId || uuidv7();
    this.accountId = options.accountId;
    this.operation = options.operation;
    this.traceId = options.traceId;
    if (options.start ?? true) this.record({ type: "session_start", attributes: options.attributes });
  }

  /** Records any event in this session; returns its id, or `undefined` if it was dropped. */
  record(event: SessionEvent): string | undefined {
    return this.client.record({
      ...event,
      sessionId: event.sessionId || this.sessionId,
      accountId: event.accountId || this.accountId,
      operation: event.operation ?? this.operation,
      traceId: event.traceId ?? this.traceId,
    } as TallyEvent);
  }

  userMessage(content?: unknown, fields: ExtraFields = {}): string | undefined {
    return this.record({ ...fields, type: "user_message", content });
  }

  /** Records an `error` event from a thrown value. */
  error(err: unknown, fields: ExtraFields = {}): string | undefined {
    return this.record({ ...fields, type: "error", status: "error", error: errorInfo(err) });
  }

  end(fields: ExtraFields = {}): string | undefined {
    return this.record({ ...fields, type: "session_end" });
  }

  check(request: Omit<QuotaCheckRequest, "accountId">, options?: QuotaOptions): Promise<QuotaResult> {
    return this.client.check({ ...request, accountId: this.accountId }, options);
  }

  /** `Tally.meter` in this session. */
  meter<T>(
    options: Omit<MeterOptions, "sessionId" | "accountId">,
    call: (context: MeterCall) => T | Promise<T>,
  ): Promise<T> {
    return this.client.meter(
      {
        ...options,
        sessionId: this.sessionId,
        accountId: this.accountId,
        operation: options.operation ?? this.operation,
        traceId: options.traceId ?? this.traceId,
      },
      call,
    );
  }

  /**
   * Runs a tool: records `tool_call`, runs `run`, then records `tool_result` with the duration and
   * `status` ok, or `error` with the error (and rethrows it). Both share one span id.
   */
  async tool<T>(name: string, run: () => T | Promise<T>, options: ToolOptions = {}): Promise<T> {
    const { callId, input, captureOutput, ...fields } = options;
    const tool = { name, callId };
    const spanId = fields.spanId || newSpanId();
    const started = Date.now();
    const startedAt = performance.now();
    this.record({ ...fields, type: "tool_call", tool, spanId, timestamp: started, content: input });
    try {
      const output = await run();
      const elapsed = performance.now() - startedAt;
      this.record({
        ...fields,
        type: "tool_result",
        tool,
        spanId,
        timestamp: started + elapsed,
        durationMs: elapsed,
        status: "ok",
        content: captureOutput ? output : undefined,
      });
      return output;
    } catch (err) {
      const elapsed = performance.now() - startedAt;
      this.record({
        ...fields,
        type: "tool_result",
        tool,
        spanId,
        timestamp: started + elapsed,
        durationMs: elapsed,
        status: "error",
        error: { ...errorInfo(err), stack: undefined },
      });
      throw err;
    }
  }
}
