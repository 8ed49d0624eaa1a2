/**
 * A process for the exit tests: `node exit-child.js MODE ENDPOINT`. It records three events with
 * a long flush interval, so only the exit handling can send them, then behaves per MODE.
 */
import { Tally } from "../../src/index.js";

const [mode, endpoint] = process.argv.slice(2);
const tally = new Tally({
  apiKey: "key-1",
  endpoint,
  flushIntervalMs: 60_000,
  shutdownTimeoutMs: mode === "unreachable" ? 500 : 5000,
  retry: { initialDelayMs: 20, maxDelayMs: 100 },
  onError: (e) => console.error(`onError ${e.reason} ${e.events}`),
});

if (mode !== "idle") {
  for (let i = 0; i < 3; i++) tally.record({ type: "custom", sessionId: "exit", accountId: "a", attributes: { i } });
}

if (mode === "signal" || mode === "signal-app-handler") {
  const keepAlive = setInterval(() => {}, 1000);
  if (mode === "signal-app-handler") {
    process.on("SIGTERM", () => {
      console.log("app handler");
      setTimeout(() => clearInterval(keepAlive), 100);
    });
  }
  console.log("ready");
}
