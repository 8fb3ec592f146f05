//! The route table: method, path, whether it is open without an API key, and the handler;
//! and the matching of a request against it. `ROUTES` is also what the OpenAPI test checks
//! the document against, so a route cannot be added without being documented.

use std::sync::Arc;

use tiny_http::Method;

use super::{capacity, inference, metrics, models, openai, openapi, rpc, status, transcriptions};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::http::{Incoming, Reply};

/// A route handler: parses the request, calls the engine, shapes the reply.
pub type Handler = fn(&Arc<Engine>, &mut Incoming) -> Result<Reply, ApiError>;

pub struct Route {
    pub method: Method,
    pub path: &'static str,
    /// Reachable without `Authorization` when `apiKeys` is set (README "API").
    pub public: bool,
    pub handler: Handler,
}

// One line a route reads better than what rustfmt would make of it.
#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    Route { method: Method::Get,  path: "/",                         public: true,  handler: status::index },
    Route { method: Method::Get,  path: "/health",                   public: true,  handler: status::health },
    Route { method: Method::Get,  path: "/livez",                    public: true,  handler: status::livez },
    Route { method: Method::Get,  path: "/readyz",                   public: true,  handler: status::readyz },
    Route { method: Method::Post, path: "/api/v1/transcriptions",    public: false, handler: transcriptions::create },
    Route { method: Method::Post, path: "/api/v1/languages/detect",  public: false, handler: transcriptions::detect_language },
    Route { method: Method::Get,  path: "/api/v1/providers",         public: false, handler: status::providers },
    Route { method: Method::Get,  path: "/api/v1/status",            public: false, handler: status::status },
    Route { method: Method::Get,  path: "/api/models",               public: false, handler: models::list },
    Route { method: Method::Post, path: "/api/models/:id/load",      public: false, handler: models::load },
    Route { method: Method::Post, path: "/api/models/:id/unload",    public: false, handler: models::unload },
    Route { method: Method::Post, path: "/api/inference/:modelId",   public: false, handler: inference::run },
    Route { method: Method::Get,  path: "/api/inference/history",    public: false, handler: inference::history },
    Route { method: Method::Get,  path: "/api/capacity",             public: false, handler: capacity::get },
    Route { method: Method::Post, path: "/rpc",                      public: false, handler: rpc::call },
    Route { method: Method::Post, path: "/v1/audio/transcriptions",  public: false, handler: openai::transcriptions },
    Route { method: Method::Post, path: "/v1/audio/translations",    public: false, handler: openai::translations },
    Route { method: Method::Get,  path: "/v1/models",                public: false, handler: openai::models },
    Route { method: Method::Get,  path: "/v1/models/:id",            public: false, handler: openai::model },
    Route { method: Method::Get,  path: "/metrics",                  public: false, handler: metrics::page },
    Route { method: Method::Get,  path: "/openapi",                  public: true,  handler: openapi::page },
    Route { method: Method::Get,  path: "/openapi/json",             public: true,  handler: openapi::document },
];

/// Metric label for requests that matched no route.
pub const UNMATCHED: &str = "unmatched";
/// Metric label for CORS preflight requests.
pub const PREFLIGHT: &str = "preflight";

/// The route for a request, with its `:name` values, or the error for none: 404, or 405 with
/// `Allow` when the path exists for other methods.
pub fn resolve(method: &Method, path: &str) -> Result<(&'static Route, Vec<String>), ApiError> {
    let path = normalise(path);
    find(method, path).ok_or_else(|| unmatched(method, path))
}

/// The metrics label of a request: its route pattern, or `UNMATCHED`.
pub fn label(method: &Method, path: &str) -> &'static str {
    find(method, normalise(path)).map_or(UNMATCHED, |(r, _)| r.path)
}

/// The route for `method` and `path`, and the values of its `:name` segments. HEAD is
/// answered like GET; tiny_http leaves the body out. Literal routes win over patterns, so
/// `/api/inference/history` is never taken for a model id.
fn find(method: &Method, path: &str) -> Option<(&'static Route, Vec<String>)> {
    let method = if *method == Method::Head {
        &Method::Get
    } else {
        method
    };
    let candidates = || ROUTES.iter().filter(move |r| r.method == *method);
    candidates()
        .find(|r| r.path == path)
        .map(|r| (r, Vec::new()))
        .or_else(|| candidates().find_map(|r| Some((r, captures(r.path, path)?))))
}

/// Matches `path` against a pattern like `/api/models/:id/load`.
fn captures(pattern: &str, path: &str) -> Option<Vec<String>> {
    let (pattern, path): (Vec<&str>, Vec<&str>) =
        (pattern.split('/').collect(), path.split('/').collect());
    if pattern.len() != path.len() || !pattern.iter().any(|p| p.starts_with(':')) {
        return None;
    }
    let mut values = Vec::new();
    for (p, segment) in pattern.iter().zip(&path) {
        if p.starts_with(':') {
            if segment.is_empty() {
                return None;
            }
            values.push(percent_decode(segment));
        } else if p != segment {
            return None;
        }
    }
    Some(values)
}

/// `%2F`-style escapes decoded; a malformed escape is kept as it is.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/health/` and `/health` are the same route.
fn normalise(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/"
    } else {
        trimmed
    }
}

/// 405 with `Allow` when the path exists for other methods, else 404.
fn unmatched(method: &Method, path: &str) -> ApiError {
    let mut allowed: Vec<String> = ROUTES
        .iter()
        .filter(|r| r.path == path || captures(r.path, path).is_some())
        .map(|r| r.method.to_string())
        .collect();
    // HEAD is answered wherever GET is (`find`).
    if let Some(get) = allowed.iter().position(|m| m == "GET") {
        allowed.insert(get + 1, "HEAD".into());
    }
    if allowed.is_empty() {
        ApiError::NotFound(format!("no route for {method} {path}; see GET /openapi"))
    } else {
        ApiError::MethodNotAllowed {
            allow: format!("{}, OPTIONS", allowed.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_slashes_are_ignored() {
        assert_eq!(normalise("/health/"), "/health");
        assert_eq!(normalise("/"), "/");
        assert_eq!(normalise("//"), "/");
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        match unmatched(&Method::Post, "/health") {
            ApiError::MethodNotAllowed { allow } => assert_eq!(allow, "GET, HEAD, OPTIONS"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            unmatched(&Method::Get, "/nope"),
            ApiError::NotFound(_)
        ));
    }

    #[test]
    fn labels_are_route_patterns_never_request_paths() {
        assert_eq!(
            label(&Method::Post, "/api/v1/transcriptions/"),
            "/api/v1/transcriptions"
        );
        assert_eq!(label(&Method::Head, "/health"), "/health");
        assert_eq!(label(&Method::Get, "/../../etc/passwd"), UNMATCHED);
    }

    #[test]
    fn patterns_capture_and_literals_win() {
        let (route, params) = find(&Method::Post, "/api/models/base.en/load").unwrap();
        assert_eq!(
            (route.path, params),
            ("/api/models/:id/load", vec!["base.en".to_string()])
        );
        assert_eq!(
            find(&Method::Get, "/api/inference/history").unwrap().0.path,
            "/api/inference/history"
        );
        let (_, params) = find(&Method::Post, "/api/inference/a%2Fb%zz").unwrap();
        assert_eq!(params, ["a/b%zz"]);
        assert!(find(&Method::Post, "/api/models//load").is_none());
        assert!(find(&Method::Post, "/api/models/x/load/more").is_none());
        assert_eq!(
            label(&Method::Post, "/api/models/anything/unload"),
            "/api/models/:id/unload"
        );
    }

    #[test]
    fn every_route_is_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            assert!(
                !ROUTES[i + 1..]
                    .iter()
                    .any(|b| a.path == b.path && a.method == b.method),
                "{}",
                a.path
            );
        }
    }
}
