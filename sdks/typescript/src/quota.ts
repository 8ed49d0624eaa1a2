/**
 * `POST /v1/quota/check`: may this account make this call now? The answer is typed; fields and
 * reasons this version does not know are kept (`raw`, and `reason`/`status` as strings).
 * When Tally cannot answer in time the policy decides: fail open (allow) or fail closed (refuse).
 */

export interface QuotaCheckRequest {
  accountId: string;
  model?: string;
  operation?: string;
  estimatedTokens?: number;
  estimatedCostUsd?: number;
}

export type QuotaStatus = "ok" | "warning" | "critical" | "exceeded";

export type QuotaReason =
  | "tokens_per_day_exceeded"
  | "tokens_per_month_exceeded"
  | "cost_per_month_exceeded"
  | "tokens_per_hour_exceeded"
  | "requests_per_minute_exceeded"
  | "tokens_per_minute_exceeded"
  | "tokens_per_request_exceeded"
  | "model_not_allowed"
  | "operation_not_in_plan"
  | "quota_view_stale"
  | "quota_account_cap"
  /** Set by the client when Tally did not answer (see `source`). */
  | "quota_unavailable"
  | (string & {});

export interface QuotaLimit {
  /** e.g. `tokens_per_day`, `requests_per_minute`, `cost_per_month`. */
  name: string;
  window: string;
  /** `tokens`, `requests`, `usd`, ... (null when the server does not say). */
  unit: string | null;
  limit: number | null;
  used: number | null;
  remaining: number | null;
  percentUsed: number | null;
  /** This limit's own status (`ok`, `warning`, ...), when the server sends one. */
  status: QuotaStatus | (string & {}) | null;
  /** RFC 3339, or null when the limit has no reset. */
  resetsAt: string | null;
}

export interface QuotaResult {
  allowed: boolean;
  reason: QuotaReason | null;
  status: QuotaStatus | (string & {});
  plan: string | null;
  limits: QuotaLimit[];
  requiresUpgrade: boolean;
  /** The server's quota view was older than it should be. */
  stale: boolean;
  /** `X-Quota-Limit`, `X-Quota-Remaining`, `X-Quota-Reset` of the tightest limit, as sent. */
  headers: { limit: string | null; remaining: string | null; reset: string | null };
  /** `server`: Tally answered. `fail_open` / `fail_closed`: it did not, and the policy decided. */
  source: "server" | "fail_open" | "fail_closed";
  /** Why Tally did not answer, when it did not. */
  error?: Error;
  /** The answer's JSON as received. */
  raw?: unknown;
}

export interface QuotaOptions {
  /** When Tally is unreachable, slow or answers an error: allow (true, the default) or refuse. */
  failOpen?: boolean;
  /** Time limit of a check (default 500 ms). */
  timeoutMs?: number;
}

export class QuotaClient {
  private readonly url: string;

  constructor(
    endpoint: string,
    private readonly apiKey: string,
    private readonly options: QuotaOptions = {},
    private readonly fetch: typeof globalThis.fetch = globalThis.fetch.bind(globalThis),
  ) {
    this.url = new URL("/v1/quota/check", endpoint).toString();
  }

  /** Never throws: an unreachable Tally yields the fail-open or fail-closed result. */
  async check(request: QuotaCheckRequest, options: QuotaOptions & { signal?: AbortSignal } = {}): Promise<QuotaResult> {
    const failOpen = options.failOpen ?? this.options.failOpen ?? true;
    const timeout = AbortSignal.timeout(options.timeoutMs ?? this.options.timeoutMs ?? 500);
    const body: Record<string, unknown> = { account_id: request.accountId };
    if (request.model) body.model = request.model;
    if (request.operation) body.operation = request.operation;
    if (request.estimatedTokens !== undefined) body.estimated_tokens = Math.max(0, Math.round(request.estimatedTokens));
    if (request.estimatedCostUsd !== undefined) body.estimated_cost_usd = request.estimatedCostUsd;
    try {
      const response = await this.fetch(this.url, {
        method: "POST",
        headers: { authorization: `Bearer ${this.apiKey}`, "content-type": "application/json" },
        body: JSON.stringify(body),
        signal: options.signal ? AbortSignal.any([options.signal, timeout]) : timeout,
      });
      const text = await response.text();
      if (response.status !== 200) {
        throw new Error(`quota check answered ${response.status}: ${text.slice(0, 200)}`);
      }
      return parseQuotaResult(JSON.parse(text), response.headers);
    } catch (err) {
      return fallback(failOpen, err instanceof Error ? err : new Error(String(err)));
    }
  }
}

/** Reads a check answer; missing or mistyped fields get safe values (`allowed` must be a boolean). */
export function parseQuotaResult(json: unknown, headers?: Headers): QuotaResult {
  if (typeof json !== "object" || json === null || typeof (json as { allowed?: unknown }).allowed !== "boolean") {
    throw new Error("quota check answer has no boolean `allowed`");
  }
  const body = json as Record<string, unknown>;
  const limits = Array.isArray(body.limits) ? body.limits : [];
  return {
    allowed: body.allowed as boolean,
    reason: typeof body.reason === "string" ? body.reason : null,
    status: typeof body.status === "string" ? body.status : body.allowed ? "ok" : "exceeded",
    plan: typeof body.plan === "string" ? body.plan : null,
    limits: limits
      .filter((l): l is Record<string, unknown> => typeof l === "object" && l !== null)
      .map((l) => ({
        name: String(l.name ?? ""),
        window: String(l.window ?? ""),
        unit: typeof l.unit === "string" ? l.unit : null,
        limit: numberOrNull(l.limit),
        used: numberOrNull(l.used),
        remaining: numberOrNull(l.remaining),
        percentUsed: numberOrNull(l.percent_used),
        status: typeof l.status === "string" ? l.status : null,
        resetsAt: typeof l.resets_at === "string" ? l.resets_at : null,
      })),
    requiresUpgrade: body.requires_upgrade === true,
    stale: body.stale === true,
    headers: {
      limit: headers?.get("x-quota-limit") ?? null,
      remaining: headers?.get("x-quota-remaining") ?? null,
      reset: headers?.get("x-quota-reset") ?? null,
    },
    source: "server",
    raw: json,
  };
}

function numberOrNull(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function fallback(failOpen: boolean, error: Error): QuotaResult {
  return {
    allowed: failOpen,
    reason: "quota_unavailable",
    status: failOpen ? "ok" : "exceeded",
    plan: null,
    limits: [],
    requiresUpgrade: false,
    stale: false,
    headers: { limit: null, remaining: null, reset: null },
    source: failOpen ? "fail_open" : "fail_closed",
    error,
  };
}
