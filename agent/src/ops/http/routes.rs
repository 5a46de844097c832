//! Requests to responses: authentication, then one route table ([`METRICS`], and
//! the UI's in [`super::ui::ROUTES`]). Only GET and HEAD exist: nothing served
//! here changes the agent. Every response carries a strict Content-Security-Policy
//! and `nosniff`; bad requests get a 4xx with a one-line reason.

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};

use super::body::Body;
use super::{Guard, Site};

pub type Response = hyper::Response<Body>;

/// A request as the handlers see it: the path and the decoded query parameters.
#[derive(Debug)]
pub struct Query<'a> {
    pub path: &'a str,
    params: Vec<(String, String)>,
}

impl Query<'_> {
    /// The first value of parameter `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A route's handler (the path is exact, or a prefix when it ends with `/`).
pub type Handler = fn(&Site, &Query<'_>) -> Response;

/// What every listener serves.
pub const METRICS: &[(&str, Handler)] = &[("/metrics", metrics)];

/// The answer to one request.
pub fn handle<B>(site: &Site, guard: &Guard, req: &Request<B>) -> Response {
    let mut resp = route(site, guard, req);
    secure(resp.headers_mut());
    if req.method() == Method::HEAD {
        *resp.body_mut() = Body::empty();
    }
    resp
}

fn route<B>(site: &Site, guard: &Guard, req: &Request<B>) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD: this server is read-only\n",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    #[cfg(feature = "ui")]
    if let Some(users) = &guard.users {
        if let Err(r) = users.check(req.headers()) {
            return r;
        }
    }
    #[cfg(not(feature = "ui"))]
    let _ = guard;
    let Some(query) = parse(req.uri()) else {
        return text(StatusCode::BAD_REQUEST, "malformed query string\n");
    };
    if let Some((_, handler)) = METRICS.iter().find(|(p, _)| matches(p, query.path)) {
        return handler(site, &query);
    }
    #[cfg(feature = "ui")]
    if let Some(ui) = &site.ui
        && let Some((_, handler)) = super::ui::ROUTES
            .iter()
            .find(|(p, _)| matches(p, query.path))
    {
        return handler(site, ui, &query);
    }
    not_found(site)
}

/// A route's path matches: exactly, or as a prefix when it ends with `/`.
fn matches(route: &str, path: &str) -> bool {
    if route.ends_with('/') && route.len() > 1 {
        path.starts_with(route)
    } else {
        path == route
    }
}

fn not_found(site: &Site) -> Response {
    #[cfg(feature = "ui")]
    if site.ui.is_some() {
        return text(StatusCode::NOT_FOUND, "not found; the UI is at /\n");
    }
    let _ = site;
    text(
        StatusCode::NOT_FOUND,
        "not found; metrics are at /metrics\n",
    )
}

/// The path and its query parameters, percent-decoded; `None` when an escape is
/// malformed or a value is not UTF-8.
fn parse(uri: &hyper::Uri) -> Option<Query<'_>> {
    let params = match uri.query() {
        None => Vec::new(),
        Some(q) => q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                Some((decode(k)?, decode(v)?))
            })
            .collect::<Option<Vec<_>>>()?,
    };
    Some(Query {
        path: uri.path(),
        params,
    })
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Headers on every response: a strict CSP (scripts, styles and connections to
/// this origin only; no inline code, no framing), no MIME sniffing, no referrer.
fn secure(h: &mut hyper::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

/// A response with a body and its type.
pub fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut r = hyper::Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn text(status: StatusCode, body: impl Into<Body>) -> Response {
    reply(status, "text/plain; charset=utf-8", body)
}

pub fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(v) => reply(StatusCode::OK, "application/json", v),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}\n"),
        ),
    }
}

/// `GET /metrics`: the Prometheus text exposition format 0.0.4.
fn metrics(site: &Site, _: &Query<'_>) -> Response {
    let s = &site.source;
    let status = s.snapshot();
    let mut body = crate::ops::metrics::render(&status, &s.counters.model_latency.snapshot());
    body += &crate::ops::metrics::render_quality(&s.latest, site.per_tag);
    reply(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        Bytes::from(body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_percent_decoded_and_bad_escapes_refused() {
        let uri: hyper::Uri = "/api/tags?filter=line%201%2Ftemp&x=a+b&flag"
            .parse()
            .expect("uri");
        let q = parse(&uri).expect("parses");
        assert_eq!(q.path, "/api/tags");
        assert_eq!(q.get("filter"), Some("line 1/temp"));
        assert_eq!(q.get("x"), Some("a b"));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.get("nope"), None);
        for bad in ["/a?x=%zz", "/a?x=%4", "/a?x=%ff%fe"] {
            let uri: hyper::Uri = bad.parse().expect("uri");
            assert!(parse(&uri).is_none(), "{bad}");
        }
    }
}
