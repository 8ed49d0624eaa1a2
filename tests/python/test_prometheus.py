"""Prometheus over Tally: the scrape config and alert rules of deploy/prometheus pass promtool
(syntax, and a unit test for every alert), every metric an alert reads is one the services
register, and the real Prometheus server (Debian's package) scrapes a live ingest and
aggregator while traffic flows, with the series and values the traffic implies.
"""

import json
import math
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import uuid

import pytest
import services
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "alerts.yml"


def promtool(*args):
    result = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def alert_rules():
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


# ----------------------------------------------------------------------------- static checks

def test_promtool_accepts_the_config_and_rules():
    promtool("check", "config", str(PROM / "prometheus.yml"))
    promtool("check", "rules", str(RULES))


def test_promtool_unit_tests_pass():
    promtool("test", "rules", str(PROM / "alerts_test.yml"))


def test_promtool_unit_tests_can_fail(tmp_path):
    """The unit tests pin the rules: a rule with a looser threshold fails them."""
    shutil.copy(PROM / "alerts_test.yml", tmp_path / "alerts_test.yml")
    loosened = RULES.read_text().replace("> 0.05", "> 0.5")
    assert loosened != RULES.read_text()
    (tmp_path / "alerts.yml").write_text(loosened)
    result = subprocess.run(["promtool", "test", "rules", str(tmp_path / "alerts_test.yml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "TallyIngestHigh5xxRate" in result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing_and_quiet():
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case.get("exp_alerts") for case in mine), f"{rule['alert']} never expected to fire"
        assert any(not case.get("exp_alerts") for case in mine), f"{rule['alert']} never expected quiet"


def registered_metrics():
    """Metric names the services register: the string literals of their sources."""
    names = set()
    for crate in ("ingest", "aggregator", "runtime"):
        for path in (ROOT / crate / "src").rglob("*.rs"):
            names |= set(re.findall(r'"(tally_[a-z0-9_]+)"', path.read_text()))
    return names


def test_alerts_read_only_metrics_the_services_register():
    known = registered_metrics()
    for rule in alert_rules():
        for name in set(re.findall(r"\b(tally_[a-z0-9_]+)", rule["expr"])):
            base = re.sub(r"_(count|sum|bucket)$", "", name)
            assert name in known or base in known, f"{rule['alert']} reads {name}, which no service registers"


def test_scrape_config_matches_the_local_stack():
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job, toml in (("tally-ingest", "ingest.toml"), ("tally-aggregator", "aggregator.toml")):
        listen = re.search(r'^listen = "([^"]+)"', (ROOT / "deploy" / "local" / toml).read_text(), re.M).group(1)
        assert jobs[job]["static_configs"][0]["targets"] == [listen]
        assert jobs[job].get("metrics_path", "/metrics") == "/metrics"
    assert config["rule_files"] == ["alerts.yml"]


# ----------------------------------------------------------------------------- end to end

class Prometheus:
    """The real Prometheus server scraping the given targets every second."""

    def __init__(self, targets):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="tally-prometheus-"))
        self.port = services.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": job, "metrics_path": "/metrics", "static_configs": [{"targets": [target]}]}
                for job, target in targets.items()
            ],
        }
        (self.dir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log = open(self.dir / "prometheus.log", "wb")
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while self._get("/-/ready")[0] != 200:
            assert self.process.poll() is None, self.logs()
            assert time.monotonic() < deadline, "Prometheus not ready in 60 s\n" + self.logs()
            time.sleep(0.2)

    def _get(self, path):
        try:
            return services_http("GET", self.url + path)
        except OSError:
            return 0, b""

    def logs(self):
        return (self.dir / "prometheus.log").read_text(errors="replace")[-3000:]

    def api(self, path, **params):
        status, body = services_http("GET", f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr):
        """{frozenset(labels): value} of an instant query."""
        return {frozenset(r["metric"].items()): float(r["value"][1]) for r in self.api("query", query=expr)["result"]}

    def scalar(self, expr):
        values = list(self.query(expr).values())
        assert len(values) == 1, f"{expr}: {values}"
        return values[0]

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def services_http(method, url):
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as answer:
        return answer.code, answer.read()


def now():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def session(account):
    sid, common = f"s-{uuid.uuid4().hex[:12]}", {"account_id": account}
    llm = {"model": "gpt-4o", "provider": "openai", "operation": "chat"}
    events = [
        {"type": "session_start"},
        {"type": "llm_request", **llm},
        {"type": "llm_response", **llm, "duration_ms": 840, "time_to_first_token_ms": 210, "status": "ok",
         "usage": {"input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 1000, "cache_write_tokens": 0}},
        {"type": "tool_call", "tool": {"name": "search", "call_id": "c-1"}},
        {"type": "session_end"},
    ]
    return [{"event_id": str(uuid.uuid4()), "timestamp": now(), "session_id": sid, **common, **e} for e in events]


def bad_event():
    """An llm_request without its model: rejected, the rest of the batch goes through."""
    return {"event_id": str(uuid.uuid4()), "type": "llm_request", "timestamp": now(), "session_id": "s-bad",
            "account_id": "acct-bad", "provider": "openai"}


def wait_until(what, check, timeout=90):
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last is True:
                return
        except AssertionError as err:
            last = err
        time.sleep(0.5)
    raise AssertionError(f"{what} not reached in {timeout} s; last: {last}")


@pytest.fixture(scope="module")
def stack():
    with services.Services(aggregator=True, projects=["p-prom"], partitions=3) as tally:
        prometheus = Prometheus({
            "tally-ingest": tally.url.removeprefix("http://"),
            "tally-aggregator": tally.aggregator_url.removeprefix("http://"),
        })
        try:
            yield tally, prometheus
        finally:
            prometheus.stop()


def test_prometheus_scrapes_both_services_while_traffic_flows(stack):
    tally, prom = stack
    wait_until("both targets up", lambda: prom.query("up") and all(v == 1 for v in prom.query("up").values()))

    batches, accepted, rejected = 0, 0, {}
    started = time.time()
    for round_ in range(8):
        events = [e for i in range(5) for e in session(f"acct-{(round_ + i) % 3}")] + [bad_event()]
        answer = tally.request("POST", "/v1/batch", key=tally.key("ingest"),
                               json_body={"batch": events, "sent_at": now(), "sdk": {"name": "tests", "version": "0"}})
        assert answer.status == 200, answer.body
        body = answer.json()
        batches, accepted = batches + 1, accepted + body["accepted"]
        for r in body["rejected"]:
            rejected[r["code"]] = rejected.get(r["code"], 0) + 1
        time.sleep(0.6)  # several scrapes happen while batches keep coming
    assert accepted == 8 * 25 and sum(rejected.values()) == 8

    # Everything posted is counted by ingest and, once folded, by the aggregator, whose lag
    # drains to zero on every partition.
    def settled():
        got = {
            "ingest accepted": prom.scalar('sum(tally_ingest_events_total{outcome="accepted"})'),
            "folded": prom.scalar('sum(tally_aggregator_records_total{outcome="folded"})'),
            "lag": prom.scalar("sum(tally_aggregator_consumer_lag_records)"),
        }
        return got == {"ingest accepted": accepted, "folded": accepted, "lag": 0} or got

    wait_until("all events folded and lag at 0", settled)

    assert prom.query("up") == {
        frozenset({"__name__": "up", "job": job, "instance": url.removeprefix("http://")}.items()): 1.0
        for job, url in (("tally-ingest", tally.url), ("tally-aggregator", tally.aggregator_url))
    }
    for code, count in rejected.items():
        assert prom.scalar(f'tally_ingest_events_total{{outcome="rejected",reason="{code}"}}') == count
    assert prom.scalar('tally_ingest_http_requests_total{route="/v1/batch",status="200"}') == batches
    assert prom.scalar('tally_ingest_kafka_produce_duration_seconds_count{result="ok"}') == batches
    assert not prom.query('tally_ingest_kafka_produce_duration_seconds_count{result="error"} > 0')
    assert prom.scalar("tally_ingest_batch_events_count") == batches
    assert prom.scalar("tally_ingest_batch_events_sum") == accepted + sum(rejected.values())
    assert prom.scalar("tally_ingest_http_requests_in_flight") >= 0

    # librdkafka reports a partition's lag in its statistics (every 5 s) once it knows the
    # partition's position, so each partition's gauge appears within a statistics interval.
    def lag_per_partition():
        lag = prom.query("tally_aggregator_consumer_lag_records")
        partitions = sorted(dict(labels)["partition"] for labels in lag)
        return partitions == ["0", "1", "2"] and all(v == 0 for v in lag.values()) or lag

    wait_until("a lag gauge of 0 for every partition", lag_per_partition, timeout=30)
    assert prom.scalar("tally_aggregator_assigned_partitions") == 3
    assert prom.scalar("tally_aggregator_write_failures_total") == 0
    written = {dict(k)["table"]: v for k, v in prom.query("tally_aggregator_rows_written_total").items()}
    assert written.get("events", 0) >= accepted and written.get("sessions", 0) > 0, written
    assert prom.scalar("sum(tally_aggregator_batch_phase_duration_seconds_count)") > 0

    # The counter was seen climbing: scrapes happened while the traffic flowed.
    series = prom.api("query_range", query='sum(tally_ingest_events_total{outcome="accepted"})',
                      start=started - 1, end=time.time(), step="1s")["result"]
    values = sorted({float(v) for _, v in series[0]["values"]})
    assert len([v for v in values if 0 < v < accepted]) >= 2, values

    # The quota view's age, where this build of ingest reports it.
    if "tally_ingest_quota_view_staleness_seconds" in tally.request("GET", "/metrics").body.decode():
        staleness = prom.scalar("tally_ingest_quota_view_staleness_seconds")
        assert staleness >= 0 and not math.isnan(staleness)

    # The folded events are in ClickHouse, once each.
    assert int(tally.clickhouse_query("SELECT count() FROM events FINAL").strip()) == accepted

    # The alert rules load and evaluate against the live series without error.
    groups = prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert sorted(r["name"] for r in rules) == sorted(r["alert"] for r in alert_rules())
    wait_until("every rule evaluated", lambda: all(not r["lastEvaluation"].startswith("0001")
                                                    for g in prom.api("rules")["groups"] for r in g["rules"]))
    assert all(r["health"] == "ok" for g in prom.api("rules")["groups"] for r in g["rules"]), groups
    assert not prom.query('ALERTS{alertstate="firing"}')
