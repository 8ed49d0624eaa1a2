/**
 * A private Tally for the end-to-end tests, started by `tally-devstack`
 * (tests/src/bin/devstack.rs): the real `tally-aggregator` and `tally-ingest` binaries on the
 * running local Kafka and ClickHouse, with their own topics, database, consumer group and
 * freshly generated project keys. `stop()` ends both and removes the topics and the database;
 * so does the devstack itself when this process dies (its stdin closes).
 *
 * Environment (all optional): TALLY_BIN_DIR (else $CARGO_TARGET_DIR/debug, target/debug in
 * the repository, ~/.cache/tally/target/debug), TALLY_TEST_KAFKA (127.0.0.1:9092) and
 * TALLY_TEST_CLICKHOUSE (http://127.0.0.1:8123), which the devstack reads too, TALLY_KAFKA_LIBS (else
 * $TALLY_STATE_DIR/kafka-libs, .tally/kafka-libs in the repository).
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { createInterface, type Interface } from "node:readline";
import { REPO_DIR } from "./paths.js";

/** The [quota] section both services read, before their generated config. */
const QUOTA_CONFIG = join(REPO_DIR, "deploy/local/quota.toml");

export const KAFKA = process.env.TALLY_TEST_KAFKA ?? "127.0.0.1:9092";

export function binDir(): string {
  const candidates = [
    process.env.TALLY_BIN_DIR,
    process.env.CARGO_TARGET_DIR && join(process.env.CARGO_TARGET_DIR, "debug"),
    join(REPO_DIR, "target", "debug"),
    join(homedir(), ".cache", "tally", "target", "debug"),
  ].filter((d): d is string => Boolean(d));
  const found = candidates.find((d) => existsSync(join(d, "tally-devstack")));
  if (!found) {
    throw new Error(`tally-devstack not found in ${candidates.join(", ")}: build the workspace first (make test does)`);
  }
  return found;
}

function kafkaLibs(): string {
  const state = process.env.TALLY_STATE_DIR ?? join(REPO_DIR, ".tally");
  return process.env.TALLY_KAFKA_LIBS ?? join(state, "kafka-libs");
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

/** What `tally-devstack` prints once the stack is ready. */
interface Described {
  ingest_url: string;
  aggregator_url: string | null;
  topics: Record<string, string>;
  projects: Record<string, { keys: Record<string, string> }>;
  ingest_config: Record<string, any>;
  log_dir: string;
}

export class Stack {
  /** A random name the tests put in their session and account ids. */
  readonly name = randomBytes(6).toString("hex");
  readonly project = "sdk-ts";
  keys: Keys = { ingest: "", read: "" };
  /** Every topic of the Kafka config, each with a private name: `events_topic` → name. */
  topics: Record<string, string> = {};
  /** The ingest settings in effect (as `tally-ingest --print-config` shows them). */
  ingestConfig: Record<string, any> = {};
  ingestUrl = "";
  aggregatorUrl = "";
  /** Where the services' configs and logs are (removed by a clean stop). */
  logDir = "";
  private devstack: ChildProcessWithoutNullStreams | undefined;
  private lines: Interface | undefined;
  private readonly answers: string[] = [];
  private waiting: ((line: string | undefined) => void) | undefined;

  static async start(): Promise<Stack> {
    const stack = new Stack();
    await stack.boot();
    return stack;
  }

  private async boot(): Promise<void> {
    const spec = {
      projects: [this.project],
      config_files: [QUOTA_CONFIG],
      ingest_config: { producer: { retry_after_secs: 1 } },
      env: { RUST_LOG: "warn" },
    };
    const child = spawn(join(binDir(), "tally-devstack"), ["--spec", JSON.stringify(spec)], {
      stdio: ["pipe", "pipe", "inherit"],
    }) as unknown as ChildProcessWithoutNullStreams;
    this.devstack = child;
    this.lines = createInterface({ input: child.stdout });
    this.lines.on("line", (line) => {
      if (this.waiting) {
        const resolve = this.waiting;
        this.waiting = undefined;
        resolve(line);
      } else {
        this.answers.push(line);
      }
    });
    this.lines.on("close", () => this.waiting?.(undefined));
    const described = JSON.parse(await this.nextLine()) as Described & { error?: string };
    if (described.error) throw new Error(`tally-devstack: ${described.error}`);
    const keys = described.projects[this.project]!.keys;
    this.keys = { ingest: keys.ingest!, read: keys.read! };
    this.topics = described.topics;
    this.ingestConfig = described.ingest_config;
    this.ingestUrl = described.ingest_url;
    this.aggregatorUrl = described.aggregator_url ?? "";
    this.logDir = described.log_dir;
  }

  private nextLine(): Promise<string> {
    const queued = this.answers.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      this.waiting = (line) => (line === undefined ? reject(new Error("tally-devstack ended")) : resolve(line));
    });
  }

  /** One devstack command (`kill ingest`, `start ingest`, …); throws what it refused. */
  private async command(command: string): Promise<void> {
    if (!this.devstack) throw new Error("the stack is not running");
    this.devstack.stdin.write(`${command}\n`);
    const answer = JSON.parse(await this.nextLine()) as { ok: boolean; error?: string };
    if (!answer.ok) throw new Error(`${command}: ${answer.error}`);
  }

  /** Starts ingest again on its port and waits until it is ready. */
  async startIngest(): Promise<void> {
    await this.command("start ingest");
  }

  /** SIGKILL: no shutdown, no flush, in-flight requests cut off. */
  async killIngest(): Promise<void> {
    await this.command("kill ingest");
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

  /** Stops both services, deletes the topics and drops the database (the devstack does, when its input ends). */
  async stop(): Promise<void> {
    const child = this.devstack;
    this.devstack = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    child.stdin.end();
    const timer = setTimeout(() => child.kill("SIGKILL"), 90_000);
    const code = await exited;
    clearTimeout(timer);
    this.lines?.close();
    if (code !== 0) console.error(`tally-devstack exited with ${code}; the services' logs are kept in ${this.logDir}`);
  }
}
