"""The JSON Schemas of sdk-spec/schema agree with the server's vectors: every batch a vector
expects to be accepted whole is valid, and every event a vector expects to be rejected for a
reason a schema can express (missing field, wrong type, unknown type, too long) is invalid."""

import datetime
import json
import pathlib

import jsonschema
import pytest
from referencing import Registry, Resource

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "sdk-spec" / "schema"
EVENT = json.loads((SCHEMAS / "event.schema.json").read_text())
BATCH = json.loads((SCHEMAS / "batch.schema.json").read_text())
REGISTRY = Registry().with_resources(
    [(s["$id"], Resource.from_contents(s)) for s in (EVENT, BATCH)]
    + [("event.schema.json", Resource.from_contents(EVENT))]
)
# The write-path vectors: the quota and read vectors post no batches of their own.
CASES = json.loads((ROOT / "sdk-spec" / "vectors" / "batch.json").read_text())["cases"]
SCHEMA_CODES = {"missing_field", "invalid_type", "unknown_event_type", "too_long", "not_an_object"}


def expand(value):
    """The vectors' placeholders, as sdk_vectors.rs expands them."""
    if isinstance(value, str) and value.startswith("{{") and value.endswith("}}"):
        spec = value[2:-2]
        now = datetime.datetime.now(datetime.timezone.utc)
        if spec.startswith("now"):
            rest = spec[3:]
            if rest:
                n = int(rest[1:-1]) * (1 if rest[0] == "+" else -1)
                now += {"d": datetime.timedelta(days=n), "h": datetime.timedelta(hours=n), "m": datetime.timedelta(minutes=n)}[rest[-1]]
            return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if spec.startswith("repeat:"):
            text, count = spec[len("repeat:"):].rsplit(":", 1)
            return text * int(count)
        if spec.startswith("events:"):
            return [
                {"event_id": f"00000000-0000-0000-0000-{i:012d}", "type": "custom", "timestamp": expand("{{now-1m}}"),
                 "session_id": "s", "account_id": "a"}
                for i in range(1, int(spec[len("events:"):]) + 1)
            ]
    if isinstance(value, list):
        return [expand(v) for v in value]
    if isinstance(value, dict):
        return {k: expand(v) for k, v in value.items()}
    return value


def validator(schema):
    return jsonschema.Draft202012Validator(schema, registry=REGISTRY, format_checker=jsonschema.FormatChecker())


def test_the_schemas_are_valid():
    jsonschema.Draft202012Validator.check_schema(EVENT)
    jsonschema.Draft202012Validator.check_schema(BATCH)


def accepted_whole(case):
    if case["expect"]["status"] != 200 or "body" not in case["request"]:
        return False
    batch = expand(case["request"]["body"]).get("batch", [])
    return case["expect"].get("body", {}).get("accepted") == len(batch)


ACCEPTED = [c for c in CASES if accepted_whole(c)]


@pytest.mark.parametrize("case", ACCEPTED, ids=[c["name"] for c in ACCEPTED])
def test_batches_the_server_accepts_are_valid(case):
    errors = list(validator(BATCH).iter_errors(expand(case["request"]["body"])))
    assert not errors, [e.message for e in errors]


REJECTED = [
    (c, r) for c in CASES if c["expect"]["status"] == 200 and "body" in c["request"]
    for r in c["expect"].get("body", {}).get("rejected", []) if r["code"] in SCHEMA_CODES
]


@pytest.mark.parametrize("case,rejection", REJECTED, ids=[f'{c["name"]}#{r["index"]}' for c, r in REJECTED])
def test_events_the_server_rejects_for_their_shape_are_invalid(case, rejection):
    event = expand(case["request"]["body"])["batch"][rejection["index"]]
    assert not validator(EVENT).is_valid(event), f"the schema accepts an event the server rejects ({rejection['code']})"


def test_there_are_cases_both_ways():
    assert len(ACCEPTED) >= 5 and len(REJECTED) >= 15
