//! The route table: method, path, whether it is open without an API key, and the handler.
//! `ROUTES` is also what the OpenAPI test checks the document against, so a route cannot be
//! added without being documented.

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

/// Finds the handler for the request and runs it behind the API-key check.
pub fn route(app: &App, request: &mut Incoming) -> Reply {
    if request.method == Method::Options {
        return Reply::no_content();
    }
    // HEAD is answered like GET; tiny_http leaves the body out.
    let method = if request.method == Method::Head {
        Method::Get
    } else {
        request.method.clone()
    };
    let path = normalise(&request.path);
    let Some(route) = ROUTES.iter().find(|r| r.path == path && r.method == method) else {
        return Reply::error(&unmatched(&method, path));
    };
    if !route.public && !app.authorized(request.header("Authorization")) {
        return Reply::error(&ApiError::Unauthorized);
    }
    (route.handler)(app, request).into()
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
