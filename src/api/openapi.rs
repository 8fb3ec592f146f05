//! `GET /openapi/json`: the OpenAPI 3.1 document (kept in `openapi.json` beside this file), and
//! `GET /openapi`: an HTML page rendered from that same document, with no script or stylesheet
//! from elsewhere, so it works on an air-gapped machine.

use std::sync::Arc;

use std::fmt::Write;
use std::sync::OnceLock;

use serde_json::Value;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::http::{Incoming, Reply};

const DOCUMENT: &str = include_str!("openapi.json");

/// The parsed document with this build's version.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let mut spec: Value =
            serde_json::from_str(DOCUMENT).expect("openapi.json is valid JSON (checked by a test)");
        spec["info"]["version"] = Value::String(env!("CARGO_PKG_VERSION").into());
        spec
    })
}

pub fn document(_engine: &Arc<Engine>, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    Ok(Reply::ok(spec()))
}

pub fn page(_engine: &Arc<Engine>, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    static PAGE: OnceLock<String> = OnceLock::new();
    Ok(Reply::html(PAGE.get_or_init(|| render(spec())).clone()))
}

/// One section per operation: method, path, summary, request body schema, responses.
fn render(spec: &Value) -> String {
    let text = |v: &Value| escape(v.as_str().unwrap_or(""));
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} API</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}\
         code,pre{{background:#f3f3f3;padding:0 .2rem}}section{{border-top:1px solid #ddd;padding:.5rem 0}}\
         .m{{font-weight:bold;display:inline-block;min-width:4rem}}td{{padding:0 .6rem;vertical-align:top}}</style>\
         </head><body><h1>{title} <small>{version}</small></h1><p>{summary}</p><p>{description}</p>\
         <p>Machine-readable: <a href=\"/openapi/json\">/openapi/json</a> (OpenAPI {openapi}).</p>",
        title = text(&spec["info"]["title"]),
        version = text(&spec["info"]["version"]),
        summary = text(&spec["info"]["summary"]),
        description = text(&spec["info"]["description"]),
        openapi = text(&spec["openapi"]),
    );
    let empty = serde_json::Map::new();
    for (path, operations) in spec["paths"].as_object().unwrap_or(&empty) {
        for (method, operation) in operations.as_object().unwrap_or(&empty) {
            let _ = write!(
                html,
                "<section id=\"{id}\"><h2><span class=\"m\">{method}</span> <code>{path}</code></h2><p>{summary}</p>",
                id = text(&operation["operationId"]),
                method = escape(&method.to_uppercase()),
                path = escape(path),
                summary = text(&operation["summary"]),
            );
            let request_body = operation["requestBody"]["content"]
                .as_object()
                .and_then(|c| c.iter().next());
            if let Some((media_type, body)) = request_body {
                if let Some(schema) = body["schema"]["$ref"].as_str() {
                    render_schema(&mut html, spec, media_type, schema);
                }
            }
            html.push_str("<table>");
            for (status, response) in operation["responses"].as_object().unwrap_or(&empty) {
                let _ = write!(
                    html,
                    "<tr><td><b>{}</b></td><td>{}</td></tr>",
                    escape(status),
                    text(&response["description"])
                );
            }
            html.push_str("</table></section>");
        }
    }
    html.push_str("</body></html>");
    html
}

/// The fields of a referenced request schema, with their descriptions.
fn render_schema(html: &mut String, spec: &Value, media_type: &str, reference: &str) {
    let name = reference.rsplit('/').next().unwrap_or(reference);
    let schema = &spec["components"]["schemas"][name];
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let _ = write!(
        html,
        "<p>Request body (<code>{}</code>):</p><table>",
        escape(media_type)
    );
    for (field, definition) in schema["properties"].as_object().into_iter().flatten() {
        let kind = definition["type"].as_str().unwrap_or("");
        let flag = if required.contains(&field.as_str()) {
            " (required)"
        } else {
            ""
        };
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td>{}{}</td><td>{}</td></tr>",
            escape(field),
            escape(kind),
            flag,
            escape(definition["description"].as_str().unwrap_or(""))
        );
    }
    html.push_str("</table>");
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::routes::ROUTES;

    /// `/api/models/:id/load` as OpenAPI writes it: `/api/models/{id}/load`.
    fn openapi_path(route: &str) -> String {
        route
            .split('/')
            .map(|segment| match segment.strip_prefix(':') {
                Some(name) => format!("{{{name}}}"),
                None => segment.to_string(),
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn document_describes_exactly_the_routes_that_exist() {
        let paths = spec()["paths"].as_object().unwrap();
        for route in ROUTES {
            let method = route.method.to_string().to_lowercase();
            assert!(
                paths
                    .get(&openapi_path(route.path))
                    .and_then(|p| p.get(&method))
                    .is_some(),
                "{} {} is undocumented",
                method,
                route.path
            );
        }
        let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(
            documented,
            ROUTES.len(),
            "the document lists a route that does not exist"
        );
    }

    #[test]
    fn public_routes_are_documented_without_security() {
        for route in ROUTES {
            let operation =
                &spec()["paths"][openapi_path(route.path)][route.method.to_string().to_lowercase()];
            assert_eq!(
                operation.get("security") == Some(&Value::Array(vec![])),
                route.public,
                "{}",
                route.path
            );
        }
    }

    #[test]
    fn every_reference_resolves() {
        let text = DOCUMENT;
        for reference in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
            let name = &reference[..reference.find('"').unwrap()];
            assert!(
                spec()["components"]["schemas"].get(name).is_some(),
                "{name}"
            );
        }
    }

    #[test]
    fn page_lists_every_route_and_escapes() {
        let page = render(spec());
        for route in ROUTES {
            let path = escape(&openapi_path(route.path));
            assert!(page.contains(&format!("<code>{path}</code>")), "{path}");
        }
        assert!(
            !page.contains("<script"),
            "no scripts: the page must work offline and be inert"
        );
        assert_eq!(escape("<a&\"b\">"), "&lt;a&amp;&quot;b&quot;&gt;");
    }
}
