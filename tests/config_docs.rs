//! docs/configuration.md's table of variables against the code: it names exactly the variables
//! [`Config::variables`] reads, `required` exactly where leaving a variable out is a problem, every
//! other default exactly as [`Config::from_vars`] yields it when the variable is unset, every range
//! of valid values at both ends and one past them, and every keyword it lists as accepted. The
//! README's short table of the variables needed to start must agree with it.
//!
//! The table's rows are `| VARIABLES | DEFAULT | VALID VALUES | meaning |`. VARIABLES are
//! backquoted names (`` `NAME` ``), optionally followed by backquoted suffixes that name a sibling
//! (`` (+`_FILE`) `` is `NAME_FILE`). DEFAULT is `required`, `unset`, or one backquoted value in
//! the form the variable takes it (`` `120/60s` ``). VALID VALUES that start with
//! `` `MIN`–`MAX` `` are a whole-number range; each backquoted lower-case word in them
//! (`` `off` ``) is a keyword the first variable of the row accepts.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};

use kitebridge::{
    AuditOnFailure as OnFailure, AuditTarget, Config, JwksSource, MetricsSetting as Metrics,
    ProfileSource, RateLimit,
};

const REFERENCE: &str = include_str!("../docs/configuration.md");
const README: &str = include_str!("../README.md");
const KEY_PKCS1: &str = include_str!("fixtures/test-github-app-key.pkcs1.pem");

/// A valid value for each variable the table must call `required`.
const REQUIRED: &[(&str, &str)] = &[
    ("JWT_BUILDKITE_ORGANIZATION_SLUG", "acme"),
    ("JWT_AUDIENCE", "kitebridge"),
    ("GITHUB_APP_ID", "123456"),
    ("GITHUB_APP_PRIVATE_KEY", KEY_PKCS1),
    ("GITHUB_APP_INSTALLATION_ID", "7654321"),
];

/// Variables that are read but whose value is not kept in [`Config`], so their default cannot be
/// compared; the table must say `unset` for them.
const NOT_KEPT: &[&str] = &[
    // Only read to find the secrets' credential files; secret sources are tested in config.rs.
    "CREDENTIALS_DIRECTORY",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum DefaultCell {
    Required,
    Unset,
    Value(String),
}

#[derive(Debug)]
struct Row {
    names: Vec<String>,
    default: DefaultCell,
    /// The valid-values cell (empty in the README's table, which has none).
    valid: String,
}

/// The rows of docs/configuration.md's table, under `## Variables`.
fn table() -> Vec<Row> {
    let rows = rows_of(
        REFERENCE,
        "Variables\n",
        "| Variable | Default | Valid values | Meaning |",
        "|---|---|---|---|",
    );
    assert!(rows.len() > 10, "only {} rows read", rows.len());
    rows
}

/// The rows of the README's short table, under `## Configuration`.
fn readme_table() -> Vec<Row> {
    rows_of(
        README,
        "Configuration\n",
        "| Variable | Default | Meaning |",
        "|---|---|---|",
    )
}

/// The rows of the table with `header` in the `## ` section whose title starts `section`.
fn rows_of(document: &str, section: &str, header: &str, separator: &str) -> Vec<Row> {
    let section = document
        .split("\n## ")
        .find(|text| text.starts_with(section))
        .unwrap_or_else(|| panic!("no ## {section:?} section"));
    let mut lines = section.lines().skip_while(|line| *line != header);
    assert!(lines.next().is_some(), "no {header} table");
    assert_eq!(lines.next(), Some(separator), "table separator");
    lines
        .take_while(|line| line.starts_with('|'))
        .map(row)
        .collect()
}

fn row(line: &str) -> Row {
    let cells: Vec<&str> = line.split('|').map(str::trim).collect();
    let (variables, default, valid) = match cells[..] {
        [_, variables, default, valid, _, _] => (variables, default, valid),
        [_, variables, default, _, _] => (variables, default, ""),
        _ => panic!("not a table row: {line:?}"),
    };
    let mut names: Vec<String> = Vec::new();
    for token in quoted(variables) {
        match token.strip_prefix('_') {
            Some(_) => {
                let last = names.last().expect("a suffix before any name");
                names.push(format!("{last}{token}"));
            }
            None => {
                assert!(
                    token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                    "{token:?} in {line:?} is not a variable name"
                );
                names.push(token.to_string());
            }
        }
    }
    assert!(!names.is_empty(), "no variable in {line:?}");
    let default = match default {
        "required" => DefaultCell::Required,
        "unset" => DefaultCell::Unset,
        _ => match quoted(default)[..] {
            [value] if default == format!("`{value}`") => DefaultCell::Value(value.to_string()),
            _ => {
                panic!("the default {default:?} in {line:?} is not required, unset or one `value`")
            }
        },
    };
    Row {
        names,
        default,
        valid: valid.to_string(),
    }
}

/// The backquoted pieces of a cell.
fn quoted(cell: &str) -> Vec<&str> {
    let pieces: Vec<&str> = cell.split('`').collect();
    assert!(pieces.len() % 2 == 1, "unbalanced ` in {cell:?}");
    pieces.into_iter().skip(1).step_by(2).collect()
}

fn required_vars() -> BTreeMap<String, String> {
    REQUIRED
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// The variable's value in `config`, in the form the variable takes it; `None` for unset.
fn shown(config: &Config, name: &str) -> Option<String> {
    fn rate(limit: RateLimit) -> String {
        match limit {
            RateLimit::Off => "off".to_string(),
            RateLimit::Limit { count, window_secs } => format!("{count}/{window_secs}s"),
        }
    }
    let c = config;
    let value = match name {
        // The required ones, so a table that calls them optional fails here too.
        "JWT_BUILDKITE_ORGANIZATION_SLUG" => c.organization_slug.clone(),
        "JWT_AUDIENCE" => c.audience.clone(),
        "GITHUB_APP_ID" => c.github_app_id.clone(),
        "GITHUB_APP_PRIVATE_KEY" | "GITHUB_APP_PRIVATE_KEY_FILE" => "(a key)".to_string(),
        "GITHUB_APP_INSTALLATION_ID" => c.github_installation_id.to_string(),
        "JWT_BUILDKITE_ORGANIZATION_ID" => return c.organization_id.clone(),
        "JWT_ISSUER_URL" => c.issuer.clone(),
        "JWT_JWKS_URL" => match &c.jwks {
            JwksSource::Url(url) => url.clone(),
            JwksSource::Static(_) => return None,
        },
        "JWT_JWKS_STATIC" | "JWT_JWKS_STATIC_FILE" => match &c.jwks {
            JwksSource::Url(_) => return None,
            JwksSource::Static(_) => "(a static JWKS)".to_string(),
        },
        "JWT_LEEWAY_SECS" => c.leeway_secs.to_string(),
        "JWT_MAX_LIFETIME_SECS" => c.max_lifetime_secs.to_string(),
        "BUILDKITE_API_TOKEN" | "BUILDKITE_API_TOKEN_FILE" => {
            c.buildkite_api_token.as_ref()?;
            "(a token)".to_string()
        }
        "BUILDKITE_API_URL" => c.buildkite_api_url.clone(),
        "GITHUB_API_URL" => c.github_api_url.clone(),
        "GITHUB_HOST" => c.github_host.clone(),
        "PROFILES_FILE" => match &c.profiles {
            ProfileSource::File(path) => path.display().to_string(),
            _ => return None,
        },
        "GITHUB_ORG_PROFILE" => match &c.profiles {
            ProfileSource::GitHub {
                owner,
                repo,
                path,
                git_ref,
            } => match git_ref {
                Some(git_ref) => format!("{owner}:{repo}:{path}@{git_ref}"),
                None => format!("{owner}:{repo}:{path}"),
            },
            _ => return None,
        },
        "PROFILES_REFRESH_SECS" => c.profiles_refresh_secs.to_string(),
        "SERVER_HOST" => c.server_host.to_string(),
        "SERVER_PORT" => c.server_port.to_string(),
        "SERVER_BASE_PATH" => return c.server_base_path.clone(),
        "SERVER_WORKERS" => c.server_workers.to_string(),
        "SERVER_MAX_CONNECTIONS" => c.max_connections.to_string(),
        "SERVER_MAX_CONNECTIONS_PER_SOURCE" => match c.max_connections_per_source {
            Some(cap) => cap.to_string(),
            None => "off".to_string(),
        },
        "SERVER_QUEUE_TIMEOUT_SECS" => c.timeout_queue_secs.to_string(),
        "SERVER_HEADER_TIMEOUT_SECS" => c.timeout_header_secs.to_string(),
        "SERVER_BODY_TIMEOUT_SECS" => c.timeout_body_secs.to_string(),
        "SERVER_IDLE_TIMEOUT_SECS" => c.timeout_idle_secs.to_string(),
        "SERVER_SHUTDOWN_TIMEOUT_SECS" => c.timeout_shutdown_secs.to_string(),
        "TOKEN_MIN_REMAINING_SECS" => c.token_min_remaining_secs.to_string(),
        "TOKEN_CACHE_MAX_ENTRIES" => c.token_cache_max_entries.to_string(),
        "PIPELINE_CACHE_SECS" => c.pipeline_cache_secs.to_string(),
        "JWT_CACHE_MAX_ENTRIES" => c.jwt_cache_max_entries.to_string(),
        "PROFILES_MAX_BYTES" => c.profiles_max_bytes.to_string(),
        "RATE_LIMIT_PER_PIPELINE" => rate(c.rate_limit_per_pipeline),
        "RATE_LIMIT_PER_SOURCE" => rate(c.rate_limit_per_source),
        "RATE_LIMIT_MINTS" => rate(c.rate_limit_mints),
        "GITHUB_RATELIMIT_RESERVE" => c.github_ratelimit_reserve.to_string(),
        "SERVER_ALLOWED_SOURCES" => return c.allowed_sources.as_ref().map(ToString::to_string),
        "SERVER_TRUSTED_PROXIES" => return c.trusted_proxies.as_ref().map(ToString::to_string),
        "METRICS" => match c.metrics {
            Metrics::On => "on".to_string(),
            Metrics::Off => "off".to_string(),
            Metrics::Listen(addr) => addr.to_string(),
        },
        "AUDIT_LOG" => match &c.audit_log {
            AuditTarget::Stdout => "stdout".to_string(),
            AuditTarget::Stderr => "stderr".to_string(),
            AuditTarget::File(path) => path.display().to_string(),
        },
        "AUDIT_ON_FAILURE" => match c.audit_on_failure {
            OnFailure::Refuse => "refuse".to_string(),
            OnFailure::Serve => "serve".to_string(),
        },
        "LOG_LEVEL" => c.log_level.to_string().to_ascii_lowercase(),
        "SSL_CERT_FILE" => return c.ssl_cert_file.as_ref().map(|p| p.display().to_string()),
        "HTTPS_PROXY" | "https_proxy" => return c.https_proxy.clone(),
        "NO_PROXY" | "no_proxy" => return c.no_proxy.clone(),
        "CACHE_URL" => return c.cache_url.as_ref().map(ToString::to_string),
        "CACHE_USERNAME" => return c.cache_username.clone(),
        "CACHE_PASSWORD" | "CACHE_PASSWORD_FILE" => {
            c.cache_password.as_ref()?;
            "(a password)".to_string()
        }
        "CACHE_ENCRYPTION_KEYS" | "CACHE_ENCRYPTION_KEYS_FILE" => {
            c.cache_encryption_keys.as_ref()?;
            "(keys)".to_string()
        }
        "CACHE_PREFIX" => c.cache_prefix.clone(),
        "CACHE_TIMEOUT_MS" => c.cache_timeout_ms.to_string(),
        _ => panic!("{name}: add how its value shows in Config to shown() in this test"),
    };
    Some(value)
}

#[test]
fn the_table_names_every_variable_read_and_only_those() {
    let mut listed = BTreeSet::new();
    for row in table() {
        for name in row.names {
            assert!(listed.insert(name.clone()), "{name} is listed twice");
        }
    }
    let read: BTreeSet<String> = Config::variables()
        .into_iter()
        .map(str::to_string)
        .collect();
    let unlisted: Vec<_> = read.difference(&listed).collect();
    let unread: Vec<_> = listed.difference(&read).collect();
    assert!(
        unlisted.is_empty(),
        "read but not in docs/configuration.md's table: {unlisted:?}"
    );
    assert!(
        unread.is_empty(),
        "in docs/configuration.md's table but never read: {unread:?}"
    );
}

#[test]
fn required_in_the_table_exactly_where_leaving_a_variable_out_is_a_problem() {
    let rows = table();
    let required: BTreeSet<&str> = rows
        .iter()
        .filter(|row| row.default == DefaultCell::Required)
        .flat_map(|row| row.names.first())
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = REQUIRED.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        required, expected,
        "the rows docs/configuration.md marks required"
    );
    if let Err(error) = Config::from_vars(&required_vars()) {
        panic!("the required variables alone do not make a configuration: {error}");
    }
    for row in rows
        .iter()
        .filter(|row| row.default == DefaultCell::Required)
    {
        let mut vars = required_vars();
        for name in &row.names {
            vars.remove(name);
        }
        let Err(error) = Config::from_vars(&vars) else {
            panic!(
                "{:?}: docs/configuration.md says required, but it can be left out",
                row.names
            );
        };
        assert!(
            error
                .problems()
                .iter()
                .any(|problem| row.names.iter().any(|name| name == problem.variable)),
            "{:?} left out, but the problems are about others: {error}",
            row.names
        );
    }
}

#[test]
fn every_default_in_the_table_is_what_config_yields_when_unset() {
    let config = match Config::from_vars(&required_vars()) {
        Ok(config) => config,
        Err(error) => panic!("{error}"),
    };
    let mut wrong = Vec::new();
    for row in table() {
        let expected = match &row.default {
            DefaultCell::Required => continue,
            DefaultCell::Unset => None,
            DefaultCell::Value(value) => Some(value.as_str()),
        };
        for name in &row.names {
            if NOT_KEPT.contains(&name.as_str()) {
                assert_eq!(row.default, DefaultCell::Unset, "{name}");
                continue;
            }
            let actual = shown(&config, name);
            if actual.as_deref() != expected {
                wrong.push(format!(
                    "{name}: docs/configuration.md says {:?}, config yields {:?}",
                    expected.unwrap_or("unset"),
                    actual.as_deref().unwrap_or("unset")
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// A configuration of the required variables, the context `name` needs (the other `CACHE_*`
/// variables are read only with a `CACHE_URL` and its keys) and `name` = `value`.
fn with(name: &str, value: &str) -> BTreeMap<String, String> {
    let mut vars = required_vars();
    if name.starts_with("CACHE_") && name != "CACHE_URL" {
        vars.insert("CACHE_URL".into(), "redis://127.0.0.1:6379".into());
        vars.insert(
            "CACHE_ENCRYPTION_KEYS".into(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
        );
    }
    vars.insert(name.to_string(), value.to_string());
    vars
}

/// `Ok` if the configuration with `name` = `value` is valid, else the problems about `name`.
fn verdict(name: &str, value: &str) -> Result<(), Vec<String>> {
    match Config::from_vars(&with(name, value)) {
        Ok(_) => Ok(()),
        Err(error) => Err(error
            .problems()
            .iter()
            .map(|problem| format!("{}: {}", problem.variable, problem.message))
            .collect()),
    }
}

/// The `` `MIN`–`MAX` `` range a valid-values cell starts with.
fn range(valid: &str) -> Option<(u64, u64)> {
    let rest = valid.strip_prefix('`')?;
    let (min, rest) = rest.split_once("`–`")?;
    let (max, _) = rest.split_once('`')?;
    Some((min.parse().ok()?, max.parse().ok()?))
}

#[test]
fn every_range_in_the_table_is_what_config_accepts() {
    let mut wrong = Vec::new();
    let mut checked = 0;
    for row in table() {
        let Some((min, max)) = range(&row.valid) else {
            continue;
        };
        let name = &row.names[0];
        checked += 1;
        for accepted in [min, max] {
            if let Err(problems) = verdict(name, &accepted.to_string()) {
                wrong.push(format!(
                    "{name}={accepted} is in range but refused: {problems:?}"
                ));
            }
        }
        let outside = min.checked_sub(1).into_iter().chain(max.checked_add(1));
        for refused in outside {
            match verdict(name, &refused.to_string()) {
                Ok(()) => wrong.push(format!("{name}={refused} is out of range but accepted")),
                Err(problems) if !problems.iter().any(|p| p.starts_with(&format!("{name}:"))) => {
                    wrong.push(format!(
                        "{name}={refused}: problems about others: {problems:?}"
                    ))
                }
                Err(_) => {}
            }
        }
    }
    assert!(checked >= 15, "only {checked} ranges read");
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn every_keyword_in_the_table_is_accepted() {
    let mut wrong = Vec::new();
    let mut checked = 0;
    for row in table() {
        let name = &row.names[0];
        let keywords = quoted(&row.valid)
            .into_iter()
            .filter(|word| !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase()));
        for keyword in keywords {
            checked += 1;
            // Keywords are matched ignoring ASCII case.
            for value in [keyword.to_string(), keyword.to_ascii_uppercase()] {
                if let Err(problems) = verdict(name, &value) {
                    wrong.push(format!(
                        "{name}={value} is listed but refused: {problems:?}"
                    ));
                }
            }
        }
    }
    assert!(checked >= 10, "only {checked} keywords read");
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn the_readme_names_only_documented_variables_with_the_same_defaults() {
    let reference: BTreeMap<String, DefaultCell> = table()
        .into_iter()
        .flat_map(|row| {
            let default = row.default;
            row.names
                .into_iter()
                .map(move |name| (name, default.clone()))
        })
        .collect();
    let readme = readme_table();
    assert!(!readme.is_empty(), "the README's table is empty");
    for row in readme {
        for name in &row.names {
            match reference.get(name) {
                None => panic!("{name} is in the README's table but not in docs/configuration.md"),
                Some(default) => assert_eq!(
                    *default, row.default,
                    "{name}: the README's default differs from docs/configuration.md's"
                ),
            }
        }
    }
}
