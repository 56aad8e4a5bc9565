//! Snapshots as filesystem layers: the session's upper directory is copied into the store as a
//! new lower layer, with owners shifted from the session's host id range back to
//! image-relative ids (so any later sandbox, with any range, sees them through its idmap).
//! overlayfs markers (whiteouts = 0/0 character devices, `user.overlay.*` xattrs) are kept.
//!
//! # The store on disk
//! `<state_dir>/snapshots/<name>/` holds `layer/` (the frozen upper) and `manifest.json`
//! ([`Manifest`]: the layers it is built on, newest first, and the base image). The store is
//! the only registry: a provider keeps no snapshot list in memory, so a provider in a later
//! ignis process (same `state_dir`) restores any snapshot it finds there. A snapshot appears
//! atomically: it is built in a hidden `.<name>.<owner>.tmp` dir and renamed into place, and a
//! rename onto an existing name fails, so two writers of one name never mix.
//!
//! # Who may delete a layer
//! Every sandbox built on a layer holds a shared `flock` on that layer's manifest for its
//! whole life (released by the kernel when its ignis process dies). [`remove`] takes an
//! exclusive lock without waiting, so it refuses a layer some sandbox (of any ignis process)
//! still mounts, and it refuses a layer that another snapshot lists as a parent, naming those
//! dependants: remove the newest snapshots first. Hidden `.tmp`/`.removing` dirs whose owner
//! process is dead are swept by [`sweep`].

use super::{Inner, SandboxError};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Version of the manifest format; a manifest of another version is refused, not guessed at.
pub(super) const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";

/// What a snapshot is built on, stored beside its layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// Snapshot layers below this one, newest first (names in the same store).
    pub parents: Vec<String>,
    /// The base image the chain sits on; a restore onto another image is refused.
    pub image: PathBuf,
}

/// A restorable chain: layer names newest first (the snapshot itself first) and the shared
/// locks that keep every one of them from being removed while a sandbox uses them.
#[derive(Debug)]
pub(super) struct Chain {
    pub layers: Vec<String>,
    pub locks: Vec<fs::File>,
}

/// Snapshot names become directory names: keep them boring.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn check_name(name: &str) -> Result<(), SandboxError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(SandboxError::Snapshot(format!(
            "invalid snapshot name {name:?} (use letters, digits, '-', '_', '.'; not starting with '.')"
        )))
    }
}

/// `<pid>-<start time>` of this process: hidden work dirs carry it so [`sweep`] can tell a
/// crashed writer's leftovers from a live one's.
pub(super) fn owner_tag() -> String {
    let pid = std::process::id();
    format!(
        "{pid}-{}",
        crate::host::process_start_time(pid).unwrap_or(0)
    )
}

/// Parses an owner tag written by [`owner_tag`].
fn parse_owner(tag: &str) -> Option<(u32, u64)> {
    let (pid, start) = tag.split_once('-')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// Writes the manifest of snapshot `name` (the last step of a freeze).
pub(super) fn write_manifest(store: &Path, name: &str, text: &[u8]) -> io::Result<()> {
    fs::write(store.join(name).join(MANIFEST), text)
}

/// A shared lock on layer `name` for a sandbox that now runs on it.
pub(super) fn lock_layer(store: &Path, name: &str) -> Result<fs::File, SandboxError> {
    lock_shared(store, name)
}

/// Takes snapshot `name` of live sandbox `id`: frozen in O(1) when the sandbox is idle (see
/// the `freeze` module), else its upper layer is copied into the store.
pub(super) fn take(inner: &Inner, id: &str, name: &str) -> Result<crate::SnapshotId, SandboxError> {
    check_name(name)?;
    let store = inner.config.state_dir.join("snapshots");
    let dest = store.join(name);
    if fs::symlink_metadata(&dest).is_ok() {
        return Err(SandboxError::Snapshot(format!(
            "snapshot {name} already exists"
        )));
    }
    if inner
        .live
        .lock()
        .map_err(|_| SandboxError::Snapshot("state lock poisoned".into()))?
        .get(id)
        .is_some_and(|l| l.broken)
    {
        return Err(SandboxError::Snapshot(format!(
            "vm {id}: an earlier snapshot failed half-way, so its layers are not all in the store"
        )));
    }
    if let Some(done) = super::freeze::try_freeze(inner, id, name, &store)? {
        return Ok(done);
    }
    let (src, shift, parents, image) = {
        let live = inner
            .live
            .lock()
            .map_err(|_| SandboxError::Snapshot("state lock poisoned".into()))?;
        let l = live
            .get(id)
            .ok_or_else(|| SandboxError::Snapshot(format!("unknown vm {id}")))?;
        // The host reaches the upper through the fd of its tmpfs (root mode) or of the child's
        // private scratch tmpfs; a dup keeps it open while we copy without holding the lock.
        let keep = l
            .upper_mount
            .as_ref()
            .unwrap_or(&l.scratch)
            .try_clone()
            .map_err(|e| SandboxError::SnapshotCopy {
                path: PathBuf::from("scratch"),
                source: e,
            })?;
        let src = PathBuf::from(format!("/proc/self/fd/{}/upper", keep.as_raw_fd()));
        // The sandbox holds shared locks on its layers, so none of these parents can be
        // removed while we copy.
        ((src, keep), l.uid_base, l.layers.clone(), l.image.clone())
    };
    let image_dev = fs::metadata(&image).map(|m| m.dev()).ok();
    let store_dev = fs::metadata(&store).map(|m| m.dev()).ok();
    if image_dev.is_some() && image_dev == store_dev {
        return Err(SandboxError::Snapshot(format!(
            "snapshot store {} is on the same filesystem as image {}; overlayfs refuses \
             overlapping layers, so put state_dir on another filesystem (e.g. a tmpfs)",
            store.display(),
            image.display()
        )));
    }
    if fs::symlink_metadata(&dest).is_ok() {
        return Err(SandboxError::Snapshot(format!(
            "snapshot {name} already exists"
        )));
    }
    let tmp = store.join(format!(".{name}.{}.tmp", owner_tag()));
    let manifest = Manifest {
        format: FORMAT,
        parents,
        image,
    };
    let result = (|| {
        let copy_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SandboxError::SnapshotCopy { path, source }
        };
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp).map_err(copy_err(&tmp))?;
        copy_tree(&src.0, &tmp.join("layer"), shift)?;
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| copy_err(&tmp)(io::Error::other(e)))?;
        fs::write(tmp.join(MANIFEST), text).map_err(copy_err(&tmp.join(MANIFEST)))?;
        // rename(2) of a directory onto an existing non-empty one fails: no silent overwrite.
        fs::rename(&tmp, &dest).map_err(|e| match e.raw_os_error() {
            Some(libc::EEXIST | libc::ENOTEMPTY) => {
                SandboxError::Snapshot(format!("snapshot {name} already exists"))
            }
            _ => copy_err(&dest)(e),
        })
    })();
    match result {
        Ok(()) => Ok(crate::SnapshotId(name.to_owned())),
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Reads and checks the manifest of snapshot `name`.
fn read_manifest(store: &Path, name: &str) -> Result<Manifest, SandboxError> {
    let path = store.join(name).join(MANIFEST);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SandboxError::Snapshot(if store.join(name).is_dir() {
                format!("snapshot {name} has no {MANIFEST} (written by an older ignis?); remove it")
            } else {
                format!("unknown snapshot {name} (not in {})", store.display())
            }));
        }
        Err(e) => {
            return Err(SandboxError::Snapshot(format!(
                "reading {}: {e}",
                path.display()
            )));
        }
    };
    let m: Manifest = serde_json::from_slice(&text)
        .map_err(|e| SandboxError::Snapshot(format!("corrupt manifest {}: {e}", path.display())))?;
    if m.format != FORMAT {
        return Err(SandboxError::Snapshot(format!(
            "manifest {} has format {}, this ignis reads {FORMAT}",
            path.display(),
            m.format
        )));
    }
    if let Some(bad) = m.parents.iter().find(|p| !valid_name(p) || *p == name) {
        return Err(SandboxError::Snapshot(format!(
            "corrupt manifest {}: bad parent {bad:?}",
            path.display()
        )));
    }
    Ok(m)
}

/// Opens `name`'s manifest and takes a shared lock on it, then checks that the locked file is
/// still the one in the store (a concurrent [`remove`] renames the dir away before deleting).
fn lock_shared(store: &Path, name: &str) -> Result<fs::File, SandboxError> {
    let path = store.join(name).join(MANIFEST);
    let err = |e: io::Error| {
        if e.kind() == io::ErrorKind::NotFound {
            SandboxError::Snapshot(format!(
                "unknown snapshot {name} (not in {})",
                store.display()
            ))
        } else {
            SandboxError::Snapshot(format!("locking {}: {e}", path.display()))
        }
    };
    let f = fs::File::open(&path).map_err(err)?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockShared).map_err(|e| err(e.into()))?;
    let same = match (f.metadata(), fs::metadata(&path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    };
    if !same {
        return Err(SandboxError::Snapshot(format!(
            "snapshot {name} was removed"
        )));
    }
    Ok(f)
}

/// Resolves snapshot `name` into its layer chain for a sandbox on `image`, locking every layer
/// (shared) so none can be removed while the sandbox runs.
pub(super) fn open_chain(store: &Path, name: &str, image: &Path) -> Result<Chain, SandboxError> {
    check_name(name)?;
    // Read first for the clearest error (unknown, no manifest, corrupt), then lock; a
    // manifest never changes once written, and the lock re-checks the dir is still there.
    let m = read_manifest(store, name)?;
    let top = lock_shared(store, name)?;
    if !same_path(&m.image, image) {
        return Err(SandboxError::Snapshot(format!(
            "snapshot {name} was taken on image {}, not {}",
            m.image.display(),
            image.display()
        )));
    }
    let mut locks = vec![top];
    let mut layers = vec![name.to_owned()];
    for p in &m.parents {
        let f = lock_shared(store, p).map_err(|e| {
            SandboxError::Snapshot(format!(
                "snapshot {name} is built on {p}, which is broken: {}",
                super::chain(&e)
            ))
        })?;
        locks.push(f);
        layers.push(p.clone());
    }
    Ok(Chain { layers, locks })
}

fn same_path(a: &Path, b: &Path) -> bool {
    a == b || matches!((fs::canonicalize(a), fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// Deletes snapshot `name`: refuses while a sandbox uses it or a later snapshot is built on it.
pub(super) fn remove(store: &Path, name: &str) -> Result<(), SandboxError> {
    check_name(name)?;
    let path = store.join(name).join(MANIFEST);
    let f = match fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Surface "unknown" vs "no manifest" the same way restore does.
            read_manifest(store, name)?;
            return Err(SandboxError::Snapshot(format!("unknown snapshot {name}")));
        }
        Err(e) => {
            return Err(SandboxError::Snapshot(format!(
                "opening {}: {e}",
                path.display()
            )));
        }
    };
    // A sandbox that runs on the layer holds a shared lock for its whole life. A process this
    // ignis forks (a sandbox's child before its exec, a freeze helper) holds copies of every
    // lock fd for a few milliseconds, so a refusal is only final after a short grace period.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    loop {
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(SandboxError::Snapshot(format!(
                    "snapshot {name} is in use by a running sandbox"
                )));
            }
            Err(e) => {
                return Err(SandboxError::Snapshot(format!(
                    "locking {}: {e}",
                    path.display()
                )));
            }
        }
    }
    let dependants = dependants_of(store, name)?;
    if !dependants.is_empty() {
        return Err(SandboxError::Snapshot(format!(
            "snapshot {name} cannot be removed: {} built on it ({}); remove those first",
            if dependants.len() == 1 {
                "another snapshot is"
            } else {
                "other snapshots are"
            },
            dependants.join(", ")
        )));
    }
    let dir = store.join(name);
    if is_mount_point(store, &dir) {
        // A frozen layer is a tmpfs mounted here: detach it (its files go with it).
        rustix::mount::unmount(&dir, rustix::mount::UnmountFlags::DETACH)
            .map_err(|e| SandboxError::Snapshot(format!("unmounting snapshot {name}: {e}")))?;
        drop(f);
        return fs::remove_dir_all(&dir)
            .map_err(|e| SandboxError::Snapshot(format!("deleting {}: {e}", dir.display())));
    }
    // Rename first (atomic: the name is gone at once), then delete at leisure.
    let doomed = store.join(format!(".{name}.{}.removing", owner_tag()));
    fs::rename(store.join(name), &doomed)
        .map_err(|e| SandboxError::Snapshot(format!("removing snapshot {name}: {e}")))?;
    drop(f);
    fs::remove_dir_all(&doomed)
        .map_err(|e| SandboxError::Snapshot(format!("deleting {}: {e}", doomed.display())))
}

/// Whether `dir` (in `store`) has a filesystem of its own mounted on it (a frozen layer).
fn is_mount_point(store: &Path, dir: &Path) -> bool {
    match (fs::metadata(store), fs::metadata(dir)) {
        (Ok(s), Ok(d)) => s.dev() != d.dev(),
        _ => false,
    }
}

/// Names of the snapshots in the store whose manifest lists `name` as a parent (sorted).
fn dependants_of(store: &Path, name: &str) -> Result<Vec<String>, SandboxError> {
    let mut out = Vec::new();
    let entries = fs::read_dir(store)
        .map_err(|e| SandboxError::Snapshot(format!("listing {}: {e}", store.display())))?;
    for e in entries.flatten() {
        let other = e.file_name().to_string_lossy().into_owned();
        if other.starts_with('.') || other == name {
            continue;
        }
        match read_manifest(store, &other) {
            Ok(m) if m.parents.iter().any(|p| p == name) => out.push(other),
            Ok(_) => {}
            // A broken neighbour cannot be restored anyway: report it and go on.
            Err(err) => {
                tracing::warn!(snapshot = %other, error = %super::chain(&err), "unreadable snapshot manifest");
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Removes hidden work dirs (`.<name>.<pid>-<start>.tmp` / `.removing`) and claimed snapshot
/// dirs without a manifest (a freeze in progress, marked `.claim-<pid>-<start>`) whose owner
/// process is dead: what a crash during snapshot or remove leaves. Returns the removed paths.
pub(super) fn sweep(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(store).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.starts_with('.') {
            let dir = e.path();
            if dir.join(MANIFEST).exists() {
                continue;
            }
            let owner = fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .find_map(|c| {
                    let c = c.file_name().to_string_lossy().into_owned();
                    c.strip_prefix(".claim-").and_then(parse_owner)
                });
            let Some((pid, start)) = owner else { continue };
            if crate::host::process_running(pid, start) {
                continue;
            }
            if is_mount_point(store, &dir) {
                let _ = rustix::mount::unmount(&dir, rustix::mount::UnmountFlags::DETACH);
            }
            match fs::remove_dir_all(&dir) {
                Ok(()) => out.push(dir),
                Err(err) => {
                    tracing::warn!(path = %dir.display(), error = %err, "removing a half-made snapshot failed")
                }
            }
            continue;
        }
        let Some(rest) = n
            .strip_suffix(".tmp")
            .or_else(|| n.strip_suffix(".removing"))
            .filter(|_| n.starts_with('.'))
        else {
            continue;
        };
        let Some(owner) = rest.rsplit('.').next().and_then(parse_owner) else {
            continue;
        };
        if crate::host::process_running(owner.0, owner.1) {
            continue;
        }
        match fs::remove_dir_all(e.path()) {
            Ok(()) => out.push(e.path()),
            Err(err) => {
                tracing::warn!(path = %e.path().display(), error = %err, "removing leftover snapshot dir failed")
            }
        }
    }
    out
}

/// Maps a host id of the session back to an image-relative id.
fn unshift(id: u32, base: Option<u32>) -> u32 {
    match base {
        Some(b) if id >= b && id - b < super::ID_RANGE => id - b,
        // Unprivileged mode: ids are already the caller's own (which maps to 0 inside).
        _ => id,
    }
}

fn copy_tree(src: &Path, dst: &Path, base: Option<u32>) -> Result<(), SandboxError> {
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |e: io::Error| SandboxError::SnapshotCopy {
            path: p.clone(),
            source: e,
        }
    };
    let meta = fs::symlink_metadata(src).map_err(err(src))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        fs::create_dir(dst).map_err(err(dst))?;
        for entry in fs::read_dir(src).map_err(err(src))? {
            let entry = entry.map_err(err(src))?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()), base)?;
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(src).map_err(err(src))?;
        std::os::unix::fs::symlink(target, dst).map_err(err(dst))?;
    } else if ft.is_file() {
        fs::copy(src, dst).map_err(err(dst))?;
    } else {
        // Character device 0/0 = overlayfs whiteout; other special files are recreated too.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dst,
            rustix::fs::FileType::from_raw_mode(meta.mode()),
            rustix::fs::Mode::from_raw_mode(meta.mode() & 0o7777),
            meta.rdev(),
        )
        .map_err(|e| err(dst)(e.into()))?;
    }
    copy_xattrs(src, dst).map_err(err(dst))?;
    std::os::unix::fs::lchown(
        dst,
        Some(unshift(meta.uid(), base)),
        Some(unshift(meta.gid(), base)),
    )
    .map_err(err(dst))?;
    if !ft.is_symlink() {
        // After chown, which clears set-id bits.
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(err(dst))?;
    }
    Ok(())
}

/// Copies the `user.*` and `trusted.*` extended attributes (overlayfs' opaque/redirect markers,
/// file capabilities are `security.*` and left out).
fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(src, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        if !(name.starts_with(b"user.") || name.starts_with(b"trusted.")) {
            continue;
        }
        let name = std::ffi::OsStr::new(std::str::from_utf8(name).map_err(io::Error::other)?);
        let mut value = vec![0u8; 4096];
        let len = rustix::fs::lgetxattr(src, name, &mut value[..])?;
        rustix::fs::lsetxattr(dst, name, &value[..len], rustix::fs::XattrFlags::empty())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("base-1.2_x"));
        assert!(!valid_name(""));
        assert!(!valid_name("../x"));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("a/b"));
    }

    fn write_snapshot(store: &Path, name: &str, parents: &[&str]) {
        let dir = store.join(name);
        fs::create_dir_all(dir.join("layer")).expect("mkdir");
        let m = Manifest {
            format: FORMAT,
            parents: parents.iter().map(|p| (*p).to_owned()).collect(),
            image: "/".into(),
        };
        fs::write(dir.join(MANIFEST), serde_json::to_vec(&m).expect("json")).expect("write");
    }

    #[test]
    fn chains_come_from_manifests_and_hold_shared_locks() {
        let store = tempfile::tempdir().expect("tempdir");
        let s = store.path();
        write_snapshot(s, "a", &[]);
        write_snapshot(s, "b", &["a"]);
        let chain = open_chain(s, "b", Path::new("/")).expect("chain");
        assert_eq!(chain.layers, vec!["b".to_owned(), "a".to_owned()]);
        assert_eq!(chain.locks.len(), 2);
        // Locked by a "running sandbox": refused, and nothing is deleted.
        let err = remove(s, "b").expect_err("in use");
        assert!(err.to_string().contains("in use"), "{err}");
        drop(chain);
        let err = open_chain(s, "b", Path::new("/usr")).expect_err("other image");
        assert!(err.to_string().contains("was taken on image /"), "{err}");
        // `a` has a dependant, `b` has none.
        let err = remove(s, "a").expect_err("dependant");
        assert!(err.to_string().contains("(b)"), "{err}");
        remove(s, "b").expect("remove b");
        remove(s, "a").expect("remove a");
        assert_eq!(fs::read_dir(s).expect("ls").count(), 0, "store is empty");
        let err = remove(s, "a").expect_err("gone");
        assert!(err.to_string().contains("unknown snapshot a"), "{err}");
    }

    #[test]
    fn broken_parents_and_manifests_are_named() {
        let store = tempfile::tempdir().expect("tempdir");
        let s = store.path();
        write_snapshot(s, "orphan", &["missing-parent"]);
        let err = open_chain(s, "orphan", Path::new("/")).expect_err("missing parent");
        assert!(err.to_string().contains("built on missing-parent"), "{err}");
        fs::create_dir_all(s.join("junk")).expect("mkdir");
        fs::write(s.join("junk").join(MANIFEST), b"{not json").expect("write");
        let err = open_chain(s, "junk", Path::new("/")).expect_err("corrupt");
        assert!(err.to_string().contains("corrupt manifest"), "{err}");
        write_snapshot(s, "evil", &["../x"]);
        let err = open_chain(s, "evil", Path::new("/")).expect_err("bad parent");
        assert!(err.to_string().contains("bad parent"), "{err}");
    }

    #[test]
    fn sweep_removes_work_dirs_of_dead_owners_only() {
        let store = tempfile::tempdir().expect("tempdir");
        let s = store.path();
        let mine = s.join(format!(".snap.1.{}.tmp", owner_tag()));
        // pid 2^22+1 is above the kernel's pid_max limit: never a live process.
        let dead = s.join(".snap.1.4194305-77.tmp");
        let dead_rm = s.join(".other.4194305-77.removing");
        let named = s.join("kept-4194305-77.tmp");
        for d in [&mine, &dead, &dead_rm, &named] {
            fs::create_dir_all(d.join("layer")).expect("mkdir");
        }
        let mut swept = sweep(s);
        swept.sort();
        assert_eq!(swept, vec![dead_rm.clone(), dead.clone()]);
        assert!(mine.exists() && named.exists());
    }

    #[test]
    fn sweep_removes_half_made_freezes_of_dead_owners_only() {
        let store = tempfile::tempdir().expect("tempdir");
        let s = store.path();
        let dead = s.join("frozen-a");
        let live = s.join("frozen-b");
        let done = s.join("frozen-c");
        for d in [&dead, &live, &done] {
            fs::create_dir_all(d.join("upper")).expect("mkdir");
        }
        // pid 2^22+1 is above the kernel's pid_max limit: never a live process.
        fs::write(dead.join(".claim-4194305-77"), b"").expect("claim");
        fs::write(live.join(format!(".claim-{}", owner_tag())), b"").expect("claim");
        write_snapshot(s, "frozen-c", &[]);
        fs::write(done.join(".claim-4194305-77"), b"").expect("stale claim");
        assert_eq!(sweep(s), vec![dead.clone()]);
        assert!(!dead.exists() && live.exists() && done.exists());
    }

    #[test]
    fn ids_shift_back_into_the_image_range() {
        assert_eq!(unshift(2_000_000_000, Some(2_000_000_000)), 0);
        assert_eq!(unshift(2_000_001_000, Some(2_000_000_000)), 1000);
        assert_eq!(unshift(1000, None), 1000);
        // Out of the range stays as it is.
        assert_eq!(unshift(5, Some(2_000_000_000)), 5);
    }
}
