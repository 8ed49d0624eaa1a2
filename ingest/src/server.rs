//! The HTTP server: what every route family shares (keys, rate limits, metrics: the
//! [`Gate`]), the families a deployment serves ([`Services`], chosen by `roles`), and the
//! middleware that gives every response an `X-Request-Id`, one JSON log line and its metrics.
//! `/healthz`, `/readyz` and `/metrics` are served whatever the roles.

use crate::admin::AdminState;
use crate::auth::{KeyRing, Principal, Scope};
use crate::config::{IngestConfig, Role};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::quota::{CheckState, QuotaState};
use crate::ratelimit::{RateLimitState, RateLimiter, RouteGroup};
use crate::read::ReadState;
use crate::write::sink::EventSink;
use crate::write::WriteState;
use crate::{admin, quota, read, write};
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpMessage, HttpRequest, HttpResponse, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// What every route family shares: the configuration, the keys, the rate limiter and the
/// metrics. [`Gate::admit`] is the first call of every authenticated handler.
pub struct Gate {
    pub config: IngestConfig,
    pub keys: KeyRing,
    pub metrics: Metrics,
    pub limiter: RateLimiter,
}

impl Gate {
    pub fn new(config: IngestConfig) -> anyhow::Result<Self> {
        Ok(Self {
            keys: KeyRing::new(&config.projects)?,
            limiter: RateLimiter::new(config.rate_limit.clone()),
            metrics: Metrics::new(),
            config,
        })
    }

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

/// The route families this process serves, each with its slice of state; a family that
/// `roles` leaves out is `None`, its routes answer 404 and its readiness is not asked.
pub struct Services {
    pub gate: Arc<Gate>,
    pub write: Option<web::Data<WriteState>>,
    pub read: Option<web::Data<ReadState>>,
    pub check: Option<web::Data<CheckState>>,
    pub admin: Option<web::Data<AdminState>>,
    /// The events topic's sink (write and admin publish to it).
    pub sink: Arc<dyn EventSink>,
    /// The quota view (read, quota and admin use it); present only when one of them is served.
    pub quota: Option<Arc<QuotaState>>,
}

impl Services {
    /// The families `config.roles` names, over `sink` and `quota`.
    pub fn new(
        config: IngestConfig,
        sink: Arc<dyn EventSink>,
        quota: QuotaState,
    ) -> anyhow::Result<Self> {
        config.validate().map_err(|err| anyhow::anyhow!("{err}"))?;
        let roles = config.roles.clone();
        let quota = config.follows_quota_view().then(|| Arc::new(quota));
        let gate = Arc::new(Gate::new(config)?);
        let serves = |role| roles.contains(&role);
        let with_view = |role| quota.clone().filter(|_| serves(role));
        let write = serves(Role::Write)
            .then(|| web::Data::new(WriteState::new(gate.clone(), sink.clone())));
        let read =
            with_view(Role::Read).map(|view| web::Data::new(ReadState::new(gate.clone(), view)));
        let check =
            with_view(Role::Quota).map(|view| web::Data::new(CheckState::new(gate.clone(), view)));
        let admin = with_view(Role::Admin)
            .map(|view| web::Data::new(AdminState::new(gate.clone(), sink.clone(), view)));
        Ok(Self {
            gate,
            write,
            read,
            check,
            admin,
            sink,
            quota,
        })
    }

    /// Why this process is not ready, if it is not: the first family served that is not.
    pub fn not_ready(&self) -> Option<&'static str> {
        let write = self.write.as_ref().and_then(|s| s.not_ready());
        let read = self.read.as_ref().and_then(|s| s.not_ready());
        let check = self.check.as_ref().and_then(|s| s.not_ready());
        let admin = self.admin.as_ref().and_then(|s| s.not_ready());
        write.or(read).or(check).or(admin)
    }
}

/// Registers the routes of every family served, their state, and the operational routes.
pub fn routes(cfg: &mut web::ServiceConfig, services: &Services) {
    cfg.app_data(web::Data::from(services.gate.clone()));
    if let Some(state) = &services.write {
        cfg.app_data(state.clone()).configure(write::routes);
    }
    if let Some(state) = &services.read {
        cfg.app_data(state.clone()).configure(read::routes);
    }
    if let Some(state) = &services.check {
        cfg.app_data(state.clone()).configure(quota::routes);
    }
    if let Some(state) = &services.admin {
        cfg.app_data(state.clone()).configure(admin::routes);
    }
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// Starts the server on `listener`; the returned future runs it until it is stopped
/// (SIGINT/SIGTERM or its handle), finishing in-flight requests first.
pub fn start(services: web::Data<Services>, listener: TcpListener) -> std::io::Result<Server> {
    let config = &services.gate.config;
    let workers = match config.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        n => n,
    };
    let shutdown = config.shutdown_timeout_secs;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(services.clone())
            .wrap(from_fn(observe))
            .configure(|cfg| routes(cfg, &services))
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

async fn readyz(services: web::Data<Services>) -> HttpResponse {
    match services.not_ready() {
        None => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Some(reason) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "not_ready", "reason": reason})),
    }
}

async fn metrics(services: web::Data<Services>) -> HttpResponse {
    let metrics = &services.gate.metrics;
    metrics.producer_queue.set(services.sink.queue_len());
    if let Some(quota) = &services.quota {
        let staleness = quota.staleness_secs(chrono::Utc::now().timestamp_millis());
        // An unbounded staleness (never caught up) shows as a large finite number.
        metrics.quota_view_staleness.set(if staleness.is_finite() {
            staleness
        } else {
            1e9
        });
        metrics.quota_view_accounts.set(quota.accounts() as i64);
        let refused = &metrics.quota_view_refused_accounts;
        refused.inc_by(quota.refused_accounts().saturating_sub(refused.get()));
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render())
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
    let state = request.app_data::<web::Data<Gate>>().cloned();
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

#[cfg(test)]
mod tests;
