//! Every way a request can fail, each owning its HTTP answer:
//! `{"error": {"code", "message", "field"?, "parameter"?}}` with the right status (and
//! `Retry-After` where it helps). The codes are [`ErrorCode`]s, listed in the OpenAPI document.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// The machine-readable `code` of an error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The body is not JSON.
    InvalidJson,
    /// The body is JSON but not a batch (`field`: `batch`).
    InvalidBatch,
    /// The body does not fit the route's shape (`field` names the field when one is at fault).
    InvalidBody,
    /// A field has a bad value (`field` names it).
    InvalidField,
    /// The body does not decompress as its `Content-Encoding` says.
    InvalidEncoding,
    /// The session id of the path is empty or too long.
    InvalidSessionId,
    /// A query parameter is unknown, repeated or has a bad value (`parameter` names it).
    InvalidParameter,
    /// Query parameters break a rule together (`parameter` names one of them).
    InvalidRange,
    /// A `cursor` the route did not make.
    InvalidCursor,
    Unauthorized,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 17] = [
        Self::InvalidJson,
        Self::InvalidBatch,
        Self::InvalidBody,
        Self::InvalidField,
        Self::InvalidEncoding,
        Self::InvalidSessionId,
        Self::InvalidParameter,
        Self::InvalidRange,
        Self::InvalidCursor,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::RateLimited,
        Self::Unavailable,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidBatch => "invalid_batch",
            Self::InvalidBody => "invalid_body",
            Self::InvalidField => "invalid_field",
            Self::InvalidEncoding => "invalid_encoding",
            Self::InvalidSessionId => "invalid_session_id",
            Self::InvalidParameter => "invalid_parameter",
            Self::InvalidRange => "invalid_range",
            Self::InvalidCursor => "invalid_cursor",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A body (or path) the route refuses; `field` names the field at fault, if one is.
    #[error("{message}")]
    BadRequest {
        code: ErrorCode,
        field: Option<String>,
        message: String,
    },
    /// A query parameter of a read route is unknown, repeated or has a bad value
    /// (`invalid_parameter`), breaks a rule across parameters (`invalid_range`), or is not a
    /// cursor the route made (`invalid_cursor`); the answer names it in `parameter` as well
    /// as in the message.
    #[error("{message}")]
    InvalidParameter {
        code: ErrorCode,
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
    /// A refusal of the body as a whole (no one field at fault).
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            field: None,
            message: message.into(),
        }
    }

    /// `invalid_field`: `field` has a bad value; the message reads `field: reason`.
    pub fn invalid_field(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::BadRequest {
            code: ErrorCode::InvalidField,
            field: Some(field.to_owned()),
            message: format!("{field}: {reason}"),
        }
    }

    /// `invalid_body` from the JSON parser's error at `path` (`.` for the whole body), naming
    /// the field at fault: the one whose value or name was refused (the path), or the missing
    /// one (named only in the message).
    pub fn invalid_body(path: &str, err: &serde_json::Error) -> Self {
        let message = err.to_string();
        let parent = (path != ".").then_some(path);
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name);
        let field = match (parent, missing) {
            (Some(parent), Some(name)) => Some(format!("{parent}.{name}")),
            (None, Some(name)) => Some(name.to_owned()),
            (parent, None) => parent.map(str::to_owned),
        };
        let message = match &field {
            Some(field) if !message.contains(&format!("`{field}`")) => {
                format!("request body: {field}: {message}")
            }
            _ => format!("request body: {message}"),
        };
        Self::BadRequest {
            code: ErrorCode::InvalidBody,
            field,
            message,
        }
    }

    /// The answer to a publish the sink did not take: retry later (503 with
    /// `retry_after_secs`), or never with these records (413).
    pub fn from_sink(err: crate::write::sink::SinkError, retry_after_secs: u64) -> Self {
        match err {
            crate::write::sink::SinkError::Unavailable(_) => Self::Unavailable {
                what: "Kafka",
                retry_after_secs,
            },
            crate::write::sink::SinkError::Rejected(reason) => Self::PayloadTooLarge(format!(
                "Kafka refused an event as too large for it ({reason}); send smaller events"
            )),
        }
    }

    /// The machine-readable code of the answer.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest { code, .. } | Self::InvalidParameter { code, .. } => *code,
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Unavailable { .. } => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
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
        let mut error = json!({ "code": self.code().as_str(), "message": self.to_string() });
        match self {
            Self::InvalidParameter { parameter, .. } => error["parameter"] = json!(parameter),
            Self::BadRequest {
                field: Some(field), ..
            } => error["field"] = json!(field),
            _ => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_in_the_openapi_document_and_no_other() {
        let spec = include_str!("../../sdk-spec/openapi.yaml");
        let line = spec
            .lines()
            .find(|l| l.trim_start().starts_with("code: { type: string, enum: ["))
            .expect("the Error schema lists its codes");
        let listed: Vec<&str> = line
            .split_once('[')
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(codes, _)| codes.split(',').map(str::trim).collect())
            .unwrap_or_default();
        let ours: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, ours);
    }

    #[test]
    fn a_body_error_names_the_field_at_fault() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)] // only parsed
        struct Inner {
            limit: u64,
        }
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)] // only parsed
        struct Body {
            account_id: String,
            #[serde(default)]
            inner: Option<Inner>,
        }
        let field = |body: &str| match crate::body::parse_json_body::<Body>(body.as_bytes()) {
            Err(ApiError::BadRequest { code, field, .. }) => {
                assert_eq!(code, ErrorCode::InvalidBody);
                field
            }
            other => panic!("{body}: {other:?}"),
        };
        let named = |f: &str| Some(f.to_owned());
        assert_eq!(field(r#"{"account_id": "a", "extra": 1}"#), named("extra"));
        assert_eq!(field("{}"), named("account_id"));
        assert_eq!(field(r#"{"account_id": 5}"#), named("account_id"));
        assert_eq!(
            field(r#"{"account_id": "a", "inner": {"limit": -1}}"#),
            named("inner.limit")
        );
        assert_eq!(
            field(r#"{"account_id": "a", "inner": {"x": 1}}"#),
            named("inner.x")
        );
        assert_eq!(field(r#""not an object""#), None);
        assert_eq!(field(r#"{"account_id": "a"} trailing"#), None);
    }
}
