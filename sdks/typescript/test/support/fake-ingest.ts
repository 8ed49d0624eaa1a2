/**
 * A fake ingest for one unit-test file, and the clients its tests make against it: the
 * server starts before the file's tests and stops after them; between tests the previous
 * test's clients are closed (so nothing they still hold reaches the next) and the server
 * forgets its requests and answers 200 again.
 */
import { after, before, beforeEach } from "node:test";
import { Tally, type TallyOptions } from "../../src/client.js";
import { answerAccepted, FakeServer } from "./fake-server.js";

export interface FakeIngest {
  /** The running fake server (after the file's `before` hook). */
  readonly server: FakeServer;
  /** A client of the fake server with `retry` and no exit handling, closed after the test. */
  client(options?: TallyOptions): Tally;
}

/** Registers the hooks; call at the top level of a test file. */
export function fakeIngest(retry: { initialDelayMs: number; maxDelayMs: number }): FakeIngest {
  let server: FakeServer | undefined;
  const clients: Tally[] = [];
  const running = (): FakeServer => {
    if (!server) throw new Error("the fake ingest starts in the test file's before hook");
    return server;
  };
  before(async () => {
    server = await FakeServer.start();
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close({ timeoutMs: 100 })));
    await running().close();
  });
  beforeEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close({ timeoutMs: 200 })));
    running().requests.length = 0;
    running().handler = answerAccepted;
  });
  return {
    get server() {
      return running();
    },
    client(options: TallyOptions = {}): Tally {
      const tally = new Tally({
        apiKey: "key-1",
        endpoint: running().url,
        handleProcessExit: false,
        retry,
        onError: () => {},
        onRejected: () => {},
        ...options,
      });
      clients.push(tally);
      return tally;
    },
  };
}
