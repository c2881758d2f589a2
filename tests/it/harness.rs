//! Real `ovsdb-server` processes for tests: one per test, in a temp dir laid out like an Antrea
//! node (`<run>/openvswitch/{conf.db,db.sock,ovsdb-server.pid,ovsdb-server.<pid>.ctl}`), stopped by
//! pid when dropped. No root, kernel module or ovs-vswitchd needed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

pub fn require_ovs() {
    for bin in ["ovsdb-server", "ovsdb-tool", "ovs-vsctl"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).exists()))
            .unwrap_or(false)
            || Path::new("/usr/sbin").join(bin).exists();
        assert!(
            found,
            "{bin} not found: install the openvswitch-switch package (scripts/test does)"
        );
    }
}

pub struct Node {
    pub dir: tempfile::TempDir,
    pub run_dir: PathBuf,
    pub ovs_dir: PathBuf,
    pub sock: PathBuf,
    pub conf_db: PathBuf,
    /// The node's log directory (`/var/log/antrea`), empty at start.
    pub log_dir: PathBuf,
    pub pid: Option<i32>,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Node {
    /// A node with an empty Open_vSwitch database and a bridge `br-int`, modes as Antrea sets them.
    pub fn start() -> Node {
        Node::start_with(|_| {})
    }

    /// Like [`Node::start`], calling `prepare(run_dir)` after the run directory exists and before
    /// anything is put in it (e.g. to mount a file system there).
    pub fn start_with(prepare: impl FnOnce(&Path)) -> Node {
        Node::start_prefixed("pskg", prepare)
    }

    /// Like [`Node::start`], in a temporary directory whose name starts with `prefix` (e.g. with a
    /// space or a `#`, which URIs must encode).
    pub fn start_in(prefix: &str) -> Node {
        Node::start_prefixed(prefix, |_| {})
    }

    fn start_prefixed(prefix: &str, prepare: impl FnOnce(&Path)) -> Node {
        require_ovs();
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        prepare(&run_dir);
        let ovs_dir = run_dir.join("openvswitch");
        std::fs::create_dir_all(&ovs_dir).unwrap();
        let conf_db = ovs_dir.join("conf.db");
        run(Command::new("ovsdb-tool")
            .arg("create")
            .arg(&conf_db)
            .arg(SCHEMA));
        let log_dir = dir.path().join("log");
        std::fs::create_dir_all(&log_dir).unwrap();
        let mut n = Node {
            log_dir,
            sock: ovs_dir.join("db.sock"),
            dir,
            run_dir,
            ovs_dir,
            conf_db,
            pid: None,
        };
        n.start_server();
        n.vsctl(&["init"]);
        n.vsctl(&["add-br", "br-int"]);
        n.chmod(&n.run_dir.clone(), 0o750);
        n.chmod(&n.ovs_dir.clone(), 0o755);
        n.chmod(&n.conf_db.clone(), 0o640);
        n
    }

    pub fn start_server(&mut self) {
        self.start_server_args(&[]);
    }

    /// Starts ovsdb-server with `extra` options added (e.g. another `--remote`).
    pub fn start_server_args(&mut self, extra: &[&str]) {
        let pidfile = self.ovs_dir.join("ovsdb-server.pid");
        run(Command::new("ovsdb-server")
            .arg(&self.conf_db)
            .arg(format!("--remote=punix:{}", self.sock.display()))
            .args(extra)
            .arg(format!("--pidfile={}", pidfile.display()))
            .arg(format!(
                "--log-file={}",
                self.dir.path().join("ovsdb.log").display()
            ))
            .args(["--no-chdir", "-vconsole:off", "--detach"])
            .env("OVS_RUNDIR", &self.ovs_dir)
            .env("OVS_LOGDIR", self.dir.path()));
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        self.pid = Some(pid);
    }

    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            for _ in 0..200 {
                if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }

    pub fn ctl(&self) -> PathBuf {
        self.ovs_dir
            .join(format!("ovsdb-server.{}.ctl", self.pid.expect("running")))
    }

    pub fn vsctl(&self, args: &[&str]) -> String {
        let out = run(Command::new("ovs-vsctl")
            .arg(format!("--db=unix:{}", self.sock.display()))
            .arg("--no-wait")
            .args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Adds an Antrea-style IPsec tunnel port (Interface options + Port external_ids).
    pub fn add_tunnel(&self, name: &str, node: &str, ip: &str, psk: &str) {
        let remote = format!("options:remote_ip={ip}");
        let key = format!("options:psk={psk}");
        let peer = format!("external_ids:node-name={node}");
        self.vsctl(&[
            "add-port",
            "br-int",
            name,
            "--",
            "set",
            "Interface",
            name,
            "type=geneve",
            &remote,
            &key,
            "--",
            "set",
            "Port",
            name,
            "external_ids:antrea-type=ipsec-tunnel",
            &peer,
        ]);
    }

    pub fn set_psk(&self, name: &str, psk: &str) {
        self.vsctl(&["set", "Interface", name, &format!("options:psk={psk}")]);
    }

    pub fn chmod(&self, p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    pub fn mode(&self, p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    pub fn db_arg(&self) -> String {
        format!("unix:{}", self.sock.display())
    }

    /// `--db` and `--run-dir` pointing at this node (for any subcommand).
    pub fn node_args(&self) -> Vec<String> {
        vec![
            "--db".into(),
            self.db_arg(),
            "--run-dir".into(),
            self.run_dir.display().to_string(),
        ]
    }

    /// `check` args pointing at this node: [`Node::node_args`] and its log directory.
    pub fn check_args(&self) -> Vec<String> {
        let mut a = self.node_args();
        a.extend(["--log-dir".into(), self.log_dir.display().to_string()]);
        a
    }
}

pub fn psk_guard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_psk-guard"))
        .args(args)
        .env_remove("PSK_GUARD_FINGERPRINT_SALT")
        .env_remove("RUST_LOG")
        .output()
        .expect("run psk-guard")
}

/// Runs `psk-guard check ... -o json --fingerprint-salt test` on the node and parses the report.
pub fn check_json(node: &Node, extra: &[&str]) -> (serde_json::Value, i32) {
    let mut args: Vec<String> = vec!["check".into()];
    args.extend(node.check_args());
    args.extend(["-o", "json", "--fingerprint-salt", "test"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = psk_guard(&a);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    crate::formats::assert_valid_report("check", &v);
    (v, out.status.code().unwrap_or(-1))
}

pub fn codes(report: &serde_json::Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_owned())
        .collect()
}

pub fn finding<'a>(report: &'a serde_json::Value, code: &str) -> Option<&'a serde_json::Value> {
    findings(report, code).into_iter().next()
}

/// Every finding of the report with this code.
pub fn findings<'a>(report: &'a serde_json::Value, code: &str) -> Vec<&'a serde_json::Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == code)
        .collect()
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns `cmd` (stdin and stderr piped) and reads its stderr until a line starting with `marker`
/// (a test pause point); returns the child, still paused, and that line. Panics if it exits first.
// The child is returned to the caller, who waits for it (`resume`, or kill and wait).
#[allow(clippy::zombie_processes)]
pub fn spawn_until(cmd: &mut Command, marker: &str) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} exited before {marker:?}");
        }
        if line.starts_with(marker) {
            // Keep draining stderr so the child never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
            return (child, line);
        }
    }
}

/// Lets a paused child go on (a line on its stdin) and waits for it.
pub fn resume(mut child: std::process::Child) -> std::process::ExitStatus {
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    child.wait().unwrap()
}

/// Asserts that every (verb, resource) the API test server saw is among `perms`.
pub fn assert_used_is_declared(
    used: &std::collections::BTreeSet<(String, String)>,
    perms: &[&[psk_guard::cluster::Permission]],
    what: &str,
) {
    for (verb, res) in used {
        if res == "selfsubjectaccessreviews" {
            continue;
        }
        let declared = perms.iter().flat_map(|p| p.iter()).any(|p| {
            let full = if p.subresource.is_empty() {
                p.resource.to_owned()
            } else {
                format!("{}/{}", p.resource, p.subresource)
            };
            p.verb == verb && full == *res
        });
        assert!(
            declared,
            "{what} used {verb} {res}, which its permission list does not declare"
        );
    }
}

/// One conf.db log record (`OVSDB JSON <len> <sha1>` header, then the body), as ovsdb-server
/// writes it.
pub fn record(body: &[u8]) -> Vec<u8> {
    use sha1::Digest;
    let mut v = format!(
        "OVSDB JSON {} {}\n",
        body.len(),
        hex::encode(sha1::Sha1::digest(body))
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

/// For fake OVSDB servers: reads one JSON-RPC request (the client sends whole objects) and
/// returns its id; `None` when the client closed.
pub fn read_request(
    r: &mut std::io::BufReader<std::os::unix::net::UnixStream>,
) -> Option<serde_json::Value> {
    use serde::Deserialize;
    // One message off the stream, the bytes after it left in `r`: a client may send its next
    // requests without waiting for the replies, and ovsdb-server reads them one after another
    // (lib/jsonrpc.c `jsonrpc_recv` parses message after message from the same buffer).
    let mut de = serde_json::Deserializer::from_reader(&mut *r);
    let v = serde_json::Value::deserialize(&mut de).ok()?;
    Some(v["id"].clone())
}
