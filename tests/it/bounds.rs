//! Text from outside is bounded and escaped in every output format: interface names with
//! terminal control sequences set on a real ovsdb-server, a hostile server's database names and
//! error strings, and a crafted conf.db naming many long interfaces (bounded memory).

use std::io::{BufReader, Write};
use std::os::unix::net::UnixListener;

use crate::harness::{psk_guard, read_request, record, Node};

/// ESC-CSI "erase line", an OSC 8 hyperlink ended by BEL, the 8-bit CSI 0x9b and OSC 0x9d, and a
/// right-to-left override: each could rewrite or hide what a terminal shows.
const EVIL: &str = "t\x1b[2K\x1b]8;;http://e/\x07x\u{9b}1m\u{9d}0;t\u{202e}z";

/// The bytes no output may contain raw (our own colour is off: stdout is not a TTY).
fn assert_no_raw_controls(what: &str, out: &[u8]) {
    let s = String::from_utf8_lossy(out);
    for c in ['\x1b', '\x07', '\u{9b}', '\u{9d}', '\u{202e}'] {
        assert!(!s.contains(c), "{what}: raw {c:?} in output:\n{s}");
    }
}

fn check(args: &[String], fmt: &str) -> std::process::Output {
    let mut a: Vec<&str> = vec!["check", "--no-history", "-o", fmt];
    a.extend(args.iter().map(String::as_str));
    psk_guard(&a)
}

#[test]
fn interface_names_with_terminal_controls_are_escaped_in_every_format() {
    let node = Node::start();
    node.add_tunnel(EVIL, "node1", "10.0.0.2", "changeme");
    for fmt in ["text", "json", "sarif"] {
        let out = check(&node.check_args(), fmt);
        assert_no_raw_controls(fmt, &out.stdout);
        assert_no_raw_controls(fmt, &out.stderr);
        if fmt == "text" {
            continue; // the text table names keys by fingerprint, not by interface
        }
        // Visible escapes (JSON writes a backslash as two).
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(
            s.contains("\\\\x1b[2K\\\\x1b]8;;http://e/\\\\x07x\\\\u{9b}1m"),
            "{fmt}: the name is not shown escaped:\n{s}"
        );
        assert!(s.contains("\\\\u{202e}z"), "{fmt}: {s}");
    }
}

/// A server that answers `list_dbs` with `dbs` and the transact with `error`.
fn hostile_server(dbs: serde_json::Value, error: serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ovs = dir.path().join("run/openvswitch");
    std::fs::create_dir_all(&ovs).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("run"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    let listener = UnixListener::bind(ovs.join("db.sock")).unwrap();
    std::thread::spawn(move || {
        let Ok((s, _)) = listener.accept() else {
            return;
        };
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut replies = [
            serde_json::json!({"result": dbs, "error": null}),
            serde_json::json!({"result": null, "error": error}),
        ]
        .into_iter();
        while let Some(id) = read_request(&mut r) {
            let Some(mut reply) = replies.next() else {
                return;
            };
            reply["id"] = id;
            if w.write_all(reply.to_string().as_bytes()).is_err() {
                return;
            }
        }
    });
    dir
}

fn server_args(dir: &tempfile::TempDir) -> Vec<String> {
    let run = dir.path().join("run");
    vec![
        "--run-dir".into(),
        run.display().to_string(),
        "--db".into(),
        format!("unix:{}", run.join("openvswitch/db.sock").display()),
        "--timeout".into(),
        "20".into(),
    ]
}

/// Output limit for a report about one unreachable server: a few KiB of findings and text.
const SMALL: usize = 64 * 1024;

/// The bytes of `out` that depend on the input: SARIF's rule catalogue (every finding code with
/// its description, the same for every run and growing with each new code) is not counted.
fn variable_len(fmt: &str, out: &[u8]) -> usize {
    if fmt != "sarif" {
        return out.len();
    }
    let mut v: serde_json::Value = serde_json::from_slice(out).expect("SARIF is JSON");
    let rules = v["runs"][0]["tool"]["driver"]
        .as_object_mut()
        .and_then(|d| d.remove("rules"))
        .expect("SARIF lists its rules");
    assert!(rules.as_array().is_some_and(|r| !r.is_empty()));
    serde_json::to_vec(&v).unwrap().len()
}

#[test]
fn hostile_database_names_are_escaped_and_bounded() {
    // 40 names, the first an OSC title sequence followed by 8 MB.
    let mut dbs = vec![format!("\x1b]0;owned\x07{}", "D".repeat(8 << 20))];
    dbs.extend((0..39).map(|i| format!("db{i}\u{9b}2J")));
    for fmt in ["text", "json", "sarif"] {
        let dir = hostile_server(serde_json::json!(dbs), serde_json::Value::Null);
        let out = check(&server_args(&dir), fmt);
        assert_no_raw_controls(fmt, &out.stdout);
        assert_no_raw_controls(fmt, &out.stderr);
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(
            variable_len(fmt, &out.stdout) < SMALL,
            "{fmt}: {} bytes",
            variable_len(fmt, &out.stdout)
        );
        assert!(s.contains("]0;owned"), "{fmt}: the name is not shown: {s}");
        assert!(s.contains("bytes more"), "{fmt}: {s}");
        assert!(s.contains("and 32 more"), "{fmt}: {s}");
    }
}

#[test]
fn a_huge_server_error_string_gives_bounded_escaped_output() {
    let error = format!("\x1b[2J\x1b[H{}", "E".repeat(30 << 20));
    for fmt in ["text", "json", "sarif"] {
        let dir = hostile_server(
            serde_json::json!(["Open_vSwitch"]),
            serde_json::json!(error),
        );
        let out = check(&server_args(&dir), fmt);
        assert_no_raw_controls(fmt, &out.stdout);
        assert_no_raw_controls(fmt, &out.stderr);
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(
            variable_len(fmt, &out.stdout) < SMALL,
            "{fmt}: {} bytes",
            variable_len(fmt, &out.stdout)
        );
        assert!(s.contains("[2J"), "{fmt}: the error is not shown: {s}");
        assert!(s.contains("bytes more"), "{fmt}: {s}");
    }
}

fn peak_rss_kb(args: &[&str]) -> (std::process::Output, u64) {
    let rss = tempfile::NamedTempFile::new().unwrap();
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(rss.path())
        .arg(env!("CARGO_BIN_EXE_psk-guard"))
        .args(args)
        .output()
        .unwrap();
    let kb = std::fs::read_to_string(rss.path())
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (out, kb)
}

#[test]
fn scan_db_keeps_a_bounded_number_of_bounded_interface_names() {
    // 4000 interfaces with 32 KiB names (with control characters) all carry one key: 128 MiB.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conf.db");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    f.write_all(&record(
        br#"{"name":"Open_vSwitch","version":"8.3.0","tables":{}}"#,
    ))
    .unwrap();
    let long = format!("\x1b[2K{}", "n".repeat(32 << 10));
    for i in 0..4000 {
        let body = serde_json::json!({
            "_date": 1_700_000_000_000i64 + i,
            "Interface": {format!("{i:08x}-0000-4000-8000-000000000000"): {
                "name": format!("{i}{long}"),
                "options": ["map", [["psk", "Crafted-Key-0123456789"]]],
            }},
        });
        f.write_all(&record(body.to_string().as_bytes())).unwrap();
    }
    drop(f);
    let (out, kb) = peak_rss_kb(&["scan-db", path.to_str().unwrap(), "-o", "json"]);
    assert_no_raw_controls("scan-db", &out.stdout);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = &v["data"]["keys"][0];
    let names = key["interfaces"].as_array().unwrap();
    assert_eq!(names.len(), 100, "{key:#}");
    assert_eq!(key["interfaces_truncated"], true);
    assert!(names
        .iter()
        .all(|n| n.as_str().unwrap().chars().count() < 300));
    assert!(out.stdout.len() < 512 * 1024, "{} bytes", out.stdout.len());
    // Unbounded, the names alone would take 2 x 128 MiB.
    assert!(kb < 64 * 1024, "peak RSS {kb} KiB");
}

/// Every numeric flag is range-checked by its clap value parser: an absurd value is a usage
/// error (exit 2, the flag and the accepted range named, nothing on stdout), never a panic
/// (`--timeout 1e20` used to overflow `Duration::from_secs_f64`, exit 101) and never sent on.
#[test]
fn numeric_flags_out_of_range_are_usage_errors() {
    let timeouts = [
        "1e20", "0", "-1", "NaN", "inf", "-inf", "1e-9", "86401", "ten",
    ];
    let mut cases: Vec<Vec<&str>> = timeouts
        .iter()
        .flat_map(|t| {
            [
                vec!["check", "--timeout", t],
                vec!["--timeout", t, "push-key"],
            ]
        })
        .collect();
    for (sub, flag) in [
        ("rotate", "--lease-duration"),
        ("rotate", "--progress-deadline"),
        ("rotate", "--rollout-timeout"),
        ("rotate", "--job-timeout"),
        ("rotate", "--push-lead-ms"),
        ("audit", "--job-timeout"),
        ("audit", "--parallelism"),
        ("scan-db", "--max-record"),
    ] {
        for v in ["0", "-1", "1e20", "99999999999999999999999", "x"] {
            cases.push(vec![sub, flag, v]);
        }
    }
    cases.push(vec!["check", "--log-max-bytes", "0"]);
    cases.push(vec!["rotate", "--push-lead-ms", "600001"]);
    cases.push(vec!["audit", "--parallelism", "1001"]);
    for args in cases {
        let out = psk_guard(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        let flag = match *args.iter().find(|a| a.starts_with("--")).unwrap() {
            "--rollout-timeout" => "--progress-deadline", // clap names an alias's flag
            f => f,
        };
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("invalid value") && err.contains(flag),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // The ends of the ranges are accepted.
    for args in [
        ["--timeout", "0.001", "generate", "bash"],
        ["--timeout", "86400", "generate", "bash"],
    ] {
        let out = psk_guard(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
    }
}

/// The one error line psk-guard prints on failure carries outside text (here a path whose name
/// holds a terminal control sequence): it is escaped like the report's text.
#[test]
fn error_line_escapes_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let evil = dir.path().join("evil\u{1b}[2J\u{1b}]0;pwned\u{7}");
    std::fs::create_dir(&evil).unwrap();
    let p = evil.join("conf.db");
    let out = psk_guard(&["scan-db", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!out.stderr.contains(&0x1b), "{:?}", out.stderr);
    assert!(!out.stderr.contains(&0x07));
    assert!(String::from_utf8_lossy(&out.stderr).contains("evil\\x1b[2J"));
}
