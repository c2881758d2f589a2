//! The one way psk-guard touches a node's file system.
//!
//! The node is hostile: a non-root user (or a Pod with a host path) may control part of
//! `/var/run/antrea` and swap a file for a symbolic link between our check and our action. So no
//! node path is ever acted on by name. [`open`] walks from `/` one component at a time with
//! `openat(O_PATH | O_NOFOLLOW)`, `fstat`s every directory on the way ([`ChainDir`]), and opens
//! the last component without following it; what is returned ([`Entry`]) holds the descriptor, and
//! everything afterwards (read, list, chmod, connect) goes through that descriptor, never the
//! name again. A symbolic link in the middle of a path is followed only when root owns it and the
//! directory holding it is root-controlled (as `/var/run -> /run` is): such a link can be changed
//! only by root, like any other entry of that directory. A link as the last component is never
//! followed; it is reported as what it is.
//!
//! [`Entry::untrusted`] says which directory of the chain a non-root user controls (owns it, or
//! may write in it by mode or POSIX ACL), so `check` can report it and `fix` can refuse to act
//! below it. [`Accounts`] and [`Who`] are the exposure model: who, besides root, has a permission
//! on a path, from the mode bits and the `system.posix_acl_access` ACL, with group 0 treated as
//! root-only only when no non-root user is a member.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The most symbolic links followed while resolving one path (Linux allows 40).
const MAX_LINKS: usize = 16;
/// Upper bound on `/etc/passwd` and `/etc/group`, read to resolve names and group members.
const MAX_ACCOUNTS_FILE: u64 = 4 << 20;

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Directory,
    Socket,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Other,
}

impl Kind {
    fn from_mode(m: u32) -> Kind {
        match m & libc::S_IFMT {
            libc::S_IFREG => Kind::Regular,
            libc::S_IFDIR => Kind::Directory,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFCHR => Kind::CharDevice,
            libc::S_IFBLK => Kind::BlockDevice,
            _ => Kind::Other,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Regular => "a regular file",
            Kind::Directory => "a directory",
            Kind::Socket => "a unix socket",
            Kind::Symlink => "a symbolic link",
            Kind::Fifo => "a FIFO (named pipe)",
            Kind::CharDevice => "a character device",
            Kind::BlockDevice => "a block device",
            Kind::Other => "an unknown kind of file",
        })
    }
}

/// One POSIX ACL entry, as the kernel stores it in `system.posix_acl_access`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclEntry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

pub const ACL_USER_OBJ: u16 = 0x01;
pub const ACL_USER: u16 = 0x02;
pub const ACL_GROUP_OBJ: u16 = 0x04;
pub const ACL_GROUP: u16 = 0x08;
pub const ACL_MASK: u16 = 0x10;
pub const ACL_OTHER: u16 = 0x20;

/// Parses the binary `system.posix_acl_access` value: a little-endian u32 version (2), then
/// entries of {tag u16, perm u16, id u32} (the layout of linux/posix_acl_xattr.h). `None` when
/// the value is malformed.
pub fn parse_acl(b: &[u8]) -> Option<Vec<AclEntry>> {
    let (head, rest) = b.split_at_checked(4)?;
    if u32::from_le_bytes(head.try_into().ok()?) != 2 || rest.len() % 8 != 0 {
        return None;
    }
    Some(
        rest.chunks_exact(8)
            .map(|c| AclEntry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]) & 7,
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

/// What `fstat` (and the ACL) said about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Hard links to the inode (`st_nlink`).
    pub nlink: u64,
    /// The access ACL, when the path has one beyond its mode bits.
    pub acl: Option<Vec<AclEntry>>,
}

/// A principal other than root that may hold a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Who {
    /// Every user (the "other" class).
    Others,
    User(u32),
    /// Any member of the group.
    Group(u32),
}

impl Meta {
    /// The rwx bits (0..=7) that `who` gets on this path, following the kernel's POSIX ACL
    /// access check (fs/posix_acl.c `posix_acl_permission`): owner entry, named user entry
    /// (masked), then the matching group entries (masked; no fall-through to "other" when a
    /// group entry matches), then "other". A user's own group memberships are not expanded here:
    /// they are covered by evaluating [`Who::Group`] for each group.
    pub fn perms(&self, who: Who) -> u32 {
        let m = self.mode;
        let Some(acl) = &self.acl else {
            return match who {
                Who::User(u) if u == self.uid => (m >> 6) & 7,
                Who::Group(g) if g == self.gid => (m >> 3) & 7,
                _ => m & 7,
            };
        };
        let find = |tag: u16, id: Option<u32>| {
            acl.iter()
                .find(|e| e.tag == tag && id.is_none_or(|i| e.id == i))
                .map(|e| u32::from(e.perm))
        };
        let mask = find(ACL_MASK, None).unwrap_or(7);
        let other = find(ACL_OTHER, None).unwrap_or(m & 7);
        match who {
            Who::Others => other,
            Who::User(u) if u == self.uid => find(ACL_USER_OBJ, None).unwrap_or((m >> 6) & 7),
            Who::User(u) => find(ACL_USER, Some(u)).map_or(other, |p| p & mask),
            Who::Group(g) => {
                let obj = (g == self.gid).then(|| find(ACL_GROUP_OBJ, None)).flatten();
                match (obj, find(ACL_GROUP, Some(g))) {
                    (None, None) => other,
                    (a, b) => (a.unwrap_or(0) | b.unwrap_or(0)) & mask,
                }
            }
        }
    }

    /// Every principal (other than root) named by this path's owner, group or ACL.
    fn principals(&self, out: &mut Vec<Who>) {
        out.push(Who::User(self.uid));
        out.push(Who::Group(self.gid));
        for e in self.acl.iter().flatten() {
            match e.tag {
                ACL_USER => out.push(Who::User(e.id)),
                ACL_GROUP => out.push(Who::Group(e.id)),
                _ => {}
            }
        }
    }
}

/// One directory on the way to a path, as it was when the walk passed through it.
#[derive(Debug, Clone)]
pub struct ChainDir {
    pub path: PathBuf,
    pub meta: Meta,
    /// Owner of the entry the walk took next from this directory, when only its owner (or root)
    /// can have put it there; `None` when unknown, or when it is a non-directory with more than
    /// one hard link: `link(2)` needs only write access to this directory (where
    /// `fs.protected_hardlinks` is off, or the file is readable and writable by the linker), so
    /// a root-owned inode under a second name may be someone else's doing.
    pub next_owner: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{path} is absent")]
    Absent { path: PathBuf },
    #[error("{path} is a symbolic link owned by uid {uid} (or in a directory a non-root user controls): psk-guard does not follow it")]
    UntrustedLink { path: PathBuf, uid: u32 },
    #[error("{path} is {kind}, not a directory")]
    NotADirectory { path: PathBuf, kind: Kind },
    #[error("{path}: more than {MAX_LINKS} symbolic links")]
    TooManyLinks { path: PathBuf },
    #[error("{path} is not {want}: it is {found}")]
    WrongType {
        path: PathBuf,
        want: Kind,
        found: Kind,
    },
    #[error("{path} is larger than {max} bytes: not read")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{path}: /proc is not mounted here, so it cannot be inspected (psk-guard reaches opened files through /proc/self/fd; mount proc, as every container runtime does)")]
    NoProc { path: PathBuf },
    #[error("{path} holds more than {max} entries: the rest were not looked at")]
    TooManyEntries { path: PathBuf, max: usize },
    #[error("{path} has {nlink} hard links: another name of the same file may lie anywhere on this file system (a link planted to /etc/shadow or a setuid binary), so psk-guard does not change it; remove the extra link")]
    HardLinked { path: PathBuf, nlink: u64 },
    #[error("{path}: mode {to:04o} would add a permission bit to {from:04o} (the file changed since it was planned); not changed")]
    WouldAddBits { path: PathBuf, from: u32, to: u32 },
    #[error(
        "{path} is owned by uid {uid}, not root: not the server's (ovsdb-server runs as root)"
    )]
    NotRootOwned { path: PathBuf, uid: u32 },
    #[error("{dir} is {why}: {path} below it is not trusted (that user could have put it there)")]
    UntrustedChain {
        path: PathBuf,
        dir: PathBuf,
        why: String,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FsError {
    pub fn is_absent(&self) -> bool {
        matches!(self, FsError::Absent { .. })
    }
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, FsError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied)
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FsError {
    let path = path.to_owned();
    move |source| FsError::Io { op, path, source }
}

/// Like [`io`] for calls made through `/proc/self/fd/N`: a missing `/proc` (a bare chroot) is
/// said as such instead of as a confusing "No such file or directory" about the node path.
fn io_proc(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FsError {
    let path = path.to_owned();
    move |source| {
        if source.raw_os_error() == Some(libc::ENOENT) && !proc_mounted() {
            FsError::NoProc { path }
        } else {
            FsError::Io { op, path, source }
        }
    }
}

fn proc_mounted() -> bool {
    Path::new("/proc/self/fd").is_dir()
}

fn cstr(s: &OsStr) -> std::io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

fn openat(dir: RawFd, name: &OsStr, flags: i32) -> std::io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: `c` is a valid NUL-terminated string; the result is checked before use.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn stat_raw(fd: RawFd, name: Option<&OsStr>) -> std::io::Result<libc::stat> {
    let c = cstr(name.unwrap_or(OsStr::new("")))?;
    let flags = if name.is_some() {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        libc::AT_EMPTY_PATH
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid string and out-pointer; the struct is only read when the call succeeded.
    let r = unsafe { libc::fstatat(fd, c.as_ptr(), st.as_mut_ptr(), flags) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fstatat succeeded and filled the struct.
    Ok(unsafe { st.assume_init() })
}

fn proc_fd(fd: RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

/// The access ACL of what `fd` (an `O_PATH` descriptor) refers to. `fgetxattr` does not take
/// `O_PATH` descriptors, so the xattr is read through `/proc/self/fd/N`, which names exactly that
/// inode (it cannot be redirected by a rename). No ACL, or a file system without them: `None`.
/// Without `/proc` the ACL cannot be read at all, which is an error (an ACL may grant access).
fn read_acl(fd: RawFd, path: &Path) -> Result<Option<Vec<AclEntry>>, FsError> {
    let Ok(p) = CString::new(proc_fd(fd).as_os_str().as_bytes()) else {
        return Ok(None);
    };
    let name = c"system.posix_acl_access";
    let mut buf = [0u8; 4 + 8 * 64];
    // SAFETY: valid strings and a buffer of the length passed.
    let n = unsafe {
        libc::getxattr(
            p.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT)
        && !proc_mounted()
    {
        return Err(FsError::NoProc {
            path: path.to_owned(),
        });
    }
    if n <= 0 {
        return Ok(None);
    }
    Ok(parse_acl(&buf[..n as usize]))
}

fn meta_of(fd: RawFd, path: &Path) -> Result<Meta, FsError> {
    let st = stat_raw(fd, None).map_err(io("stat", path))?;
    let kind = Kind::from_mode(st.st_mode);
    Ok(Meta {
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        nlink: st.st_nlink as u64,
        acl: if kind == Kind::Symlink {
            None
        } else {
            read_acl(fd, path)?
        },
    })
}

/// Who other than root may write in the directory, as far as its mode and ACL say.
fn writers(dir: &Meta, accounts: &Accounts) -> Vec<Who> {
    let mut cands = vec![Who::Others];
    dir.principals(&mut cands);
    cands.sort();
    cands.dedup();
    cands
        .into_iter()
        .filter(|w| accounts.is_non_root(*w) && dir.perms(*w) & 0o2 != 0)
        .collect()
}

/// The owner that counts for the sticky-directory rule ([`control`]): a directory's, or a
/// singly-linked entry's; `None` for a non-directory with more than one hard link (see
/// [`ChainDir::next_owner`]).
fn pinned_owner(uid: u32, kind: Kind, nlink: u64) -> Option<u32> {
    (kind == Kind::Directory || nlink <= 1).then_some(uid)
}

/// Why a non-root user controls the directory (owns it or may replace its entries), if one does.
/// A root-owned directory with the sticky bit (`/tmp`) is root-controlled for entries root owns:
/// others may create names in it but not rename or remove root's entries.
pub fn control(dir: &ChainDir, accounts: &Accounts) -> Option<String> {
    if dir.meta.uid != 0 {
        return Some(format!(
            "owned by {}",
            accounts.describe(Who::User(dir.meta.uid))
        ));
    }
    if dir.meta.mode & 0o1000 != 0 && dir.next_owner == Some(0) {
        return None;
    }
    let w = writers(&dir.meta, accounts);
    (!w.is_empty()).then(|| format!("writable by {}", accounts.describe_all(&w)))
}

/// An open directory and the chain that led to it (the directory itself last).
struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    chain: Vec<ChainDir>,
}

impl Dir {
    fn root() -> Result<Dir, FsError> {
        let path = PathBuf::from("/");
        let fd = openat(
            libc::AT_FDCWD,
            OsStr::new("/"),
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .map_err(io("open", &path))?;
        let meta = meta_of(fd.as_raw_fd(), &path)?;
        Ok(Dir {
            fd,
            chain: vec![ChainDir {
                path: path.clone(),
                meta,
                next_owner: None,
            }],
            path,
        })
    }

    /// Steps into `name` (a directory entry, never followed if it is a link).
    fn step(&mut self, name: &OsStr) -> Result<(), FsError> {
        let path = self.path.join(name);
        let fd = openat(
            self.fd.as_raw_fd(),
            name,
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY,
        )
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => FsError::Absent { path: path.clone() },
            _ => FsError::Io {
                op: "open",
                path: path.clone(),
                source: e,
            },
        })?;
        let meta = meta_of(fd.as_raw_fd(), &path)?;
        if let Some(last) = self.chain.last_mut() {
            last.next_owner = Some(meta.uid);
        }
        self.chain.push(ChainDir {
            path: path.clone(),
            meta,
            next_owner: None,
        });
        self.fd = fd;
        self.path = path;
        Ok(())
    }
}

fn absolute(path: &Path) -> Result<PathBuf, FsError> {
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    let cwd = std::env::current_dir().map_err(io("getcwd for", path))?;
    Ok(cwd.join(path))
}

/// Walks to the directory `path`, following only trusted intermediate links (see the module
/// documentation).
fn walk_dir(path: &Path, accounts: &Accounts) -> Result<Dir, FsError> {
    let mut todo: Vec<OsString> = absolute(path)?
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    let mut dir = Dir::root()?;
    let mut links = 0;
    while let Some(name) = todo.pop() {
        let here = dir.path.join(&name);
        let st = match stat_raw(dir.fd.as_raw_fd(), Some(&name)) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(FsError::Absent { path: here })
            }
            Err(e) => return Err(io("stat", &here)(e)),
            Ok(st) => st,
        };
        match Kind::from_mode(st.st_mode) {
            Kind::Directory => dir.step(&name)?,
            Kind::Symlink => {
                let mut parent = dir.chain.last().cloned().expect("the chain starts at /");
                parent.next_owner = pinned_owner(st.st_uid, Kind::Symlink, st.st_nlink as u64);
                if st.st_uid != 0 || control(&parent, accounts).is_some() {
                    return Err(FsError::UntrustedLink {
                        path: here,
                        uid: st.st_uid,
                    });
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(FsError::TooManyLinks { path: here });
                }
                let target = readlinkat(dir.fd.as_raw_fd(), &name, &here)?;
                if target.is_absolute() {
                    let chain = std::mem::take(&mut dir.chain);
                    dir = Dir::root()?;
                    dir.chain.splice(0..0, chain);
                }
                todo.extend(target.components().rev().filter_map(|c| match c {
                    Component::Normal(n) => Some(n.to_owned()),
                    Component::ParentDir => Some(OsString::from("..")),
                    _ => None,
                }));
            }
            kind => return Err(FsError::NotADirectory { path: here, kind }),
        }
    }
    Ok(dir)
}

fn readlinkat(dir: RawFd, name: &OsStr, path: &Path) -> Result<PathBuf, FsError> {
    let c = cstr(name).map_err(io("readlink", path))?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: valid string and a buffer of the length passed.
    let n = unsafe { libc::readlinkat(dir, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io("readlink", path)(std::io::Error::last_os_error()));
    }
    buf.truncate(n as usize);
    use std::os::unix::ffi::OsStringExt;
    Ok(PathBuf::from(OsString::from_vec(buf)))
}

/// An opened node path: an `O_PATH` descriptor on the path itself (never followed), what it is,
/// and the directories that led to it.
#[derive(Debug)]
pub struct Entry {
    pub path: PathBuf,
    pub meta: Meta,
    pub chain: Vec<ChainDir>,
    fd: OwnedFd,
}

/// Opens `path` without following a link as its last component (see the module documentation).
pub fn open(path: &Path, accounts: &Accounts) -> Result<Entry, FsError> {
    let abs = absolute(path)?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        let dir = walk_dir(&abs, accounts)?;
        let mut chain = dir.chain;
        let last = chain.pop().expect("the chain starts at /");
        return Ok(Entry {
            path: path.to_owned(),
            meta: last.meta,
            chain,
            fd: dir.fd,
        });
    };
    let dir = walk_dir(parent, accounts)?;
    dir.child(path, name)
}

impl Dir {
    fn child(self, path: &Path, name: &OsStr) -> Result<Entry, FsError> {
        let fd = openat(self.fd.as_raw_fd(), name, libc::O_PATH | libc::O_NOFOLLOW).map_err(
            |e| match e.raw_os_error() {
                Some(libc::ENOENT) => FsError::Absent {
                    path: path.to_owned(),
                },
                _ => io("open", path)(e),
            },
        )?;
        let meta = meta_of(fd.as_raw_fd(), path)?;
        let mut chain = self.chain;
        if let Some(last) = chain.last_mut() {
            last.next_owner = pinned_owner(meta.uid, meta.kind, meta.nlink);
        }
        Ok(Entry {
            path: path.to_owned(),
            meta,
            chain,
            fd,
        })
    }
}

impl Entry {
    /// The first directory on the chain (or this path itself, when it is a directory) that a
    /// non-root user controls, and how.
    pub fn untrusted(&self, accounts: &Accounts) -> Option<(PathBuf, String)> {
        // What the directory itself holds is not known here: a sticky directory others may
        // write in counts as theirs (they may add entries to it).
        let me = (self.meta.kind == Kind::Directory).then(|| ChainDir {
            path: self.path.clone(),
            meta: self.meta.clone(),
            next_owner: None,
        });
        self.chain
            .iter()
            .chain(me.iter())
            .find_map(|d| control(d, accounts).map(|why| (d.path.clone(), why)))
    }

    pub fn expect(&self, want: Kind) -> Result<(), FsError> {
        if self.meta.kind != want {
            return Err(FsError::WrongType {
                path: self.path.clone(),
                want,
                found: self.meta.kind,
            });
        }
        Ok(())
    }

    /// `/proc/self/fd/N` for this descriptor: names exactly the inode that was opened (used to
    /// `connect` to a verified socket and to reopen a verified file).
    pub fn fd_path(&self) -> PathBuf {
        proc_fd(self.fd.as_raw_fd())
    }

    /// A readable descriptor on the same inode (regular files only), opened non-blocking.
    pub fn reopen_read(&self) -> Result<File, FsError> {
        self.expect(Kind::Regular)?;
        let fd = openat(
            libc::AT_FDCWD,
            self.fd_path().as_os_str(),
            libc::O_RDONLY | libc::O_NONBLOCK,
        )
        .map_err(io_proc("open", &self.path))?;
        Ok(File::from(fd))
    }

    /// Reads the whole regular file, refusing one larger than `max` bytes.
    pub fn read_bounded(&self, max: u64) -> Result<Vec<u8>, FsError> {
        if self.meta.size > max {
            return Err(FsError::TooLarge {
                path: self.path.clone(),
                max,
            });
        }
        read_bounded(self.reopen_read()?, max, &self.path)
    }

    /// Names in this directory.
    pub fn list(&self) -> Result<Vec<OsString>, FsError> {
        self.expect(Kind::Directory)?;
        let rd = std::fs::read_dir(self.fd_path()).map_err(io_proc("list", &self.path))?;
        rd.map(|e| e.map(|e| e.file_name()).map_err(io("list", &self.path)))
            .collect()
    }

    /// At most `max` names in this directory (in the order the kernel lists them), and whether
    /// there were more: a directory of millions of entries costs no more than `max`.
    pub fn list_bounded(&self, max: usize) -> Result<(Vec<OsString>, bool), FsError> {
        self.expect(Kind::Directory)?;
        let mut rd = std::fs::read_dir(self.fd_path()).map_err(io_proc("list", &self.path))?;
        let names = rd
            .by_ref()
            .take(max)
            .map(|e| e.map(|e| e.file_name()).map_err(io("list", &self.path)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((names, rd.next().is_some()))
    }

    /// The text of this symbolic link (read through the descriptor, never followed).
    pub fn link_target(&self) -> Result<PathBuf, FsError> {
        self.expect(Kind::Symlink)?;
        readlinkat(self.fd.as_raw_fd(), OsStr::new(""), &self.path)
    }

    /// Opens `name` inside this directory (not followed), extending the chain.
    pub fn child(&self, name: &OsStr) -> Result<Entry, FsError> {
        self.expect(Kind::Directory)?;
        let fd = openat(
            self.fd.as_raw_fd(),
            OsStr::new("."),
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .map_err(io("open", &self.path))?;
        let mut chain = self.chain.clone();
        chain.push(ChainDir {
            path: self.path.clone(),
            meta: self.meta.clone(),
            next_owner: None,
        });
        let dir = Dir {
            fd,
            path: self.path.clone(),
            chain,
        };
        dir.child(&self.path.join(name), name)
    }

    /// Sets the permission bits of exactly this inode. Refuses links, FIFOs and devices, a file
    /// or socket with more than one hard link (its other name may be anything), and any `mode`
    /// that would add a bit to the current one (an error, never a panic). `fchmod` does not take `O_PATH` descriptors (and a
    /// socket cannot be opened otherwise), so the change goes through `/proc/self/fd/N`, which
    /// resolves to the opened inode and cannot be redirected by a rename or a new link.
    pub fn chmod(&self, mode: u32) -> Result<(), FsError> {
        if !matches!(
            self.meta.kind,
            Kind::Regular | Kind::Directory | Kind::Socket
        ) {
            return Err(FsError::WrongType {
                path: self.path.clone(),
                want: Kind::Regular,
                found: self.meta.kind,
            });
        }
        let now = meta_of(self.fd.as_raw_fd(), &self.path)?;
        if now.kind != Kind::Directory && now.nlink > 1 {
            return Err(FsError::HardLinked {
                path: self.path.clone(),
                nlink: now.nlink,
            });
        }
        if mode & !now.mode != 0 {
            return Err(FsError::WouldAddBits {
                path: self.path.clone(),
                from: now.mode,
                to: mode,
            });
        }
        let p = CString::new(self.fd_path().as_os_str().as_bytes())
            .map_err(|_| io("chmod", &self.path)(std::io::ErrorKind::InvalidInput.into()))?;
        // SAFETY: valid NUL-terminated string.
        if unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) } < 0 {
            return Err(io_proc("chmod", &self.path)(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Fresh facts about the opened inode.
    pub fn restat(&self) -> Result<Meta, FsError> {
        meta_of(self.fd.as_raw_fd(), &self.path)
    }

    /// Who other than root holds `want` (0o4 read, 0o2 write/connect) on this path and may
    /// traverse every directory above it.
    pub fn reachers(&self, want: u32, accounts: &Accounts) -> Vec<Who> {
        let mut cands = vec![Who::Others];
        self.meta.principals(&mut cands);
        for d in &self.chain {
            d.meta.principals(&mut cands);
        }
        cands.sort();
        cands.dedup();
        cands
            .into_iter()
            .filter(|w| accounts.is_non_root(*w))
            .filter(|w| self.meta.perms(*w) & want != 0)
            .filter(|w| self.chain.iter().all(|d| d.meta.perms(*w) & 0o1 != 0))
            .collect()
    }
}

/// Opens a server's unix socket (ovsdb-server's `db.sock` or its unixctl `.ctl`) and checks it is
/// what a root server made: a socket, owned by root, reached without links under root-controlled
/// directories. The caller connects through the returned descriptor ([`Entry::fd_path`]), so the
/// name cannot be swapped after this check, and then verifies who listens
/// ([`crate::ovsdb::client::Client::connect_entry`] checks `SO_PEERCRED`).
pub fn open_server_socket(path: &Path, accounts: &Accounts) -> Result<Entry, FsError> {
    let e = open(path, accounts)?;
    e.expect(Kind::Socket)?;
    if e.meta.uid != 0 {
        return Err(FsError::NotRootOwned {
            path: path.to_owned(),
            uid: e.meta.uid,
        });
    }
    if let Some((dir, why)) = e.untrusted(accounts) {
        return Err(FsError::UntrustedChain {
            path: path.to_owned(),
            dir,
            why,
        });
    }
    Ok(e)
}

/// Reads at most `max` bytes; more is an error, never a silent truncation.
pub fn read_bounded(f: impl Read, max: u64, path: &Path) -> Result<Vec<u8>, FsError> {
    let mut out = vec![];
    f.take(max + 1)
        .read_to_end(&mut out)
        .map_err(io("read", path))?;
    if out.len() as u64 > max {
        return Err(FsError::TooLarge {
            path: path.to_owned(),
            max,
        });
    }
    Ok(out)
}

/// Opens a file the user named (for `scan-db`): the last component is not followed, and only a
/// regular file is accepted, so a FIFO, device or directory is a clear error, never a hang.
pub fn open_user_file(path: &Path) -> Result<(File, Meta), FsError> {
    // The same walk as every node path: from /, no link a non-root user controls on the way, the
    // last component never followed; then only a regular file is reopened for reading.
    let e = open(path, &Accounts::load())?;
    let f = e.reopen_read()?;
    Ok((f, e.meta))
}

/// User and group names, and which non-root users are in which group, from `/etc/passwd` and
/// `/etc/group` (read bounded, through [`open`]). Missing files leave ids unnamed.
#[derive(Debug, Default, Clone)]
pub struct Accounts {
    users: Vec<(u32, String, u32)>,
    groups: Vec<(u32, String, Vec<String>)>,
}

impl Accounts {
    /// The accounts of `/etc/passwd` and `/etc/group`, read once per process (every check asks).
    pub fn load() -> Accounts {
        static LOADED: std::sync::OnceLock<Accounts> = std::sync::OnceLock::new();
        LOADED.get_or_init(Accounts::read).clone()
    }

    fn read() -> Accounts {
        let read = |p: &str| {
            let e = open(Path::new(p), &Accounts::default()).ok()?;
            let b = e.read_bounded(MAX_ACCOUNTS_FILE).ok()?;
            Some(String::from_utf8_lossy(&b).into_owned())
        };
        Accounts::parse(
            read("/etc/passwd").as_deref().unwrap_or(""),
            read("/etc/group").as_deref().unwrap_or(""),
        )
    }

    pub fn parse(passwd: &str, group: &str) -> Accounts {
        let users = passwd
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                Some((
                    f.get(2)?.parse().ok()?,
                    f[0].to_owned(),
                    f.get(3)?.parse().ok()?,
                ))
            })
            .collect();
        let groups = group
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                let members = f
                    .get(3)?
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect();
                Some((f.get(2)?.parse().ok()?, f[0].to_owned(), members))
            })
            .collect();
        Accounts { users, groups }
    }

    fn user_name(&self, uid: u32) -> Option<&str> {
        self.users.iter().find(|u| u.0 == uid).map(|u| u.1.as_str())
    }

    /// Members of `gid` (listed in /etc/group or with it as their primary group) who are not
    /// uid 0.
    pub fn non_root_members(&self, gid: u32) -> Vec<String> {
        let uid_of = |n: &str| self.users.iter().find(|u| u.1 == n).map(|u| u.0);
        let mut out: Vec<String> = self
            .groups
            .iter()
            .filter(|g| g.0 == gid)
            .flat_map(|g| g.2.iter())
            .filter(|m| uid_of(m) != Some(0))
            .cloned()
            .chain(
                self.users
                    .iter()
                    .filter(|u| u.2 == gid && u.0 != 0)
                    .map(|u| u.1.clone()),
            )
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Is this principal someone other than root? Group 0 counts only when a non-root user is
    /// a member.
    pub fn is_non_root(&self, w: Who) -> bool {
        match w {
            Who::Others => true,
            Who::User(u) => u != 0,
            Who::Group(0) => !self.non_root_members(0).is_empty(),
            Who::Group(_) => true,
        }
    }

    pub fn describe(&self, w: Who) -> String {
        match w {
            Who::Others => "all users".into(),
            Who::User(u) => match self.user_name(u) {
                Some(n) => format!("user {n} (uid {u})"),
                None => format!("uid {u}"),
            },
            Who::Group(g) => {
                let name = self.groups.iter().find(|x| x.0 == g).map(|x| x.1.as_str());
                let members = self.non_root_members(g);
                let mut s = match name {
                    Some(n) => format!("group {n} (gid {g})"),
                    None => format!("gid {g}"),
                };
                if !members.is_empty() {
                    s.push_str(&format!(": members {}", members.join(", ")));
                }
                s
            }
        }
    }

    pub fn describe_all(&self, ws: &[Who]) -> String {
        ws.iter()
            .map(|w| self.describe(*w))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn acl_parse_and_mask() {
        let mut b = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (ACL_USER_OBJ, 6u16, 0u32),
            (ACL_USER, 4, 65534),
            (ACL_GROUP_OBJ, 4, 0),
            (ACL_MASK, 4, 0),
            (ACL_OTHER, 0, 0),
        ] {
            b.extend(tag.to_le_bytes());
            b.extend(perm.to_le_bytes());
            b.extend(id.to_le_bytes());
        }
        let acl = parse_acl(&b).unwrap();
        let m = Meta {
            kind: Kind::Regular,
            mode: 0o640,
            uid: 0,
            gid: 0,
            size: 0,
            nlink: 1,
            acl: Some(acl),
        };
        assert_eq!(m.perms(Who::User(65534)), 4);
        assert_eq!(m.perms(Who::User(1000)), 0);
        assert_eq!(m.perms(Who::Others), 0);
        assert!(parse_acl(&b[..7]).is_none());
        assert!(parse_acl(&[1, 0, 0, 0]).is_none());
    }

    #[test]
    fn group_zero_is_root_only_without_non_root_members() {
        let a = Accounts::parse("root:x:0:0::/:\nop:x:1000:1000::/:\n", "root:x:0:\n");
        assert!(!a.is_non_root(Who::Group(0)));
        let a = Accounts::parse("root:x:0:0::/:\nop:x:1000:1000::/:\n", "root:x:0:op\n");
        assert!(a.is_non_root(Who::Group(0)));
        assert!(a.describe(Who::Group(0)).contains("op"));
    }

    /// A scratch directory under /tmp (root-owned: the tests run as root, as scripts/test does).
    fn scratch() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("pskg-nodefs")
            .tempdir_in("/tmp")
            .unwrap()
    }

    fn set_mode(p: &Path, m: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn chmod_refuses_a_hard_linked_file_and_never_adds_a_bit() {
        let d = scratch();
        let (f, other) = (d.path().join("f"), d.path().join("other-name"));
        std::fs::write(&f, b"").unwrap();
        set_mode(&f, 0o600);
        let a = Accounts::default();
        let e = open(&f, &a).unwrap();
        // Adding a bit (the file changed between plan and act): an error, not a panic.
        assert!(matches!(e.chmod(0o644), Err(FsError::WouldAddBits { .. })));
        assert!(e.chmod(0o400).is_ok());
        std::fs::hard_link(&f, &other).unwrap();
        let e = open(&f, &a).unwrap();
        assert_eq!(e.meta.nlink, 2);
        let err = e.chmod(0).unwrap_err();
        assert!(matches!(err, FsError::HardLinked { nlink: 2, .. }), "{err}");
        assert_eq!(std::fs::metadata(&other).unwrap().mode() & 0o7777, 0o400);
    }

    #[test]
    fn sticky_directory_is_root_controlled_only_for_singly_linked_root_entries() {
        let d = scratch();
        let sticky = d.path().join("sticky");
        std::fs::create_dir(&sticky).unwrap();
        set_mode(&sticky, 0o1777);
        let f = sticky.join("f");
        std::fs::write(&f, b"").unwrap();
        let a = Accounts::default();
        assert!(
            open(&f, &a).unwrap().untrusted(&a).is_none(),
            "root's own entry"
        );
        // A second name: could be a link someone planted to a root-owned file.
        let elsewhere = d.path().join("elsewhere");
        std::fs::hard_link(&f, &elsewhere).unwrap();
        let (dir, why) = open(&f, &a).unwrap().untrusted(&a).expect("not trusted");
        assert_eq!(dir, sticky);
        assert!(why.contains("writable by all users"), "{why}");
        // Someone else's entry in it.
        std::fs::remove_file(&elsewhere).unwrap();
        std::os::unix::fs::lchown(&f, Some(65534), None).unwrap();
        assert!(open(&f, &a).unwrap().untrusted(&a).is_some());
        // The sticky directory itself, asked about as a directory: others may add entries.
        assert!(open(&sticky, &a).unwrap().untrusted(&a).is_some());
    }
}
