//! The committed shell completions, loaded into the real shells, complete a subcommand's flag
//! (`psk-guard check --no-h` -> `--no-history`) and a subcommand's value (`--output j` -> `json`).
//! The shells come from Debian (scripts/lib/ensure.sh `ensure_shells`); a shell that is missing
//! fails the test rather than skipping it.

use std::process::Command;

fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shell(name: &str, script: &str) -> String {
    let out = Command::new(name)
        .args(["-c", script])
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!("{name} is not installed ({e}): run scripts/test (ensure_shells)")
        });
    assert!(
        out.status.success(),
        "{name}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Completes `words` (the last one being completed) with the committed bash script, calling the
/// function `complete -p psk-guard` names, as bash-completion would.
fn bash_complete(words: &[&str]) -> Vec<String> {
    let script = format!(
        r#"source docs/completions/psk-guard.bash
fn=$(complete -p psk-guard | sed -n 's/.*-F \([^ ]*\) .*/\1/p')
COMP_WORDS=({words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="{line}"
COMP_POINT=${{#COMP_LINE}}
"$fn" psk-guard "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        words = words.join(" "),
        line = words.join(" "),
    );
    shell("bash", &script).lines().map(str::to_owned).collect()
}

#[test]
fn bash_completes_subcommand_flags_and_values() {
    assert!(bash_complete(&["psk-guard", "ch"]).contains(&"check".to_owned()));
    let got = bash_complete(&["psk-guard", "check", "--no-h"]);
    assert_eq!(
        got,
        vec!["--no-history"],
        "a flag of check after the subcommand"
    );
    let got = bash_complete(&["psk-guard", "scan-db", "--max-r"]);
    assert_eq!(
        got,
        vec!["--max-record"],
        "a flag of a hyphenated subcommand"
    );
    let got = bash_complete(&["psk-guard", "check", "-o", "j"]);
    assert_eq!(got, vec!["json", "junit"]);
    let got = bash_complete(&["psk-guard", "generate", "-"]);
    assert!(
        !got.contains(&"--output".to_owned()),
        "-o means nothing to generate: {got:?}"
    );
}

#[test]
fn fish_completes_subcommand_flags() {
    let out = shell(
        "fish",
        "source docs/completions/psk-guard.fish; complete -C 'psk-guard check --no-h'; complete -C 'psk-guard scan-db --max-r'",
    );
    let words: Vec<&str> = out.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(words, vec!["--no-history", "--max-record"], "{out}");
}

#[test]
fn zsh_completes_subcommand_flags() {
    // zsh completes only in its line editor: drive an interactive zsh in a pseudo-terminal
    // (zsh/zpty), load the committed script through compinit, type `psk-guard check --no-h` and a
    // TAB, and read until the line shows the completed flag (`timeout` ends a broken run).
    let script = r#"
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "fpath=($PWD/docs/completions \$fpath); autoload -Uz compinit; compinit -u -D; PROMPT='>'; psk-guard() {}; print RE''ADY"
zpty -r z out '*READY*'
zpty -w z $'psk-guard check --no-h\t'
zpty -r z out '*--no-history*'
print -r -- "$out"
zpty -d z
"#;
    let out = Command::new("timeout")
        .args(["60", "zsh", "-c", script])
        .current_dir(root())
        .output()
        .expect("zsh is not installed: run scripts/test (ensure_shells)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("--no-history"),
        "zsh did not complete --no-history: {:?}\n{text}",
        out.status
    );
}
