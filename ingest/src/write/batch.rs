//! `POST /v1/batch`: authenticate, read, validate, publish to Kafka, and answer only once
//! Kafka has acknowledged every accepted event.

use crate::auth::Scope;
use crate::body::{read_json_body, require_json};
use crate::error::{ApiError, ErrorCode};
use crate::ratelimit::RouteGroup;
use crate::write::sink::SinkRecord;
use crate::write::WriteState;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Serialize;
use std::time::Instant;
use tally_schema::envelope::Envelope;
use tally_schema::validate::{parse_batch, BatchError, Rejection};

/// The 200 answer: how many events are durable, and which were refused and why.
#[derive(Debug, Serialize)]
pub struct BatchResponse {
    pub accepted: usize,
    pub rejected: Vec<Rejection>,
}

pub async fn post_batch(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<WriteState>,
) -> Result<HttpResponse, ApiError> {
    let principal = state
        .gate
        .admit(&request, Scope::Ingest, RouteGroup::Write)?;
    tracing::Span::current().record("project", principal.project_id.as_str());
    require_json(&request)?;
    let body = read_json_body(&request, payload, state.gate.config.max_body_bytes).await?;

    let now = Utc::now();
    let parsed = parse_batch(&body, &state.gate.config.limits, now).map_err(|err| match err {
        BatchError::InvalidJson(_) => {
            ApiError::bad_request(ErrorCode::InvalidJson, err.to_string())
        }
        BatchError::InvalidBatch(_) => ApiError::BadRequest {
            code: ErrorCode::InvalidBatch,
            field: Some("batch".into()),
            message: err.to_string(),
        },
        BatchError::TooManyEvents { .. } => ApiError::PayloadTooLarge(err.to_string()),
    })?;
    let events = parsed.events.len();
    state
        .gate
        .limiter
        .events(&principal.key_id, events, Instant::now())
        .map_err(|limited| ApiError::RateLimited {
            retry_after_secs: limited.retry_after_secs,
        })?;
    tracing::Span::current().record("batch_size", parsed.events.len() + parsed.rejected.len());
    let metrics = &state.gate.metrics;
    metrics
        .batch_events
        .observe((parsed.events.len() + parsed.rejected.len()) as f64);

    let received_at_ms = now.timestamp_millis();
    let records: Vec<SinkRecord> = parsed
        .events
        .into_iter()
        .map(|mut event| {
            principal.redact.apply(&principal.project_id, &mut event);
            let envelope = Envelope::new(&principal.project_id, received_at_ms, event);
            SinkRecord {
                key: envelope.key(),
                payload: envelope.encode(),
            }
        })
        .collect();
    let accepted = records.len();

    if !records.is_empty() {
        let started = Instant::now();
        let published = state.sink.publish(records).await;
        let result = if published.is_ok() { "ok" } else { "error" };
        metrics
            .produce_duration
            .with_label_values(&[result])
            .observe(started.elapsed().as_secs_f64());
        if let Err(err) = published {
            tracing::warn!(project = %principal.project_id, %err, "batch not acknowledged by Kafka");
            return Err(ApiError::from_sink(
                err,
                state.gate.config.producer.retry_after_secs,
            ));
        }
    }

    metrics
        .events
        .with_label_values(&["accepted", ""])
        .inc_by(accepted as u64);
    for rejection in &parsed.rejected {
        metrics
            .events
            .with_label_values(&["rejected", rejection.code.as_str()])
            .inc();
    }
    Ok(HttpResponse::Ok().json(BatchResponse {
        accepted,
        rejected: parsed.rejected,
    }))
}
