//! Who may call which routes: an optional admin token for the repository routes, an
//! optional invoke token for inference, and what happens without them.
//!
//! Tokens travel as `Authorization: Bearer <token>`. A route that needs one answers 401
//! (with `WWW-Authenticate: Bearer`) when the header is missing or malformed, and 403 when
//! the token is wrong; tokens are compared in constant time. Without an admin token the
//! repository routes are open only when the server listens on loopback alone (the machine's
//! own users), else refused with 403. Without an invoke token inference is open. Health,
//! metadata, configuration and statistics are always open.

use std::path::Path;

use axum::http::{HeaderMap, StatusCode, header};
use tensorlet_host::{Error, Result};

use crate::http::ApiError;

/// A secret token; its `Debug` form does not show it.
#[derive(Clone)]
struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Whether `presented` is this token, in time that depends only on the lengths (a
    /// token's length is not secret; its bytes are).
    fn matches(&self, presented: &[u8]) -> bool {
        if presented.len() != self.0.len() {
            return false;
        }
        let diff = presented
            .iter()
            .zip(&self.0)
            .fold(0u8, |acc, (a, b)| acc | std::hint::black_box(a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// Which routes need which token.
#[derive(Clone, Debug, Default)]
pub struct Access {
    admin: Option<Token>,
    invoke: Option<Token>,
    loopback_only: bool,
}

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// The repository routes: the admin token (or loopback without one).
    Admin,
    /// Inference: the invoke token or the admin token, if an invoke token is set.
    Invoke,
}

impl Access {
    /// Access with the admin token `admin` and the invoke token `invoke`, for a server
    /// that listens on loopback only if `loopback_only`. Tokens must be 1 or more visible
    /// ASCII characters (what fits in an `Authorization` header).
    pub fn new(admin: Option<String>, invoke: Option<String>, loopback_only: bool) -> Result<Self> {
        let token = |what: &str, t: Option<String>| -> Result<Option<Token>> {
            match t {
                None => Ok(None),
                Some(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()) => {
                    Ok(Some(Token(t.into_bytes())))
                }
                Some(t) => Err(Error::invalid_input(format!(
                    "the {what} token must be 1 or more visible ASCII characters (no spaces), \
                     got {} bytes that are not",
                    t.len()
                ))),
            }
        };
        Ok(Access {
            admin: token("admin", admin)?,
            invoke: token("invoke", invoke)?,
            loopback_only,
        })
    }

    /// Checks that a request with `headers` may use a route that needs `need`.
    pub(crate) fn authorize(&self, headers: &HeaderMap, need: Need) -> Result<(), ApiError> {
        let (accepted, what): (Vec<&Token>, &str) = match need {
            Need::Admin => match &self.admin {
                Some(admin) => (vec![admin], "the admin token"),
                None if self.loopback_only => return Ok(()),
                None => {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "repository changes are refused: this server listens beyond loopback \
                         and has no admin token (start it with --admin-token-file)",
                    ));
                }
            },
            Need::Invoke => match &self.invoke {
                Some(invoke) => (
                    self.admin.iter().chain([invoke]).collect(),
                    "the invoke token",
                ),
                None => return Ok(()),
            },
        };
        let presented = bearer(headers).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("this route needs `Authorization: Bearer <token>` with {what}"),
            )
        })?;
        // Every accepted token is compared, so the time does not say which one matched.
        let ok = accepted
            .iter()
            .fold(false, |ok, t| t.matches(presented) | ok);
        if ok {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("the bearer token is not {what}"),
            ))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Reads a token from the file at `path`: its contents without surrounding whitespace
/// (so a trailing newline does not count).
pub fn read_token_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Error::invalid_input(format!(
            "token file `{}` is empty",
            path.display()
        )));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    fn status(access: &Access, auth: Option<&str>, need: Need) -> u16 {
        match access.authorize(&headers(auth), need) {
            Ok(()) => 200,
            Err(e) => e.status().as_u16(),
        }
    }

    #[test]
    fn tokens_gate_the_routes_they_guard() {
        let both = Access::new(Some("adm1n".into()), Some("inv0ke".into()), false).unwrap();
        let cases: [(Option<&str>, Need, u16); 10] = [
            (None, Need::Admin, 401),
            (Some("Basic adm1n"), Need::Admin, 401),
            (Some("Bearer"), Need::Admin, 401),
            (Some("Bearer adm1n"), Need::Admin, 200),
            (Some("bearer  adm1n "), Need::Admin, 200),
            (Some("Bearer adm1"), Need::Admin, 403),
            (Some("Bearer inv0ke"), Need::Admin, 403),
            (Some("Bearer inv0ke"), Need::Invoke, 200),
            (Some("Bearer adm1n"), Need::Invoke, 200),
            (Some("Bearer nope"), Need::Invoke, 403),
        ];
        for (auth, need, want) in cases {
            assert_eq!(status(&both, auth, need), want, "{auth:?} {need:?}");
        }
        // No tokens: inference is open; the repository only on loopback.
        let none = |loopback| Access::new(None, None, loopback).unwrap();
        assert_eq!(status(&none(true), None, Need::Admin), 200);
        assert_eq!(status(&none(false), None, Need::Admin), 403);
        assert_eq!(status(&none(false), None, Need::Invoke), 200);
        // An admin token only: inference stays open.
        let admin = Access::new(Some("adm1n".into()), None, false).unwrap();
        assert_eq!(status(&admin, None, Need::Invoke), 200);
        assert_eq!(status(&admin, None, Need::Admin), 401);
    }

    #[test]
    fn tokens_compare_whole_and_stay_secret() {
        let t = Token(b"secret".to_vec());
        assert!(t.matches(b"secret"));
        for wrong in [&b""[..], b"secre", b"secreT", b"secrets", b"Secret"] {
            assert!(!t.matches(wrong), "{wrong:?}");
        }
        let access = Access::new(Some("secret".into()), None, true).unwrap();
        assert!(!format!("{access:?}").contains("secret"));
        for bad in ["", "has space", "tab\t", "é"] {
            assert!(
                Access::new(Some(bad.into()), None, true).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn token_files_lose_their_newline() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("tensorlet-token-{}", std::process::id()));
        std::fs::write(&path, "  t0ken\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "t0ken");
        std::fs::write(&path, "\n").unwrap();
        assert!(
            read_token_file(&path)
                .unwrap_err()
                .message()
                .contains("empty")
        );
        std::fs::remove_file(&path).unwrap();
        assert!(read_token_file(&path).is_err());
    }
}
