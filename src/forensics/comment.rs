//! Keys named in an `ovs-vsctl` transaction comment (`_comment` in conf.db).
//!
//! ovs-vsctl records its own command line in every transaction it commits:
//! `ovs-vsctl: ARGS` (older) or `ovs-vsctl (invoked by PARENT): ARGS`, where ARGS is argv joined
//! by `process_escape_args` (OVS lib/process.c): arguments separated by one space, an argument
//! holding a space, tab, CR, LF, VT, backslash, `'` or `"` written in double quotes with `\` and
//! `"` backslash-escaped. Each argument is then read as ovs-vsctl reads it (OVS lib/db-ctl-base.c
//! `parse_column_key_value`, lib/ovsdb-data.c `ovsdb_token_parse`, `ovsdb_atom_from_string`):
//! `COLUMN[:KEY]=VALUE`, tokens delimited by `:=, []{}!<>` unless quoted, a value in double quotes
//! being a JSON string. Checked against ovs-vsctl 3.x on real conf.db files (tests/it/forensics.rs).
//!
//! Only unambiguous syntax names a key: `set`/`add`/`create` on the Interface table (or a unique
//! abbreviation of it, as ovs-vsctl accepts), column `options`, key `psk`. The interface is the
//! RECORD argument of `set`/`add` or the `name=` of `create`; nothing else in the comment is ever
//! taken as a name. A comment that does not decode exactly as ovs-vsctl writes it yields nothing.
//!
//! Every intermediate string holds comment text and so possibly a key: each is a
//! [`Zeroizing`] buffer allocated once at its final size (never grown), so no unwiped copy exists.

use zeroize::Zeroizing;

/// One key found in a comment, with the interface its command names.
pub struct CommentKey {
    pub value: Zeroizing<String>,
    pub interface: Option<String>,
}

type Text = Zeroizing<String>;

fn text(cap: usize) -> Text {
    Zeroizing::new(String::with_capacity(cap))
}

/// The keys (`options:psk`) set by the ovs-vsctl command line recorded in `comment`.
pub fn comment_keys(comment: &str) -> Vec<CommentKey> {
    let Some(args) = command_line(comment) else {
        return vec![];
    };
    let Some(argv) = split_args(args) else {
        return vec![];
    };
    let mut out = vec![];
    // argv[0] is the program; commands are separated by "--" arguments.
    for cmd in argv[1..].split(|a| a.as_str() == "--") {
        command_keys(cmd, &mut out);
    }
    out
}

/// ARGS after ovs-vsctl's prefix, or None for a comment ovs-vsctl did not write.
fn command_line(comment: &str) -> Option<&str> {
    if let Some(rest) = comment.strip_prefix("ovs-vsctl: ") {
        return Some(rest);
    }
    let rest = comment.strip_prefix("ovs-vsctl (invoked by ")?;
    // The parent's name is free text; ARGS starts with argv[0], the ovs-vsctl program.
    rest.match_indices("): ")
        .map(|(i, _)| &rest[i + 3..])
        .find(|args| {
            let first = args.split(' ').next().unwrap_or("");
            first == "ovs-vsctl" || first.ends_with("/ovs-vsctl")
        })
}

/// Inverse of `process_escape_args`; None if `s` is not exactly what it writes.
fn split_args(s: &str) -> Option<Vec<Text>> {
    let b = s.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    loop {
        // Sized once for this argument only (its raw length bounds its decoded length).
        let mut arg = text(arg_len(b, i));
        if b.get(i) == Some(&b'"') {
            i += 1;
            let mut must_quote = false;
            loop {
                match *b.get(i)? {
                    b'"' => break,
                    b'\\' => {
                        let c = *b.get(i + 1)?;
                        if c != b'\\' && c != b'"' {
                            return None;
                        }
                        arg.push(c as char);
                        must_quote = true;
                        i += 2;
                    }
                    _ => {
                        let c = s[i..].chars().next()?;
                        must_quote |= matches!(c, ' ' | '\t' | '\r' | '\n' | '\x0b' | '\'');
                        arg.push(c);
                        i += c.len_utf8();
                    }
                }
            }
            // Quotes are written only around an argument that needs them.
            if !must_quote {
                return None;
            }
            i += 1;
        } else {
            let end = s[i..].find(' ').map_or(s.len(), |e| i + e);
            let bare = &s[i..end];
            if bare.contains(['\t', '\r', '\n', '\x0b', '\\', '\'', '"']) {
                return None;
            }
            arg.push_str(bare);
            i = end;
        }
        out.push(arg);
        match b.get(i) {
            None => return Some(out),
            Some(b' ') => i += 1,
            Some(_) => return None,
        }
    }
}

/// The raw length of the argument starting at `i`: up to the next space, or for a quoted one
/// up to its closing quote (the rest of the line if it has none).
fn arg_len(b: &[u8], i: usize) -> usize {
    if b.get(i) != Some(&b'"') {
        return memchr::memchr(b' ', &b[i..]).unwrap_or(b.len() - i);
    }
    let mut j = i + 1;
    while let Some(&c) = b.get(j) {
        match c {
            b'"' => return j - i,
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
    b.len().saturating_sub(i)
}

/// Options that take their value as the next argument (`--db unix:...`); ovs-vsctl stops
/// reading options at the first non-option, as getopt does with a leading `+`.
const OPTIONS_WITH_ARGUMENT: &[&str] = &[
    "--db",
    "-t",
    "--timeout",
    "-p",
    "--private-key",
    "-c",
    "--certificate",
    "-C",
    "--ca-cert",
    "--bootstrap-ca-cert",
    "--peer-ca-cert",
    "--ssl-protocols",
    "--ssl-ciphers",
    "--unixctl",
];

fn command_keys(cmd: &[Text], out: &mut Vec<CommentKey>) {
    let mut i = 0;
    while let Some(a) = cmd.get(i) {
        if !a.starts_with('-') {
            break;
        }
        i += if OPTIONS_WITH_ARGUMENT.contains(&a.as_str()) {
            2
        } else {
            1
        };
    }
    let Some(verb) = cmd.get(i) else { return };
    let args = &cmd[i + 1..];
    match verb.as_str() {
        "set" if args.len() >= 3 && is_interface_table(&args[0]) => {
            let iface = record_name(&args[1]);
            for a in &args[2..] {
                column_key_value(a, iface.as_deref(), out);
            }
        }
        "add" if args.len() >= 4 && is_interface_table(&args[0]) && is_options(&args[2]) => {
            let iface = record_name(&args[1]);
            for a in &args[3..] {
                map_datum(a, iface.as_deref(), out);
            }
        }
        "create" if args.len() >= 2 && is_interface_table(&args[0]) => {
            let name = args[1..].iter().find_map(|a| {
                let v = a.strip_prefix("name=")?;
                atom(v).map(|n| n.as_str().to_owned())
            });
            for a in &args[1..] {
                column_key_value(a, name.as_deref(), out);
            }
        }
        _ => {}
    }
}

/// `Interface` or an abbreviation that only it matches (ovs-vsctl's partial matching).
fn is_interface_table(t: &str) -> bool {
    t.len() >= 2 && "interface".starts_with(&t.to_ascii_lowercase())
}

/// `options` or an abbreviation no other Interface column shares (`op`...).
fn is_options(c: &str) -> bool {
    c.len() >= 2 && "options".starts_with(&c.to_ascii_lowercase())
}

/// The record argument as an interface name; `@id` references and UUIDs name no interface.
fn record_name(r: &str) -> Option<String> {
    let uuid_like = r.len() == 36 && r.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    (!r.starts_with('@') && !uuid_like && !r.is_empty()).then(|| r.to_owned())
}

/// `COLUMN[:KEY]=VALUE`.
fn column_key_value(arg: &str, iface: Option<&str>, out: &mut Vec<CommentKey>) {
    let Some((column, rest)) = token(arg) else {
        return;
    };
    if !is_options(&column) {
        return;
    }
    if let Some(rest) = rest.strip_prefix(':') {
        let Some((key, rest)) = token(rest) else {
            return;
        };
        let (Some(key), Some(value)) = (atom(&key), rest.strip_prefix('=')) else {
            return;
        };
        if key.as_str() == "psk" {
            if let Some(v) = atom(value) {
                out.push(CommentKey {
                    value: v,
                    interface: iface.map(str::to_owned),
                });
            }
        }
    } else if let Some(value) = rest.strip_prefix('=') {
        map_datum(value, iface, out);
    }
}

/// A map datum `{k=v, ...}` (braces optional), as `ovsdb_datum_from_string` reads it.
fn map_datum(s: &str, iface: Option<&str>, out: &mut Vec<CommentKey>) {
    let s = s.trim_start();
    let (mut rest, braced) = match s.strip_prefix('{') {
        Some(r) => (r, true),
        None => (s, false),
    };
    let mut found = vec![];
    loop {
        rest = rest.trim_start();
        if rest.is_empty() || rest.starts_with('}') {
            break;
        }
        let Some((k, r)) = token(rest) else { return };
        let Some(r) = r.trim_start().strip_prefix('=') else {
            return;
        };
        let Some((v, r)) = token(r.trim_start()) else {
            return;
        };
        let (Some(k), Some(v)) = (atom(&k), atom(&v)) else {
            return;
        };
        if k.as_str() == "psk" {
            found.push(v);
        }
        rest = r.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    let closed = match rest.strip_prefix('}') {
        Some(after) => braced && after.trim().is_empty(),
        None => !braced,
    };
    if closed {
        out.extend(found.into_iter().map(|value| CommentKey {
            value,
            interface: iface.map(str::to_owned),
        }));
    }
}

fn is_delim(c: char) -> bool {
    ":=, []{}!<>".contains(c)
}

/// `ovsdb_token_parse`: a token up to an unquoted delimiter, quotes kept (so that [`atom`] can
/// read a quoted string), a backslash outside quotes escaping the next character.
fn token(s: &str) -> Option<(Text, &str)> {
    let mut out = text(s.len());
    let mut in_quotes = false;
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            if in_quotes {
                out.push('\\');
            }
            out.push(chars.next()?.1);
        } else if !in_quotes && is_delim(c) {
            return Some((out, &s[i..]));
        } else {
            out.push(c);
            if c == '"' {
                in_quotes = !in_quotes;
            }
        }
    }
    (!in_quotes).then_some((out, ""))
}

/// `ovsdb_atom_from_string` for a string: a JSON string literal if quoted, else verbatim.
fn atom(s: &str) -> Option<Text> {
    if s.starts_with('"') {
        return crate::secret::json_string_literal(s.as_bytes()).ok();
    }
    if s.is_empty() {
        return None;
    }
    let mut t = text(s.len());
    t.push_str(s);
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(c: &str) -> Vec<(String, Option<String>)> {
        comment_keys(c)
            .into_iter()
            .map(|k| (k.value.as_str().to_owned(), k.interface))
            .collect()
    }

    fn one(v: &str, i: Option<&str>) -> Vec<(String, Option<String>)> {
        vec![(v.to_owned(), i.map(str::to_owned))]
    }

    #[test]
    fn reads_what_ovs_vsctl_writes() {
        // Comments as ovs-vsctl 3.x wrote them on this project's test nodes.
        let p = "ovs-vsctl (invoked by bash): ovs-vsctl --db=unix:/tmp/x/db.sock --no-wait ";
        assert_eq!(
            keys(&format!("{p}set Interface x options:psk=k1")),
            one("k1", Some("x"))
        );
        assert_eq!(
            keys(&format!(
                r#"{p}add-port br0 x -- set Interface x type=geneve "options:psk=\"k\\\"ey with space\"""#
            )),
            one("k\"ey with space", Some("x"))
        );
        assert_eq!(
            keys(&format!(
                r#"{p}set Interface x "options:psk=\"n\\\\ew\\u00e9 ✓\"""#
            )),
            one("n\\ew\u{e9} ✓", Some("x"))
        );
        assert_eq!(
            keys(&format!(
                r#"{p}set interface x "options={{psk=\"a,b}}c\", remote_ip=\"1.2.3.4\"}}""#
            )),
            one("a,b}c", Some("x"))
        );
        assert_eq!(
            keys("ovs-vsctl: ovs-vsctl --db unix:/s set Interface \"my port\" options:psk=k2"),
            one("k2", Some("my port"))
        );
        assert_eq!(
            keys("ovs-vsctl: ovs-vsctl add Interface t0 options psk=k3 remote_ip=1.1.1.1"),
            one("k3", Some("t0"))
        );
        assert_eq!(
            keys("ovs-vsctl: ovs-vsctl -- --id=@i create Interface name=t1 options:psk=k4"),
            one("k4", Some("t1"))
        );
        assert_eq!(
            keys("ovs-vsctl: ovs-vsctl set Int t2 options:psk=unquoted,with,commas"),
            one("unquoted,with,commas", Some("t2"))
        );
    }

    #[test]
    fn names_nothing_from_ambiguous_text() {
        for c in [
            // Not written by ovs-vsctl.
            "set Interface x options:psk=k1",
            "ovn-nbctl: ovn-nbctl set Interface x options:psk=k1",
            // The interface name would come from prose, not a RECORD argument.
            "ovs-vsctl: ovs-vsctl set Bridge br0 other_config:note=\"Interface evil psk=phantom\"",
            "ovs-vsctl: ovs-vsctl set Port p external_ids:x=psk=phantom",
            // psk= inside another key's value or another column.
            "ovs-vsctl: ovs-vsctl set Interface x options:remote_ip=psk=phantom",
            "ovs-vsctl: ovs-vsctl set Interface x external_ids:psk=phantom",
            "ovs-vsctl: ovs-vsctl set Interface x options:xpsk=phantom",
            // Malformed quoting: ovs-vsctl never writes these.
            "ovs-vsctl: ovs-vsctl set Interface x \"options:psk=unterminated",
            "ovs-vsctl: ovs-vsctl set Interface x \"options:psk=needless-quotes\"",
            "ovs-vsctl: ovs-vsctl set Interface x \"a\\qb\" options:psk=k",
            "ovs-vsctl: ovs-vsctl set Interface x options:psk=k\"quote",
            // Other commands, and a bare "I" that ovs-vsctl finds ambiguous (IPFIX).
            "ovs-vsctl: ovs-vsctl remove Interface x options psk=k",
            "ovs-vsctl: ovs-vsctl set I x options:psk=k",
            "ovs-vsctl: ovs-vsctl set Interface x options:psk=",
            "ovs-vsctl: ovs-vsctl set Interface x options={psk=k",
        ] {
            assert!(keys(c).is_empty(), "{c}");
        }
        // A record given by @reference or UUID has no name to report.
        assert_eq!(
            keys("ovs-vsctl: ovs-vsctl set Interface @i options:psk=k5"),
            one("k5", None)
        );
        assert_eq!(
            keys("ovs-vsctl: ovs-vsctl set Interface 65305c58-a6b0-4b28-b031-75ba40a2fe1c options:psk=k6"),
            one("k6", None)
        );
        // The parent's name cannot inject a command: ARGS begins at argv[0].
        assert_eq!(
            keys("ovs-vsctl (invoked by x): set Interface fake options:psk=p): ovs-vsctl set Interface real options:psk=k7"),
            one("k7", Some("real"))
        );
    }
}
