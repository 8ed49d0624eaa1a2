/**
 * Token usage from provider responses, mapped to Tally's semantics: `inputTokens` INCLUDES cache
 * reads and cache writes (OpenTelemetry GenAI).
 *
 * - OpenAI Chat Completions: `prompt_tokens` already includes `prompt_tokens_details.cached_tokens`.
 * - OpenAI Responses: `input_tokens` already includes `input_tokens_details.cached_tokens`.
 * - Anthropic Messages: `input_tokens` EXCLUDES `cache_read_input_tokens` and
 *   `cache_creation_input_tokens`; Tally's input is the sum of the three.
 * - Google Gemini: `promptTokenCount` includes `cachedContentTokenCount`; output is
 *   `candidatesTokenCount` plus `thoughtsTokenCount`.
 */
import type { TokenUsage } from "./events.js";

type Obj = Record<string, unknown>;

function isObj(value: unknown): value is Obj {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function count(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? Math.round(value) : 0;
}

/** OpenAI Chat Completions `usage`. */
export function usageFromOpenAIChat(usage: Obj): TokenUsage {
  const details = isObj(usage.prompt_tokens_details) ? usage.prompt_tokens_details : {};
  return {
    inputTokens: count(usage.prompt_tokens),
    outputTokens: count(usage.completion_tokens),
    cacheReadTokens: count(details.cached_tokens),
    cacheWriteTokens: 0,
  };
}

/** OpenAI Responses API `usage`. */
export function usageFromOpenAIResponses(usage: Obj): TokenUsage {
  const details = isObj(usage.input_tokens_details) ? usage.input_tokens_details : {};
  return {
    inputTokens: count(usage.input_tokens),
    outputTokens: count(usage.output_tokens),
    cacheReadTokens: count(details.cached_tokens),
    cacheWriteTokens: 0,
  };
}

/** Anthropic Messages `usage` (also as sent by Amazon Bedrock and Google Vertex for Claude). */
export function usageFromAnthropic(usage: Obj): TokenUsage {
  const read = count(usage.cache_read_input_tokens);
  const write = count(usage.cache_creation_input_tokens);
  return {
    inputTokens: count(usage.input_tokens) + read + write,
    outputTokens: count(usage.output_tokens),
    cacheReadTokens: read,
    cacheWriteTokens: write,
  };
}

/** Google Gemini `usageMetadata`. */
export function usageFromGemini(meta: Obj): TokenUsage {
  return {
    inputTokens: count(meta.promptTokenCount),
    outputTokens: count(meta.candidatesTokenCount) + count(meta.thoughtsTokenCount),
    cacheReadTokens: count(meta.cachedContentTokenCount),
    cacheWriteTokens: 0,
  };
}

export type UsageShape = "openai_chat" | "openai_responses" | "anthropic" | "gemini";

/**
 * Which convention a usage object follows. `provider` breaks the one tie the fields leave
 * (`input_tokens` without any cache field reads the same either way, so the tie is harmless).
 */
export function usageShape(usage: Obj, provider?: string): UsageShape | undefined {
  if ("prompt_tokens" in usage || "completion_tokens" in usage) return "openai_chat";
  if ("promptTokenCount" in usage || "candidatesTokenCount" in usage) return "gemini";
  if ("cache_read_input_tokens" in usage || "cache_creation_input_tokens" in usage) return "anthropic";
  if ("input_tokens_details" in usage || "output_tokens_details" in usage) return "openai_responses";
  if ("input_tokens" in usage || "output_tokens" in usage) {
    return provider && /anthropic|claude/i.test(provider) ? "anthropic" : "openai_responses";
  }
  return undefined;
}

/** Maps a usage object by its shape. */
export function mapUsage(usage: Obj, provider?: string): TokenUsage | undefined {
  switch (usageShape(usage, provider)) {
    case "openai_chat":
      return usageFromOpenAIChat(usage);
    case "openai_responses":
      return usageFromOpenAIResponses(usage);
    case "anthropic":
      return usageFromAnthropic(usage);
    case "gemini":
      return usageFromGemini(usage);
    default:
      return undefined;
  }
}

/**
 * The usage of a whole (non-streamed) response: `response.usage` (OpenAI, Anthropic) or
 * `response.usageMetadata` (Gemini), or `undefined` when there is none.
 */
export function usageFromResponse(response: unknown, provider?: string): TokenUsage | undefined {
  if (!isObj(response)) return undefined;
  if (isObj(response.usage)) return mapUsage(response.usage, provider);
  if (isObj(response.usageMetadata)) return usageFromGemini(response.usageMetadata);
  if (isObj(response.response) && isObj(response.response.usage)) {
    return mapUsage(response.response.usage, provider); // a Responses API `response.completed` event
  }
  return undefined;
}

/**
 * Follows a stream's chunks: the usage they report, and whether a chunk is the first that
 * carries generated output (for the time to first token).
 *
 * - OpenAI chat chunks: usage in the last chunk (`stream_options: {include_usage: true}`).
 * - OpenAI Responses events: usage in `response.completed` (or `.incomplete` / `.failed`).
 * - Anthropic events: `message_start.message.usage`, then cumulative counts in `message_delta.usage`.
 * - Gemini chunks: cumulative `usageMetadata` on each chunk.
 */
export class StreamUsage {
  private raw: Obj | undefined;
  private shape: UsageShape | undefined;

  constructor(private readonly provider?: string) {}

  add(chunk: unknown): void {
    if (!isObj(chunk)) return;
    const type = typeof chunk.type === "string" ? chunk.type : undefined;
    if (type === "message_start" && isObj(chunk.message) && isObj(chunk.message.usage)) {
      this.set("anthropic", { ...chunk.message.usage });
    } else if (type === "message_delta" && isObj(chunk.usage)) {
      const merged: Obj = { ...(this.shape === "anthropic" ? this.raw : {}) };
      for (const [key, value] of Object.entries(chunk.usage)) {
        if (typeof value === "number") merged[key] = value; // counts in message_delta are cumulative
      }
      this.set("anthropic", merged);
    } else if (type?.startsWith("response.") && isObj(chunk.response) && isObj(chunk.response.usage)) {
      this.set("openai_responses", chunk.response.usage);
    } else if (isObj(chunk.usageMetadata)) {
      this.set("gemini", chunk.usageMetadata);
    } else if (isObj(chunk.usage)) {
      const shape = usageShape(chunk.usage, this.provider);
      if (shape) this.set(shape, chunk.usage);
    }
  }

  private set(shape: UsageShape, raw: Obj): void {
    this.shape = shape;
    this.raw = raw;
  }

  /** The usage seen so far, mapped to Tally's semantics. */
  usage(): TokenUsage | undefined {
    if (!this.raw || !this.shape) return undefined;
    switch (this.shape) {
      case "openai_chat":
        return usageFromOpenAIChat(this.raw);
      case "openai_responses":
        return usageFromOpenAIResponses(this.raw);
      case "anthropic":
        return usageFromAnthropic(this.raw);
      case "gemini":
        return usageFromGemini(this.raw);
    }
  }
}

const PREAMBLE_EVENTS = new Set([
  // Anthropic
  "message_start",
  "content_block_start",
  "content_block_stop",
  "ping",
  // OpenAI Responses
  "response.created",
  "response.in_progress",
  "response.queued",
  "response.output_item.added",
  "response.content_part.added",
]);

/**
 * Whether a stream chunk carries generated output. Chunks of a known shape that only open the
 * stream (role-only deltas, `message_start`, `response.created`, ...) do not; anything else does.
 */
export function carriesOutput(chunk: unknown): boolean {
  if (!isObj(chunk)) return true;
  if (typeof chunk.type === "string") return !PREAMBLE_EVENTS.has(chunk.type);
  if (chunk.object === "chat.completion.chunk" || Array.isArray(chunk.choices)) {
    const choices = Array.isArray(chunk.choices) ? chunk.choices : [];
    return choices.some((choice) => {
      if (!isObj(choice) || !isObj(choice.delta)) return false;
      const d = choice.delta;
      return (
        (typeof d.content === "string" && d.content.length > 0) ||
        (typeof d.refusal === "string" && d.refusal.length > 0) ||
        (typeof d.reasoning_content === "string" && d.reasoning_content.length > 0) ||
        (Array.isArray(d.tool_calls) && d.tool_calls.length > 0) ||
        isObj(d.function_call)
      );
    });
  }
  if ("usageMetadata" in chunk && !("candidates" in chunk)) return false;
  return true;
}
