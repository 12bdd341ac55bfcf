//! A Buildkite REST API stand-in for `GET /v2/organizations/{org}/pipelines/{slug}`: checks the
//! bearer API token (401 otherwise), answers a realistic pipeline object with `repository`,
//! 404 for unknown pipelines. Pipelines and failure modes are configurable; calls are counted.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::server::{Request, Response, Server};

/// How the stand-in misbehaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BkFail {
    /// Behave.
    None,
    /// Answer this status (500, 404, …) with a Buildkite-style message.
    Status(u16),
    /// 429 with `RateLimit-Remaining: 0` and `RateLimit-Reset: reset` (seconds).
    RateLimited {
        /// Seconds until the window resets.
        reset: u64,
    },
    /// Never answer within the client's timeouts (sleeps this long, then closes).
    Hang(Duration),
    /// Answer normally after this delay.
    Delay(Duration),
    /// Answer this status with this body (`application/json`), as it is: odd answers.
    Body(u16, Vec<u8>),
}

struct State {
    api_token: String,
    pipelines: Mutex<HashMap<(String, String), String>>,
    fail: Mutex<BkFail>,
    calls: AtomicUsize,
}

/// The running stand-in.
pub struct BuildkiteStandIn {
    server: Server,
    state: Arc<State>,
}

impl BuildkiteStandIn {
    /// Starts with no pipelines; requests must carry `Authorization: Bearer {api_token}`.
    pub fn start(api_token: &str) -> BuildkiteStandIn {
        let state = Arc::new(State {
            api_token: api_token.to_owned(),
            pipelines: Mutex::new(HashMap::new()),
            fail: Mutex::new(BkFail::None),
            calls: AtomicUsize::new(0),
        });
        let handler_state = Arc::clone(&state);
        let server = Server::start(move |request| answer(&handler_state, request));
        BuildkiteStandIn { server, state }
    }

    /// The base to configure as `BUILDKITE_API_URL`.
    pub fn api_url(&self) -> String {
        self.server.url()
    }

    /// Adds or replaces a pipeline and its repository URL (any host, e.g. GitLab).
    pub fn set_pipeline(&self, org: &str, slug: &str, repository: &str) {
        let key = (org.to_owned(), slug.to_owned());
        self.state
            .pipelines
            .lock()
            .unwrap()
            .insert(key, repository.to_owned());
    }

    /// Sets the failure mode.
    pub fn set_fail(&self, fail: BkFail) {
        *self.state.fail.lock().unwrap() = fail;
    }

    /// Requests received (whatever the answer).
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }
}

fn answer(state: &State, request: &Request) -> Response {
    let owned = request.segments();
    let segments: Vec<&str> = owned.iter().map(String::as_str).collect();
    let ("GET", ["v2", "organizations", org, "pipelines", slug]) =
        (request.method.as_str(), segments.as_slice())
    else {
        return Response::message(404, "Not Found");
    };
    state.calls.fetch_add(1, Ordering::SeqCst);
    if request.bearer() != Some(state.api_token.as_str()) {
        return Response::message(
            401,
            "Authentication required. Please supply a valid API Access Token: https://buildkite.com/docs/apis/rest-api#authentication",
        );
    }
    let fail = state.fail.lock().unwrap().clone();
    match fail {
        BkFail::None => {}
        BkFail::Status(status) => return Response::message(status, "Something went wrong"),
        BkFail::RateLimited { reset } => {
            return Response::message(
                429,
                "You have exceeded your API rate limit. Please wait before trying again.",
            )
            .with_header("RateLimit-Limit", "200")
            .with_header("RateLimit-Remaining", "0")
            .with_header("RateLimit-Reset", &reset.to_string());
        }
        BkFail::Hang(duration) => {
            std::thread::sleep(duration);
            return Response::empty(504);
        }
        BkFail::Delay(duration) => std::thread::sleep(duration),
        BkFail::Body(status, body) => {
            return Response::bytes(status, "application/json", body);
        }
    }
    let repository = state
        .pipelines
        .lock()
        .unwrap()
        .get(&(org.to_string(), slug.to_string()))
        .cloned();
    match repository {
        Some(repository) => Response::json(200, &pipeline(org, slug, &repository)),
        None => Response::message(404, "No pipeline found"),
    }
}

/// A pipeline object shaped like Buildkite's.
fn pipeline(org: &str, slug: &str, repository: &str) -> serde_json::Value {
    let provider = if repository.contains("github") {
        "github"
    } else {
        "gitlab"
    };
    json!({
        "id": "0190ab6c-5a4e-4a5b-9bd4-0d3c3a0e7f51",
        "graphql_id": "UGlwZWxpbmUtLS0wMTkwYWI2Yw==",
        "url": format!("https://api.buildkite.com/v2/organizations/{org}/pipelines/{slug}"),
        "web_url": format!("https://buildkite.com/{org}/{slug}"),
        "name": slug,
        "description": null,
        "slug": slug,
        "repository": repository,
        "cluster_id": null,
        "branch_configuration": null,
        "default_branch": "main",
        "skip_queued_branch_builds": false,
        "cancel_running_branch_builds": false,
        "provider": {
            "id": provider,
            "settings": {"trigger_mode": "code", "build_pull_requests": true, "publish_commit_status": true},
            "webhook_url": "https://webhook.buildkite.com/deliver/0000"
        },
        "builds_url": format!("https://api.buildkite.com/v2/organizations/{org}/pipelines/{slug}/builds"),
        "badge_url": "https://badge.buildkite.com/0000.svg",
        "created_at": "2025-01-15T09:30:00.000Z",
        "archived_at": null,
        "env": {},
        "scheduled_builds_count": 0,
        "running_builds_count": 1,
        "scheduled_jobs_count": 0,
        "running_jobs_count": 1,
        "waiting_jobs_count": 0,
        "visibility": "private",
        "tags": null,
        "steps": [{"type": "script", "name": ":pipeline:", "command": "buildkite-agent pipeline upload"}]
    })
}
