//! Reading a request body within limits: the raw bytes, then `gzip` or `zstd` decoding with the
//! limit applied to the decompressed bytes, so a decompression bomb stops at the limit.

use crate::error::{ApiError, ErrorCode};
use actix_web::http::header;
use actix_web::{web, HttpRequest};
use futures::StreamExt;
use std::io::Read;

/// Checks `Content-Type` is JSON.
pub fn require_json(request: &HttpRequest) -> Result<(), ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type must be application/json, not {content_type:?}"
        )))
    }
}

/// Most bytes of a quota check's or an admin route's body, after decompression: each is one
/// small JSON object.
pub const SMALL_BODY_LIMIT: usize = 64 * 1024;

/// Reads a small JSON body ([`SMALL_BODY_LIMIT`]; gzip and zstd decoded) into `T`: a body
/// past the limit gets Tally's 413, a malformed one a 400 naming the field.
pub async fn read_small_json<T: serde::de::DeserializeOwned>(
    request: &HttpRequest,
    payload: web::Payload,
) -> Result<T, ApiError> {
    let body = read_json_body(request, payload, SMALL_BODY_LIMIT).await?;
    parse_json_body(&body)
}

/// Reads the body and decodes its `Content-Encoding`; both steps stop at `limit` bytes.
pub async fn read_json_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let encoding = Encoding::of(request)?;
    let mut raw = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|err| {
            ApiError::bad_request(
                ErrorCode::InvalidBody,
                format!("cannot read the body: {err}"),
            )
        })?;
        if raw.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        raw.extend_from_slice(&chunk);
    }
    encoding.decode(&raw, limit)
}

/// Decodes a body sent with `Content-Encoding: content_encoding` (`None`: none), stopping at
/// `limit` bytes: what `POST /v1/batch` does before parsing (the fuzz target calls it).
pub fn decode_body(
    content_encoding: Option<&str>,
    raw: &[u8],
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    Encoding::parse(content_encoding.unwrap_or(""))?.decode(raw, limit)
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "body is larger than {limit} bytes (after decompression)"
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    fn of(request: &HttpRequest) -> Result<Self, ApiError> {
        let Some(value) = request.headers().get(header::CONTENT_ENCODING) else {
            return Ok(Self::Identity);
        };
        Self::parse(value.to_str().unwrap_or(""))
    }

    fn parse(name: &str) -> Result<Self, ApiError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Ok(Self::Identity),
            "gzip" | "x-gzip" => Ok(Self::Gzip),
            "zstd" => Ok(Self::Zstd),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "Content-Encoding {other:?} is not supported; use gzip or zstd"
            ))),
        }
    }

    fn decode(self, raw: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
        let reader: Box<dyn Read + '_> = match self {
            Self::Identity => return Ok(raw.to_vec()),
            Self::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
            Self::Zstd => Box::new(
                zstd::stream::read::Decoder::new(raw).map_err(|err| bad_encoding(self, &err))?,
            ),
        };
        let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
        // One byte past the limit tells "exactly at the limit" from "over it".
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|err| bad_encoding(self, &err))?;
        if out.len() > limit {
            return Err(too_large(limit));
        }
        Ok(out)
    }
}

fn bad_encoding(encoding: Encoding, err: &std::io::Error) -> ApiError {
    let name = if encoding == Encoding::Gzip {
        "gzip"
    } else {
        "zstd"
    };
    ApiError::bad_request(
        ErrorCode::InvalidEncoding,
        format!("body is not valid {name}: {err}"),
    )
}

/// A JSON body of the quota and admin routes as `T`; a refusal names the field at fault.
pub fn parse_json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut json)
        .map_err(|err| ApiError::invalid_body(&err.path().to_string(), err.inner()))?;
    json.end()
        .map_err(|err| ApiError::invalid_body(".", &err))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).expect("gzip");
        encoder.finish().expect("gzip")
    }

    #[test]
    fn decodes_within_the_limit() {
        let data = b"{\"batch\": []}".repeat(10);
        assert_eq!(
            Encoding::Gzip
                .decode(&gzip(&data), data.len())
                .expect("fits"),
            data
        );
        let z = zstd::encode_all(data.as_slice(), 3).expect("zstd");
        assert_eq!(Encoding::Zstd.decode(&z, data.len()).expect("fits"), data);
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024);
        let err = Encoding::Gzip
            .decode(&bomb, 1024 * 1024)
            .expect_err("too large");
        assert!(matches!(err, ApiError::PayloadTooLarge(_)));
    }

    #[test]
    fn garbage_is_a_bad_request() {
        let err = Encoding::Gzip
            .decode(b"not gzip at all", 1024)
            .expect_err("bad");
        assert_eq!(err.code(), ErrorCode::InvalidEncoding);
        let err = Encoding::Zstd
            .decode(b"not zstd at all", 1024)
            .expect_err("bad");
        assert_eq!(err.code(), ErrorCode::InvalidEncoding);
    }
}
