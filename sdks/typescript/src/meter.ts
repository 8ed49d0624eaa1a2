/**
 * The metering wrapper: quota check, then the caller's LLM call, timed, with its token usage
 * read from the response (or from the stream's chunks), recorded as `llm_request` and
 * `llm_response` (or `error`) sharing one trace id and span id.
 */
import type { Tally } from "./client.js";
import { QuotaExceededError } from "./errors.js";
import type { Attributes, TokenUsage } from "./events.js";
import { newSpanId, newTraceId } from "./ids.js";
import type { QuotaResult } from "./quota.js";
import { carriesOutput, StreamUsage, usageFromResponse } from "./usage.js";

export interface MeterOptions {
  sessionId: string;
  accountId: string;
  model: string;
  /** `openai`, `anthropic`, ... */
  provider: string;
  operation?: string;
  /** The trace the call belongs to (default: a new one); the call gets its own span. */
  traceId?: string;
  parentSpanId?: string;
  attributes?: Attributes;
  /** Passed to the quota check. */
  estimatedTokens?: number;
  estimatedCostUsd?: number;
  /** Check the quota first; a refusal throws `QuotaExceededError` and the call does not run. */
  checkQuota?: boolean;
  /** Recorded as the `content` of `llm_request` (nothing is recorded unless given). */
  requestContent?: unknown;
  /** Reads the usage from a response of another shape than OpenAI, Anthropic or Gemini. */
  usage?: (response: unknown) => TokenUsage | undefined;
  /** The call's cost in USD, if you compute one; Tally keeps it beside its own. */
  costUsd?: (usage: TokenUsage | undefined, response: unknown) => number | undefined;
}

/** Given to the wrapped call. */
export interface MeterCall {
  traceId: string;
  spanId: string;
  /** The quota answer, when the quota was checked. */
  quota?: QuotaResult;
}

export async function meter<T>(
  client: Tally,
  options: MeterOptions,
  call: (context: MeterCall) => T | Promise<T>,
  checkByDefault: boolean,
): Promise<T> {
  let quota: QuotaResult | undefined;
  if (options.checkQuota ?? checkByDefault) {
    quota = await client.check({
      accountId: options.accountId,
      model: options.model,
      operation: options.operation,
      estimatedTokens: options.estimatedTokens,
      estimatedCostUsd: options.estimatedCostUsd,
    });
    if (!quota.allowed) throw new QuotaExceededError(quota);
  }
  const traceId = options.traceId || newTraceId();
  const spanId = newSpanId();
  const common = {
    sessionId: options.sessionId,
    accountId: options.accountId,
    model: options.model,
    provider: options.provider,
    operation: options.operation,
    traceId,
    spanId,
    parentSpanId: options.parentSpanId,
  };
  const started = Date.now();
  const startedAt = performance.now();
  client.record({
    ...common,
    type: "llm_request",
    timestamp: started,
    attributes: options.attributes,
    content: options.requestContent,
  });

  const fail = (err: unknown): void => {
    client.record({
      ...common,
      type: "error",
      timestamp: started + (performance.now() - startedAt),
      durationMs: performance.now() - startedAt,
      status: "error",
      error: errorInfo(err),
      attributes: options.attributes,
    });
  };
  const succeed = (
    response: unknown,
    usage: TokenUsage | undefined,
    served: string | undefined,
    ttftMs?: number,
    extra?: Attributes,
  ): void => {
    const elapsed = performance.now() - startedAt;
    let costUsd: number | undefined;
    try {
      costUsd = options.costUsd?.(usage, response);
    } catch {
      costUsd = undefined;
    }
    const attributes: Attributes = { ...options.attributes, ...extra };
    if (served && served !== options.model) attributes.response_model = served;
    client.record({
      ...common,
      type: "llm_response",
      timestamp: started + elapsed,
      durationMs: elapsed,
      timeToFirstTokenMs: ttftMs,
      status: "ok",
      usage,
      costUsd,
      attributes,
    });
  };
  const readUsage = (response: unknown): TokenUsage | undefined => {
    try {
      return options.usage ? options.usage(response) : usageFromResponse(response, options.provider);
    } catch {
      return undefined;
    }
  };

  let result: T;
  try {
    result = await call({ traceId, spanId, quota });
  } catch (err) {
    fail(err);
    throw err;
  }
  if (isAsyncIterable(result)) {
    const tracker = new StreamUsage(options.provider);
    let ttftMs: number | undefined;
    let last: unknown;
    let served: string | undefined;
    return instrumentStream(result, {
      chunk(value) {
        if (ttftMs === undefined && carriesOutput(value)) ttftMs = performance.now() - startedAt;
        tracker.add(value);
        served ??= responseModel(value);
        last = value;
      },
      end(cancelled) {
        const usage = options.usage ? readUsage(last) : tracker.usage();
        succeed(last, usage, served, ttftMs, cancelled ? { stream_cancelled: true } : undefined);
      },
      error: fail,
    }) as T;
  }
  succeed(result, readUsage(result), responseModel(result));
  return result;
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === "function"
  );
}

interface StreamHooks {
  chunk(value: unknown): void;
  /** The stream ended; `cancelled` when the consumer stopped early. */
  end(cancelled: boolean): void;
  error(err: unknown): void;
}

/**
 * The same stream object (its other methods and fields pass through), iterated through hooks.
 * The outcome is recorded once, when the first iteration ends, fails or is stopped.
 */
export function instrumentStream<S extends AsyncIterable<unknown>>(stream: S, hooks: StreamHooks): S {
  let settled = false;
  const settle = (fn: () => void): void => {
    if (settled) return;
    settled = true;
    try {
      fn();
    } catch {
      // Recording must not break the caller's stream.
    }
  };
  const iterate = (): AsyncIterator<unknown> => {
    const inner = stream[Symbol.asyncIterator]();
    const wrapped: AsyncIterableIterator<unknown> = {
      async next(...args: [] | [unknown]) {
        let step: IteratorResult<unknown>;
        try {
          step = await inner.next(...args);
        } catch (err) {
          settle(() => hooks.error(err));
          throw err;
        }
        if (step.done) settle(() => hooks.end(false));
        else if (!settled) {
          try {
            hooks.chunk(step.value);
          } catch {
            // as above
          }
        }
        return step;
      },
      async return(value?: unknown) {
        settle(() => hooks.end(true));
        return inner.return ? inner.return(value) : { done: true, value };
      },
      async throw(err?: unknown) {
        settle(() => hooks.error(err));
        if (inner.throw) return inner.throw(err);
        throw err;
      },
      [Symbol.asyncIterator]() {
        return wrapped;
      },
    };
    return wrapped;
  };
  return new Proxy(stream, {
    get(target, property) {
      if (property === Symbol.asyncIterator) return iterate;
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** The `error` of an event from a thrown value: its class name, message and stack. */
export function errorInfo(err: unknown): { type: string; message?: string; stack?: string } {
  if (err instanceof Error) {
    const type = err.constructor?.name && err.constructor.name !== "Error" ? err.constructor.name : err.name || "Error";
    return {
      type: type.slice(0, 128),
      message: err.message ? err.message.slice(0, 8192) : undefined,
      stack: err.stack?.slice(0, 65536),
    };
  }
  return { type: typeof err, message: String(err).slice(0, 8192) };
}

function responseModel(response: unknown): string | undefined {
  if (typeof response !== "object" || response === null) return undefined;
  const r = response as { model?: unknown; message?: { model?: unknown }; response?: { model?: unknown } };
  const model = r.model ?? r.message?.model ?? r.response?.model;
  return typeof model === "string" && model.length > 0 ? model : undefined;
}
