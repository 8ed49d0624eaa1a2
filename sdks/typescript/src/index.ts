export { Tally, type TallyOptions, type TallyStats } from "./client.js";
export { Session, type SessionOptions, type ToolOptions, type ExtraFields } from "./session.js";
export { instrumentStream, type MeterOptions, type MeterCall } from "./meter.js";
export {
  QuotaClient,
  parseQuotaResult,
  type QuotaCheckRequest,
  type QuotaLimit,
  type QuotaOptions,
  type QuotaReason,
  type QuotaResult,
  type QuotaStatus,
} from "./quota.js";
export {
  Transport,
  parseRetryAfter,
  type BuiltRequest,
  type DeliveryResult,
  type EventRejection,
  type RejectionCode,
  type RetryInfo,
  type RetryOptions,
  type TransportOptions,
} from "./transport.js";
export { TallyError, TallyDeliveryError, QuotaExceededError, type DeliveryFailure } from "./errors.js";
export {
  EVENT_TYPES,
  toWire,
  type ArtifactEvent,
  type AttributeValue,
  type Attributes,
  type CustomEvent,
  type DistributiveOmit,
  type ErrorEvent,
  type ErrorInfo,
  type EventFields,
  type EventStatus,
  type EventType,
  type KnowledgeEvent,
  type LlmRequestEvent,
  type LlmResponseEvent,
  type SessionEndEvent,
  type SessionEvent,
  type SessionStartEvent,
  type TallyEvent,
  type TokenUsage,
  type ToolCallEvent,
  type ToolInfo,
  type ToolResultEvent,
  type UserMessageEvent,
  type WireBatch,
  type WireEvent,
  type WireUsage,
} from "./events.js";
export {
  carriesOutput,
  mapUsage,
  StreamUsage,
  usageFromAnthropic,
  usageFromGemini,
  usageFromOpenAIChat,
  usageFromOpenAIResponses,
  usageFromResponse,
  usageShape,
  type UsageShape,
} from "./usage.js";
export { uuidv7, uuidv7Timestamp, UuidV7Generator } from "./uuid.js";
export { newSpanId, newTraceId } from "./ids.js";
export { toRfc3339, type TimeInput } from "./time.js";
export { SDK_NAME, SDK_VERSION } from "./version.js";
