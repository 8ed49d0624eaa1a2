/** A time given as a `Date`, milliseconds since the epoch, or an RFC 3339 string. */
export type TimeInput = Date | number | string;

/**
 * RFC 3339 in UTC with milliseconds (`2026-11-22T10:00:00.120Z`), the form the server stores.
 * A string that does not parse as a time is returned as given, so the server names the problem.
 */
export function toRfc3339(time: TimeInput): string {
  const ms = typeof time === "number" ? time : typeof time === "string" ? Date.parse(time) : time.getTime();
  if (!Number.isFinite(ms)) return typeof time === "string" ? time : String(time);
  return new Date(ms).toISOString();
}
