//! `GET /` from a browser: the service's own page (README "The page"). One self-contained
//! document, its stylesheet and script inlined at build time from `page/`, so it fetches
//! nothing from anywhere and works air-gapped. It only calls the public API, with the key the
//! user typed, from the tab's session storage; the server keeps no state for it.
//!
//! API clients keep getting the JSON index at `/`: the page is chosen only when the request's
//! `Accept` names `text/html`, as a browser's navigation does.

use crate::http::Reply;

/// The page: head, inlined stylesheet, body, inlined script.
const PAGE: &str = concat!(
    include_str!("page/head.html"),
    "<style>\n",
    include_str!("page/page.css"),
    "</style>\n</head>\n",
    include_str!("page/body.html"),
    "<script>\n",
    include_str!("page/page.js"),
    "</script>\n</body>\n</html>\n",
);

/// Everything the page loads is inline and every request it makes goes to this origin, so
/// the policy can forbid the rest: no framing, no form posts elsewhere, no `<base>` games.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether a request with this `Accept` header wants the page rather than the JSON index:
/// when it lists `text/html` with a non-zero quality. `*/*` alone (curl, most libraries)
/// keeps the JSON.
pub fn wants_page(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let is_html = parts
                .next()
                .is_some_and(|media| media.eq_ignore_ascii_case("text/html"));
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            is_html && !refused
        })
    })
}

pub fn reply() -> Reply {
    Reply::html(PAGE.to_owned())
        .with_header("Content-Security-Policy", CONTENT_SECURITY_POLICY.into())
        .with_header("X-Content-Type-Options", "nosniff".into())
        .with_header("Referrer-Policy", "no-referrer".into())
        .with_header("Cache-Control", "no-cache".into())
        .with_header("Vary", "Accept".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_navigation_gets_the_page() {
        let chromium = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,\
                        image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";
        assert!(wants_page(Some(chromium)));
        assert!(wants_page(Some("TEXT/HTML")));
        assert!(wants_page(Some(
            "application/json;q=0.5, text/html ; q=0.9"
        )));
    }

    #[test]
    fn api_clients_keep_the_json() {
        assert!(!wants_page(None));
        assert!(!wants_page(Some("*/*")));
        assert!(!wants_page(Some("application/json")));
        assert!(!wants_page(Some("text/html;q=0")));
        assert!(!wants_page(Some("text/htmlx")));
    }

    #[test]
    fn the_page_fetches_nothing_from_elsewhere() {
        for needle in [
            "http://",
            "https://",
            "src=\"//",
            "href=\"//",
            "@import",
            "url(",
        ] {
            assert!(!PAGE.contains(needle), "the page contains `{needle}`");
        }
        assert!(PAGE.starts_with("<!doctype html>"));
    }
}
