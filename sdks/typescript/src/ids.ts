import { randomBytes } from "node:crypto";

/** A W3C trace id: 16 random bytes as 32 lowercase hex characters, never all zero. */
export function newTraceId(): string {
  return nonZeroHex(16);
}

/** A W3C span id: 8 random bytes as 16 lowercase hex characters, never all zero. */
export function newSpanId(): string {
  return nonZeroHex(8);
}

function nonZeroHex(size: number): string {
  for (;;) {
    const hex = randomBytes(size).toString("hex");
    if (/[^0]/.test(hex)) return hex;
  }
}
