//! Maps (method, path) to a handler. Patterns are `/`-separated literals and `{name}` segments;
//! a `{name}` segment matches exactly one non-empty segment.
#![forbid(unsafe_code)]

use super::head::Method;
use super::message::{Request, Response};
use std::sync::Arc;

/// A request handler.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Whether a handler needs a request-handling permit. Every handler runs on its connection's
/// thread; at most `SERVER_WORKERS` [`Pool::Worker`] handlers run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// No permit: cheap handlers that must answer even while every permit is held by a request
    /// waiting on an upstream (`/healthcheck`, `/metrics`).
    Inline,
    /// Takes one of the `SERVER_WORKERS` permits (waiting for one if all are held).
    Worker,
}

/// How the edge formats its own errors (413, 408, 400 …) for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStyle {
    /// `{"error":"<reason>"}`.
    Json,
    /// A one-line `text/plain` reason (the git credential routes).
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

/// Told about every response the server writes: the route pattern (`/token/{profile}`, or
/// `unmatched` / `edge` for requests no route handled) and the status.
pub type Observer = Arc<dyn Fn(&str, u16) + Send + Sync>;

/// One registered route.
pub struct Route {
    method: Method,
    /// The pattern as registered (a metrics label).
    pub pattern: String,
    segments: Vec<Segment>,
    pub pool: Pool,
    pub errors: ErrorStyle,
    pub handler: Handler,
}

/// The outcome of routing one request.
pub enum Resolution<'a> {
    Found {
        route: &'a Route,
        params: Vec<String>,
    },
    /// The path exists under other methods; the value is the `Allow` header.
    MethodNotAllowed {
        allow: String,
    },
    NotFound,
}

/// The route table plus the optional base path every route lives under.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
    base_path: Option<String>,
    observer: Option<Observer>,
}

impl Router {
    /// An empty router serving under `base_path` (e.g. `/bridge`; `None` for the root).
    pub fn new(base_path: Option<String>) -> Self {
        Router {
            routes: Vec::new(),
            base_path,
            observer: None,
        }
    }

    /// Sets the observer told about every response.
    pub fn observe(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Reports one written response to the observer, if any.
    pub fn observed(&self, route: &str, status: u16) {
        if let Some(observer) = &self.observer {
            observer(route, status);
        }
    }

    /// Registers a route. `GET` routes also answer `HEAD`.
    pub fn route(
        mut self,
        method: Method,
        pattern: &str,
        pool: Pool,
        errors: ErrorStyle,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Self {
        let segments = split(pattern)
            .map(|s| {
                if s.starts_with('{') && s.ends_with('}') {
                    Segment::Param
                } else {
                    Segment::Literal(s.to_owned())
                }
            })
            .collect();
        self.routes.push(Route {
            method,
            pattern: pattern.to_owned(),
            segments,
            pool,
            errors,
            handler: Arc::new(handler),
        });
        self
    }

    /// Normalises a request target's path: `//` runs collapse to `/`, the base path is removed
    /// (matched at a segment boundary). `None` when the path is outside the base path.
    pub fn local_path(&self, path: &str) -> Option<String> {
        // Most paths are already normal (one `/` before each segment, none at the end): kept as
        // they are, without rebuilding them segment by segment.
        let normal =
            path.starts_with('/') && !path.contains("//") && (path == "/" || !path.ends_with('/'));
        let collapsed = if normal {
            path.to_owned()
        } else {
            format!("/{}", split(path).collect::<Vec<_>>().join("/"))
        };
        let Some(base) = &self.base_path else {
            return Some(collapsed);
        };
        match collapsed.strip_prefix(base.as_str()) {
            Some("") => Some("/".to_owned()),
            Some(rest) if rest.starts_with('/') => Some(rest.to_owned()),
            _ => None,
        }
    }

    /// Finds the route for a normalised local path.
    pub fn resolve(&self, method: &Method, path: &str) -> Resolution<'_> {
        let parts: Vec<&str> = split(path).collect();
        let mut allowed: Vec<&str> = Vec::new();
        for route in &self.routes {
            let Some(params) = route.matches(&parts) else {
                continue;
            };
            let same =
                route.method == *method || (route.method == Method::Get && *method == Method::Head);
            if same {
                return Resolution::Found { route, params };
            }
            allowed.push(route.method.as_str());
            if route.method == Method::Get {
                allowed.push("HEAD");
            }
        }
        if allowed.is_empty() {
            Resolution::NotFound
        } else {
            allowed.dedup();
            Resolution::MethodNotAllowed {
                allow: allowed.join(", "),
            }
        }
    }
}

impl Route {
    fn matches(&self, parts: &[&str]) -> Option<Vec<String>> {
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (segment, part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(lit) if lit == part => {}
                Segment::Literal(_) => return None,
                Segment::Param => params.push((*part).to_owned()),
            }
        }
        Some(params)
    }
}

/// The non-empty segments of a path.
fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(base: Option<&str>) -> Router {
        let ok = |_: &Request| Response::text(200, "ok");
        Router::new(base.map(str::to_owned))
            .route(
                Method::Get,
                "/healthcheck",
                Pool::Inline,
                ErrorStyle::Json,
                ok,
            )
            .route(Method::Post, "/token", Pool::Worker, ErrorStyle::Json, ok)
            .route(
                Method::Post,
                "/token/{profile}",
                Pool::Worker,
                ErrorStyle::Json,
                ok,
            )
    }

    fn outcome(r: &Router, method: Method, path: &str) -> String {
        let Some(local) = r.local_path(path) else {
            return "outside".into();
        };
        match r.resolve(&method, &local) {
            Resolution::Found { params, .. } => format!("found {params:?}"),
            Resolution::MethodNotAllowed { allow } => format!("405 {allow}"),
            Resolution::NotFound => "404".into(),
        }
    }

    #[test]
    fn a_normal_path_is_kept_and_any_other_rebuilt_alike() {
        let rebuilt = |path: &str| format!("/{}", split(path).collect::<Vec<_>>().join("/"));
        for base in [None, Some("/bridge")] {
            let r = router(base);
            for path in [
                "/",
                "//",
                "///",
                "/a",
                "/a/",
                "//a",
                "/a//b",
                "/a/b",
                "/a/b/",
                "/token/x",
                "/bridge",
                "/bridge/",
                "/bridge/token",
                "/bridge//token",
                "/bridgetoken",
                "",
            ] {
                let expected = match base {
                    None => Some(rebuilt(path)),
                    Some(base) => match rebuilt(path).strip_prefix(base) {
                        Some("") => Some("/".to_owned()),
                        Some(rest) if rest.starts_with('/') => Some(rest.to_owned()),
                        _ => None,
                    },
                };
                assert_eq!(r.local_path(path), expected, "{path:?} under {base:?}");
            }
        }
    }

    #[test]
    fn table() {
        let root = router(None);
        let based = router(Some("/bridge"));
        let cases: &[(&Router, Method, &str, &str)] = &[
            (&root, Method::Get, "/healthcheck", "found []"),
            (&root, Method::Head, "/healthcheck", "found []"),
            (&root, Method::Post, "/healthcheck", "405 GET, HEAD"),
            (&root, Method::Get, "/token", "405 POST"),
            (
                &root,
                Method::Post,
                "//token/default",
                "found [\"default\"]",
            ),
            (&root, Method::Post, "/token//x", "found [\"x\"]"),
            (&root, Method::Post, "/token/a/b", "404"),
            (&root, Method::Post, "/nope", "404"),
            (&root, Method::Other("BREW".into()), "/token", "405 POST"),
            (&based, Method::Post, "/bridge/token", "found []"),
            (&based, Method::Post, "/bridge//token/x", "found [\"x\"]"),
            (&based, Method::Post, "/bridgetoken", "outside"),
            (&based, Method::Post, "/token", "outside"),
            (&based, Method::Get, "/bridge", "404"),
        ];
        for (r, method, path, want) in cases {
            assert_eq!(outcome(r, method.clone(), path), *want, "{method:?} {path}");
        }
    }
}
