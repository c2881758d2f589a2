//! The command line: raw flags (clap) turned into validated configurations in one place, the
//! runtime built, the command run, the report printed once, and the exit code returned, never
//! `process::exit`, so every wiping `Drop` runs.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::checks::{self, files::Paths, CheckConfig};
use crate::ovsdb::parse_db_target;
use crate::report::{self, FailOn, Format, Report, EXIT_ERROR};
use crate::secret::{Fingerprint, FingerprintKey};
use crate::{fix, forensics};

pub const DEFAULT_DB: &str = "unix:/var/run/antrea/openvswitch/db.sock";
pub const DEFAULT_RUN_DIR: &str = "/var/run/antrea";
pub const DEFAULT_CONF_DB: &str = "/var/run/antrea/openvswitch/conf.db";

const EXIT_HELP: &str = "\
Exit codes (check, scan-db, fix, audit):
  0  nothing at or above --fail-on was found, and everything could be checked
  1  findings at or above --fail-on (default: high); for fix: something it set out to fix remains
  2  could not run, or a part could not be checked and nothing at or above --fail-on was found
     (a check that did not run is never reported as a pass)
Exit codes (rotate):
  0  the rotation is done and verified on every node
  1  some node did not converge or was not compacted (rerun to resume)
  2  could not run: preflight, permissions, Lease held, key edited meanwhile, rollout timeout;
     push: a node's push pod never became ready (the push is called off before any node
     writes; every node keeps the old key; rerun to resume)
Exit codes (push-key):
  0  the key was written to every IPsec tunnel of this node, in one transaction
  2  nothing was written: no key or one rotate --psk-file would refuse, --at-unix-ms more than
     5 s past or 10 min ahead; with --barrier, the instant reached more than 3 s late, the push
     called off, or no instant announced in time; the tunnels changed between the read and the
     write (another key on a tunnel read, a tunnel removed, or a new one with the old key); or
     db.sock is not verifiably root's ovsdb-server (a root-owned socket under root-controlled
     directories, a listener running as root)

Keys are never printed: they are named by a fingerprint, HMAC-SHA256 truncated to 64 bits, keyed
by a salt that is random per run unless --fingerprint-salt (or PSK_GUARD_FINGERPRINT_SALT) is given.";

#[derive(Parser, Debug)]
#[command(name = "psk-guard", version, about = "Find and fix exposed, weak and stale IPsec pre-shared keys on Antrea nodes", after_help = EXIT_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: Global,
}

#[derive(Args, Debug)]
pub struct Global {
    /// Salt for key fingerprints, so that runs sharing it can be compared (default: random per run).
    #[arg(
        long,
        global = true,
        env = "PSK_GUARD_FINGERPRINT_SALT",
        hide_env_values = true
    )]
    pub fingerprint_salt: Option<String>,
    /// Seconds to wait for a connection or a reply (more than 0, at most 86400).
    #[arg(long, global = true, default_value_t = 10.0, value_parser = parse_timeout,
          allow_hyphen_values = true)]
    pub timeout: f64,
    /// Colour in text output and in logs on a terminal (auto: only on a terminal, and not when
    /// NO_COLOR is set to a non-empty value).
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
    /// Log filter for stderr (e.g. info, debug, psk_guard=trace) [default: warn]. Wins over
    /// RUST_LOG, which applies only when neither --log nor PSK_GUARD_LOG is given.
    #[arg(long, global = true, env = "PSK_GUARD_LOG")]
    pub log: Option<String>,
    /// Print nothing on stderr but errors: no progress, no warnings.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

/// How a reporting command writes its report. stdout carries the report and nothing else.
#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Write the report to this file instead of stdout (atomically: a temporary file in the same
    /// directory, mode 0600, renamed into place).
    #[arg(long, value_name = "PATH")]
    pub output_file: Option<PathBuf>,
    /// Exit 1 when a finding is at least this severe.
    #[arg(long, value_enum, default_value_t = FailOn::High)]
    pub fail_on: FailOn,
    /// Accept every finding with this code (repeatable): listed as suppressed, not counted.
    #[arg(long, value_name = "CODE")]
    pub skip: Vec<String>,
    /// Accept the findings listed in this YAML file (code, subject pattern, reason, expiry; see
    /// docs/ignore-file.md): listed as suppressed with their reason, not counted.
    #[arg(long, value_name = "FILE")]
    pub ignore: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check this node: plaintext, weak, mixed and old keys in OVSDB and conf.db, and the modes
    /// and owners of /var/run/antrea, conf.db and the sockets. Changes nothing.
    Check(CheckArgs),
    /// Read conf.db's log (a live file or a copy) and list every key it still holds, by
    /// fingerprint, with the interfaces, times and whether it is current. Changes nothing.
    ScanDb(ScanArgs),
    /// Fix this node: compact conf.db so old keys leave the disk, and tighten modes (never
    /// loosen). Prints the plan first; --dry-run stops there.
    Fix(FixArgs),
    /// Rotate the IPsec PSK: new random key in the antrea-ipsec Secret, rolled out to every node,
    /// verified, old keys purged from disk. Exclusive (Lease), crash-safe and resumable.
    Rotate(RotateArgs),
    /// Audit the cluster against Antrea's security guide (Gatekeeper policy and webhook, agent
    /// RBAC, controller placement, hostPath exposure, auth mode, Secret strength and readers);
    /// with --nodes also run `check` on every node through pinned Jobs and merge the results.
    Audit(AuditArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) or the man page (roff).
    Generate(GenerateArgs),
    /// Node half of `rotate --strategy push` (run by its Jobs): write the key from an environment
    /// variable into every IPsec tunnel of this node in one transaction, at a shared instant.
    PushKey(PushKeyArgs),
}

#[derive(Args, Debug)]
pub struct RotateArgs {
    #[command(flatten)]
    pub report: ReportArgs,
    /// Namespace of Antrea's Secret, DaemonSet and ConfigMap.
    #[arg(long, default_value = "kube-system")]
    pub namespace: String,
    #[arg(long, default_value = "antrea-ipsec")]
    pub secret: String,
    /// Key of the PSK in the Secret.
    #[arg(long, default_value = "psk")]
    pub key: String,
    #[arg(long, default_value = "antrea-agent")]
    pub daemonset: String,
    /// Antrea's agent ConfigMap (to refuse certificate mode).
    #[arg(long, default_value = "antrea-config")]
    pub config_map: String,
    #[arg(long, value_enum, default_value_t = crate::rotation::Strategy::Restart)]
    pub strategy: crate::rotation::Strategy,
    /// Use this key (a file holding it) instead of a generated one; it is checked for strength.
    #[arg(long)]
    pub psk_file: Option<PathBuf>,
    /// Only read and print the rotation record on the Secret.
    #[arg(long)]
    pub status: bool,
    /// Image of the per-node Jobs.
    #[arg(long, default_value = concat!("ghcr.io/psk-guard/psk-guard:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// Service account of the per-node Jobs.
    #[arg(long, default_value = "psk-guard-node")]
    pub service_account: String,
    #[arg(long, default_value = "psk-guard-rotation")]
    pub lease: String,
    /// Seconds without renewal after which a dead run's Lease may be taken over.
    #[arg(long, default_value_t = 60, value_parser = parse_seconds, allow_negative_numbers = true)]
    pub lease_duration: u64,
    /// Seconds the DaemonSet rollout may go without any node advancing before it counts as
    /// stuck (like a Deployment's progressDeadlineSeconds; the whole rollout may take longer).
    #[arg(long, visible_alias = "rollout-timeout", default_value_t = 600,
          value_parser = parse_seconds, allow_negative_numbers = true)]
    pub progress_deadline: u64,
    /// Seconds to wait for each per-node Job.
    #[arg(long, default_value_t = 300, value_parser = parse_seconds, allow_negative_numbers = true)]
    pub job_timeout: u64,
    /// For push: milliseconds from the moment every node's push pod is ready (prepared and
    /// waiting) to the shared write instant announced to them. Must fit in --job-timeout: the
    /// pods get half of it to become ready, so the lead may be at most half of --job-timeout
    /// less 3 s (the lateness a node is allowed); a longer lead is refused, nothing written.
    #[arg(long, default_value_t = 2000, value_parser = parse_push_lead_ms, allow_negative_numbers = true)]
    pub push_lead_ms: u64,
    /// Skip purging old keys from conf.db after the rotation.
    #[arg(long)]
    pub no_compact: bool,
    /// Leave this node out (repeatable): it need not be healthy, gets no Job, and keeps the old
    /// key until the next rotation.
    #[arg(long = "exclude-node", value_name = "NAME")]
    pub exclude_nodes: Vec<String>,
    /// Run the whole preflight and print the plan; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Which cluster to talk to.
#[derive(Args, Debug)]
pub struct KubeArgs {
    /// The kubeconfig file (default: KUBECONFIG, ~/.kube/config, or the in-cluster service
    /// account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current-context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

impl KubeArgs {
    fn apply(&self) {
        crate::cluster::set_kube_opts(crate::cluster::KubeOpts {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        });
    }
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub report: ReportArgs,
    /// Antrea's namespace.
    #[arg(long, default_value = "kube-system")]
    pub namespace: String,
    #[arg(long, default_value = "antrea-ipsec")]
    pub secret: String,
    #[arg(long, default_value = "psk")]
    pub key: String,
    #[arg(long, default_value = "antrea-config")]
    pub config_map: String,
    #[arg(long, default_value = "antrea-agent")]
    pub agent_cluster_role: String,
    /// Label (k=v) of antrea-controller's pods.
    #[arg(long, default_value = "component=antrea-controller")]
    pub controller_label: String,
    /// A node to treat as secure for antrea-controller besides control-plane nodes (repeatable).
    #[arg(long = "secure-node")]
    pub secure_nodes: Vec<String>,
    /// Also run `psk-guard check` on every node (one pinned Job per node) and merge the results.
    #[arg(long)]
    pub nodes: bool,
    /// With --nodes: leave the nodes' logs out (the Jobs do not mount /var/log/antrea, which a node
    /// without antrea-agent's logs does not have; the search of the logs is reported as not done).
    #[arg(long, requires = "nodes")]
    pub no_logs: bool,
    #[arg(long, default_value = concat!("ghcr.io/psk-guard/psk-guard:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    #[arg(long, default_value = "psk-guard-node")]
    pub service_account: String,
    /// Namespace of the per-node Jobs (needs the privileged Pod Security level for hostPath).
    #[arg(long, default_value = "kube-system")]
    pub job_namespace: String,
    #[arg(long, default_value_t = 120, value_parser = parse_seconds, allow_negative_numbers = true)]
    pub job_timeout: u64,
    /// Per-node Jobs running at once (1 to 1000).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000), allow_negative_numbers = true)]
    pub parallelism: u32,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// `man` (the page of psk-guard, or with SUBCOMMAND of psk-guard-SUBCOMMAND), `json-schema`
    /// (the JSON Schema of the -o json report), or a shell: bash, zsh, fish, elvish, powershell.
    pub what: String,
    /// With `man`: the subcommand whose page to print (check, scan-db, fix, rotate, audit,
    /// generate, push-key).
    pub subcommand: Option<String>,
}

/// Flags that count seconds: at least 1, at most a day (a longer wait is a mistake, and every
/// duration must fit the clocks and APIs it is handed to).
const SECONDS: std::ops::RangeInclusive<u64> = 1..=86_400;
/// `rotate --push-lead-ms`: at least 100 ms, and at most what `push-key` accepts as ahead of now
/// ([`crate::rotation::node::MAX_AHEAD_MS`]).
const PUSH_LEAD_MS: std::ops::RangeInclusive<u64> =
    100..=crate::rotation::node::MAX_AHEAD_MS as u64;

/// `--timeout`: seconds, more than 0 and at most a day; not NaN or infinite (a clap value parser,
/// so a bad value is a usage error, exit 2, naming the flag).
fn parse_timeout(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| "not a number of seconds (e.g. 10 or 2.5)".to_string())?;
    if !v.is_finite() || v <= 0.0 || v > *SECONDS.end() as f64 {
        return Err(format!(
            "must be a number of seconds greater than 0 and at most {}",
            SECONDS.end()
        ));
    }
    // Below a millisecond nothing can answer; a zero Duration would time out every wait at once.
    if v < 0.001 {
        return Err("must be at least 0.001 seconds".into());
    }
    Ok(v)
}

/// A whole number within `range`, or a message saying which range and in what `unit`.
fn whole(s: &str, range: std::ops::RangeInclusive<u64>, unit: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "must be a whole number of {unit} from {} to {}",
            range.start(),
            range.end()
        )
    };
    let v: u64 = s.trim().parse().map_err(|_| bad())?;
    range.contains(&v).then_some(v).ok_or_else(bad)
}

/// Flags counting seconds (Lease duration, progress deadline, Job timeouts): see [`SECONDS`].
fn parse_seconds(s: &str) -> Result<u64, String> {
    whole(s, SECONDS, "seconds")
}

fn parse_push_lead_ms(s: &str) -> Result<u64, String> {
    whole(s, PUSH_LEAD_MS, "milliseconds")
}

/// `scan-db --max-record`: bytes, 1 KiB to 1 GiB (a record is held in memory whole).
fn parse_max_record(s: &str) -> Result<usize, String> {
    const RANGE: std::ops::RangeInclusive<usize> = 1024..=1 << 30;
    let v: usize = s
        .trim()
        .parse()
        .map_err(|_| "not a whole number of bytes".to_string())?;
    if !RANGE.contains(&v) {
        return Err(format!(
            "must be from {} to {} bytes",
            RANGE.start(),
            RANGE.end()
        ));
    }
    Ok(v)
}

/// The CLI definition with global flags propagated to every subcommand.
fn built_command() -> clap::Command {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    cmd
}

/// The names of the subcommands (each has its man page `psk-guard-NAME(1)`).
pub fn subcommands() -> Vec<String> {
    built_command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect()
}

/// The man page (roff) generated from the CLI definition: `psk-guard(1)`, or with a subcommand
/// `psk-guard-<sub>(1)` with all its flags, the global ones included.
pub fn man_page(sub: Option<&str>) -> Option<Vec<u8>> {
    let cmd = built_command();
    let mut out = Vec::new();
    match sub {
        None => clap_mangen::Man::new(cmd).render(&mut out).ok()?,
        Some(name) => {
            let s = cmd.find_subcommand(name)?.clone();
            // Generated once per process run: leaking the name is how clap takes a runtime name.
            let full: &'static str = Box::leak(format!("psk-guard-{name}").into_boxed_str());
            let man = clap_mangen::Man::new(
                s.name(full)
                    .bin_name(full)
                    .version(env!("CARGO_PKG_VERSION")),
            );
            // A subcommand page has no subcommand list (`help`'s would name pages that do not
            // exist); the rest as usual.
            man.render_title(&mut out).ok()?;
            man.render_name_section(&mut out).ok()?;
            man.render_synopsis_section(&mut out).ok()?;
            man.render_description_section(&mut out).ok()?;
            man.render_options_section(&mut out).ok()?;
            man.render_extra_section(&mut out).ok()?;
            man.render_version_section(&mut out).ok()?;
        }
    }
    Some(out)
}

/// Completions for `shell`, generated from the CLI definition.
///
/// clap_complete's bash script names the state of a subcommand of a hyphenated binary in two
/// ways: the word loop sets `cmd="psk__guard__subcmd__check"` while the `case` that lists the
/// subcommand's flags matches `psk__subcmd__guard__subcmd__check)`, so nothing after a
/// subcommand completes. The labels are rewritten to the name the loop sets (tests/it/shells.rs
/// completes a subcommand flag in a real bash, zsh and fish).
pub fn completions(shell: &str) -> Option<Vec<u8>> {
    let shell: clap_complete::Shell = shell.parse().ok()?;
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "psk-guard", &mut out);
    if shell == clap_complete::Shell::Bash {
        let text = String::from_utf8(out).ok()?;
        out = text
            .replace("psk__subcmd__guard", "psk__guard")
            .into_bytes();
    }
    Some(out)
}

#[derive(Args, Debug)]
pub struct PushKeyArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Environment variable holding the key.
    #[arg(long, default_value = "ANTREA_IPSEC_PSK")]
    pub from_env: String,
    /// Write at this instant (Unix milliseconds), so all nodes change together. Refused (nothing
    /// written) when it is more than 5 s past, before or at the write, or more than 10 min ahead.
    #[arg(long, conflicts_with = "barrier")]
    pub at_unix_ms: Option<u128>,
    /// Barrier mode (used by rotate's push Jobs): prepare the write, create --ready-file, then
    /// wait for the instant announced for push ID on the rotation Lease (--lease); refused
    /// (nothing written) when reached more than 3 s late, or when the push is called off.
    #[arg(long, value_name = "ID", requires = "ready_file")]
    pub barrier: Option<String>,
    /// With --barrier: the Lease carrying the instant, NAMESPACE/NAME.
    #[arg(long, value_name = "NAMESPACE/NAME", default_value = "kube-system/psk-guard-rotation", value_parser = parse_lease_ref)]
    pub lease: (String, String),
    /// With --barrier: the file created once the write is prepared (the pod's readinessProbe tests it).
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
    /// With --barrier: seconds to wait for the instant before giving up (nothing written).
    #[arg(long, default_value_t = 300, value_parser = parse_seconds, allow_negative_numbers = true)]
    pub barrier_wait: u64,
    /// Only test whether FILE exists (a regular file): exit 0 if so, 1 if not; prints nothing.
    /// The push pod's readinessProbe (the image has no shell).
    #[arg(long, value_name = "FILE")]
    pub probe_ready: Option<PathBuf>,
}

/// `push-key --lease`: `NAMESPACE/NAME`, both non-empty.
fn parse_lease_ref(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err("must be NAMESPACE/NAME (e.g. kube-system/psk-guard-rotation)".into()),
    }
}

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// OVSDB server to query.
    #[arg(long, default_value = DEFAULT_DB)]
    pub db: String,
    /// Antrea's run directory on the host.
    #[arg(long, default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    /// conf.db path (default: RUN_DIR/openvswitch/conf.db).
    #[arg(long)]
    pub conf_db: Option<PathBuf>,
    /// The host's root file system is mounted here (e.g. /host in a `kubectl debug node` pod):
    /// --run-dir, --db and --conf-db are host paths, their symlinks (/var/run -> /run) resolved
    /// inside this directory.
    #[arg(long, value_name = "DIR", env = "PSK_GUARD_HOST_ROOT")]
    pub host_root: Option<PathBuf>,
    /// Print the result as frame lines (`PSK-GUARD-RESULT v2 <checksum> <i>/<n> <base64 part>`)
    /// and keep stderr quiet: for the per-node Jobs, whose pod log merges stdout and stderr.
    #[arg(long)]
    pub result_frame: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub report: ReportArgs,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Report every tunnel whose key does not have this fingerprint (needs the same
    /// --fingerprint-salt the fingerprint was made with).
    #[arg(long)]
    pub expect_fingerprint: Option<String>,
    /// Skip the scan of conf.db's history.
    #[arg(long)]
    pub no_history: bool,
    /// Where antrea-agent keeps its IPsec certificate and private key in certificate mode
    /// (default: RUN_DIR/openvswitch, the agent's /var/run/openvswitch).
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Directory of antrea-agent's and ovsdb-server's logs, searched (with subdirectories, plain
    /// and .gz) for every key the node knows of.
    #[arg(long, value_name = "DIR", default_value = checks::logs::DEFAULT_LOG_DIR,
          overrides_with = "log_dir")]
    pub log_dir: PathBuf,
    /// Skip the search of the log directory.
    #[arg(long)]
    pub no_logs: bool,
    /// Do not read ovsdb-server's command line from /proc (for its --remote options; in a pod that
    /// needs the host's process namespace, hostPID). Its remotes are still asked of ovsdb-server
    /// over its control socket (ovsdb-server/list-remotes), which needs no /proc.
    #[arg(long)]
    pub no_proc: bool,
    /// Bytes searched per log file, after decompression (bounds gzip bombs); the rest of a longer
    /// file is reported as not checked.
    #[arg(long, value_name = "BYTES", default_value_t = checks::logs::DEFAULT_MAX_BYTES,
          value_parser = clap::value_parser!(u64).range(1..), allow_negative_numbers = true)]
    pub log_max_bytes: u64,
}

#[derive(Args, Debug)]
pub struct ScanArgs {
    #[command(flatten)]
    pub report: ReportArgs,
    /// The conf.db file to read.
    #[arg(default_value = DEFAULT_CONF_DB)]
    pub path: PathBuf,
    /// Largest record accepted, in bytes (1 KiB to 1 GiB).
    #[arg(long, default_value_t = forensics::log::DEFAULT_MAX_RECORD, value_parser = parse_max_record, allow_negative_numbers = true)]
    pub max_record: usize,
}

#[derive(Args, Debug)]
pub struct FixArgs {
    #[command(flatten)]
    pub report: ReportArgs,
    #[command(flatten)]
    pub node: NodeArgs,
    /// ovsdb-server's unixctl socket (default: found from RUN_DIR/openvswitch/ovsdb-server.pid).
    #[arg(long)]
    pub ctl: Option<PathBuf>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only compact conf.db (no mode changes).
    #[arg(long)]
    pub only_compact: bool,
}

/// The `--db` target as reported: the socket as given, or as resolved under --host-root.
fn db_target(n: &NodeArgs, sock: &std::path::Path) -> String {
    match n.host_root {
        None => n.db.clone(),
        Some(_) => format!("unix:{}", sock.display()),
    }
}

fn paths(n: &NodeArgs) -> anyhow::Result<(PathBuf, Paths)> {
    let sock = parse_db_target(&n.db)
        .map_err(anyhow::Error::msg)
        .context("--db")?;
    let (run_dir, sock, conf_db) = match &n.host_root {
        None => (
            std::path::absolute(&n.run_dir).unwrap_or_else(|_| n.run_dir.clone()),
            sock,
            n.conf_db.clone(),
        ),
        Some(root) => {
            let meta = std::fs::metadata(root)
                .with_context(|| format!("--host-root {}", root.display()))?;
            if !meta.is_dir() {
                anyhow::bail!("--host-root {}: not a directory", root.display());
            }
            let r = |p: &std::path::Path| crate::hostroot::resolve(root, p);
            (
                r(&n.run_dir)?,
                r(&sock)?,
                n.conf_db.as_deref().map(r).transpose()?,
            )
        }
    };
    let p = Paths::new(&run_dir, &sock, conf_db.as_deref());
    Ok((sock, p))
}

/// Whether colour is wanted on a stream that is (or is not) a terminal. `NO_COLOR` counts only
/// when it is set to a non-empty value (no-color.org).
fn use_color(c: Color, terminal: bool) -> bool {
    match c {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    }
}

/// Logs go to stderr only, plain unless stderr is a terminal. `--log` (or `PSK_GUARD_LOG`) wins
/// over `RUST_LOG`; `--quiet` keeps only errors.
fn init_logging(g: &Global, framed: bool) {
    let filter = if g.quiet || framed {
        "error".to_owned()
    } else {
        g.log
            .clone()
            .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| "warn".to_owned())
    };
    let ansi = std::io::stderr().is_terminal() && use_color(g.color, true);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}

/// `push-key --probe-ready FILE` exactly as the push Jobs' readinessProbe runs it
/// ([`crate::cluster::jobs`]): answered before the command line is parsed and logging set up.
/// The kubelet execs the probe every second in every push pod for the pod's whole life, so its
/// cost is paid on every node each second; the answer is the same as through the parser (any
/// other form of the command goes through it).
fn readiness_probe() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let (Some(cmd), Some(flag), Some(file), None) =
        (args.next(), args.next(), args.next(), args.next())
    else {
        return None;
    };
    let file_is_flag = file.as_encoded_bytes().first() == Some(&b'-');
    if cmd != "push-key" || flag != "--probe-ready" || file.is_empty() || file_is_flag {
        return None;
    }
    let file = std::path::PathBuf::from(file);
    Some(ExitCode::from(u8::from(
        !crate::rotation::node::probe_ready(&file),
    )))
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    if let Some(code) = readiness_probe() {
        return code;
    }
    crate::hardening::one_malloc_arena();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // A node Job's log merges stdout and stderr: keep stderr to errors there.
    let framed = match &cli.command {
        Command::Check(a) => a.node.result_frame,
        Command::Fix(a) => a.node.result_frame,
        Command::PushKey(a) => a.node.result_frame,
        _ => false,
    };
    init_logging(&cli.global, framed);
    report::set_quiet(cli.global.quiet);
    crate::hardening::harden();
    // `run` owns every key; by the time it returns they have all been dropped (and wiped).
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("psk-guard: error: {}", error_text(&e));
            ExitCode::from(EXIT_ERROR)
        }
    };
    crate::hardening::test_pause_point();
    code
}

/// An error and its causes on one line, each cause said once: a cause whose text the message
/// already holds (errors that print their source, wrapped again) is left out.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    // Errors carry outside text (paths listed from the node, a server's words): escaped like the
    // report's text, bounded generously (a rotation error may name many nodes).
    report::sanitize::bounded(&out, 16 * 1024).into_owned()
}

/// Prints `report` as the one framed result line of a node Job.
fn emit_frame(report: &Report) -> anyhow::Result<()> {
    let mut json = Vec::new();
    let opts = report::WriteOptions {
        format: Format::Json,
        color: false,
        fail_on: FailOn::High,
    };
    report::write(report, opts, &mut json).context("encoding the report")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{}",
        crate::cluster::frame::encode(json.trim_ascii_end())
    )
    .and_then(|_| stdout.flush())
    .context("writing the result to stdout")
}

/// Applies `--skip`/`--ignore`, then writes the report once: to stdout, or atomically to
/// `--output-file`.
fn emit(report: &mut Report, r: &ReportArgs, g: &Global) -> anyhow::Result<()> {
    let filter = report::filter::Filter::new(&r.skip, r.ignore.as_deref())?;
    if !filter.is_empty() {
        filter.apply(report, report::today_utc());
    }
    let opts = report::WriteOptions {
        format: r.output,
        color: r.output_file.is_none() && use_color(g.color, std::io::stdout().is_terminal()),
        fail_on: r.fail_on,
    };
    match &r.output_file {
        Some(path) => report::write_file_atomic(path, |w| report::write(report, opts, w))
            .with_context(|| format!("writing the report to {}", path.display())),
        None => {
            let mut stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
            report::write(report, opts, &mut stdout)
                .and_then(|()| stdout.flush())
                .context("writing the report to stdout")
        }
    }
}

/// Checks the flags every reporting command shares before it does any work.
fn check_report_args(r: &ReportArgs) -> anyhow::Result<()> {
    report::filter::Filter::new(&r.skip, r.ignore.as_deref())?;
    Ok(())
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    let timeout = Duration::from_secs_f64(g.timeout);
    let fp_key = match &g.fingerprint_salt {
        Some(s) if s.is_empty() => {
            anyhow::bail!("--fingerprint-salt is empty: give a non-empty salt or leave it out")
        }
        Some(s) => FingerprintKey::given(s),
        None => FingerprintKey::random().context("reading the OS random number generator")?,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match &cli.command {
        Command::Check(a) => {
            let (db_sock, paths) = paths(&a.node)?;
            let expect = match &a.expect_fingerprint {
                None => None,
                Some(s) => {
                    if g.fingerprint_salt.is_none() {
                        anyhow::bail!("--expect-fingerprint needs --fingerprint-salt: a fingerprint only matches under the salt it was made with");
                    }
                    Some(Fingerprint::parse(s).with_context(|| format!("--expect-fingerprint {s:?} is not a fingerprint (hmac-sha256:<16 hex digits>)"))?)
                }
            };
            // --log-dir and --cert-dir are host paths too.
            let on_host = |p: &std::path::Path, flag: &str| -> anyhow::Result<PathBuf> {
                match &a.node.host_root {
                    None => Ok(p.to_owned()),
                    Some(root) => {
                        crate::hostroot::resolve(root, p).with_context(|| flag.to_owned())
                    }
                }
            };
            let cert_dir = match &a.cert_dir {
                Some(d) => on_host(d, "--cert-dir")?,
                None => paths.ovs_dir.clone(),
            };
            let logs = match a.no_logs {
                true => None,
                false => Some(checks::logs::LogConfig::new(
                    on_host(&a.log_dir, "--log-dir")?,
                    a.log_max_bytes,
                )),
            };
            let cfg = CheckConfig {
                db_target: db_target(&a.node, &db_sock),
                db_sock,
                timeout,
                expect,
                history: !a.no_history,
                cert_dir,
                proc: !a.no_proc,
                logs,
                paths,
            };
            check_report_args(&a.report)?;
            let mut report = rt.block_on(checks::run(&cfg, &fp_key));
            if a.node.result_frame {
                emit_frame(&report)?;
            } else {
                emit(&mut report, &a.report, g)?;
            }
            Ok(report.exit_code(a.report.fail_on))
        }
        Command::ScanDb(a) => {
            check_report_args(&a.report)?;
            let scan = forensics::scan_file(&a.path, a.max_record, &fp_key)?;
            let mut report = Report::new("scan-db", fp_key.origin());
            report
                .target
                .insert("conf_db".into(), a.path.display().to_string());
            forensics::findings(&a.path, &scan, &mut report);
            report.set_data(forensics::scan_data(&scan));
            report.sort();
            emit(&mut report, &a.report, g)?;
            if a.report.output == Format::Text && a.report.output_file.is_none() {
                print_keys(&scan);
            }
            Ok(report.exit_code(a.report.fail_on))
        }
        Command::Fix(a) => {
            let (db_sock, paths) = paths(&a.node)?;
            let cfg = fix::FixConfig {
                paths,
                db_target: db_target(&a.node, &db_sock),
                ctl: a.ctl.clone(),
                dry_run: a.dry_run,
                only_compact: a.only_compact,
                timeout,
            };
            check_report_args(&a.report)?;
            let (mut stderr, mut sink) = (std::io::stderr(), std::io::sink());
            let plan_out: &mut dyn std::io::Write = if a.node.result_frame || g.quiet {
                &mut sink
            } else {
                &mut stderr
            };
            let (mut report, code) = rt.block_on(fix::run(&cfg, &fp_key, plan_out));
            if a.node.result_frame {
                emit_frame(&report)?;
            } else {
                emit(&mut report, &a.report, g)?;
            }
            Ok(ExitCode::from(code))
        }
        Command::Rotate(a) => {
            let cfg = crate::rotation::RotateConfig {
                namespace: a.namespace.clone(),
                secret: a.secret.clone(),
                key: a.key.clone(),
                daemonset: a.daemonset.clone(),
                config_map: a.config_map.clone(),
                strategy: a.strategy,
                psk_file: a.psk_file.clone(),
                image: a.image.clone(),
                service_account: a.service_account.clone(),
                lease: a.lease.clone(),
                lease_duration: Duration::from_secs(a.lease_duration),
                api_timeout: timeout,
                progress_deadline: Duration::from_secs(a.progress_deadline),
                job_timeout: Duration::from_secs(a.job_timeout),
                push_lead: Duration::from_millis(a.push_lead_ms),
                compact: !a.no_compact,
                exclude_nodes: a.exclude_nodes.clone(),
                dry_run: a.dry_run,
            };
            check_report_args(&a.report)?;
            a.kube.apply();
            let result = if a.status {
                rt.block_on(crate::rotation::status(&cfg))
            } else {
                rt.block_on(crate::rotation::run(&cfg))
            };
            match result {
                Ok(mut r) => {
                    emit(&mut r.report, &a.report, g)?;
                    Ok(ExitCode::from(r.code))
                }
                Err(e) => {
                    eprintln!(
                        "psk-guard: rotate: {}",
                        report::sanitize::bounded(&e.to_string(), 16 * 1024)
                    );
                    Ok(ExitCode::from(crate::rotation::error_code(&e)))
                }
            }
        }
        Command::Audit(a) => {
            let cfg = crate::audit::AuditConfig {
                namespace: a.namespace.clone(),
                secret: a.secret.clone(),
                key: a.key.clone(),
                config_map: a.config_map.clone(),
                agent_cluster_role: a.agent_cluster_role.clone(),
                controller_label: a.controller_label.clone(),
                secure_nodes: a.secure_nodes.clone(),
                nodes: a.nodes,
                logs: !a.no_logs,
                image: a.image.clone(),
                service_account: a.service_account.clone(),
                job_namespace: a.job_namespace.clone(),
                job_timeout: Duration::from_secs(a.job_timeout),
                parallelism: a.parallelism as usize,
                api_timeout: timeout,
            };
            check_report_args(&a.report)?;
            a.kube.apply();
            match rt.block_on(crate::audit::run(&cfg, &fp_key)) {
                Ok(mut report) => {
                    emit(&mut report, &a.report, g)?;
                    Ok(report.exit_code(a.report.fail_on))
                }
                Err(e) => {
                    eprintln!(
                        "psk-guard: audit: {}",
                        report::sanitize::bounded(&e.to_string(), 16 * 1024)
                    );
                    Ok(ExitCode::from(EXIT_ERROR))
                }
            }
        }
        Command::Generate(a) => {
            let bytes = if a.what == "man" {
                man_page(a.subcommand.as_deref()).with_context(|| {
                    format!(
                        "no subcommand {:?}: use one of {}",
                        a.subcommand.as_deref().unwrap_or(""),
                        subcommands().join(", ")
                    )
                })?
            } else if a.what == "json-schema" && a.subcommand.is_none() {
                report::json::schema().into_bytes()
            } else if a.subcommand.is_some() {
                anyhow::bail!("a subcommand is only taken with `generate man`")
            } else {
                completions(&a.what).with_context(|| {
                    format!(
                        "unknown target {:?}: use man, json-schema, bash, zsh, fish, elvish or powershell",
                        a.what
                    )
                })?
            };
            std::io::stdout()
                .write_all(&bytes)
                .context("writing to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::PushKey(a) => {
            use crate::rotation::node::{self, Barrier, When};
            if let Some(f) = &a.probe_ready {
                return Ok(ExitCode::from(u8::from(!node::probe_ready(f))));
            }
            let (sock, _) = paths(&a.node)?;
            let psk = node::key_from_env(&a.from_env)?;
            let when = match (a.at_unix_ms, a.barrier.clone()) {
                (Some(at), _) => When::At(at),
                (None, Some(id)) => When::Barrier(Barrier {
                    id,
                    lease: a.lease.clone(),
                    ready_file: a.ready_file.clone().unwrap_or_default(),
                    wait: Duration::from_secs(a.barrier_wait),
                }),
                (None, None) => When::Now,
            };
            let summary = rt
                .block_on(node::push(&sock, &psk, when, timeout, &fp_key))
                .with_context(|| format!("push-key to {}", a.node.db))?;
            drop(psk);
            if a.node.result_frame {
                println!(
                    "{}",
                    crate::cluster::frame::encode(summary.to_string().as_bytes())
                );
            } else {
                println!("{summary}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_keys(scan: &forensics::Scan) {
    let mut out = String::from("\nKeys in the file (oldest first):\n");
    if scan.keys.is_empty() {
        out.push_str("  none\n");
    }
    for k in &scan.keys {
        let ifs: Vec<&str> = k.interfaces.iter().take(5).map(String::as_str).collect();
        out.push_str(&format!(
            "  {}  {:8}  records {:>6}  first {}  last {}  interfaces {}{}\n",
            k.fingerprint,
            if k.current { "current" } else { "OLD" },
            k.records,
            k.first_ms
                .and_then(report::rfc3339_ms)
                .unwrap_or_else(|| "-".into()),
            k.last_ms
                .and_then(report::rfc3339_ms)
                .unwrap_or_else(|| "-".into()),
            if ifs.is_empty() {
                "-".to_string()
            } else {
                ifs.join(",")
            },
            if k.interfaces.len() > 5 {
                format!(" (+{})", k.interfaces.len() - 5)
            } else {
                String::new()
            },
        ));
    }
    out.push_str(&format!(
        "{} record(s), {} byte(s) read{}\n",
        scan.records,
        scan.bytes,
        if scan.damage.is_some() {
            ", stopped at damage"
        } else {
            ""
        }
    ));
    print!("{out}");
}
