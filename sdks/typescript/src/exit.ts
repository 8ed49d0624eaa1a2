/**
 * One set of process hooks for every open client: on `beforeExit` the clients with queued
 * events flush (each within its `shutdownTimeoutMs`); on SIGTERM or SIGINT they close. If no
 * other listener handles the signal, the signal is raised again once they are done, so the
 * process ends as it would have without this package (status 128 + signal number).
 */

export interface ExitParticipant {
  hasPendingWork(): boolean;
  /** Flush within the client's shutdown timeout; the process is still exiting. */
  flushForExit(): Promise<void>;
  /** Close within the client's shutdown timeout. */
  close(): Promise<void>;
}

const SIGNALS = ["SIGTERM", "SIGINT"] as const;
const participants = new Set<ExitParticipant>();
let installed = false;
/** Set while clients close on a signal: whether to raise it again when they are done. */
let handling: { reraise: boolean } | undefined;

function onBeforeExit(): void {
  const pending = [...participants].filter((p) => p.hasPendingWork());
  if (pending.length > 0) void Promise.allSettled(pending.map((p) => p.flushForExit()));
}

function onSignal(signal: NodeJS.Signals): void {
  if (handling) {
    // A second signal while flushing: stop waiting, if the signal is ours to act on.
    if (handling.reraise) reraise(signal);
    return;
  }
  const state = { reraise: process.listenerCount(signal) === 1 };
  handling = state;
  void Promise.allSettled([...participants].map((p) => p.close())).then(() => {
    handling = undefined;
    if (state.reraise) reraise(signal);
    else if (participants.size === 0) uninstall();
  });
}

function reraise(signal: NodeJS.Signals): void {
  uninstall();
  process.kill(process.pid, signal);
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on("beforeExit", onBeforeExit);
  for (const signal of SIGNALS) process.on(signal, onSignal);
}

function uninstall(): void {
  if (!installed) return;
  installed = false;
  process.off("beforeExit", onBeforeExit);
  for (const signal of SIGNALS) process.off(signal, onSignal);
}

export function registerForExit(participant: ExitParticipant): void {
  participants.add(participant);
  install();
}

export function unregisterForExit(participant: ExitParticipant): void {
  participants.delete(participant);
  if (participants.size === 0 && !handling) uninstall();
}
