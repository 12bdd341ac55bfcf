//! The Debian package's pieces agree with each other and with the code: every variable
//! [`Config::variables`] reads is in kitebridge(8); the units start the binary where the package
//! installs it and point at the man page; the package installs what the units and the man page
//! name, and its maintainer scripts enable and start nothing.
#![forbid(unsafe_code)]

use kitebridge::Config;

const MAN8: &str = include_str!("../man/kitebridge.8");
const MAN5: &str = include_str!("../man/kitebridge-profiles.5");
const SERVICE: &str = include_str!("../systemd/kitebridge.service");
const SOCKET: &str = include_str!("../systemd/kitebridge.socket");
const CARGO_TOML: &str = include_str!("../Cargo.toml");
const POSTINST: &str = include_str!("../packaging/debian/postinst");
const POSTRM: &str = include_str!("../packaging/debian/postrm");

/// The man page's text with roff's escaped hyphens and font switches taken out.
fn plain(roff: &str) -> String {
    roff.replace("\\-", "-")
        .replace("\\fR", "")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fP", "")
}

/// The words made of `[A-Za-z0-9_]` in `text`.
fn words(text: &str) -> std::collections::BTreeSet<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect()
}

#[test]
fn every_variable_is_in_the_shipped_env_file() {
    let example = include_str!("../systemd/kitebridge.env.example");
    let named = words(example);
    let missing: Vec<&str> = Config::variables()
        .into_iter()
        .filter(|v| !named.contains(v))
        .filter(|v| !SECRET_VALUES_AND_SYSTEMD.contains(v))
        .collect();
    assert!(
        missing.is_empty(),
        "variables read by kitebridge but not in systemd/kitebridge.env.example: {missing:?}"
    );
}

/// Not offered in the env file: secret values themselves (their `_FILE` forms and credentials
/// are), lowercase proxy spellings, and what systemd sets.
const SECRET_VALUES_AND_SYSTEMD: &[&str] = &[
    "GITHUB_APP_PRIVATE_KEY",
    "BUILDKITE_API_TOKEN",
    "CACHE_PASSWORD",
    "CACHE_ENCRYPTION_KEYS",
    "https_proxy",
    "no_proxy",
    "CREDENTIALS_DIRECTORY",
];

#[test]
fn every_variable_is_in_the_man_page() {
    let man = plain(MAN8);
    let named = words(&man);
    let missing: Vec<&str> = Config::variables()
        .into_iter()
        .filter(|v| !named.contains(v))
        .collect();
    assert!(
        missing.is_empty(),
        "variables read by kitebridge but not in man/kitebridge.8: {missing:?}"
    );
    // and the sections kitebridge(8) promises
    for section in [
        ".SH COMMANDS",
        ".SH ENVIRONMENT",
        ".SH SIGNALS",
        ".SH FILES",
        ".SH EXIT STATUS",
    ] {
        assert!(MAN8.contains(section), "kitebridge(8) lacks {section}");
    }
    assert!(MAN8.starts_with(".TH KITEBRIDGE 8 "));
    assert!(MAN5.starts_with(".TH KITEBRIDGE\\-PROFILES 5 "));
}

#[test]
fn the_man_page_shows_the_crate_version() {
    let th = MAN8.lines().next().unwrap();
    assert!(
        th.contains(&format!("\"kitebridge {}\"", env!("CARGO_PKG_VERSION"))),
        "{th}"
    );
    let th = MAN5.lines().next().unwrap();
    assert!(
        th.contains(&format!("\"kitebridge {}\"", env!("CARGO_PKG_VERSION"))),
        "{th}"
    );
}

/// The `[package.metadata.deb]` table's asset rows: (source, destination).
fn assets() -> Vec<(String, String)> {
    let table = CARGO_TOML
        .split("\n[package.metadata.deb]\n")
        .nth(1)
        .expect("Cargo.toml has [package.metadata.deb]");
    let table = table.split("\n[").next().unwrap();
    table
        .lines()
        .skip_while(|l| !l.starts_with("assets = ["))
        .skip(1)
        .take_while(|l| !l.starts_with(']'))
        .map(|row| {
            let fields: Vec<&str> = row.split('"').skip(1).step_by(2).collect();
            assert_eq!(fields.len(), 3, "asset row {row:?}");
            (fields[0].to_owned(), fields[1].to_owned())
        })
        .collect()
}

/// Where the package puts `source` (a destination ending in `/` keeps the file name).
fn installed(source: &str) -> String {
    let (_, dest) = assets()
        .into_iter()
        .find(|(s, _)| s == source)
        .unwrap_or_else(|| panic!("{source} is not an asset of the package"));
    let name = source.rsplit('/').next().unwrap();
    if dest.ends_with('/') {
        format!("/{dest}{name}")
    } else {
        format!("/{dest}")
    }
}

#[test]
fn the_units_start_what_the_package_installs() {
    assert_eq!(
        installed("target/release/kitebridge"),
        "/usr/bin/kitebridge"
    );
    let exec: Vec<&str> = SERVICE
        .lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .collect();
    assert_eq!(exec, ["/usr/bin/kitebridge"]);
    for unit in ["kitebridge.service", "kitebridge.socket"] {
        assert_eq!(
            installed(&format!("systemd/{unit}")),
            format!("/usr/lib/systemd/system/{unit}")
        );
    }
    for unit in [SERVICE, SOCKET] {
        let docs = unit
            .lines()
            .find_map(|l| l.strip_prefix("Documentation="))
            .expect("Documentation=");
        assert!(
            docs.split(' ').next() == Some("man:kitebridge(8)"),
            "{docs}"
        );
    }
    assert_eq!(
        installed("man/kitebridge.8"),
        "/usr/share/man/man8/kitebridge.8"
    );
    assert_eq!(
        installed("man/kitebridge-profiles.5"),
        "/usr/share/man/man5/kitebridge-profiles.5"
    );
}

#[test]
fn the_settings_file_is_a_conffile_where_the_unit_reads_it() {
    let env_file = installed("systemd/kitebridge.env.example");
    assert_eq!(env_file, "/etc/kitebridge/kitebridge.env");
    assert!(
        SERVICE
            .lines()
            .any(|l| l == format!("EnvironmentFile=-{env_file}")),
        "the unit reads {env_file}"
    );
    assert!(
        CARGO_TOML.contains(&format!("conf-files = [\"{env_file}\"]")),
        "{env_file} is a conffile"
    );
    let row = CARGO_TOML
        .lines()
        .find(|l| l.contains("\"systemd/kitebridge.env.example\""))
        .unwrap();
    assert!(row.contains("\"640\""), "mode 0640: {row}");
}

#[test]
fn the_maintainer_scripts_only_reload_systemd() {
    for script in [POSTINST, POSTRM] {
        assert!(script.starts_with("#!/bin/sh\n"));
        let commands: Vec<&str> = script
            .lines()
            .map(str::trim)
            .filter(|l| l.contains("systemctl") && !l.starts_with('#'))
            .collect();
        assert_eq!(
            commands,
            ["systemctl --system daemon-reload >/dev/null || true"],
            "{script}"
        );
        assert!(
            script.contains("[ -d /run/systemd/system ]"),
            "only when systemd runs"
        );
        for word in ["enable", "start", "deb-systemd-invoke"] {
            assert!(
                !script
                    .lines()
                    .filter(|l| !l.trim_start().starts_with('#'))
                    .any(|l| l.contains(word)),
                "{word} in {script}"
            );
        }
    }
}
