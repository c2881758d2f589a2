//! Colour on a real terminal: psk-guard runs with its stdout (and stderr) on a pseudo-terminal,
//! made by `script` from util-linux (Debian's bsdutils, an Essential package, so on every Debian
//! machine). What is asserted is what a user at a terminal gets: colour by default; none with a
//! non-empty `NO_COLOR`; colour kept with an empty `NO_COLOR=` (no-color.org: "when present and
//! not an empty string"); none with `--color never`; log lines on stderr coloured on a terminal
//! and plain when stderr is redirected to a file, even while stdout is a terminal.

use std::process::Command;

use crate::harness::Node;

const ESC: char = '\x1b';

fn node() -> Node {
    let node = Node::start();
    node.add_tunnel("n1-abc123", "node1", "10.0.0.2", "changeme");
    node
}

/// Runs `psk-guard check <node args> <extra>` on a pseudo-terminal, with `NO_COLOR` as given
/// (None: unset); `stderr_to`: a file stderr is redirected to inside the terminal. Returns what
/// the terminal showed.
fn on_tty(node: &Node, extra: &[&str], no_color: Option<&str>, stderr_to: Option<&str>) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut cmd = vec![quote(env!("CARGO_BIN_EXE_psk-guard")), "check".into()];
    cmd.extend(node.check_args().iter().map(|a| quote(a)));
    cmd.extend(extra.iter().map(|a| quote(a)));
    if let Some(f) = stderr_to {
        cmd.push(format!("2>{}", quote(f)));
    }
    let mut c = Command::new("script");
    // -q: no start/done lines; -e: the child's exit code; -c: the command; the typescript file
    // is not wanted (what the terminal showed is script's stdout).
    c.args(["-q", "-e", "-c", &cmd.join(" "), "/dev/null"])
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env_remove("PSK_GUARD_LOG")
        .env_remove("PSK_GUARD_FINGERPRINT_SALT")
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null());
    if let Some(v) = no_color {
        c.env("NO_COLOR", v);
    }
    let out = c.output().expect("run script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        matches!(out.status.code(), Some(0..=2)),
        "check on a terminal: {:?}\n{text}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("SEVERITY"), "the table was shown: {text}");
    text
}

#[test]
fn colour_on_a_terminal_follows_no_color_and_the_flag() {
    let node = node();
    let plain = on_tty(&node, &[], None, None);
    assert!(
        plain.contains(&format!("{ESC}[1;31mcritical")),
        "colour by default on a terminal: {plain:?}"
    );
    let off = on_tty(&node, &[], Some("1"), None);
    assert!(!off.contains(ESC), "NO_COLOR=1: no colour: {off:?}");
    let empty = on_tty(&node, &[], Some(""), None);
    assert!(
        empty.contains(&format!("{ESC}[1;31mcritical")),
        "an empty NO_COLOR= does not turn colour off (no-color.org): {empty:?}"
    );
    let never = on_tty(&node, &["--color", "never"], None, None);
    assert!(!never.contains(ESC), "--color never: {never:?}");
    let always = on_tty(&node, &["--color", "always"], Some("1"), None);
    assert!(
        always.contains(ESC),
        "--color always wins over NO_COLOR: {always:?}"
    );
}

#[test]
fn logs_are_coloured_on_a_terminal_and_plain_in_a_file() {
    // ovsdb-server stopped: check warns that the OVSDB query failed (and still reports what the
    // files show).
    let mut node = node();
    node.stop();
    let dir = tempfile::tempdir().unwrap();
    // stderr on the terminal too: the log lines are there, coloured.
    let both = on_tty(&node, &[], None, None);
    let log_line = both
        .lines()
        .find(|l| l.contains("OVSDB query failed"))
        .unwrap_or_else(|| panic!("the warning on the terminal: {both:?}"));
    assert!(
        log_line.contains(ESC),
        "log coloured on a terminal: {log_line:?}"
    );
    // stderr to a file while stdout stays on the terminal: the table keeps its colour, the log
    // file is plain.
    let file = dir.path().join("stderr.log");
    let shown = on_tty(&node, &[], None, Some(file.to_str().unwrap()));
    assert!(shown.contains(ESC), "stdout is still a terminal: {shown:?}");
    assert!(!shown.contains("OVSDB query failed"), "{shown:?}");
    let log = std::fs::read_to_string(&file).unwrap();
    assert!(
        log.contains("OVSDB query failed"),
        "the log went to the file: {log:?}"
    );
    assert!(!log.contains(ESC), "plain log in a file: {log:?}");
}
