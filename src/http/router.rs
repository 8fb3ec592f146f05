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

pub const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/",
        public: true,
        handler: api::service::index,
    },
    Route {
        method: Method::Get,
        path: "/health",
        public: true,
        handler: api::service::health,
    },
    Route {
        method: Method::Post,
        path: "/api/v1/transcriptions",
        public: false,
        handler: api::transcriptions::create,
    },
    Route {
        method: Method::Get,
        path: "/api/v1/providers",
        public: false,
        handler: api::service::providers,
    },
    Route {
        method: Method::Get,
        path: "/api/v1/status",
        public: false,
        handler: api::service::status,
    },
    Route {
        method: Method::Post,
        path: "/v1/audio/transcriptions",
        public: false,
        handler: api::openai::transcriptions,
    },
    Route {
        method: Method::Get,
        path: "/v1/models",
        public: false,
        handler: api::openai::models,
    },
    Route {
        method: Method::Get,
        path: "/metrics",
        public: false,
        handler: api::metrics::page,
    },
    Route {
        method: Method::Get,
        path: "/openapi",
        public: true,
        handler: api::openapi::page,
    },
    Route {
        method: Method::Get,
        path: "/openapi/json",
        public: true,
        handler: api::openapi::document,
    },
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
    let Some(route) = find(&request.method, &path) else {
        return Routed {
            reply: error_reply(&path, &unmatched(&request.method, &path)),
            label: UNMATCHED,
        };
    };
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
    find(method, normalise(path)).map_or(UNMATCHED, |r| r.path)
}

/// An error in the shape its API family uses.
pub fn error_reply(path: &str, error: &ApiError) -> Reply {
    if path.starts_with("/v1/") {
        Reply::openai_error(error)
    } else {
        Reply::error(error)
    }
}

/// HEAD is answered like GET; tiny_http leaves the body out.
fn find(method: &Method, path: &str) -> Option<&'static Route> {
    let method = if *method == Method::Head {
        &Method::Get
    } else {
        method
    };
    ROUTES
        .iter()
        .find(|r| r.path == path && r.method == *method)
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
        .filter(|r| r.path == path)
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
