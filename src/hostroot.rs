//! `--host-root DIR`: the node's root file system mounted at DIR (a debug pod's `/host`).
//!
//! The configured paths (`--run-dir /var/run/antrea`, the `--db` socket, `--conf-db`) name places
//! on the host. Joined naively under the root, an absolute symlink on the way breaks them: on
//! Debian and Ubuntu `/var/run` is a link to `/run`, which inside the debug pod points at the
//! pod's own `/run`, so the check would see nothing. [`resolve`] walks the directories of a host
//! path one component at a time, and where one is a symlink reads its text and resolves it inside
//! the root (an absolute target starts again at the root, `..` never climbs above it). The last
//! component is never resolved: a file or socket that is itself a symlink is for the checks to
//! see and report, and they open it without following (the node is hostile).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// As many links as Linux follows in one lookup (MAXSYMLINKS).
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum HostRootError {
    #[error("{0}: with --host-root, host paths must be absolute")]
    NotAbsolute(String),
    #[error("{path}: more than {MAX_LINKS} symbolic links under --host-root {root}")]
    TooManyLinks { path: String, root: String },
    #[error("{path}: cannot inspect under --host-root {root}: {source}")]
    Inspect {
        path: String,
        root: String,
        #[source]
        source: std::io::Error,
    },
}

/// The path under `root` where the host's `host_path` is, its directories resolved inside the
/// root (see the module documentation). A component that does not exist ends the resolution: the
/// rest is joined as it is (the checks report the absent path).
pub fn resolve(root: &Path, host_path: &Path) -> Result<PathBuf, HostRootError> {
    if !host_path.is_absolute() {
        return Err(HostRootError::NotAbsolute(host_path.display().to_string()));
    }
    let mut todo: VecDeque<OsString> = components(host_path).collect();
    let mut done: Vec<OsString> = vec![];
    let mut links = 0;
    let mut exists = true;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            done.pop();
            continue;
        }
        let here = root.join(done.iter().collect::<PathBuf>()).join(&c);
        let last = todo.is_empty();
        if last || !exists {
            done.push(c);
            continue;
        }
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(HostRootError::TooManyLinks {
                        path: host_path.display().to_string(),
                        root: root.display().to_string(),
                    });
                }
                let target =
                    std::fs::read_link(&here).map_err(|source| HostRootError::Inspect {
                        path: host_path.display().to_string(),
                        root: root.display().to_string(),
                        source,
                    })?;
                if target.is_absolute() {
                    done.clear();
                }
                for t in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    todo.push_front(t);
                }
            }
            Ok(_) => done.push(c),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                exists = false;
                done.push(c);
            }
            Err(source) => {
                return Err(HostRootError::Inspect {
                    path: host_path.display().to_string(),
                    root: root.display().to_string(),
                    source,
                })
            }
        }
    }
    Ok(root.join(done.iter().collect::<PathBuf>()))
}

/// The normal and `..` components of a path (root and `.` dropped).
fn components(p: &Path) -> impl Iterator<Item = OsString> + '_ {
    p.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_owned()),
        Component::ParentDir => Some(OsString::from("..")),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_links_resolve_inside_the_root_and_the_last_component_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("run/antrea/openvswitch")).unwrap();
        std::fs::create_dir_all(root.join("var")).unwrap();
        symlink("/run", root.join("var/run")).unwrap();
        symlink("/etc/passwd", root.join("run/antrea/openvswitch/conf.db")).unwrap();
        assert_eq!(
            resolve(root, Path::new("/var/run/antrea")).unwrap(),
            root.join("run/antrea")
        );
        // The file itself is a link: kept as it is, for the checks to report.
        assert_eq!(
            resolve(root, Path::new("/var/run/antrea/openvswitch/conf.db")).unwrap(),
            root.join("run/antrea/openvswitch/conf.db")
        );
        // `..` in a link never climbs out of the root.
        symlink("../../../../../run", root.join("up")).unwrap();
        assert_eq!(
            resolve(root, Path::new("/up/antrea")).unwrap(),
            root.join("run/antrea")
        );
        // Relative links resolve from their directory; absent paths are joined as they are.
        symlink("run", root.join("rel")).unwrap();
        assert_eq!(
            resolve(root, Path::new("/rel/antrea")).unwrap(),
            root.join("run/antrea")
        );
        assert_eq!(
            resolve(root, Path::new("/nope/x/y")).unwrap(),
            root.join("nope/x/y")
        );
        // Loops end.
        symlink("/loop", root.join("loop")).unwrap();
        assert!(matches!(
            resolve(root, Path::new("/loop/x")),
            Err(HostRootError::TooManyLinks { .. })
        ));
        assert!(resolve(root, Path::new("var/run")).is_err());
    }
}
