/** A small HTTP server for unit tests: records every request and answers as a test says. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { gunzipSync } from "node:zlib";

export interface Recorded {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  /** The body as received (compressed if it was). */
  raw: Buffer;
  /** The body decompressed and parsed, or undefined if it is not JSON. */
  json: unknown;
  at: number;
}

export type Handler = (request: Recorded, response: ServerResponse, index: number) => void | Promise<void>;

export class FakeServer {
  readonly requests: Recorded[] = [];
  handler: Handler = (request, response) => answerAccepted(request, response);
  private server: Server;

  private constructor() {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const raw = Buffer.concat(chunks);
        let json: unknown;
        try {
          const text = req.headers["content-encoding"] === "gzip" ? gunzipSync(raw) : raw;
          json = JSON.parse(text.toString("utf8"));
        } catch {
          json = undefined;
        }
        const recorded: Recorded = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, raw, json, at: Date.now() };
        this.requests.push(recorded);
        void Promise.resolve(this.handler(recorded, res, this.requests.length - 1)).catch(() => res.destroy());
      });
    });
  }

  static async start(): Promise<FakeServer> {
    const fake = new FakeServer();
    await new Promise<void>((resolve) => fake.server.listen(0, "127.0.0.1", resolve));
    return fake;
  }

  get url(): string {
    const { port } = this.server.address() as AddressInfo;
    return `http://127.0.0.1:${port}`;
  }

  /** Batch requests only (`POST /v1/batch`). */
  batches(): Array<{ batch: Array<Record<string, unknown>>; sent_at: string; sdk: unknown }> {
    return this.requests
      .filter((r) => r.url === "/v1/batch")
      .map((r) => r.json as { batch: Array<Record<string, unknown>>; sent_at: string; sdk: unknown });
  }

  /** Every event posted, in order. */
  events(): Array<Record<string, unknown>> {
    return this.batches().flatMap((b) => b.batch);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export function json(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  response.writeHead(status, { "content-type": "application/json", ...headers });
  response.end(JSON.stringify(body));
}

/** What ingest answers when it accepts every event of the batch. */
export function answerAccepted(request: Recorded, response: ServerResponse): void {
  const batch = (request.json as { batch?: unknown[] } | undefined)?.batch ?? [];
  json(response, 200, { accepted: batch.length, rejected: [] });
}

/** Polls `condition` every 10 ms until it holds, or fails after `timeoutMs`. */
export async function waitFor(condition: () => boolean, timeoutMs = 5000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A port nothing listens on (bound, then released). */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
