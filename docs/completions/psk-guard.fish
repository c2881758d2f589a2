# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_psk_guard_global_optspecs
    string join \n fingerprint-salt= timeout= color= log= q/quiet h/help V/version
end

function __fish_psk_guard_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_psk_guard_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_psk_guard_using_subcommand
    set -l cmd (__fish_psk_guard_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c psk-guard -n "__fish_psk_guard_needs_command" -l fingerprint-salt -d 'Salt for key fingerprints, so that runs sharing it can be compared (default: random per run)' -r
complete -c psk-guard -n "__fish_psk_guard_needs_command" -l timeout -d 'Seconds to wait for a connection or a reply (more than 0, at most 86400)' -r
complete -c psk-guard -n "__fish_psk_guard_needs_command" -l color -d 'Colour in text output and in logs on a terminal (auto: only on a terminal, and not when NO_COLOR is set to a non-empty value)' -r -f -a "auto\t''
always\t''
never\t''"
complete -c psk-guard -n "__fish_psk_guard_needs_command" -l log -d 'Log filter for stderr (e.g. info, debug, psk_guard=trace) [default: warn]. Wins over RUST_LOG, which applies only when neither --log nor PSK_GUARD_LOG is given' -r
complete -c psk-guard -n "__fish_psk_guard_needs_command" -s q -l quiet -d 'Print nothing on stderr but errors: no progress, no warnings'
complete -c psk-guard -n "__fish_psk_guard_needs_command" -s h -l help -d 'Print help'
complete -c psk-guard -n "__fish_psk_guard_needs_command" -s V -l version -d 'Print version'
complete -c psk-guard -n "__fish_psk_guard_needs_command" -f -a "check" -d 'Check this node: plaintext, weak, mixed and old keys in OVSDB and conf.db, and the modes and owners of /var/run/antrea, conf.db and the sockets. Changes nothing'
complete -c psk-guard -n "__fish_psk_guard_needs_command" -f -a "scan-db" -d 'Read conf.db\'s log (a live file or a copy) and list every key it still holds, by fingerprint, with the interfaces, times and whether it is current. Changes nothing'
complete -c psk-guard -n "__fish_psk_guard_needs_command" -f -a "fix" -d 'Fix this node: compact conf.db so old keys leave the disk, and tighten modes (never loosen). Prints the plan first; --dry-run stops there'
complete -c psk-guard -n "__fish_psk_guard_needs_command" -f -a "rotate" -d 'Rotate the IPsec PSK: new random key in the antrea-ipsec Secret, rolled out to every node, verified, old keys purged from disk. Exclusive (Lease), crash-safe and resumable'
complete -c psk-guard -n "__fish_psk_guard_needs_command" -f -a "audit" -d 'Audit the cluster against Antrea\'s security guide (Gatekeeper policy and webhook, agent RBAC, controller placement, hostPath exposure, auth mode, Secret strength and readers); with --nodes also run `check` on every node through pinned Jobs and merge the results'
complete -c psk-guard -n "__fish_psk_guard_needs_command" -f -a "generate" -d 'Print shell completions (bash, zsh, fish, elvish, powershell) or the man page (roff)'
complete -c psk-guard -n "__fish_psk_guard_needs_command" -f -a "push-key" -d 'Node half of `rotate --strategy push` (run by its Jobs): write the key from an environment variable into every IPsec tunnel of this node in one transaction, at a shared instant'
complete -c psk-guard -n "__fish_psk_guard_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -s o -l output -d 'Output format' -r -f -a "text\t'A table for people'
json\t'The JSON report (docs/report.schema.json)'
sarif\t'SARIF 2.1.0, for GitHub code scanning and other SARIF viewers'
junit\t'JUnit XML, one test case per finding, for CI dashboards'
prometheus\t'Prometheus text format, for node-exporter\'s textfile collector'"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l output-file -d 'Write the report to this file instead of stdout (atomically: a temporary file in the same directory, mode 0600, renamed into place)' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l fail-on -d 'Exit 1 when a finding is at least this severe' -r -f -a "info\t''
low\t''
medium\t''
high\t''
critical\t''
never\t'Never exit 1 for findings'"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l skip -d 'Accept every finding with this code (repeatable): listed as suppressed, not counted' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l ignore -d 'Accept the findings listed in this YAML file (code, subject pattern, reason, expiry; see docs/ignore-file.md): listed as suppressed with their reason, not counted' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l db -d 'OVSDB server to query' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l run-dir -d 'Antrea\'s run directory on the host' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l conf-db -d 'conf.db path (default: RUN_DIR/openvswitch/conf.db)' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l host-root -d 'The host\'s root file system is mounted here (e.g. /host in a `kubectl debug node` pod): --run-dir, --db and --conf-db are host paths, their symlinks (/var/run -> /run) resolved inside this directory' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l expect-fingerprint -d 'Report every tunnel whose key does not have this fingerprint (needs the same --fingerprint-salt the fingerprint was made with)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l cert-dir -d 'Where antrea-agent keeps its IPsec certificate and private key in certificate mode (default: RUN_DIR/openvswitch, the agent\'s /var/run/openvswitch)' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l log-dir -d 'Directory of antrea-agent\'s and ovsdb-server\'s logs, searched (with subdirectories, plain and .gz) for every key the node knows of' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l log-max-bytes -d 'Bytes searched per log file, after decompression (bounds gzip bombs); the rest of a longer file is reported as not checked' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l fingerprint-salt -d 'Salt for key fingerprints, so that runs sharing it can be compared (default: random per run)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l timeout -d 'Seconds to wait for a connection or a reply (more than 0, at most 86400)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l color -d 'Colour in text output and in logs on a terminal (auto: only on a terminal, and not when NO_COLOR is set to a non-empty value)' -r -f -a "auto\t''
always\t''
never\t''"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l log -d 'Log filter for stderr (e.g. info, debug, psk_guard=trace) [default: warn]. Wins over RUST_LOG, which applies only when neither --log nor PSK_GUARD_LOG is given' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l result-frame -d 'Print the result as frame lines (`PSK-GUARD-RESULT v2 <checksum> <i>/<n> <base64 part>`) and keep stderr quiet: for the per-node Jobs, whose pod log merges stdout and stderr'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l no-history -d 'Skip the scan of conf.db\'s history'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l no-logs -d 'Skip the search of the log directory'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -l no-proc -d 'Do not read ovsdb-server\'s command line from /proc (for its --remote options; in a pod that needs the host\'s process namespace, hostPID). Its remotes are still asked of ovsdb-server over its control socket (ovsdb-server/list-remotes), which needs no /proc'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -s q -l quiet -d 'Print nothing on stderr but errors: no progress, no warnings'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand scan-db" -s o -l output -d 'Output format' -r -f -a "text\t'A table for people'
json\t'The JSON report (docs/report.schema.json)'
sarif\t'SARIF 2.1.0, for GitHub code scanning and other SARIF viewers'
junit\t'JUnit XML, one test case per finding, for CI dashboards'
prometheus\t'Prometheus text format, for node-exporter\'s textfile collector'"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand scan-db" -l output-file -d 'Write the report to this file instead of stdout (atomically: a temporary file in the same directory, mode 0600, renamed into place)' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand scan-db" -l fail-on -d 'Exit 1 when a finding is at least this severe' -r -f -a "info\t''
low\t''
medium\t''
high\t''
critical\t''
never\t'Never exit 1 for findings'"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand scan-db" -l skip -d 'Accept every finding with this code (repeatable): listed as suppressed, not counted' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand scan-db" -l ignore -d 'Accept the findings listed in this YAML file (code, subject pattern, reason, expiry; see docs/ignore-file.md): listed as suppressed with their reason, not counted' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand scan-db" -l max-record -d 'Largest record accepted, in bytes (1 KiB to 1 GiB)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand scan-db" -l fingerprint-salt -d 'Salt for key fingerprints, so that runs sharing it can be compared (default: random per run)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand scan-db" -l timeout -d 'Seconds to wait for a connection or a reply (more than 0, at most 86400)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand scan-db" -l color -d 'Colour in text output and in logs on a terminal (auto: only on a terminal, and not when NO_COLOR is set to a non-empty value)' -r -f -a "auto\t''
always\t''
never\t''"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand scan-db" -l log -d 'Log filter for stderr (e.g. info, debug, psk_guard=trace) [default: warn]. Wins over RUST_LOG, which applies only when neither --log nor PSK_GUARD_LOG is given' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand scan-db" -s q -l quiet -d 'Print nothing on stderr but errors: no progress, no warnings'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand scan-db" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -s o -l output -d 'Output format' -r -f -a "text\t'A table for people'
json\t'The JSON report (docs/report.schema.json)'
sarif\t'SARIF 2.1.0, for GitHub code scanning and other SARIF viewers'
junit\t'JUnit XML, one test case per finding, for CI dashboards'
prometheus\t'Prometheus text format, for node-exporter\'s textfile collector'"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -l output-file -d 'Write the report to this file instead of stdout (atomically: a temporary file in the same directory, mode 0600, renamed into place)' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -l fail-on -d 'Exit 1 when a finding is at least this severe' -r -f -a "info\t''
low\t''
medium\t''
high\t''
critical\t''
never\t'Never exit 1 for findings'"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -l skip -d 'Accept every finding with this code (repeatable): listed as suppressed, not counted' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -l ignore -d 'Accept the findings listed in this YAML file (code, subject pattern, reason, expiry; see docs/ignore-file.md): listed as suppressed with their reason, not counted' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -l db -d 'OVSDB server to query' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -l run-dir -d 'Antrea\'s run directory on the host' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -l conf-db -d 'conf.db path (default: RUN_DIR/openvswitch/conf.db)' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -l host-root -d 'The host\'s root file system is mounted here (e.g. /host in a `kubectl debug node` pod): --run-dir, --db and --conf-db are host paths, their symlinks (/var/run -> /run) resolved inside this directory' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -l ctl -d 'ovsdb-server\'s unixctl socket (default: found from RUN_DIR/openvswitch/ovsdb-server.pid)' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -l fingerprint-salt -d 'Salt for key fingerprints, so that runs sharing it can be compared (default: random per run)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -l timeout -d 'Seconds to wait for a connection or a reply (more than 0, at most 86400)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -l color -d 'Colour in text output and in logs on a terminal (auto: only on a terminal, and not when NO_COLOR is set to a non-empty value)' -r -f -a "auto\t''
always\t''
never\t''"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -l log -d 'Log filter for stderr (e.g. info, debug, psk_guard=trace) [default: warn]. Wins over RUST_LOG, which applies only when neither --log nor PSK_GUARD_LOG is given' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -l result-frame -d 'Print the result as frame lines (`PSK-GUARD-RESULT v2 <checksum> <i>/<n> <base64 part>`) and keep stderr quiet: for the per-node Jobs, whose pod log merges stdout and stderr'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -l dry-run -d 'Print the plan and change nothing'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -l only-compact -d 'Only compact conf.db (no mode changes)'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -s q -l quiet -d 'Print nothing on stderr but errors: no progress, no warnings'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand fix" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -s o -l output -d 'Output format' -r -f -a "text\t'A table for people'
json\t'The JSON report (docs/report.schema.json)'
sarif\t'SARIF 2.1.0, for GitHub code scanning and other SARIF viewers'
junit\t'JUnit XML, one test case per finding, for CI dashboards'
prometheus\t'Prometheus text format, for node-exporter\'s textfile collector'"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l output-file -d 'Write the report to this file instead of stdout (atomically: a temporary file in the same directory, mode 0600, renamed into place)' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l fail-on -d 'Exit 1 when a finding is at least this severe' -r -f -a "info\t''
low\t''
medium\t''
high\t''
critical\t''
never\t'Never exit 1 for findings'"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l skip -d 'Accept every finding with this code (repeatable): listed as suppressed, not counted' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l ignore -d 'Accept the findings listed in this YAML file (code, subject pattern, reason, expiry; see docs/ignore-file.md): listed as suppressed with their reason, not counted' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l namespace -d 'Namespace of Antrea\'s Secret, DaemonSet and ConfigMap' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l secret -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l key -d 'Key of the PSK in the Secret' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l daemonset -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l config-map -d 'Antrea\'s agent ConfigMap (to refuse certificate mode)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l strategy -r -f -a "restart\t'Restart the antrea-agent pods (works with stock Antrea; the window is the rollout)'
push\t'Write the key into every node\'s OVSDB at one shared instant, then restart the agents'"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l psk-file -d 'Use this key (a file holding it) instead of a generated one; it is checked for strength' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l image -d 'Image of the per-node Jobs' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l service-account -d 'Service account of the per-node Jobs' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l lease -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l lease-duration -d 'Seconds without renewal after which a dead run\'s Lease may be taken over' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l progress-deadline -l rollout-timeout -d 'Seconds the DaemonSet rollout may go without any node advancing before it counts as stuck (like a Deployment\'s progressDeadlineSeconds; the whole rollout may take longer)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l job-timeout -d 'Seconds to wait for each per-node Job' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l push-lead-ms -d 'For push: milliseconds from the moment every node\'s push pod is ready (prepared and waiting) to the shared write instant announced to them. Must fit in --job-timeout: the pods get half of it to become ready, so the lead may be at most half of --job-timeout less 3 s (the lateness a node is allowed); a longer lead is refused, nothing written' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l exclude-node -d 'Leave this node out (repeatable): it need not be healthy, gets no Job, and keeps the old key until the next rotation' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l kubeconfig -d 'The kubeconfig file (default: KUBECONFIG, ~/.kube/config, or the in-cluster service account)' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l context -d 'The kubeconfig context (default: its current-context)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l fingerprint-salt -d 'Salt for key fingerprints, so that runs sharing it can be compared (default: random per run)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l timeout -d 'Seconds to wait for a connection or a reply (more than 0, at most 86400)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l color -d 'Colour in text output and in logs on a terminal (auto: only on a terminal, and not when NO_COLOR is set to a non-empty value)' -r -f -a "auto\t''
always\t''
never\t''"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l log -d 'Log filter for stderr (e.g. info, debug, psk_guard=trace) [default: warn]. Wins over RUST_LOG, which applies only when neither --log nor PSK_GUARD_LOG is given' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l status -d 'Only read and print the rotation record on the Secret'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l no-compact -d 'Skip purging old keys from conf.db after the rotation'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -l dry-run -d 'Run the whole preflight and print the plan; write nothing'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -s q -l quiet -d 'Print nothing on stderr but errors: no progress, no warnings'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand rotate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -s o -l output -d 'Output format' -r -f -a "text\t'A table for people'
json\t'The JSON report (docs/report.schema.json)'
sarif\t'SARIF 2.1.0, for GitHub code scanning and other SARIF viewers'
junit\t'JUnit XML, one test case per finding, for CI dashboards'
prometheus\t'Prometheus text format, for node-exporter\'s textfile collector'"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l output-file -d 'Write the report to this file instead of stdout (atomically: a temporary file in the same directory, mode 0600, renamed into place)' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l fail-on -d 'Exit 1 when a finding is at least this severe' -r -f -a "info\t''
low\t''
medium\t''
high\t''
critical\t''
never\t'Never exit 1 for findings'"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l skip -d 'Accept every finding with this code (repeatable): listed as suppressed, not counted' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l ignore -d 'Accept the findings listed in this YAML file (code, subject pattern, reason, expiry; see docs/ignore-file.md): listed as suppressed with their reason, not counted' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l namespace -d 'Antrea\'s namespace' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l secret -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l key -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l config-map -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l agent-cluster-role -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l controller-label -d 'Label (k=v) of antrea-controller\'s pods' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l secure-node -d 'A node to treat as secure for antrea-controller besides control-plane nodes (repeatable)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l image -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l service-account -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l job-namespace -d 'Namespace of the per-node Jobs (needs the privileged Pod Security level for hostPath)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l job-timeout -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l parallelism -d 'Per-node Jobs running at once (1 to 1000)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l kubeconfig -d 'The kubeconfig file (default: KUBECONFIG, ~/.kube/config, or the in-cluster service account)' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l context -d 'The kubeconfig context (default: its current-context)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l fingerprint-salt -d 'Salt for key fingerprints, so that runs sharing it can be compared (default: random per run)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l timeout -d 'Seconds to wait for a connection or a reply (more than 0, at most 86400)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l color -d 'Colour in text output and in logs on a terminal (auto: only on a terminal, and not when NO_COLOR is set to a non-empty value)' -r -f -a "auto\t''
always\t''
never\t''"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l log -d 'Log filter for stderr (e.g. info, debug, psk_guard=trace) [default: warn]. Wins over RUST_LOG, which applies only when neither --log nor PSK_GUARD_LOG is given' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l nodes -d 'Also run `psk-guard check` on every node (one pinned Job per node) and merge the results'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -l no-logs -d 'With --nodes: leave the nodes\' logs out (the Jobs do not mount /var/log/antrea, which a node without antrea-agent\'s logs does not have; the search of the logs is reported as not done)'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -s q -l quiet -d 'Print nothing on stderr but errors: no progress, no warnings'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand audit" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand generate" -l fingerprint-salt -d 'Salt for key fingerprints, so that runs sharing it can be compared (default: random per run)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand generate" -l timeout -d 'Seconds to wait for a connection or a reply (more than 0, at most 86400)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand generate" -l color -d 'Colour in text output and in logs on a terminal (auto: only on a terminal, and not when NO_COLOR is set to a non-empty value)' -r -f -a "auto\t''
always\t''
never\t''"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand generate" -l log -d 'Log filter for stderr (e.g. info, debug, psk_guard=trace) [default: warn]. Wins over RUST_LOG, which applies only when neither --log nor PSK_GUARD_LOG is given' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand generate" -s q -l quiet -d 'Print nothing on stderr but errors: no progress, no warnings'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand generate" -s h -l help -d 'Print help'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -l db -d 'OVSDB server to query' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -l run-dir -d 'Antrea\'s run directory on the host' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -l conf-db -d 'conf.db path (default: RUN_DIR/openvswitch/conf.db)' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -l host-root -d 'The host\'s root file system is mounted here (e.g. /host in a `kubectl debug node` pod): --run-dir, --db and --conf-db are host paths, their symlinks (/var/run -> /run) resolved inside this directory' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -l from-env -d 'Environment variable holding the key' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -l at-unix-ms -d 'Write at this instant (Unix milliseconds), so all nodes change together. Refused (nothing written) when it is more than 5 s past, before or at the write, or more than 10 min ahead' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -l barrier -d 'Barrier mode (used by rotate\'s push Jobs): prepare the write, create --ready-file, then wait for the instant announced for push ID on the rotation Lease (--lease); refused (nothing written) when reached more than 3 s late, or when the push is called off' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -l lease -d 'With --barrier: the Lease carrying the instant, NAMESPACE/NAME' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -l ready-file -d 'With --barrier: the file created once the write is prepared (the pod\'s readinessProbe tests it)' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -l barrier-wait -d 'With --barrier: seconds to wait for the instant before giving up (nothing written)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -l probe-ready -d 'Only test whether FILE exists (a regular file): exit 0 if so, 1 if not; prints nothing. The push pod\'s readinessProbe (the image has no shell)' -r -F
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -l fingerprint-salt -d 'Salt for key fingerprints, so that runs sharing it can be compared (default: random per run)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -l timeout -d 'Seconds to wait for a connection or a reply (more than 0, at most 86400)' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -l color -d 'Colour in text output and in logs on a terminal (auto: only on a terminal, and not when NO_COLOR is set to a non-empty value)' -r -f -a "auto\t''
always\t''
never\t''"
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -l log -d 'Log filter for stderr (e.g. info, debug, psk_guard=trace) [default: warn]. Wins over RUST_LOG, which applies only when neither --log nor PSK_GUARD_LOG is given' -r
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -l result-frame -d 'Print the result as frame lines (`PSK-GUARD-RESULT v2 <checksum> <i>/<n> <base64 part>`) and keep stderr quiet: for the per-node Jobs, whose pod log merges stdout and stderr'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -s q -l quiet -d 'Print nothing on stderr but errors: no progress, no warnings'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand push-key" -s h -l help -d 'Print help'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand help; and not __fish_seen_subcommand_from check scan-db fix rotate audit generate push-key help" -f -a "check" -d 'Check this node: plaintext, weak, mixed and old keys in OVSDB and conf.db, and the modes and owners of /var/run/antrea, conf.db and the sockets. Changes nothing'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand help; and not __fish_seen_subcommand_from check scan-db fix rotate audit generate push-key help" -f -a "scan-db" -d 'Read conf.db\'s log (a live file or a copy) and list every key it still holds, by fingerprint, with the interfaces, times and whether it is current. Changes nothing'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand help; and not __fish_seen_subcommand_from check scan-db fix rotate audit generate push-key help" -f -a "fix" -d 'Fix this node: compact conf.db so old keys leave the disk, and tighten modes (never loosen). Prints the plan first; --dry-run stops there'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand help; and not __fish_seen_subcommand_from check scan-db fix rotate audit generate push-key help" -f -a "rotate" -d 'Rotate the IPsec PSK: new random key in the antrea-ipsec Secret, rolled out to every node, verified, old keys purged from disk. Exclusive (Lease), crash-safe and resumable'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand help; and not __fish_seen_subcommand_from check scan-db fix rotate audit generate push-key help" -f -a "audit" -d 'Audit the cluster against Antrea\'s security guide (Gatekeeper policy and webhook, agent RBAC, controller placement, hostPath exposure, auth mode, Secret strength and readers); with --nodes also run `check` on every node through pinned Jobs and merge the results'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand help; and not __fish_seen_subcommand_from check scan-db fix rotate audit generate push-key help" -f -a "generate" -d 'Print shell completions (bash, zsh, fish, elvish, powershell) or the man page (roff)'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand help; and not __fish_seen_subcommand_from check scan-db fix rotate audit generate push-key help" -f -a "push-key" -d 'Node half of `rotate --strategy push` (run by its Jobs): write the key from an environment variable into every IPsec tunnel of this node in one transaction, at a shared instant'
complete -c psk-guard -n "__fish_psk_guard_using_subcommand help; and not __fish_seen_subcommand_from check scan-db fix rotate audit generate push-key help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
