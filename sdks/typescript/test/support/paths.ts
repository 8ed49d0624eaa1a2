import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** This package's folder: the nearest one above this file whose package.json is @tally/sdk. */
export const PACKAGE_DIR = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, "package.json");
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, "utf8")) as { name?: string }).name === "@tally/sdk") {
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error("package.json of @tally/sdk not found");
    dir = parent;
  }
})();

/** The repository (the SDK lives in sdks/typescript). */
export const REPO_DIR = resolve(PACKAGE_DIR, "..", "..");
export const SPEC_DIR = join(REPO_DIR, "sdk-spec");

export function readJson<T = unknown>(path: string): T {
  return JSON.parse(readFileSync(path, "utf8")) as T;
}
