//! `GET /` from a browser: the service's own page (README "The page"). One self-contained
//! document, its stylesheet and script inlined from `page/` (built into the binary), so it fetches
//! nothing from anywhere and works air-gapped. It only calls the public API, with the key the
//! user typed, from the tab's session storage; the server keeps no state for it.
//!
//! API clients keep getting the JSON index at `/`: the page is chosen only when the request's
//! `Accept` names `text/html`, as a browser's navigation does.

use std::sync::OnceLock;

use base64::Engine as _;

use super::sha256;
use crate::http::Reply;

const HEAD: &str = include_str!("page/head.html");
const BODY: &str = include_str!("page/body.html");
const STYLE: &str = include_str!("page/page.css");
const SCRIPT: &str = include_str!("page/page.js");

/// The page, and the policy that allows its inline script and style by their digests and
/// nothing else: so even a bug that put the service's text into the page as markup could not
/// run a script. Requests go to this origin only; no framing, no form posts, no `<base>`.
struct Page {
    html: String,
    policy: String,
}

fn page() -> &'static Page {
    static PAGE: OnceLock<Page> = OnceLock::new();
    PAGE.get_or_init(|| Page {
        html: format!(
            "{HEAD}<style>{STYLE}</style>\n</head>\n{BODY}<script>{SCRIPT}</script>\n</body>\n</html>\n"
        ),
        policy: format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            source_hash(SCRIPT),
            source_hash(STYLE),
        ),
    })
}

/// A CSP hash source: `sha256-` and the base64 of the digest of an inline element's text.
fn source_hash(text: &str) -> String {
    let digest = sha256::digest(text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Whether a request with this `Accept` header wants the page rather than the JSON index:
/// when it lists `text/html` with a non-zero quality, at least that of `application/json`.
/// `*/*` alone (curl, most libraries) keeps the JSON.
pub fn wants_page(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let html = quality(accept, "text/html");
    html > 0.0 && html >= quality(accept, "application/json")
}

/// The quality `accept` gives `media` when it names it (1 without `q=`), else 0.
fn quality(accept: &str, media: &str) -> f32 {
    accept
        .split(',')
        .filter_map(|range| {
            let mut parts = range.split(';').map(str::trim);
            if !parts.next()?.eq_ignore_ascii_case(media) {
                return None;
            }
            let q = parts.find_map(|p| p.strip_prefix("q=")?.parse::<f32>().ok());
            Some(q.unwrap_or(1.0))
        })
        .fold(0.0, f32::max)
}

pub fn reply() -> Reply {
    let page = page();
    Reply::html(page.html.clone())
        .with_header("Content-Security-Policy", page.policy.clone())
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
        assert!(!wants_page(Some("application/json, text/html;q=0.1")));
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
            assert!(
                !page().html.contains(needle),
                "the page contains `{needle}`"
            );
        }
        assert!(page().html.starts_with("<!doctype html>"));
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        let html = &page().html;
        let inline = |open: &str, close: &str| {
            let start = html.find(open).unwrap() + open.len();
            html[start..start + html[start..].find(close).unwrap()].to_string()
        };
        let policy = &page().policy;
        assert!(policy.contains(&format!(
            "script-src '{}'",
            source_hash(&inline("<script>", "</script>"))
        )));
        assert!(policy.contains(&format!(
            "style-src '{}'",
            source_hash(&inline("<style>", "</style>"))
        )));
        assert!(!policy.contains("unsafe"));
    }
}
