//! Keys in log files: antrea-agent logs the PSK at verbosity >= 4 (klog.V(4)), and ovsdb-server
//! with `vlog/set jsonrpc:file:dbg` logs every request, keys included (JSON-escaped).
//!
//! The log directory (`/var/log/antrea`, `--log-dir`) is walked through [`crate::nodefs`]: the
//! directory is reached from `/` without following a link a non-root user controls (its chain is
//! reported when a non-root user controls it), each entry is opened `O_PATH|O_NOFOLLOW` relative
//! to its parent and looked at before anything is read, and only regular files are reopened for
//! reading (through the descriptor, `O_NONBLOCK`). A FIFO, socket or device planted there is
//! reported and never opened for reading, so it cannot block the scan; a symbolic link is never
//! followed (klog's links to a file of the same directory are skipped silently, since that file
//! is scanned itself; a link elsewhere is reported). Plain and gzip files (recognised by their
//! magic bytes) are read in chunks; each chunk is scanned together with the last bytes of the one
//! before, so a key across a chunk boundary is found. Everything is bounded: entries per
//! directory, files, depth, bytes scanned per file after decompression (a gzip bomb stops there
//! and is reported as partly scanned) and in total.
//!
//! Key material: the matcher holds no key bytes (see [`crate::keysearch`]). What is read from a
//! file may hold a key, so every buffer it passes through is ours and wiped: the read buffer, the
//! compressed input, and the inflater's 32 KiB window, which is our buffer too because the gzip
//! reader here drives miniz_oxide's core inflater directly (flate2's readers keep the window in
//! their own allocation, which cannot be wiped); the inflater's state is overwritten when done.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;
use serde_json::json;
use zeroize::Zeroizing;

use crate::keysearch::{Form, Matcher, Probe};
use crate::nodefs::{self, Accounts, Entry, FsError, Kind};
use crate::report::{Code, Finding, Report, Severity, Subject};
use crate::secret::{Fingerprint, FingerprintKey};

pub const DEFAULT_LOG_DIR: &str = "/var/log/antrea";
/// Default bound on the bytes scanned per file (after decompression).
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;
const WINDOW: usize = 32 * 1024;

/// What to scan and how far.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub dir: PathBuf,
    /// Bytes scanned per file, after decompression.
    pub max_bytes: u64,
    /// Bytes scanned in all files together.
    pub max_total: u64,
    pub max_files: usize,
    pub max_depth: usize,
}

impl LogConfig {
    pub fn new(dir: PathBuf, max_bytes: u64) -> Self {
        LogConfig {
            dir,
            max_bytes,
            max_total: max_bytes.saturating_mul(16),
            max_files: 10_000,
            max_depth: 4,
        }
    }
}

/// The keys to look for: probes, and which fingerprints are in use now.
#[derive(Default)]
pub struct Keys {
    pub probes: Vec<Probe>,
    pub current: BTreeSet<Fingerprint>,
}

impl Keys {
    pub fn add(&mut self, probes: impl IntoIterator<Item = Probe>, current: bool) {
        for p in probes {
            if current {
                self.current.insert(p.key);
            }
            if !self
                .probes
                .iter()
                .any(|q| q.key == p.key && q.form == p.form)
            {
                self.probes.push(p);
            }
        }
    }
}

/// Keys found in one file.
#[derive(Default)]
struct Hits(BTreeMap<Fingerprint, (u64, BTreeSet<Form>)>);

/// What scanning one file gave.
struct Scanned {
    hits: Hits,
    bytes: u64,
    gzip: bool,
    /// Why the scan stopped before the end, if it did.
    stopped: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// gzip, on our own buffers

#[derive(Clone, Copy, PartialEq, Eq)]
enum GzState {
    Header { first: bool },
    Body,
    Trailer,
    Done,
}

/// A gzip reader (RFC 1952, several members) whose every buffer is wiped.
struct Gz {
    file: File,
    input: Zeroizing<Vec<u8>>,
    start: usize,
    end: usize,
    eof: bool,
    dec: Box<DecompressorOxide>,
    window: Zeroizing<Vec<u8>>,
    window_pos: usize,
    pending: (usize, usize),
    state: GzState,
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

impl Gz {
    fn new(file: File) -> Gz {
        Gz {
            file,
            input: Zeroizing::new(vec![0u8; CHUNK]),
            start: 0,
            end: 0,
            eof: false,
            dec: Box::default(),
            window: Zeroizing::new(vec![0u8; WINDOW]),
            window_pos: 0,
            pending: (0, 0),
            state: GzState::Header { first: true },
        }
    }

    /// Makes input available; false at the end of the file.
    fn fill(&mut self) -> std::io::Result<bool> {
        if self.start < self.end {
            return Ok(true);
        }
        if self.eof {
            return Ok(false);
        }
        let n = self.file.read(&mut self.input[..])?;
        self.start = 0;
        self.end = n;
        self.eof = n == 0;
        Ok(n > 0)
    }

    fn byte(&mut self) -> std::io::Result<Option<u8>> {
        if !self.fill()? {
            return Ok(None);
        }
        self.start += 1;
        Ok(Some(self.input[self.start - 1]))
    }

    fn need(&mut self) -> std::io::Result<u8> {
        self.byte()?.ok_or_else(|| bad("truncated gzip header"))
    }

    fn header(&mut self, first: bool) -> std::io::Result<()> {
        match self.byte()? {
            None if !first => {
                self.state = GzState::Done;
                return Ok(());
            }
            Some(0x1f) => {}
            // Bytes after the last member that are not another member: ignored, as gzip does.
            _ if !first => {
                self.state = GzState::Done;
                return Ok(());
            }
            _ => return Err(bad("not gzip")),
        }
        if self.need()? != 0x8b || self.need()? != 8 {
            return Err(bad("not a gzip deflate member"));
        }
        let flags = self.need()?;
        for _ in 0..6 {
            self.need()?; // mtime, xfl, os
        }
        if flags & 4 != 0 {
            let n = self.need()? as usize | (self.need()? as usize) << 8;
            for _ in 0..n {
                self.need()?;
            }
        }
        for bit in [8u8, 16] {
            if flags & bit != 0 {
                while self.need()? != 0 {}
            }
        }
        if flags & 2 != 0 {
            self.need()?;
            self.need()?;
        }
        *self.dec = DecompressorOxide::default();
        self.state = GzState::Body;
        Ok(())
    }

    fn body(&mut self) -> std::io::Result<()> {
        let more = self.fill()?;
        let flags = if self.eof {
            0
        } else {
            inflate_flags::TINFL_FLAG_HAS_MORE_INPUT
        };
        let (status, used, made) = decompress(
            &mut self.dec,
            &self.input[self.start..self.end],
            &mut self.window[..],
            self.window_pos,
            flags,
        );
        crate::hardening::scrub_stack();
        self.start += used;
        self.pending = (self.window_pos, self.window_pos + made);
        self.window_pos = (self.window_pos + made) & (WINDOW - 1);
        match status {
            TINFLStatus::Done => self.state = GzState::Trailer,
            TINFLStatus::HasMoreOutput => {}
            TINFLStatus::NeedsMoreInput if more || self.start < self.end => {}
            TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => {
                return Err(bad("truncated gzip data"))
            }
            _ => return Err(bad("corrupt gzip data")),
        }
        Ok(())
    }
}

impl Read for Gz {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let (a, b) = self.pending;
            if a < b {
                let n = (b - a).min(out.len());
                out[..n].copy_from_slice(&self.window[a..a + n]);
                self.pending.0 += n;
                return Ok(n);
            }
            match self.state {
                GzState::Header { first } => self.header(first)?,
                GzState::Body => self.body()?,
                GzState::Trailer => {
                    for _ in 0..8 {
                        if self.byte()?.is_none() {
                            break;
                        }
                    }
                    self.state = GzState::Header { first: false };
                }
                GzState::Done => return Ok(0),
            }
        }
    }
}

impl Drop for Gz {
    fn drop(&mut self) {
        // The inflater's bit buffer may hold a few input bytes: overwrite its state in place.
        *self.dec = DecompressorOxide::default();
        crate::hardening::scrub_stack();
    }
}

// ---------------------------------------------------------------------------------------------
// scanning

/// Reads `src` to its end or `limit` bytes, scanning chunk by chunk with overlap.
fn scan_source(src: &mut dyn Read, m: &Matcher, limit: u64, out: &mut Scanned) {
    let keep = m.max_len().saturating_sub(1);
    let mut buf = Zeroizing::new(vec![0u8; keep + CHUNK]);
    let mut have = 0usize;
    loop {
        let room = (CHUNK as u64).min(limit - out.bytes) as usize;
        if room == 0 {
            let mut probe = Zeroizing::new([0u8; 1]);
            if matches!(src.read(&mut probe[..]), Ok(n) if n > 0) {
                out.stopped = Some(format!(
                    "only the first {limit} bytes were scanned (--log-max-bytes)"
                ));
            }
            break;
        }
        let mut n = 0;
        while n < room {
            match src.read(&mut buf[have + n..have + room]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    out.stopped = Some(format!(
                        "read stopped at byte {}: {e}",
                        out.bytes + n as u64
                    ));
                    break;
                }
            }
        }
        if n == 0 {
            break;
        }
        let end = have + n;
        m.scan(&buf[..end], have, |p| {
            let e = out.hits.0.entry(p.key).or_default();
            e.0 += 1;
            e.1.insert(p.form);
        });
        out.bytes += n as u64;
        if out.stopped.is_some() {
            break;
        }
        let t = keep.min(end);
        buf.copy_within(end - t..end, 0);
        have = t;
    }
}

/// One file found in the walk, open for reading.
struct Found {
    path: PathBuf,
    file: File,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Who besides root can read it (through every directory above it), described.
    exposed: Option<String>,
}

struct Walk<'a> {
    cfg: &'a LogConfig,
    accounts: &'a Accounts,
    files: Vec<Found>,
    skipped: Vec<String>,
}

/// A link text naming a place inside its own directory (klog's `antrea-agent.INFO` ->
/// `antrea-agent.<host>.<user>.log.INFO.<time>.<pid>`): what it names is scanned itself.
fn names_a_sibling(target: &Path) -> bool {
    target.is_relative()
        && target
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Entry, depth: usize) {
        let (mut names, more) = match dir.list_bounded(self.cfg.max_files) {
            Ok(l) => l,
            Err(e) => {
                self.skipped.push(format!("cannot list: {e}"));
                return;
            }
        };
        if more {
            self.skipped.push(format!(
                "more than {} entries in {}: the rest were not looked at",
                self.cfg.max_files,
                dir.path.display()
            ));
        }
        names.sort();
        for name in names {
            if self.files.len() >= self.cfg.max_files {
                self.skipped.push(format!(
                    "more than {} files under {}: the rest were not scanned",
                    self.cfg.max_files,
                    self.cfg.dir.display()
                ));
                return;
            }
            match dir.child(&name) {
                Ok(e) => self.entry(e, depth),
                // Removed since the listing (a rotation): nothing to scan.
                Err(FsError::Absent { .. }) => {}
                Err(e) => self.skipped.push(format!("cannot open: {e}")),
            }
        }
    }

    fn entry(&mut self, e: Entry, depth: usize) {
        match e.meta.kind {
            Kind::Directory if depth < self.cfg.max_depth => self.dir(&e, depth + 1),
            Kind::Directory => self.skipped.push(format!(
                "{} is deeper than {} levels",
                e.path.display(),
                self.cfg.max_depth
            )),
            Kind::Regular => match e.reopen_read() {
                Ok(file) => {
                    let who = e.reachers(0o4, self.accounts);
                    self.files.push(Found {
                        exposed: (!who.is_empty()).then(|| self.accounts.describe_all(&who)),
                        path: e.path,
                        mode: e.meta.mode,
                        uid: e.meta.uid,
                        gid: e.meta.gid,
                        file,
                    })
                }
                Err(err) => self.skipped.push(format!("cannot read: {err}")),
            },
            Kind::Symlink => match e.link_target() {
                Ok(t) if names_a_sibling(&t) => {}
                Ok(t) => self.skipped.push(format!(
                    "{} is a symbolic link to {}: not followed (psk-guard scans only the files in the log directory itself)",
                    e.path.display(),
                    t.display()
                )),
                Err(err) => self.skipped.push(err.to_string()),
            },
            kind => self.skipped.push(format!(
                "{} is {kind}, not a log file: not read",
                e.path.display()
            )),
        }
    }
}

fn scan_file(f: &mut Found, m: &Matcher, limit: u64) -> Scanned {
    let mut out = Scanned {
        hits: Hits::default(),
        bytes: 0,
        gzip: false,
        stopped: None,
    };
    use std::os::unix::fs::FileExt;
    let mut magic = [0u8; 2];
    let gzip = f.file.read_exact_at(&mut magic, 0).is_ok() && magic == [0x1f, 0x8b];
    out.gzip = gzip;
    match f.file.try_clone() {
        Ok(file) if gzip => scan_source(&mut Gz::new(file), m, limit, &mut out),
        _ => scan_source(&mut f.file, m, limit, &mut out),
    }
    out
}

fn describe_keys(hits: &Hits, keys: &Keys) -> Vec<serde_json::Value> {
    hits.0
        .iter()
        .map(|(fp, (n, forms))| {
            json!({
                "fingerprint": fp.to_string(),
                "current": keys.current.contains(fp),
                "occurrences": n,
                "forms": forms.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect()
}

fn finding(found: &Found, s: &Scanned, keys: &Keys) -> Finding {
    let exposed = found.exposed.clone();
    let current = s.hits.0.keys().filter(|k| keys.current.contains(k)).count();
    let fps: Vec<String> = s.hits.0.keys().map(|k| k.to_string()).collect();
    let mut f = Finding::new(
        Code::PskInLogFile,
        if exposed.is_some() { Severity::Critical } else { Severity::High },
        Subject::path(&found.path),
    )
    .observed(format!(
        "{} key(s) in the {}file ({} in use now): {}",
        fps.len(),
        if s.gzip { "compressed " } else { "" },
        current,
        fps.join(", ")
    ))
    .expected("no key in any log file")
    .remediation("delete the file (and its copies in any log collector); lower antrea-agent's verbosity below 4 and turn off ovsdb-server's jsonrpc debug logging (ovs-appctl vlog/set jsonrpc:file:info); rotate the key (psk-guard rotate) if the file was readable by others or shipped off the node")
    .detail("keys", json!(describe_keys(&s.hits, keys)))
    .detail("mode", format!("{:04o}", found.mode))
    .detail("uid", found.uid)
    .detail("gid", found.gid)
    .detail("gzip", s.gzip);
    if let Some(e) = exposed {
        f = f.detail("exposed_to", json!([e]));
    }
    f
}

/// Scans the log directory for `keys` and adds a finding per file holding one.
pub async fn check(cfg: &LogConfig, keys: Keys, fp_key: &FingerprintKey, report: &mut Report) {
    report
        .target
        .insert("log_dir".into(), cfg.dir.display().to_string());
    if keys.probes.is_empty() {
        return;
    }
    let (c, k) = (cfg.clone(), fp_key.clone());
    let task = tokio::task::spawn_blocking(move || scan_dir(&c, keys, &k)).await;
    let Ok(result) = task else {
        report.not_checked("keys in log files", "the scan task failed");
        return;
    };
    match result {
        Err(FsError::Absent { path }) => report.not_checked(
            "keys in log files",
            format!(
                "{} is absent (point --log-dir at antrea-agent's log directory, or --no-logs)",
                path.display()
            ),
        ),
        Err(e) => report.not_checked(
            "keys in log files",
            format!("cannot scan the log directory: {e} (run as root; links are not followed)"),
        ),
        Ok(scan) => {
            if let Some((dir, why)) = scan.untrusted {
                super::files::push_chain(report, &dir, why, std::slice::from_ref(&cfg.dir));
            }
            for (found, s) in &scan.results {
                if !s.hits.0.is_empty() {
                    report.push(finding(found, s, &scan.keys));
                }
                if let Some(why) = &s.stopped {
                    report.not_checked(
                        "keys in log files",
                        format!("{}: {why}", found.path.display()),
                    );
                }
            }
            for why in scan.skipped {
                report.not_checked("keys in log files", why);
            }
        }
    }
}

/// What the walk of the log directory gave.
struct DirScan {
    keys: Keys,
    results: Vec<(Found, Scanned)>,
    skipped: Vec<String>,
    /// The directory at or above the log directory that a non-root user controls, and how.
    untrusted: Option<(PathBuf, String)>,
}

fn scan_dir(cfg: &LogConfig, keys: Keys, fp_key: &FingerprintKey) -> Result<DirScan, FsError> {
    let accounts = Accounts::load();
    let root = nodefs::open(&cfg.dir, &accounts)?;
    root.expect(Kind::Directory)?;
    let mut walk = Walk {
        cfg,
        accounts: &accounts,
        files: vec![],
        skipped: vec![],
    };
    walk.dir(&root, 1);
    let matcher = Matcher::new(fp_key, keys.probes.clone());
    let mut total = 0u64;
    let mut results = vec![];
    for mut f in std::mem::take(&mut walk.files) {
        if total >= cfg.max_total {
            walk.skipped.push(format!(
                "{} and later files: the total scan budget ({} bytes) is spent",
                f.path.display(),
                cfg.max_total
            ));
            break;
        }
        let limit = cfg.max_bytes.min(cfg.max_total - total);
        let s = scan_file(&mut f, &matcher, limit);
        total += s.bytes;
        results.push((f, s));
    }
    Ok(DirScan {
        keys,
        results,
        skipped: walk.skipped,
        untrusted: root.untrusted(&accounts),
    })
}
