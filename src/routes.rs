//! The route table of the wire contract, `/healthcheck` and `/metrics`. Each token route hands its request
//! to [`token::handle`].
#![forbid(unsafe_code)]

use crate::app::App;
use crate::config::Metrics as MetricsConfig;
use crate::http::{ErrorStyle, Method, Pool, Request, Response, Router};
use crate::metrics;
use crate::token::{self, Route};
use std::sync::Arc;

/// The token routes: path and route.
const TOKEN_ROUTES: [(&str, Route); 7] = [
    ("/token", Route::PipelineToken),
    ("/token/{profile}", Route::PipelineToken),
    ("/git-credentials", Route::PipelineGit),
    ("/git-credentials/{profile}", Route::PipelineGit),
    ("/organization/token/{profile}", Route::OrgToken),
    ("/organization/git-credentials/{profile}", Route::OrgGit),
    ("/oauth/token", Route::Exchange),
];

/// The route table (with `/metrics` when `METRICS=on`).
pub fn router(app: &Arc<App>) -> Router {
    let counted = Arc::clone(&app.metrics);
    let mut router = Router::new(app.config.server_base_path.clone()).observe(Arc::new(
        move |route: &str, status: u16| {
            counted.count(
                metrics::HTTP_REQUESTS,
                &[("route", route), ("status", &status.to_string())],
            )
        },
    ));
    if app.config.metrics == MetricsConfig::On {
        router = with_metrics(router, app);
    }
    let health = Arc::clone(app);
    router = router.route(
        Method::Get,
        "/healthcheck",
        Pool::Inline,
        ErrorStyle::Json,
        move |_: &Request| healthcheck(&health),
    );
    for (pattern, route) in TOKEN_ROUTES {
        let app = Arc::clone(app);
        let style = match route {
            Route::PipelineGit | Route::OrgGit => ErrorStyle::Text,
            _ => ErrorStyle::Json,
        };
        router = router.route(
            Method::Post,
            pattern,
            Pool::Worker,
            style,
            move |req: &Request| token::handle(&app.token, route, req),
        );
    }
    router
}

/// The separate metrics listener's table (`METRICS=HOST:PORT`): `/metrics` alone.
pub fn metrics_router(app: &Arc<App>) -> Router {
    with_metrics(Router::new(None), app)
}

/// `GET /metrics`, the one place it is registered.
fn with_metrics(router: Router, app: &Arc<App>) -> Router {
    let app = Arc::clone(app);
    router.route(
        Method::Get,
        "/metrics",
        Pool::Inline,
        ErrorStyle::Json,
        move |_: &Request| metrics_response(&app),
    )
}

/// `GET /metrics`: the Prometheus text exposition.
fn metrics_response(app: &App) -> Response {
    let gauge =
        |name: &'static str, help: &'static str, labels: String, value: f64| metrics::Gauge {
            name,
            help,
            labels,
            value,
        };
    let open = app
        .readiness
        .server()
        .map_or(0, |server| server.open_connections());
    let mut gauges = vec![
        gauge(
            "kitebridge_open_connections",
            "Open client connections.",
            String::new(),
            open as f64,
        ),
        gauge(
            "kitebridge_ready",
            "1 when ready to vend.",
            String::new(),
            if app.is_ready() { 1.0 } else { 0.0 },
        ),
    ];
    if let Some(shared) = app.token.shared_cache() {
        gauges.push(gauge(
            "kitebridge_cache_backend_up",
            "1 while the shared cache (CACHE_URL) is in use, 0 while it is failing.",
            String::new(),
            if shared.is_up() { 1.0 } else { 0.0 },
        ));
    }
    if let Some(generation) = app.generation() {
        gauges.push(gauge(
            "kitebridge_profiles_info",
            "The loaded profile generation.",
            format!("digest=\"{}\"", generation.digest()),
            1.0,
        ));
        let unavailable = generation.quarantined().count() as f64;
        gauges.push(gauge(
            "kitebridge_profiles_unavailable",
            "Profiles quarantined in the loaded generation.",
            String::new(),
            unavailable,
        ));
    }
    if let Some(state) = app.token.github_rate_limit() {
        gauges.push(gauge(
            "kitebridge_github_ratelimit_remaining",
            "GitHub requests remaining in the window, as GitHub's latest answer said (x-ratelimit-remaining).",
            String::new(),
            state.remaining as f64,
        ));
        gauges.push(gauge(
            "kitebridge_github_ratelimit_reset_timestamp_seconds",
            "When GitHub's rate-limit window resets, as its latest answer said (x-ratelimit-reset).",
            String::new(),
            state.reset as f64,
        ));
    }
    if let Some(loaded_at) = app.profiles.loaded_at() {
        gauges.push(gauge(
            "kitebridge_profiles_loaded_timestamp_seconds",
            "When the loaded generation was installed.",
            String::new(),
            loaded_at as f64,
        ));
    }
    Response::new(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        app.metrics.render(&gauges),
    )
}

/// `GET/HEAD /healthcheck`: 200 `OK` while serving, 503 `not ready` before readiness and while
/// draining, 503 `audit unavailable` while tokens are withheld because audit records cannot be
/// written (`AUDIT_ON_FAILURE=refuse`).
fn healthcheck(app: &App) -> Response {
    if !app.is_ready() {
        Response::text(503, "not ready")
    } else if app.token.audit().withholds_tokens() {
        Response::text(503, "audit unavailable")
    } else {
        Response::text(200, "OK")
    }
}
