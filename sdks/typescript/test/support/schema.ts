/** The JSON Schemas of sdk-spec/schema, compiled once. */
import { join } from "node:path";
import Ajv2020Module from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import { SPEC_DIR, readJson } from "./paths.js";

// Both packages are CommonJS; their `module.exports` also holds itself as `default`.
const Ajv2020 = Ajv2020Module.default;
const addFormats = addFormatsModule.default;

const ajv = new Ajv2020({ allErrors: true, strict: false });
addFormats(ajv);
ajv.addSchema(readJson(join(SPEC_DIR, "schema", "event.schema.json")) as object);
ajv.addSchema(readJson(join(SPEC_DIR, "schema", "batch.schema.json")) as object);

/** The schema's complaints about `value`, or an empty list. */
export function schemaErrors(schema: "event" | "batch", value: unknown): string[] {
  const validate = ajv.getSchema(`https://tally.dev/schema/${schema}.schema.json`);
  if (!validate) throw new Error(`schema ${schema} not loaded`);
  if (validate(value)) return [];
  return (validate.errors ?? []).map((e: { instancePath: string; message?: string }) => `${e.instancePath || "/"} ${e.message ?? ""}`);
}
