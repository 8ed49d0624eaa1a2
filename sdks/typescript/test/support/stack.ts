/**
 * A private Tally for the end-to-end tests: the real `tally-aggregator` and `tally-ingest`
 * binaries on the running local Kafka and ClickHouse, with their own topics, database, consumer
 * group and freshly generated project keys. `stop()` ends both and removes the topics and the
 * database.
 *
 * Environment (all optional): TALLY_BIN_DIR (else $CARGO_TARGET_DIR/debug, target/debug in
 * the repository, ~/.cache/tally/target/debug), TALLY_TEST_KAFKA (127.0.0.1:9092),
 * TALLY_TEST_CLICKHOUSE (http://127.0.0.1:8123), TALLY_KAFKA_LIBS (else
 * $TALLY_STATE_DIR/kafka-libs, .tally/kafka-libs in the repository).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, closeSync } from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_DIR } from "./paths.js";

/** The [quota] section both services read, after their own file. */
const QUOTA_CONFIG = join(REPO_DIR, "deploy/local/quota.toml");

export const KAFKA = process.env.TALLY_TEST_KAFKA ?? "127.0.0.1:9092";
export const CLICKHOUSE = process.env.TALLY_TEST_CLICKHOUSE ?? "http://127.0.0.1:8123";

export function binDir(): string {
  const candidates = [
    process.env.TALLY_BIN_DIR,
    process.env.CARGO_TARGET_DIR && join(process.env.CARGO_TARGET_DIR, "debug"),
    join(REPO_DIR, "target", "debug"),
    join(homedir(), ".cache", "tally", "target", "debug"),
  ].filter((d): d is string => Boolean(d));
  const found = candidates.find((d) => existsSync(join(d, "tally-ingest")) && existsSync(join(d, "tally-aggregator")));
  if (!found) {
    throw new Error(`tally-ingest and tally-aggregator not found in ${candidates.join(", ")}: build them first (make test does)`);
  }
  return found;
}

function kafkaLibs(): string {
  const state = process.env.TALLY_STATE_DIR ?? join(REPO_DIR, ".tally");
  return process.env.TALLY_KAFKA_LIBS ?? join(state, "kafka-libs");
}

/** A port free at the time of asking. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (typeof address !== "object" || address === null) throw new Error("no port");
  return address.port;
}

export async function waitUntil<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs: number,
  intervalMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not reached in ${timeoutMs} ms${last ? ` (${String(last)})` : ""}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

async function httpStatus(url: string): Promise<number | undefined> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await response.arrayBuffer();
    return response.status;
  } catch {
    return undefined;
  }
}

/** Runs a statement on ClickHouse over HTTP; returns the answer's text. */
export async function clickhouse(sql: string): Promise<string> {
  const response = await fetch(CLICKHOUSE, { method: "POST", body: sql, signal: AbortSignal.timeout(30_000) });
  const text = await response.text();
  if (!response.ok) throw new Error(`ClickHouse ${response.status}: ${text}`);
  return text;
}

/** Runs one of Kafka's command-line tools (from the jars the local stack installed). */
function kafkaTool(tool: string, args: string[]): { status: number | null; output: string } {
  const run = spawnSync("java", ["-cp", join(kafkaLibs(), "*"), tool, "--bootstrap-server", KAFKA, ...args], {
    encoding: "utf8",
    timeout: 60_000,
  });
  return { status: run.status, output: `${run.stdout ?? ""}${run.stderr ?? ""}` };
}

/** Sum of the end offsets of a topic's partitions: every record ever written to it. */
export function topicEndOffsets(topic: string): number {
  const { status, output } = kafkaTool("org.apache.kafka.tools.GetOffsetShell", ["--topic", topic]);
  if (status !== 0) throw new Error(`GetOffsetShell failed: ${output}`);
  return output
    .split("\n")
    .map((line) => /^[^:]+:\d+:(\d+)$/.exec(line.trim()))
    .reduce((sum, m) => sum + (m ? Number(m[1]) : 0), 0);
}

export interface Keys {
  /** Scope `ingest`. */
  ingest: string;
  /** Scope `read`. */
  read: string;
}

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

export class Stack {
  readonly name = randomBytes(6).toString("hex");
  readonly project = `sdk-ts-${this.name}`;
  readonly database = `tally_test_ts_${this.name}`;
  readonly keys: Keys = {
    ingest: `tally_test_${randomBytes(16).toString("hex")}`,
    read: `tally_test_${randomBytes(16).toString("hex")}`,
  };
  /** Every topic of the Kafka config, each with a private name: `events_topic` → name. */
  readonly topics: Record<string, string> = {};
  /** The effective ingest configuration (`tally-ingest --print-config`). */
  ingestConfig: Record<string, any> = {};
  ingestUrl = "";
  aggregatorUrl = "";
  private readonly dir = mkdtempSync(join(tmpdir(), "tally-sdk-ts-"));
  private readonly bin = binDir();
  private ingestPort = 0;
  private ingest: ChildProcess | undefined;
  private aggregator: ChildProcess | undefined;
  private readonly onExit = () => this.killAll();

  static async start(): Promise<Stack> {
    const stack = new Stack();
    process.once("exit", stack.onExit);
    try {
      await stack.boot();
    } catch (err) {
      await stack.stop();
      throw err;
    }
    return stack;
  }

  /** The environment both services get: private topics, database, group. */
  private env(listen: string): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      RUST_LOG: "warn",
      TALLY_LISTEN: listen,
      TALLY_KAFKA__BROKERS: KAFKA,
      TALLY_CLICKHOUSE__URL: CLICKHOUSE,
      TALLY_CLICKHOUSE__DATABASE: this.database,
    };
    for (const [key, topic] of Object.entries(this.topics)) env[`TALLY_KAFKA__${key.toUpperCase()}`] = topic;
    return env;
  }

  private async boot(): Promise<void> {
    const printed = spawnSync(join(this.bin, "tally-ingest"), ["--print-config"], { encoding: "utf8", env: {} });
    if (printed.status !== 0) throw new Error(`tally-ingest --print-config: ${printed.stderr}`);
    this.ingestConfig = JSON.parse(printed.stdout) as Record<string, any>;
    for (const key of Object.keys(this.ingestConfig.kafka ?? {})) {
      if (key.endsWith("_topic")) this.topics[key] = `tally.test.ts-${this.name}.${key.replace(/_topic$/, "")}`;
    }

    // The aggregator applies the migrations and creates the topics, so it goes first.
    const aggregatorPort = await freePort();
    this.aggregatorUrl = `http://127.0.0.1:${aggregatorPort}`;
    this.aggregator = this.spawn("aggregator", [join(REPO_DIR, "deploy/local/aggregator.toml"), QUOTA_CONFIG], {
      ...this.env(`127.0.0.1:${aggregatorPort}`),
      TALLY_GROUP_ID: `tally-test-ts-${this.name}`,
      TALLY_KAFKA__EVENTS_PARTITIONS: "3",
      TALLY_BATCH_MAX_WAIT_MS: "50",
      TALLY_MAX_RETRY_BACKOFF_MS: "1000",
    });
    await this.waitHttp("aggregator", `${this.aggregatorUrl}/healthz`, this.aggregator, 90_000);

    const base = readFileSync(join(REPO_DIR, "deploy/local/ingest.toml"), "utf8");
    const config =
      `${base}\n[[projects]]\nid = "${this.project}"\n` +
      `keys = [{ sha256 = "${sha256(this.keys.ingest)}", scopes = ["ingest"] }, ` +
      `{ sha256 = "${sha256(this.keys.read)}", scopes = ["read"] }]\n`;
    writeFileSync(join(this.dir, "ingest.toml"), config);
    this.ingestPort = await freePort();
    this.ingestUrl = `http://127.0.0.1:${this.ingestPort}`;
    await this.startIngest();
  }

  /** Starts ingest (again) on its port and waits until it is ready. */
  async startIngest(): Promise<void> {
    this.ingest = this.spawn("ingest", [join(this.dir, "ingest.toml"), QUOTA_CONFIG], {
      ...this.env(`127.0.0.1:${this.ingestPort}`),
      TALLY_WORKERS: "2",
      TALLY_SHUTDOWN_TIMEOUT_SECS: "5",
      TALLY_PRODUCER__RETRY_AFTER_SECS: "1",
    });
    await this.waitHttp("ingest", `${this.ingestUrl}/readyz`, this.ingest, 60_000);
  }

  /** SIGKILL: no shutdown, no flush, in-flight requests cut off. */
  async killIngest(): Promise<void> {
    const child = this.ingest;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
  }

  private spawn(service: "ingest" | "aggregator", config: string[], env: NodeJS.ProcessEnv): ChildProcess {
    const log = openSync(join(this.dir, `${service}.log`), "a");
    const child = spawn(join(this.bin, `tally-${service}`), config.flatMap((file) => ["--config", file]), {
      env,
      stdio: ["ignore", "ignore", log],
    });
    closeSync(log);
    return child;
  }

  private async waitHttp(service: string, url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
    await waitUntil(
      `${service} ready at ${url}`,
      async () => {
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(`${service} exited (${child.exitCode ?? child.signalCode}): ${this.log(service)}`);
        }
        return (await httpStatus(url)) === 200 ? true : undefined;
      },
      timeoutMs,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${this.log(service)}`);
    });
  }

  /** The last lines of a service's log. */
  log(service: "ingest" | "aggregator" | string): string {
    try {
      return readFileSync(join(this.dir, `${service}.log`), "utf8").split("\n").slice(-20).join("\n");
    } catch {
      return "";
    }
  }

  /** `GET path` on ingest with a key; the status and the JSON body. */
  async get(path: string, key: string): Promise<{ status: number; body: any }> {
    const response = await fetch(`${this.ingestUrl}${path}`, {
      headers: { authorization: `Bearer ${key}` },
      signal: AbortSignal.timeout(10_000),
    });
    const text = await response.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: response.status, body };
  }

  /** An aggregator metric summed over its series; `label` (e.g. `outcome="resend"`) picks some. */
  async aggregatorMetric(name: string, label?: string): Promise<number> {
    const text = await (await fetch(`${this.aggregatorUrl}/metrics`)).text();
    let sum = 0;
    for (const line of text.split("\n")) {
      const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
      if (m && m[1] === name && (!label || (m[2] ?? "").includes(label))) sum += Number(m[3]);
    }
    return sum;
  }

  /** Waits until the aggregator has taken in every record of the event topic. */
  async waitFolded(timeoutMs = 60_000): Promise<number> {
    const written = topicEndOffsets(this.topics.events_topic!);
    await waitUntil(
      `aggregator to take in ${written} records`,
      async () => ((await this.aggregatorMetric("tally_aggregator_records_total")) >= written ? true : undefined),
      timeoutMs,
    );
    return written;
  }

  private killAll(): void {
    for (const child of [this.ingest, this.aggregator]) {
      if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
  }

  private async terminate(child: ChildProcess | undefined): Promise<void> {
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    await exited;
    clearTimeout(timer);
  }

  /** Stops both services, deletes the topics and drops the database. */
  async stop(): Promise<void> {
    await this.terminate(this.ingest);
    await this.terminate(this.aggregator);
    process.off("exit", this.onExit);
    const topics = Object.values(this.topics);
    if (topics.length > 0) {
      // One call for all of them: the topic option takes a regular expression.
      const pattern = `tally\\.test\\.ts-${this.name}\\..*`;
      const { status, output } = kafkaTool("org.apache.kafka.tools.TopicCommand", ["--delete", "--if-exists", "--topic", pattern]);
      if (status !== 0) console.error(`deleting topics ${pattern} failed: ${output}`);
    }
    await clickhouse(`DROP DATABASE IF EXISTS ${this.database}`).catch((err: unknown) =>
      console.error(`dropping ${this.database} failed: ${String(err)}`),
    );
    rmSync(this.dir, { recursive: true, force: true });
  }
}
