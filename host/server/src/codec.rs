//! Request and response bodies, in one place: every request body is read here under the
//! body limit, decoded if it is compressed (`Content-Encoding: gzip` or `deflate`, as
//! Triton's clients send with `request_compression_algorithm`), and every response body is
//! compressed when the client accepts it (`Accept-Encoding: gzip` or `deflate`, as their
//! `response_compression_algorithm` asks).
//!
//! The decoded size is bounded by the same limit as the body on the wire: decoding stops one
//! byte past it and answers 413, so a small "zip bomb" costs at most the limit in memory.
//! A corrupt compressed body or an unknown coding is a 400. `deflate` is the zlib format
//! (RFC 1950), as HTTP defines it and Triton's clients send it.

use std::io::{Read, Write};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flate2::Compression;

use crate::api::blocking;
use crate::http::ApiError;

/// A content coding the server reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }
}

/// The middleware: reads and decodes the request body (at most `limit` bytes, on the wire
/// and decoded), runs the route, and compresses its answer if the client accepts that.
pub(crate) async fn bodies(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let accepted = accepted_coding(request.headers());
    let request = match read_request(request, limit).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let response = next.run(request).await;
    match accepted {
        Some(coding) => compress_response(response, coding).await,
        None => response,
    }
}

/// The coding of a request body, from its `Content-Encoding` (`None`: not encoded).
fn request_coding(headers: &HeaderMap) -> Result<Option<Coding>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match text.as_str() {
        "" | "identity" => Ok(None),
        "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
        "deflate" => Ok(Some(Coding::Deflate)),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("unsupported Content-Encoding {value:?}; use gzip, deflate or none"),
        )),
    }
}

/// The coding to answer in, from `Accept-Encoding`: gzip if accepted, else deflate, else
/// none (`q=0` refuses a coding; `*` stands for gzip).
fn accepted_coding(headers: &HeaderMap) -> Option<Coding> {
    let mut gzip = false;
    let mut deflate = false;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        for item in value.to_str().unwrap_or("").split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            match coding.as_str() {
                "gzip" | "x-gzip" | "*" => gzip |= !refused,
                "deflate" => deflate |= !refused,
                _ => {}
            }
        }
    }
    if gzip {
        Some(Coding::Gzip)
    } else if deflate {
        Some(Coding::Deflate)
    } else {
        None
    }
}

/// The request with its body read (at most `limit` bytes) and decoded.
async fn read_request(request: Request, limit: usize) -> Result<Request, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than the server's limit of {limit} bytes \
                 (--body-limit)"
            ),
        )
    };
    let coding = request_coding(request.headers())?;
    let (mut parts, body) = request.into_parts();
    let bytes = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit))
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body failed: {e}"),
                )
            }
        })?
        .to_bytes();
    let Some(coding) = coding else {
        return Ok(Request::from_parts(parts, Body::from(bytes)));
    };
    let decoded = blocking(move || decode(coding, &bytes, limit)).await?;
    if decoded.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the {} request body decodes to more than the server's limit of {limit} bytes \
                 (--body-limit)",
                coding.name()
            ),
        ));
    }
    parts.headers.remove(header::CONTENT_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(decoded.len()));
    Ok(Request::from_parts(parts, Body::from(decoded)))
}

/// `bytes` decoded: at most `limit + 1` bytes, so that a larger result is seen without
/// decoding all of it.
fn decode(coding: Coding, bytes: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let decoded = match coding {
        Coding::Gzip => {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(bytes)
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map(|_| out)
                .map_err(|e| e.to_string())
        }
        Coding::Deflate => inflate_zlib(bytes, limit.saturating_add(1)),
    };
    decoded.map_err(|why| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the request body is not valid {} data (Content-Encoding: {}): {why}",
                coding.name(),
                coding.name()
            ),
        )
    })
}

/// The zlib stream `bytes` inflated, stopping after `most` bytes. Unlike flate2's reader,
/// a stream cut short is an error (gzip's reader sees that from its trailer).
fn inflate_zlib(bytes: &[u8], most: usize) -> Result<Vec<u8>, String> {
    let mut z = flate2::Decompress::new(true);
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(most));
    loop {
        if out.len() == out.capacity() {
            if out.len() >= most {
                return Ok(out);
            }
            out.reserve_exact(out.len().max(4096).min(most - out.len()));
        }
        let read = usize::try_from(z.total_in()).unwrap_or(usize::MAX);
        let before = (z.total_in(), z.total_out());
        let status = z
            .decompress_vec(
                bytes.get(read..).unwrap_or_default(),
                &mut out,
                flate2::FlushDecompress::None,
            )
            .map_err(|e| e.to_string())?;
        if status == flate2::Status::StreamEnd {
            return Ok(out);
        }
        if (z.total_in(), z.total_out()) == before {
            return Err("the data ends before the compressed stream does".into());
        }
    }
}

/// `bytes` compressed with `coding` (the fast level: answers are latency-bound).
fn encode(coding: Coding, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let out = Vec::with_capacity(bytes.len() / 2 + 64);
    match coding {
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(out, Compression::fast());
            e.write_all(bytes)?;
            e.finish()
        }
        Coding::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(out, Compression::fast());
            e.write_all(bytes)?;
            e.finish()
        }
    }
}

/// `response` with its body compressed with `coding` (empty and already encoded bodies
/// are left alone).
async fn compress_response(response: Response, coding: Coding) -> Response {
    if response.headers().contains_key(header::CONTENT_ENCODING) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the response body failed: {e}"),
            )
            .into_response();
        }
    };
    parts
        .headers
        .append(header::VARY, HeaderValue::from_static("accept-encoding"));
    if bytes.is_empty() {
        return Response::from_parts(parts, Body::empty());
    }
    let encoded = match blocking(move || {
        encode(coding, &bytes).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("compressing the response failed: {e}"),
            )
        })
    })
    .await
    {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    parts.headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.name()),
    );
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(encoded.len()));
    Response::from_parts(parts, Body::from(encoded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Option<Coding> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, value.parse().unwrap());
        accepted_coding(&h)
    }

    #[test]
    fn accept_encoding_picks_gzip_then_deflate() {
        assert_eq!(accept("gzip"), Some(Coding::Gzip));
        assert_eq!(accept("deflate"), Some(Coding::Deflate));
        assert_eq!(accept("deflate, gzip, br, zstd"), Some(Coding::Gzip));
        assert_eq!(accept("gzip;q=0, deflate;q=0.5"), Some(Coding::Deflate));
        assert_eq!(accept("GZIP"), Some(Coding::Gzip));
        assert_eq!(accept("*"), Some(Coding::Gzip));
        assert_eq!(accept("br, identity"), None);
        assert_eq!(accept("gzip;q=0"), None);
        assert_eq!(accepted_coding(&HeaderMap::new()), None);
    }

    #[test]
    fn bodies_round_trip_and_stay_bounded() {
        let text: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for coding in [Coding::Gzip, Coding::Deflate] {
            let packed = encode(coding, &text).unwrap();
            assert!(
                packed.len() < text.len() / 2,
                "{coding:?}: {}",
                packed.len()
            );
            assert_eq!(decode(coding, &packed, text.len()).unwrap(), text);
            // One byte short of the limit: decoding stops past it.
            let cut = decode(coding, &packed, text.len() - 1).unwrap();
            assert!(cut.len() >= text.len(), "{coding:?}");
            // Corrupt data is a 400.
            let mut bad = packed.clone();
            let mid = bad.len() / 2;
            bad.truncate(mid);
            let e = decode(coding, &bad, text.len()).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{coding:?}");
        }
        // A bomb: 64 MiB of zeros in a few KiB, decoded against a 1 MiB limit.
        let bomb = encode(Coding::Gzip, &vec![0u8; 64 << 20]).unwrap();
        assert!(bomb.len() < 1 << 20);
        assert_eq!(
            decode(Coding::Gzip, &bomb, 1 << 20).unwrap().len(),
            (1 << 20) + 1
        );
    }
}
