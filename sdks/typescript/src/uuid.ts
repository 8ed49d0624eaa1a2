/**
 * UUID version 7 (RFC 9562): a 48-bit Unix timestamp in milliseconds, then random bits, so ids
 * sort by the time they were made. Ids made in the same millisecond by one generator stay in
 * order too: the 12 bits after the version hold a counter that starts at a random value below
 * 2048 each new millisecond and counts up (RFC 9562, section 6.2, method 1); when it runs out
 * the generator moves on to the next millisecond.
 */
import { getRandomValues } from "node:crypto";

const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
const MAX_MS = 2 ** 48 - 1;

export class UuidV7Generator {
  private lastMs = -1;
  private counter = 0;

  constructor(
    private readonly clock: () => number = Date.now,
    private readonly random: (bytes: Uint8Array) => void = (b) => void getRandomValues(b),
  ) {}

  /** A new id; never equal to nor smaller than the previous one of this generator. */
  next(): string {
    const bytes = new Uint8Array(16);
    this.random(bytes);
    let ms = Math.min(Math.max(Math.floor(this.clock()), 0), MAX_MS);
    if (ms > this.lastMs) {
      this.lastMs = ms;
      this.counter = ((bytes[6]! & 0x07) << 8) | bytes[7]!; // 11 random bits: room to count
    } else {
      // Same millisecond, or the clock went back: keep counting from the last id.
      this.counter += 1;
      if (this.counter > 0xfff) {
        this.lastMs = Math.min(this.lastMs + 1, MAX_MS);
        this.counter = 0;
      }
      ms = this.lastMs;
    }
    const high = Math.floor(ms / 2 ** 32);
    const low = ms % 2 ** 32;
    bytes[0] = (high >>> 8) & 0xff;
    bytes[1] = high & 0xff;
    bytes[2] = (low >>> 24) & 0xff;
    bytes[3] = (low >>> 16) & 0xff;
    bytes[4] = (low >>> 8) & 0xff;
    bytes[5] = low & 0xff;
    bytes[6] = 0x70 | (this.counter >>> 8); // version 7
    bytes[7] = this.counter & 0xff;
    bytes[8] = 0x80 | (bytes[8]! & 0x3f); // variant 10
    return format(bytes);
  }
}

function format(b: Uint8Array): string {
  let out = "";
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) out += "-";
    out += HEX[b[i]!];
  }
  return out;
}

const shared = new UuidV7Generator();

/** A new UUID v7 string (lowercase, hyphenated). */
export function uuidv7(): string {
  return shared.next();
}

/** The millisecond timestamp inside a UUID v7, or `undefined` if `id` is not one. */
export function uuidv7Timestamp(id: string): number | undefined {
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i.test(id)) {
    return undefined;
  }
  return parseInt(id.slice(0, 8) + id.slice(9, 13), 16);
}
