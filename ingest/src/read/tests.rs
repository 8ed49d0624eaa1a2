//! The read routes' parameter handling, range arithmetic and latency figures, refused before
//! a query would run; and the answers built from rows, with the clickhouse crate's mock
//! server in place of ClickHouse.

use super::params::{AlignedRange, PageCursor, Params, TimeRange, DAY_MS, HOUR_MS};
use super::rollup::{LatencyStats, RollupRange};
use crate::auth::{hash_key, KeyConfig, ProjectConfig, Redaction, Scope};
use crate::config::IngestConfig;
use crate::error::ApiError;
use crate::testing::{app, services, FakeSink};
use actix_web::test as actix_test;
use clickhouse::test::{handlers, Mock};
use serde_json::Value;
use std::sync::Arc;
use tally_schema::rollups::{latency_bucket, LATENCY_BOUNDS_MS};
use tally_schema::rows::SessionRow;

const T0: i64 = 1_763_805_845_123; // 2025-11-22T10:04:05.123Z, a Saturday

fn parameter_of(err: ApiError) -> String {
    match err {
        ApiError::InvalidParameter { parameter, .. } => parameter,
        other => panic!("not an invalid parameter: {other:?}"),
    }
}

fn code_and_parameter(err: ApiError) -> (&'static str, String) {
    (err.code().as_str(), parameter_of(err))
}

fn range(query: &str) -> Result<TimeRange, ApiError> {
    Params::parse(query, &["from", "to"])?.time_range(T0, 366 * DAY_MS)
}

#[test]
fn unknown_and_repeated_parameters_are_named() {
    let err = Params::parse("from=x&colour=red", &["from", "to"]).expect_err("unknown");
    assert!(err.to_string().contains("from, to"), "{err}");
    assert_eq!(parameter_of(err), "colour");
    let err = Params::parse("to=a&to=b", &["from", "to"]).expect_err("repeated");
    assert_eq!(parameter_of(err), "to");
    // Stray `%` signs are taken literally, as browsers do; the value is then checked.
    let params = Params::parse("from=%zz", &["from"]).expect("lenient decoding");
    assert_eq!(
        parameter_of(params.time_range(T0, DAY_MS).expect_err("bad time")),
        "from"
    );
}

#[test]
fn time_ranges_default_to_the_last_day_and_are_bounded() {
    assert_eq!(
        range("").expect("default"),
        TimeRange {
            from_ms: T0 - DAY_MS,
            to_ms: T0
        }
    );
    let given = range("from=2025-11-20T00:00:00Z&to=2025-11-21T12:30:00.5%2B01:00").expect("given");
    assert_eq!(given.from_ms, 1_763_596_800_000);
    assert_eq!(given.to_ms, 1_763_724_600_500);
    // An unencoded `+` arrives as a space; it is read as the `+` it was.
    assert_eq!(
        range("from=2025-11-20T00:00:00+01:00&to=2025-11-21T00:00:00Z")
            .expect("repaired")
            .from_ms,
        1_763_593_200_000
    );
    for (query, code, parameter) in [
        ("from=yesterday", "invalid_parameter", "from"),
        ("to=2025-13-01T00:00:00Z", "invalid_parameter", "to"),
        (
            "from=2025-11-21T00:00:00Z&to=2025-11-20T00:00:00Z",
            "invalid_range",
            "from",
        ),
        (
            "from=2025-11-20T00:00:00Z&to=2025-11-20T00:00:00Z",
            "invalid_range",
            "from",
        ),
        (
            "from=2024-01-01T00:00:00Z&to=2025-11-20T00:00:00Z",
            "invalid_range",
            "from",
        ),
        (
            "from=1999-12-31T00:00:00Z&to=2000-01-02T00:00:00Z",
            "invalid_range",
            "from",
        ),
        (
            "to=2100-01-01T00:00:00Z&from=2099-12-31T00:00:00Z",
            "invalid_range",
            "to",
        ),
    ] {
        let err = range(query).expect_err(query);
        assert_eq!(
            code_and_parameter(err),
            (code, parameter.to_owned()),
            "{query}"
        );
    }
}

#[test]
fn choices_limits_and_ids_are_checked() {
    let params = Params::parse(
        "granularity=month&limit=0&account_id=%01",
        &["granularity", "limit", "account_id"],
    )
    .expect("parsed");
    let err = params
        .choice("granularity", &[("hour", 1), ("day", 2)])
        .expect_err("month");
    assert!(err.to_string().contains("hour, day"), "{err}");
    assert_eq!(parameter_of(err), "granularity");
    assert_eq!(parameter_of(params.limit(50, 500).expect_err("0")), "limit");
    assert_eq!(
        parameter_of(params.id("account_id").expect_err("control")),
        "account_id"
    );
    let long = format!("account_id={}", "a".repeat(129));
    let params = Params::parse(&long, &["account_id"]).expect("parsed");
    assert_eq!(
        parameter_of(params.id("account_id").expect_err("long")),
        "account_id"
    );
    // Empty values count as absent.
    let params = Params::parse("limit=&account_id=", &["limit", "account_id"]).expect("parsed");
    assert_eq!(params.limit(50, 500).expect("default"), 50);
    assert_eq!(params.id("account_id").expect("absent"), None);
}

#[test]
fn ranges_widen_to_whole_buckets() {
    let range = TimeRange {
        from_ms: T0,
        to_ms: T0 + 2 * HOUR_MS,
    };
    let hour = range.aligned(3600, 0);
    assert_eq!((hour.from, hour.to), (1_763_805_600, 1_763_816_400));
    let day = range.aligned(86_400, 0);
    assert_eq!((day.from, day.to), (1_763_769_600, 1_763_856_000));
    // ISO weeks: Monday 2025-11-17 to Monday 2025-11-24.
    let week = range.aligned(7 * 86_400, 4 * 86_400);
    assert_eq!((week.from, week.to), (1_763_337_600, 1_763_942_400));
    // Bounds already on a boundary stay.
    let exact = TimeRange {
        from_ms: 1_763_805_600_000,
        to_ms: 1_763_809_200_000,
    };
    assert_eq!(exact.aligned(3600, 0).to, 1_763_809_200);
}

#[test]
fn rollup_ranges_cover_each_hour_once() {
    let day = 86_400;
    let d0 = 1_763_769_600; // 2025-11-22T00:00Z
    let cases = [
        // Within one day: hours only.
        (
            (d0 + 3600, d0 + 5 * 3600),
            ((0, 0), [(d0 + 3600, d0 + 5 * 3600), (0, 0)]),
        ),
        // Across midnight without a whole day: hours only.
        (
            (d0 - 3600, d0 + 3600),
            ((0, 0), [(d0 - 3600, d0 + 3600), (0, 0)]),
        ),
        // Whole days with hours on both sides.
        (
            (d0 - 7200, d0 + 2 * day + 3600),
            (
                (d0, d0 + 2 * day),
                [(d0 - 7200, d0), (d0 + 2 * day, d0 + 2 * day + 3600)],
            ),
        ),
        // Exactly whole days: the hour ranges are empty.
        (
            (d0, d0 + day),
            ((d0, d0 + day), [(d0, d0), (d0 + day, d0 + day)]),
        ),
    ];
    for ((from, to), (days, hours)) in cases {
        let split = RollupRange::split(AlignedRange { from, to });
        assert_eq!(split, RollupRange { days, hours }, "{from}..{to}");
        // Every hour of the range is in exactly one part.
        for hour in (from..to).step_by(3600) {
            let in_days = (split.days.0..split.days.1).contains(&hour);
            let in_hours = split
                .hours
                .iter()
                .filter(|(a, b)| (*a..*b).contains(&hour))
                .count();
            assert_eq!(
                usize::from(in_days) + in_hours,
                1,
                "hour {hour} of {from}..{to}"
            );
        }
    }
}

#[test]
fn cursors_round_trip_and_refuse_anything_else() {
    let cursor = PageCursor {
        ts_ms: T0,
        id: "sess:with:colons é".into(),
    };
    assert_eq!(
        PageCursor::decode(&cursor.encode()).expect("decoded"),
        cursor
    );
    for bad in [
        "",
        "zz",
        "3a",
        &hex::encode("12:"),
        &hex::encode("x:s"),
        &hex::encode([0xff, 0x3a]),
    ] {
        assert_eq!(
            parameter_of(PageCursor::decode(bad).expect_err(bad)),
            "cursor",
            "{bad}"
        );
    }
}

#[test]
fn percentiles_are_bucket_upper_bounds_within_the_stated_tolerance() {
    // The stated accuracy holds for every whole-millisecond latency the histogram covers.
    for ms in 1..=*LATENCY_BOUNDS_MS.last().expect("bounds") {
        let bound = LATENCY_BOUNDS_MS[latency_bucket(ms)];
        assert!(
            bound >= ms && bound as f64 <= ms as f64 * 1.155,
            "{ms} ms → {bound}"
        );
    }
    let mut hist = vec![0u64; LATENCY_BOUNDS_MS.len() + 1];
    for ms in [100u64, 200, 300, 400] {
        hist[latency_bucket(ms)] += 1;
    }
    let stats = LatencyStats::of(4, 1000, &hist);
    assert_eq!(stats.avg_ms, Some(250.0));
    assert_eq!(stats.p50_ms, Some(LATENCY_BOUNDS_MS[latency_bucket(200)]));
    assert_eq!(stats.p99_ms, Some(LATENCY_BOUNDS_MS[latency_bucket(400)]));
    // Above the last bound there is no upper bound to give.
    hist[LATENCY_BOUNDS_MS.len()] += 100;
    assert_eq!(LatencyStats::of(104, 0, &hist).p99_ms, None);
    let empty = LatencyStats::of(0, 0, &[]);
    assert_eq!((empty.avg_ms, empty.p50_ms), (None, None));
}

const READ_KEY: &str = "read-key";
const INGEST_KEY: &str = "ingest-key";

async fn get(path: &str, key: &str) -> (u16, Value) {
    // Nothing listens there: a request that reached ClickHouse would fail with a 503.
    get_from("http://127.0.0.1:9", path, key).await
}

/// `GET path` with `key`, the read role's ClickHouse at `clickhouse_url`.
async fn get_from(clickhouse_url: &str, path: &str, key: &str) -> (u16, Value) {
    let mut config = IngestConfig {
        projects: vec![ProjectConfig {
            id: "p".into(),
            keys: vec![
                KeyConfig {
                    sha256: hash_key(READ_KEY),
                    scopes: vec![Scope::Read],
                },
                KeyConfig {
                    sha256: hash_key(INGEST_KEY),
                    scopes: vec![Scope::Ingest],
                },
            ],
            redact: Redaction::default(),
        }],
        ..IngestConfig::default()
    };
    config.clickhouse.url = clickhouse_url.into();
    let services = services(config, Arc::new(FakeSink::default()));
    let app = actix_test::init_service(app(&services)).await;
    let request = actix_test::TestRequest::get()
        .uri(path)
        .insert_header(("authorization", format!("Bearer {key}")))
        .to_request();
    let response = actix_test::call_service(&app, request).await;
    let status = response.status().as_u16();
    let body: Value =
        serde_json::from_slice(&actix_test::read_body(response).await).unwrap_or(Value::Null);
    (status, body)
}

#[actix_web::test]
async fn bad_parameters_get_a_400_naming_them() {
    let cases = [
        ("/v1/sessions?status=failed", "invalid_parameter", "status"),
        ("/v1/sessions?limit=501", "invalid_parameter", "limit"),
        ("/v1/sessions?cursor=nonsense", "invalid_cursor", "cursor"),
        ("/v1/sessions?from=2025-11-20", "invalid_parameter", "from"),
        ("/v1/sessions?sort=asc", "invalid_parameter", "sort"),
        (
            "/v1/metrics/summary?operation=chat",
            "invalid_parameter",
            "operation",
        ),
        ("/v1/metrics/summary?to=soon", "invalid_parameter", "to"),
        (
            "/v1/metrics/usage?granularity=month",
            "invalid_parameter",
            "granularity",
        ),
        (
            "/v1/metrics/usage?group_by=tool",
            "invalid_parameter",
            "group_by",
        ),
        (
            "/v1/metrics/usage?granularity=hour&from=2025-01-01T00:00:00Z&to=2025-03-01T00:00:00Z",
            "invalid_range",
            "granularity",
        ),
        (
            "/v1/metrics/latency?model=&model=gpt-4o",
            "invalid_parameter",
            "model",
        ),
        (
            "/v1/metrics/latency?percentile=99",
            "invalid_parameter",
            "percentile",
        ),
        (
            "/v1/metrics/tools?account_id=a",
            "invalid_parameter",
            "account_id",
        ),
        ("/v1/metrics/cost?limit=abc", "invalid_parameter", "limit"),
        (
            "/v1/metrics/cost?from=2020-01-01T00:00:00Z&to=2025-01-01T00:00:00Z",
            "invalid_range",
            "from",
        ),
        (
            "/v1/metrics/tools?from=2025-01-02T00:00:00Z&to=2025-01-01T00:00:00Z",
            "invalid_range",
            "from",
        ),
    ];
    for (path, code, parameter) in cases {
        let (status, body) = get(path, READ_KEY).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert_eq!(body["error"]["parameter"], parameter, "{path}: {body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(parameter), "{path}: {message}");
    }
}

#[actix_web::test]
async fn read_routes_need_a_read_key() {
    for path in [
        "/v1/sessions",
        "/v1/metrics/summary",
        "/v1/metrics/usage",
        "/v1/metrics/latency",
        "/v1/metrics/tools",
        "/v1/metrics/cost",
    ] {
        let (status, body) = get(path, INGEST_KEY).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (403, &Value::from("forbidden")),
            "{path}"
        );
        let (status, _) = get(path, "unknown").await;
        assert_eq!(status, 401, "{path}");
        // The key is checked before the parameters.
        let (status, _) = get(&format!("{path}?bogus=1"), INGEST_KEY).await;
        assert_eq!(status, 403, "{path}");
    }
}

/// A session row as the aggregator writes it.
fn session_row() -> SessionRow {
    SessionRow {
        account_id: "acct".into(),
        first_ts_ms: T0,
        last_ts_ms: T0 + 1_500,
        event_count: 3,
        event_types: vec!["llm_request".into(), "llm_response".into()],
        event_type_counts: vec![1, 2],
        llm_calls: 1,
        input_tokens: 120,
        output_tokens: 30,
        cost_nanos: 1_250_000,
        models: vec!["gpt-4o".into()],
        ..SessionRow::empty("p", "s-1", 0)
    }
}

#[actix_web::test]
async fn a_session_is_answered_from_its_rollup_row() {
    let mock = Mock::new();
    mock.add(handlers::provide(vec![session_row()]));
    let (status, body) = get_from(mock.url(), "/v1/sessions/s-1", READ_KEY).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session_id"], "s-1");
    assert_eq!(body["account_id"], "acct");
    assert_eq!(body["duration_ms"], 1_500);
    assert_eq!(body["event_counts"]["llm_response"], 2);
    assert_eq!(body["usage"]["input_tokens"], 120);
    assert_eq!(body["cost_usd"], serde_json::json!(0.00125));
    assert_eq!(body["models"], serde_json::json!(["gpt-4o"]));
}

#[actix_web::test]
async fn no_row_is_404_and_a_read_past_its_time_is_503() {
    let mock = Mock::new();
    mock.add(handlers::provide(Vec::<SessionRow>::new()));
    let (status, body) = get_from(mock.url(), "/v1/sessions/nobody", READ_KEY).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &Value::from("not_found"))
    );

    let mock = Mock::new();
    // TIMEOUT_EXCEEDED: the query ran past max_execution_time.
    mock.add(handlers::exception(159));
    let (status, body) = get_from(mock.url(), "/v1/sessions/slow", READ_KEY).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &Value::from("unavailable"))
    );
}
