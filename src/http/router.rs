//! The route table: method, path, whether it is open without an API key, and the handler.
//! `ROUTES` is also what the OpenAPI test checks the document against, so a route cannot be
//! added without being documented. Errors under `/v1/` take OpenAI's shape, elsewhere the
//! service's own (SPEC section 6).

use tiny_http::Method;

use super::request::Incoming;
use super::response::Reply;
use crate::api;
use crate::app::App;
use crate::error::ApiError;

pub type Handler = fn(&App, &mut Incoming) -> Result<Reply, ApiError>;

pub struct Route {
    pub method: Method,
    pub path: &'static str,
    /// Reachable without `Authorization` when `apiKeys` is set (SPEC section 6).
    pub public: bool,
    pub handler: Handler,
}

// One line a route reads better than what rustfmt would make of it.
#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    Route { method: Method::Get,  path: "/",                         public: true,  handler: api::service::index },
    Route { method: Method::Get,  path: "/health",                   public: true,  handler: api::service::health },
    Route { method: Method::Post, path: "/api/v1/transcriptions",    public: false, handler: api::transcriptions::create },
    Route { method: Method::Get,  path: "/api/v1/providers",         public: false, handler: api::service::providers },
    Route { method: Method::Get,  path: "/api/v1/status",            public: false, handler: api::service::status },
    Route { method: Method::Get,  path: "/api/models",               public: false, handler: api::models::list },
    Route { method: Method::Post, path: "/api/models/:id/load",      public: false, handler: api::models::load },
    Route { method: Method::Post, path: "/api/models/:id/unload",    public: false, handler: api::models::unload },
    Route { method: Method::Post, path: "/api/inference/:modelId",   public: false, handler: api::inference::run },
    Route { method: Method::Get,  path: "/api/inference/history",    public: false, handler: api::inference::history },
    Route { method: Method::Get,  path: "/api/capacity",             public: false, handler: api::capacity::get },
    Route { method: Method::Post, path: "/rpc",                      public: false, handler: api::rpc::call },
    Route { method: Method::Post, path: "/v1/audio/transcriptions",  public: false, handler: api::openai::transcriptions },
    Route { method: Method::Get,  path: "/v1/models",                public: false, handler: api::openai::models },
    Route { method: Method::Get,  path: "/metrics",                  public: false, handler: api::metrics::page },
    Route { method: Method::Get,  path: "/openapi",                  public: true,  handler: api::openapi::page },
    Route { method: Method::Get,  path: "/openapi/json",             public: true,  handler: api::openapi::document },
];

/// Metric label for requests that matched no route.
pub const UNMATCHED: &str = "unmatched";
/// Metric label for CORS preflight requests.
pub const PREFLIGHT: &str = "preflight";

/// A reply and the route pattern it came from (the metrics label).
pub struct Routed {
    pub reply: Reply,
    pub label: &'static str,
}

/// Finds the handler for the request and runs it behind the API-key check.
pub fn route(app: &App, request: &mut Incoming) -> Routed {
    if request.method == Method::Options {
        return Routed {
            reply: Reply::no_content(),
            label: PREFLIGHT,
        };
    }
    let path = normalise(&request.path).to_string();
    let Some((route, params)) = find(&request.method, &path) else {
        return Routed {
            reply: error_reply(&path, &unmatched(&request.method, &path)),
            label: UNMATCHED,
        };
    };
    request.params = params;
    let reply = if !route.public && !app.authorized(request.header("Authorization")) {
        error_reply(&path, &ApiError::Unauthorized)
    } else {
        (route.handler)(app, request).unwrap_or_else(|e| error_reply(&path, &e))
    };
    Routed {
        reply,
        label: route.path,
    }
}

/// The metrics label of a request that is answered before routing (a 413, a panic).
pub fn label(method: &Method, path: &str) -> &'static str {
    find(method, normalise(path)).map_or(UNMATCHED, |(r, _)| r.path)
}

/// An error in the shape its API family uses.
pub fn error_reply(path: &str, error: &ApiError) -> Reply {
    if path.starts_with("/v1/") {
        Reply::openai_error(error)
    } else {
        Reply::error(error)
    }
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
    let allowed: Vec<String> = ROUTES
        .iter()
        .filter(|r| r.path == path || captures(r.path, path).is_some())
        .map(|r| r.method.to_string())
        .collect();
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
            ApiError::MethodNotAllowed { allow } => assert_eq!(allow, "GET, OPTIONS"),
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
    fn v1_errors_take_the_openai_shape() {
        let reply = error_reply("/v1/audio/transcriptions", &ApiError::Unauthorized);
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key");
        let reply = error_reply("/api/v1/transcriptions", &ApiError::Unauthorized);
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["code"], "UNAUTHORIZED");
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
