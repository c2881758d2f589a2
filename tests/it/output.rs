//! What the user sees: JSON and SARIF snapshots, the SARIF shape, the --help text, and that no
//! key appears in any output format, log level or error path.

use base64::Engine;

use crate::harness::{psk_guard, Node};

const KEYS: [&str; 3] = [
    "changeme",
    "Old-Key-3f9a1c77e2b4d5a6",
    "Cur-Key-8b2e4f6a1c3d5e7f",
];

fn forms(key: &str) -> Vec<String> {
    vec![
        key.to_owned(),
        hex::encode(key),
        base64::engine::general_purpose::STANDARD.encode(key),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(key),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key),
    ]
}

pub fn assert_no_key(what: &str, bytes: &[u8], keys: &[&str]) {
    let text = String::from_utf8_lossy(bytes);
    for k in keys {
        for f in forms(k) {
            assert!(
                !text.contains(&f),
                "{what}: key material ({} form) in output:\n{text}",
                if f == *k { "raw" } else { "encoded" }
            );
        }
    }
}

fn seeded() -> Node {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", KEYS[0]);
    node.add_tunnel("n2-def456", "node2", "10.0.0.3", KEYS[1]);
    node.set_psk("n2-def456", KEYS[2]);
    node.chmod(&node.conf_db, 0o644);
    node.chmod(&node.run_dir, 0o755);
    node
}

/// Replaces RFC 3339 UTC times (`2026-11-27T10:20:21Z`) by `<TIME>`.
fn normalize_times(s: &str) -> String {
    let b = s.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:ddZ";
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let is_time = b.len() - i >= shape.len()
            && shape.iter().zip(&b[i..]).all(|(p, c)| match p {
                b'd' => c.is_ascii_digit(),
                p => p == c,
            });
        if is_time {
            out.push_str("<TIME>");
            i += shape.len();
        } else {
            let ch = s[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

fn normalize(s: &str, node: &Node) -> String {
    let s = s
        .replace(&node.dir.path().display().to_string(), "<TMP>")
        .replace(
            &format!("ovsdb-server.{}.ctl", node.pid.unwrap_or(0)),
            "ovsdb-server.<PID>.ctl",
        )
        .replace(&format!("\"{}\"", hostname()), "\"<HOST>\"")
        .replace(&format!("/{}/", hostname()), "/<HOST>/");
    let tmp_enc = node.dir.path().display().to_string().replace('/', "%2F");
    normalize_offsets(&normalize_times(&s.replace(&tmp_enc, "<TMP>")))
}

/// Byte offsets and lengths in conf.db (they move with the length of the temporary path that
/// ovs-vsctl's comments quote) become 0; tests/it/forensics.rs checks their values.
fn normalize_offsets(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    'outer: while !rest.is_empty() {
        for key in [
            "\"byte_offset\": ",
            "\"byte_length\": ",
            "\"byteOffset\": ",
            "\"byteLength\": ",
        ] {
            if let Some(after) = rest.strip_prefix(key) {
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                if digits > 0 {
                    out.push_str(key);
                    out.push('0');
                    rest = &after[digits..];
                    continue 'outer;
                }
            }
        }
        let ch = rest.chars().next().unwrap();
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    out
}

fn snapshot(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "snapshot {} missing: run with UPDATE_SNAPSHOTS=1 and review it",
            path.display()
        )
    });
    assert_eq!(
        expected, actual,
        "snapshot {name} differs (UPDATE_SNAPSHOTS=1 to accept)"
    );
}

fn check_out(node: &Node, format: &str) -> std::process::Output {
    let mut args = vec!["check".to_string()];
    args.extend(node.check_args());
    args.extend(
        [
            "-o",
            format,
            "--fingerprint-salt",
            "snapshot-salt",
            "--color",
            "never",
        ]
        .map(String::from),
    );
    psk_guard(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn json_snapshot() {
    let node = seeded();
    let out = check_out(&node, "json");
    let text = normalize(&String::from_utf8(out.stdout).unwrap(), &node);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["schema"], "psk-guard-report");
    assert_eq!(v["schema_version"], 2);
    assert_eq!(v["generated_at"], "<TIME>");
    assert_eq!(v["host"]["hostname"], "<HOST>");
    snapshot("check.json", &text);
}

#[test]
fn sarif_snapshot_and_shape() {
    let node = seeded();
    let out = check_out(&node, "sarif");
    let text = normalize(&String::from_utf8(out.stdout).unwrap(), &node);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let run = &v["runs"][0];
    let rules: Vec<&str> = run["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules.len(),
        psk_guard::report::Code::ALL.len(),
        "one rule per finding code"
    );
    for r in run["results"].as_array().unwrap() {
        let id = r["ruleId"].as_str().unwrap();
        let idx = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[idx], id);
        assert!(["error", "warning", "note"].contains(&r["level"].as_str().unwrap()));
        assert!(!r["locations"].as_array().unwrap().is_empty());
    }
    snapshot("check.sarif", &text);
}

#[test]
fn text_output_is_a_table_without_colour_when_piped() {
    let node = seeded();
    let mut args = vec!["check".to_string()];
    args.extend(node.check_args());
    let out = psk_guard(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("SEVERITY"), "{text}");
    assert!(text.contains("What to do:"));
    assert!(!text.contains('\x1b'), "no colour when stdout is not a TTY");
    let out = check_out(&node, "text");
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\x1b'));
    let mut args = vec!["check".to_string()];
    args.extend(node.check_args());
    args.extend(["--color".to_string(), "always".to_string()]);
    let out = psk_guard(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\x1b[1;31mcritical"),
        "--color always paints severities"
    );
}

#[test]
fn help_lists_exit_codes() {
    let out = psk_guard(&["--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Exit codes (check, scan-db, fix, audit):"));
    assert!(text.contains("Exit codes (rotate):"));
    for c in ["check", "scan-db", "fix", "rotate", "audit", "generate"] {
        assert!(text.contains(c), "{c} in --help");
    }
    snapshot("help.txt", &text);
}

/// Every finding of the leak-channel checks on `node`: keys in plain, JSON-escaped and gzip logs,
/// a network Manager, a world-readable private key, a stripped and a retyped IPsec tunnel.
fn leak_channels(node: &Node) {
    let text = format!("PSK {} and {}\n", KEYS[1], KEYS[2]);
    std::fs::write(node.log_dir.join("agent.log"), &text).unwrap();
    std::fs::write(
        node.log_dir.join("ovsdb-server.log"),
        serde_json::json!({"psk": KEYS[2]}).to_string(),
    )
    .unwrap();
    let gz = std::fs::File::create(node.log_dir.join("agent.log.1.gz")).unwrap();
    let mut child = std::process::Command::new("gzip")
        .stdin(std::process::Stdio::piped())
        .stdout(gz)
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    node.vsctl(&["set-manager", "ptcp:0:127.0.0.1"]);
    let key = node.ovs_dir.join("node0-0123456789.key");
    std::fs::write(&key, "k").unwrap();
    node.chmod(&key, 0o644);
    node.add_tunnel("n3-aaa111", "node3", "10.0.0.4", KEYS[2]);
    node.vsctl(&["remove", "Interface", "n3-aaa111", "options", "psk"]);
    node.add_tunnel("n4-bbb222", "node4", "10.0.0.5", KEYS[2]);
    node.vsctl(&["set", "Interface", "n4-bbb222", "type=vxlan"]);
}

#[test]
fn no_key_in_any_output_format_log_level_or_error_path() {
    let node = seeded();
    leak_channels(&node);
    let db = node.db_arg();
    let run = node.run_dir.display().to_string();
    let conf = node.conf_db.display().to_string();
    let logs = node.log_dir.display().to_string();
    let mut runs: Vec<Vec<String>> = vec![];
    for fmt in ["text", "json", "sarif"] {
        runs.push(vec![
            "check".into(),
            "--db".into(),
            db.clone(),
            "--run-dir".into(),
            run.clone(),
            "--log-dir".into(),
            logs.clone(),
            "-o".into(),
            fmt.into(),
        ]);
        runs.push(vec![
            "scan-db".into(),
            conf.clone(),
            "-o".into(),
            fmt.into(),
        ]);
        runs.push(vec![
            "fix".into(),
            "--db".into(),
            db.clone(),
            "--run-dir".into(),
            run.clone(),
            "--dry-run".into(),
            "-o".into(),
            fmt.into(),
        ]);
    }
    // error paths: unknown db target, missing file, salt problems, damaged file
    let damaged = node.dir.path().join("damaged.db");
    let mut bytes = std::fs::read(&node.conf_db).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 0x20;
    std::fs::write(&damaged, &bytes).unwrap();
    runs.push(vec![
        "scan-db".into(),
        damaged.display().to_string(),
        "-o".into(),
        "json".into(),
    ]);
    runs.push(vec!["scan-db".into(), "/nonexistent/conf.db".into()]);
    runs.push(vec![
        "check".into(),
        "--db".into(),
        "unix:/nonexistent.sock".into(),
        "--run-dir".into(),
        run.clone(),
    ]);
    runs.push(vec![
        "check".into(),
        "--expect-fingerprint".into(),
        "zz".into(),
        "--fingerprint-salt".into(),
        "x".into(),
    ]);
    for args in &runs {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_psk-guard"))
            .args(args)
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        if args[0] == "check" && args.iter().any(|a| a == "json") && args.len() > 6 {
            let text = String::from_utf8_lossy(&out.stdout);
            for code in [
                "psk-in-log-file",
                "ovsdb-network-remote",
                "cert-key-too-open",
                "ipsec-tunnel-unencrypted",
                "ipsec-tunnel-type-mismatch",
            ] {
                assert!(text.contains(code), "the sweep must see {code}: {text}");
            }
        }
        assert_no_key(&format!("stdout of {args:?}"), &out.stdout, &KEYS);
        assert_no_key(&format!("stderr of {args:?}"), &out.stderr, &KEYS);
    }
    // and last, the fix that changes things, then a check after it
    let out = psk_guard(&["fix", "--db", &db, "--run-dir", &run, "-o", "json"]);
    assert_no_key("fix", &out.stdout, &KEYS);
    assert_no_key("fix stderr", &out.stderr, &KEYS);
}

#[test]
fn docs_describe_every_finding_code_and_exit_code() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let findings = std::fs::read_to_string(root.join("docs/findings.md")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for c in psk_guard::report::Code::ALL {
        assert!(
            findings.contains(&format!("## {}\n", c.id())),
            "docs/findings.md lacks {}",
            c.id()
        );
        assert!(
            findings.contains(c.help()),
            "docs/findings.md text for {} differs from the catalog",
            c.id()
        );
    }
    for code in ["| 0 |", "| 1 |", "| 2 |"] {
        assert!(readme.contains(code), "README lacks exit code row {code}");
    }
    let first: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("scripts/"))
        .take(2)
        .collect();
    assert_eq!(first, vec!["scripts/demo", "scripts/test"]);
}

#[test]
fn committed_man_pages_and_completions_match_the_cli() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let subs = [
        "check", "scan-db", "fix", "rotate", "audit", "generate", "push-key", "help",
    ];
    let mut files: Vec<(Vec<&str>, String)> = vec![
        (vec!["man"], "docs/man/psk-guard.1".into()),
        (vec!["bash"], "docs/completions/psk-guard.bash".into()),
        (vec!["zsh"], "docs/completions/_psk-guard".into()),
        (vec!["fish"], "docs/completions/psk-guard.fish".into()),
        (vec!["json-schema"], "docs/report.schema.json".into()),
    ];
    for s in subs {
        files.push((vec!["man", s], format!("docs/man/psk-guard-{s}.1")));
    }
    for (what, file) in &files {
        let mut args = vec!["generate"];
        args.extend(what);
        let out = psk_guard(&args);
        assert_eq!(out.status.code(), Some(0), "generate {what:?}");
        let committed = std::fs::read(root.join(file)).unwrap();
        assert!(
            committed == out.stdout,
            "{file} is stale: run scripts/gen-docs"
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("rotate") || what.len() == 2,
            "{file} covers every subcommand"
        );
    }
    // Every page the man pages refer to exists, and no page is left over.
    let pages: Vec<String> = std::fs::read_dir(root.join("docs/man"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(pages.len(), subs.len() + 1, "{pages:?}");
    for p in &pages {
        let text = std::fs::read_to_string(root.join("docs/man").join(p)).unwrap();
        for (i, _) in text.match_indices("psk\\-guard\\-") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '\\' || *c == '-')
                .collect();
            let page = format!("{}.1", name.replace('\\', ""));
            if text[i + name.len()..].starts_with("(1)") {
                assert!(
                    pages.contains(&page),
                    "{p} refers to {page}, which does not exist"
                );
            }
        }
    }
    // Each subcommand page documents that subcommand's own flags.
    let check = std::fs::read_to_string(root.join("docs/man/psk-guard-check.1")).unwrap();
    for flag in [
        "no\\-history",
        "expect\\-fingerprint",
        "output\\-file",
        "fail\\-on",
        "timeout",
    ] {
        assert!(
            check.contains(flag),
            "psk-guard-check(1) documents --{flag}"
        );
    }
    let out = psk_guard(&["generate", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let out = psk_guard(&["generate", "man", "nope"]);
    assert_eq!(out.status.code(), Some(2));
}
