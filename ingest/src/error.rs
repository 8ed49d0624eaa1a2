//! Every way a request can fail, each owning its HTTP answer:
//! `{"error": {"code", "message"}}` with the right status (and `Retry-After` where it helps).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// A query parameter of a read route is unknown, repeated or has a bad value
    /// (`invalid_parameter`), breaks a rule across parameters (`invalid_range`), or is not a
    /// cursor the route made (`invalid_cursor`); the answer names it in `parameter` as well
    /// as in the message.
    #[error("{message}")]
    InvalidParameter {
        code: &'static str,
        parameter: String,
        message: String,
    },
    #[error("missing or unknown API key")]
    Unauthorized,
    #[error("this key may not {0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("rate limit exceeded; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{what} is unavailable; retry in {retry_after_secs} s")]
    Unavailable {
        what: &'static str,
        retry_after_secs: u64,
    },
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The machine-readable code of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } => code,
            Self::InvalidParameter { code, .. } => code,
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } | Self::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(detail) = self {
            // The detail goes to the log, not to the client.
            tracing::error!(%detail, "internal error");
        }
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::Unavailable {
                retry_after_secs, ..
            }
            | Self::RateLimited { retry_after_secs } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            Self::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        let mut error = json!({ "code": self.code(), "message": self.to_string() });
        if let Self::InvalidParameter { parameter, .. } = self {
            error["parameter"] = json!(parameter);
        }
        response.json(json!({ "error": error }))
    }
}

/// TIMEOUT_EXCEEDED: a read ran past `max_execution_time`.
const CLICKHOUSE_TIMEOUT_EXCEEDED: u32 = 159;

impl From<clickhouse::error::Error> for ApiError {
    fn from(err: clickhouse::error::Error) -> Self {
        let unavailable = matches!(
            err,
            clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
        ) || tally_runtime::clickhouse::exception_code(&err)
            == Some(CLICKHOUSE_TIMEOUT_EXCEEDED);
        if unavailable {
            Self::Unavailable {
                what: "ClickHouse",
                retry_after_secs: 5,
            }
        } else {
            Self::Internal(err.to_string())
        }
    }
}
