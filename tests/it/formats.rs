//! The machine formats against what consumes them: SARIF against the OASIS 2.1.0 schema
//! (tests/sarif-2.1.0.schema.json, from oasis-tcs/sarif-spec) and GitHub code scanning's upload
//! rules; every command's JSON against docs/report.schema.json; JUnit XML parsed as XML;
//! Prometheus text parsed by the exposition format's rules; --skip/--ignore, --output-file,
//! --quiet, colour and log channels.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde_json::Value;

use crate::harness::{psk_guard, Node};

fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join(path)).unwrap()).unwrap()
}

fn validate(validator: &jsonschema::Validator, what: &str, v: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(v)
        .take(10)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not validate:\n{}",
        errors.join("\n")
    );
}

/// Asserts `v` validates against the committed JSON Schema of the report.
pub fn assert_valid_report(what: &str, v: &Value) {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = V.get_or_init(|| {
        jsonschema::validator_for(&load("docs/report.schema.json")).expect("report schema compiles")
    });
    validate(validator, what, v);
}

/// The first result of `sarif`'s run for rule `rule`.
pub fn sarif_result<'a>(sarif: &'a Value, rule: &str) -> &'a Value {
    sarif["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ruleId"] == rule)
        .unwrap_or_else(|| panic!("no {rule} result: {sarif:#}"))
}

/// Asserts `v` is valid SARIF 2.1.0 and meets GitHub code scanning's upload rules.
pub fn assert_valid_sarif(v: &Value) {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = V.get_or_init(|| {
        jsonschema::validator_for(&load("tests/sarif-2.1.0.schema.json"))
            .expect("SARIF schema compiles")
    });
    validate(validator, "SARIF", v);
    // GitHub's rules (docs.github.com, "SARIF support for code scanning"): a result needs a
    // location with an artifact URI; severity comes from the rule's properties.
    let run = &v["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    for r in rules {
        let p = &r["properties"];
        let sev: f64 = p["security-severity"]
            .as_str()
            .expect("security-severity is a string")
            .parse()
            .expect("security-severity is a number");
        assert!((0.0..=10.0).contains(&sev));
        assert_eq!(p["tags"][0], "security", "{r}");
        assert!(["very-high", "high", "medium", "low"].contains(&p["precision"].as_str().unwrap()));
        let help = r["helpUri"].as_str().unwrap();
        let anchor = help.split_once("docs/findings.md#").unwrap().1;
        let findings = std::fs::read_to_string(root().join("docs/findings.md")).unwrap();
        assert!(
            findings.contains(&format!("\n## {anchor}\n")),
            "helpUri anchor {anchor}"
        );
    }
    let bases = run["originalUriBaseIds"].as_object().unwrap();
    for res in run["results"].as_array().unwrap() {
        let locs = res["locations"].as_array().unwrap();
        assert!(!locs.is_empty(), "{res}");
        for l in locs {
            let a = &l["physicalLocation"]["artifactLocation"];
            let uri = a["uri"]
                .as_str()
                .unwrap_or_else(|| panic!("no artifact uri: {res}"));
            assert!(
                !uri.contains(' ') && !uri.contains('#'),
                "URI not percent-encoded: {uri}"
            );
            match a["uriBaseId"].as_str() {
                Some(b) => {
                    assert!(bases.contains_key(b), "{b}");
                    assert!(!uri.starts_with('/') && !uri.contains("://"), "{uri}");
                }
                None => assert!(uri.starts_with("file:///"), "absolute file URI: {uri}"),
            }
        }
        let fp = res["partialFingerprints"]["pskGuardFinding/v1"]
            .as_str()
            .unwrap();
        assert_eq!(fp.len(), 16);
        let text = res["message"]["text"].as_str().unwrap();
        let salted = text
            .split("hmac-sha256:")
            .skip(1)
            .any(|rest| rest.chars().next().is_some_and(|c| c.is_ascii_hexdigit()));
        assert!(!salted, "a salted fingerprint in a message: {text}");
    }
}

fn seeded(dir_name: &str) -> Node {
    let node = Node::start_in(dir_name);
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", "changeme");
    node.add_tunnel("n2-def456", "node2", "10.0.0.3", "changeme");
    node.add_tunnel("n3-aaa111", "node3", "10.0.0.4", "changeme");
    node.chmod(&node.conf_db, 0o644);
    node.chmod(&node.run_dir, 0o755);
    node
}

pub fn run(node: &Node, cmd: &str, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = vec![cmd.into()];
    // --log-dir is check's alone.
    args.extend(if cmd == "check" {
        node.check_args()
    } else {
        node.node_args()
    });
    args.extend(extra.iter().map(|s| s.to_string()));
    psk_guard(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// `fix --quiet` prints no plan on stderr (the plan is in the report's `data.plan`).
#[test]
fn fix_quiet_prints_no_plan() {
    let node = seeded("fix-quiet");
    let out = run(&node, "fix", &["--dry-run", "-o", "json"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("plan ("));
    let out = run(&node, "fix", &["--dry-run", "-o", "json", "--quiet"]);
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!json_of(&out)["data"]["plan"].as_array().unwrap().is_empty());
}

pub fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn sarif_validates_and_is_stable_across_salts_and_runs() {
    // A run directory with a space and a '#' in its path: URIs must be percent-encoded.
    let node = seeded("run dir #1");
    let a = json_of(&run(
        &node,
        "check",
        &["-o", "sarif", "--fingerprint-salt", "one"],
    ));
    let b = json_of(&run(&node, "check", &["-o", "sarif"]));
    assert_valid_sarif(&a);
    assert_valid_sarif(&b);
    let fps = |v: &Value| -> BTreeSet<String> {
        v["runs"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["partialFingerprints"].to_string() + &r["message"]["text"].to_string())
            .collect()
    };
    assert_eq!(
        fps(&a),
        fps(&b),
        "fingerprints and messages differ between salts"
    );
    // 3 tunnels, one key: one plaintext result, located in conf.db.
    let plain: Vec<&Value> = a["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ruleId"] == "psk-plaintext-in-ovsdb")
        .collect();
    assert_eq!(plain.len(), 1);
    assert_eq!(
        plain[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "openvswitch/conf.db"
    );
    let base = a["runs"][0]["originalUriBaseIds"]["RUNDIR"]["uri"]
        .as_str()
        .unwrap();
    assert!(base.contains("run%20dir%20%231"), "{base}");
    // A relative --run-dir becomes an absolute file URI, never a host name.
    let parent = node.run_dir.parent().unwrap();
    let rel = node.run_dir.file_name().unwrap().to_str().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_psk-guard"))
        .current_dir(parent)
        .args([
            "check",
            "--db",
            &node.db_arg(),
            "--run-dir",
            rel,
            "-o",
            "sarif",
        ])
        .output()
        .unwrap();
    let v = json_of(&out);
    assert_valid_sarif(&v);
    assert!(v["runs"][0]["originalUriBaseIds"]["RUNDIR"]["uri"]
        .as_str()
        .unwrap()
        .starts_with("file:///"));
}

#[test]
fn every_command_s_json_validates_against_the_committed_schema() {
    let node = seeded("schema");
    let outs = [
        run(&node, "check", &["-o", "json"]),
        run(&node, "fix", &["--dry-run", "-o", "json"]),
        psk_guard(&["scan-db", node.conf_db.to_str().unwrap(), "-o", "json"]),
        run(&node, "check", &["-o", "json", "--skip", "psk-default-key"]),
    ];
    for o in &outs {
        let v = json_of(o);
        assert_valid_report(&format!("{}", v["command"]), &v);
    }
    // The schema describes the fields: a report missing its header does not validate.
    let mut v = json_of(&outs[0]);
    v.as_object_mut().unwrap().remove("generated_at");
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator =
        V.get_or_init(|| jsonschema::validator_for(&load("docs/report.schema.json")).unwrap());
    assert!(!validator.is_valid(&v));
    let h = json_of(&outs[0]);
    assert!(h["generated_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(h["schema_version"], 2);
    assert!(!h["host"]["hostname"].as_str().unwrap().is_empty());
}

#[test]
fn skip_and_ignore_file_suppress_with_a_reason_and_expired_entries_are_reported() {
    let node = seeded("ignore");
    let ignore = node.dir.path().join("ignore.yaml");
    std::fs::write(
        &ignore,
        "ignore:\n  - code: psk-plaintext-in-ovsdb\n    subject: 'key of n1-*'\n    reason: cert mode in Q3 (SEC-1)\n    expires: 2999-12-31\n  - code: conf-db-mode-too-open\n    reason: old acceptance\n    expires: 2001-01-01\n",
    )
    .unwrap();
    let args = [
        "-o",
        "json",
        "--ignore",
        ignore.to_str().unwrap(),
        "--skip",
        "psk-default-key",
        "--fail-on",
        "critical",
    ];
    let out = run(&node, "check", &args);
    let v = json_of(&out);
    assert_valid_report("check --ignore", &v);
    let codes = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|f| f["code"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(!codes("findings").contains(&"psk-plaintext-in-ovsdb".to_owned()));
    assert!(!codes("findings").contains(&"psk-default-key".to_owned()));
    assert!(
        codes("findings").contains(&"conf-db-mode-too-open".to_owned()),
        "expired entry applies to nothing"
    );
    assert!(codes("findings").contains(&"ignore-entry-expired".to_owned()));
    let sup = v["suppressed"].as_array().unwrap();
    let plain = sup
        .iter()
        .find(|s| s["code"] == "psk-plaintext-in-ovsdb")
        .unwrap();
    assert_eq!(plain["suppression"]["reason"], "cert mode in Q3 (SEC-1)");
    assert_eq!(plain["suppression"]["kind"], "ignore-file");
    assert!(sup
        .iter()
        .any(|s| s["code"] == "psk-default-key" && s["suppression"]["kind"] == "skip"));
    assert_eq!(v["summary"]["suppressed"], sup.len());
    assert_eq!(out.status.code(), Some(0), "no unaccepted critical finding");
    // SARIF lists them with suppressions, not silently dropped.
    let mut sargs = args.to_vec();
    sargs[1] = "sarif";
    let s = json_of(&run(&node, "check", &sargs));
    assert_valid_sarif(&s);
    let suppressed: Vec<&Value> = s["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["suppressions"].is_array())
        .collect();
    assert_eq!(suppressed.len(), sup.len());
    assert_eq!(suppressed[0]["suppressions"][0]["kind"], "external");
    // Bad input: exit 2, naming the file, nothing on stdout.
    std::fs::write(&ignore, "ignore:\n  - code: no-such-code\n    reason: x\n").unwrap();
    let out = run(&node, "check", &["--ignore", ignore.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ignore.yaml") && err.contains("unknown code"),
        "{err}"
    );
    let out = run(&node, "check", &["--skip", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A strict reader of the Prometheus text format (0.0.4): comments are HELP or TYPE; every
/// sample belongs to a family with HELP and TYPE given before it; names and label names match
/// the allowed patterns; label values are properly quoted and escaped; values parse as floats;
/// no series twice.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let name_ok = |n: &str| {
        let mut c = n.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
    };
    let mut help = BTreeSet::new();
    let mut typed = BTreeSet::new();
    let mut series = BTreeMap::new();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut p = rest.splitn(3, ' ');
            let (kw, name) = (p.next().unwrap(), p.next().unwrap());
            assert!(name_ok(name), "{line}");
            match kw {
                "HELP" => assert!(help.insert(name.to_owned()), "HELP twice: {line}"),
                "TYPE" => {
                    assert!(["counter", "gauge", "histogram", "summary", "untyped"]
                        .contains(&p.next().unwrap()));
                    assert!(typed.insert(name.to_owned()), "TYPE twice: {line}");
                }
                _ => panic!("unknown comment {line}"),
            }
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.trim().is_empty(),
            "{line:?}"
        );
        let (name, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i..]),
            None => line.split_at(line.find(' ').unwrap()),
        };
        assert!(
            name_ok(name) && help.contains(name) && typed.contains(name),
            "{line}"
        );
        let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
            // label="value",... }
            let mut i = 0;
            let b: Vec<char> = r.chars().collect();
            loop {
                let start = i;
                while b[i] != '=' {
                    i += 1;
                }
                let lname: String = b[start..i].iter().collect();
                assert!(name_ok(&lname) && !lname.contains(':'), "{line}");
                assert_eq!(b[i + 1], '"', "{line}");
                i += 2;
                while b[i] != '"' {
                    if b[i] == '\\' {
                        assert!(matches!(b[i + 1], '\\' | '"' | 'n'), "{line}");
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                match b[i] {
                    ',' => i += 1,
                    '}' => break,
                    c => panic!("{line}: unexpected {c}"),
                }
            }
            let labels: String = b[..i].iter().collect();
            (labels, b[i + 1..].iter().collect::<String>())
        } else {
            (String::new(), rest.to_owned())
        };
        let value = value.strip_prefix(' ').unwrap_or_else(|| panic!("{line}"));
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        assert!(
            series.insert(format!("{name}{{{labels}"), v).is_none(),
            "twice: {line}"
        );
    }
    series
}

#[test]
fn prometheus_textfile_and_junit_xml() {
    let node = seeded("formats");
    let out = run(&node, "check", &["-o", "prometheus"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let s = parse_prometheus(&text);
    let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("{k} in\n{text}"));
    assert_eq!(
        get("psk_guard_findings{command=\"check\",code=\"psk-plaintext-in-ovsdb\",severity=\"critical\""),
        1.0
    );
    assert_eq!(
        get("psk_guard_findings_by_severity{command=\"check\",severity=\"critical\""),
        2.0
    );
    assert!(get("psk_guard_last_run_timestamp_seconds{command=\"check\"") > 1.7e9);
    assert!(
        !text.contains("key_age"),
        "check does not know the key's age"
    );

    let out = run(
        &node,
        "check",
        &["-o", "junit", "--skip", "run-dir-mode-too-open"],
    );
    let xml = String::from_utf8(out.stdout).unwrap();
    let mut r = quick_xml::Reader::from_str(&xml);
    let (mut cases, mut failures, mut skipped) = (0, 0, 0);
    loop {
        match r.read_event().unwrap_or_else(|e| panic!("XML: {e}\n{xml}")) {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                match e.name().as_ref() {
                    b"testcase" => cases += 1,
                    b"failure" => failures += 1,
                    b"skipped" => skipped += 1,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    assert!(xml.contains("tests=\"") && xml.contains("<testsuites"));
    assert_eq!(failures, 3, "default key, plaintext, conf.db mode:\n{xml}");
    assert!(skipped >= 0 && cases >= failures);
}

#[test]
fn output_file_is_atomic_private_and_stdout_carries_only_the_report() {
    let node = seeded("channels");
    let dest = node.dir.path().join("report.json");
    std::fs::write(&dest, "old").unwrap();
    let out = run(
        &node,
        "check",
        &["-o", "json", "--output-file", dest.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "the report went to the file");
    let v: Value = serde_json::from_slice(&std::fs::read(&dest).unwrap()).unwrap();
    assert_eq!(v["command"], "check");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let leftovers: Vec<_> = std::fs::read_dir(node.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
    // stdout is exactly one JSON document, even at trace level; logs on stderr, no ANSI.
    let mut args: Vec<String> = vec!["check".into()];
    args.extend(node.check_args());
    args.extend(["-o".into(), "json".into()]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_psk-guard"))
        .args(&args)
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "")
        .output()
        .unwrap();
    json_of(&out);
    assert!(
        !out.stderr.contains(&0x1b),
        "no ANSI on a redirected stderr"
    );
    // --log wins over RUST_LOG; --quiet silences.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_psk-guard"))
        .args(&args)
        .args(["--log", "error"])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_psk-guard"))
        .args(&args)
        .arg("--quiet")
        .env("PSK_GUARD_LOG", "trace")
        .output()
        .unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // -o does not exist where it means nothing.
    for cmd in [
        &["generate", "bash", "-o", "json"][..],
        &["push-key", "-o", "json"],
    ] {
        let out = psk_guard(cmd);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}");
    }
}

#[test]
fn host_root_resolves_absolute_links_inside_the_root() {
    // The node's file system at <tmp> (its run directory at <tmp>/run), reached through an
    // absolute link on the way, like /var/run -> /run on Debian and Ubuntu: here /var/lnk -> /,
    // which must resolve to <tmp>/, not to this machine's /.
    let node = seeded("hostroot");
    let root = node.dir.path();
    std::fs::create_dir_all(root.join("var")).unwrap();
    std::os::unix::fs::symlink("/", root.join("var/lnk")).unwrap();
    let direct = json_of(&run(&node, "check", &["-o", "json"]));
    let out = psk_guard(&[
        "check",
        "--host-root",
        root.to_str().unwrap(),
        "--run-dir",
        "/var/lnk/run",
        "--db",
        "unix:/var/lnk/run/openvswitch/db.sock",
        "--log-dir",
        "/var/lnk/log",
        "-o",
        "json",
    ]);
    let v = json_of(&out);
    assert_valid_report("check --host-root", &v);
    let ids = |v: &Value| -> BTreeSet<(String, String)> {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["code"].as_str().unwrap().to_owned(),
                    f["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert!(v["incomplete"].as_array().unwrap().is_empty(), "{v:#}");
    assert_eq!(
        ids(&v),
        ids(&direct),
        "same findings, same ids, under the host root"
    );
    assert_eq!(v["target"]["run_dir"], node.run_dir.display().to_string());
    // Without --host-root the same host paths are this machine's: not the node.
    let out = psk_guard(&["check", "--host-root", "/nonexistent-root", "-o", "json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--host-root /nonexistent-root"));
}

#[test]
fn errors_say_their_cause_once_and_scan_db_prints_human_times() {
    let dir = tempfile::tempdir().unwrap();
    let out = psk_guard(&["scan-db", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        err.matches("is a directory").count(),
        1,
        "the cause once: {err}"
    );
    assert!(err.contains(dir.path().to_str().unwrap()), "{err}");
    let node = seeded("times");
    let out = psk_guard(&["scan-db", node.conf_db.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("first ")).unwrap();
    let first = line
        .split("first ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert!(
        first.len() >= 20 && first.contains('T') && first.ends_with('Z'),
        "RFC 3339 time, not epoch milliseconds: {line}"
    );
}
