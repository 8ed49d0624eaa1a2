//! The HTTP server: shared state, routes, and the middleware that gives every response an
//! `X-Request-Id`, one JSON log line and its metrics.

use crate::auth::{KeyRing, Principal, Scope};
use crate::config::IngestConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::quota::{self, QuotaState};
use crate::ratelimit::{RateLimitState, RateLimiter, RouteGroup};
use crate::sink::EventSink;
use crate::{batch, read, sessions};
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpMessage, HttpRequest, HttpResponse, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// Longest a read query may run in ClickHouse (`max_execution_time`), in seconds; past it
/// the read answers 503.
pub const READ_MAX_EXECUTION_SECS: u32 = 30;

impl AppState {
    /// Authenticates the request's key for `scope` and takes one request token of its bucket
    /// for `group`; the answer then carries the `X-RateLimit-*` headers (see
    /// [`crate::ratelimit`]).
    pub fn admit(
        &self,
        request: &HttpRequest,
        scope: Scope,
        group: RouteGroup,
    ) -> Result<Principal, ApiError> {
        let principal = self.keys.authorize(request, scope)?;
        let (limit_state, taken) = self
            .limiter
            .request(&principal.key_id, group, Instant::now());
        request.extensions_mut().insert(limit_state);
        taken.map_err(|limited| ApiError::RateLimited {
            retry_after_secs: limited.retry_after_secs,
        })?;
        Ok(principal)
    }
}

/// Everything a handler needs, shared by all workers.
pub struct AppState {
    pub config: IngestConfig,
    pub keys: KeyRing,
    pub sink: Arc<dyn EventSink>,
    pub clickhouse: clickhouse::Client,
    pub metrics: Metrics,
    pub limiter: RateLimiter,
    pub quota: QuotaState,
}

impl AppState {
    /// State whose quota view follows nothing (for tests of the HTTP layer alone).
    pub fn new(config: IngestConfig, sink: Arc<dyn EventSink>) -> anyhow::Result<Self> {
        let quota = QuotaState::detached(config.quota.clone());
        Self::with_quota(config, sink, quota)
    }

    pub fn with_quota(
        config: IngestConfig,
        sink: Arc<dyn EventSink>,
        quota: QuotaState,
    ) -> anyhow::Result<Self> {
        config
            .quota
            .validate()
            .map_err(|err| anyhow::anyhow!("{err}"))?;
        Ok(Self {
            quota,
            keys: KeyRing::new(&config.projects)?,
            // No read may hold a ClickHouse thread longer than this, whatever it asks.
            clickhouse: config
                .clickhouse
                .client()
                .with_setting("max_execution_time", READ_MAX_EXECUTION_SECS.to_string()),
            limiter: RateLimiter::new(config.rate_limit.clone()),
            sink,
            metrics: Metrics::new(),
            config,
        })
    }
}

/// Registers every route on an app.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/batch", web::post().to(batch::post_batch))
        .route("/v1/sessions/{id}", web::get().to(sessions::get_session))
        .route(
            "/v1/sessions/{id}/timeline",
            web::get().to(sessions::get_timeline),
        )
        .configure(read::routes)
        .route("/v1/quota/check", web::post().to(quota::post_check))
        .route("/v1/usage/{account_id}", web::get().to(quota::get_usage))
        .route(
            "/v1/admin/accounts/{account_id}",
            web::get().to(quota::get_account),
        )
        .route(
            "/v1/admin/accounts/{account_id}",
            web::put().to(quota::put_account),
        )
        .route(
            "/v1/admin/accounts/{account_id}/adjustments",
            web::post().to(quota::adjust_usage),
        )
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// Starts the server on `listener`; the returned future runs it until it is stopped
/// (SIGINT/SIGTERM or its handle), finishing in-flight requests first.
pub fn start(state: web::Data<AppState>, listener: TcpListener) -> std::io::Result<Server> {
    let workers = match state.config.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        n => n,
    };
    let shutdown = state.config.shutdown_timeout_secs;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(from_fn(observe))
            .configure(routes)
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::NotFound("route"))
            }))
    })
    .listen(listener)?
    .workers(workers)
    .shutdown_timeout(shutdown)
    .run();
    Ok(server)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if !state.quota.is_loaded() {
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "not_ready", "reason": "quota view loading"}));
    }
    if state.sink.is_ready() {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "not_ready", "reason": "kafka unreachable"}))
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.producer_queue.set(state.sink.queue_len());
    let staleness = state
        .quota
        .staleness_secs(chrono::Utc::now().timestamp_millis());
    // An unbounded staleness (never caught up) shows as a large finite number.
    state
        .metrics
        .quota_view_staleness
        .set(if staleness.is_finite() {
            staleness
        } else {
            1e9
        });
    state
        .metrics
        .quota_view_accounts
        .set(state.quota.accounts() as i64);
    let refused = &state.metrics.quota_view_refused_accounts;
    refused.inc_by(state.quota.refused_accounts().saturating_sub(refused.get()));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request id, access log and request metrics for every request.
async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let state = request.app_data::<web::Data<AppState>>().cloned();
    if let Some(state) = &state {
        state.metrics.in_flight.inc();
    }
    let method = request.method().to_string();
    // Spans and logs name the route pattern, never the path, which may hold an account id.
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());

    // One span per request; the batch handler adds the project and the batch size.
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        http.request.method = %method,
        http.route = %route,
        request_id = %request_id,
        project = tracing::field::Empty,
        batch_size = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    let result = next.call(request).instrument(span.clone()).await;

    if let Some(state) = &state {
        state.metrics.in_flight.dec();
    }
    let mut response = result?;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);

    let elapsed = started.elapsed();
    if let Some(state) = &state {
        let metrics = &state.metrics;
        metrics
            .requests
            .with_label_values(&[route.as_str(), &status.to_string()])
            .inc();
        metrics
            .request_duration
            .with_label_values(&[route.as_str()])
            .observe(elapsed.as_secs_f64());
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    let rate_limit = response
        .request()
        .extensions()
        .get::<RateLimitState>()
        .copied();
    if let Some(state) = rate_limit {
        let headers = response.headers_mut();
        for (name, value) in [
            ("x-ratelimit-limit", state.limit),
            ("x-ratelimit-remaining", state.remaining),
            ("x-ratelimit-reset", state.reset_secs),
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
    tracing::info!(
        request_id = %request_id,
        method = %method,
        route = %route,
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    Ok(response)
}
