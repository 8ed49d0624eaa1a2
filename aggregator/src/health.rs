//! `/healthz`, `/readyz` and `/metrics` of the aggregator.

use crate::metrics::Metrics;
use actix_web::{web, App, HttpResponse, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;

pub fn start(
    metrics: Arc<Metrics>,
    listener: TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    let metrics = web::Data::from(metrics);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(metrics.clone())
            .route(
                "/healthz",
                web::get()
                    .to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "ok"})) }),
            )
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(render))
    })
    .listen(listener)?
    .workers(1)
    .disable_signals()
    .run())
}

async fn readyz(metrics: web::Data<Metrics>) -> HttpResponse {
    if metrics.is_ready() {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "not_ready", "reason": "clickhouse writes failing"}))
    }
}

async fn render(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render())
}
