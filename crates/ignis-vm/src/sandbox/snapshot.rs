//! Snapshots as filesystem layers: the session's upper directory is copied into the store as a
//! new lower layer, with owners shifted from the session's host id range back to
//! image-relative ids (so any later sandbox, with any range, sees them through its idmap).
//! overlayfs markers (whiteouts = 0/0 character devices, `user.overlay.*` xattrs) are kept.

use super::{Inner, SandboxError};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Snapshot names become directory names: keep them boring.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Copies the upper layer of live sandbox `id` into the store as snapshot `name`.
pub(super) fn take(inner: &Inner, id: &str, name: &str) -> Result<crate::SnapshotId, SandboxError> {
    if !valid_name(name) {
        return Err(SandboxError::Snapshot(format!(
            "invalid snapshot name {name:?} (use letters, digits, '-', '_', '.')"
        )));
    }
    let store = inner.config.state_dir.join("snapshots");
    let dest = store.join(name);
    let (src, shift, mut layers, image) = {
        let live = inner
            .live
            .lock()
            .map_err(|_| SandboxError::Snapshot("state lock poisoned".into()))?;
        let l = live
            .get(id)
            .ok_or_else(|| SandboxError::Snapshot(format!("unknown vm {id}")))?;
        // The host reaches the child's private tmpfs through the fd it handed over; a dup
        // keeps it open while we copy without holding the lock.
        let keep = l
            .scratch
            .try_clone()
            .map_err(|e| SandboxError::SnapshotCopy {
                path: PathBuf::from("scratch"),
                source: e,
            })?;
        let src = PathBuf::from(format!("/proc/self/fd/{}/upper", keep.as_raw_fd()));
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
    {
        let mut snaps = inner
            .snapshots
            .lock()
            .map_err(|_| SandboxError::Snapshot("state lock poisoned".into()))?;
        if snaps.contains_key(name) || dest.exists() {
            return Err(SandboxError::Snapshot(format!(
                "snapshot {name} already exists"
            )));
        }
        // Reserve the name while copying.
        snaps.insert(name.to_owned(), Vec::new());
    }
    let tmp = store.join(format!(".{name}.tmp"));
    let result = (|| {
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp).map_err(|e| SandboxError::SnapshotCopy {
            path: tmp.clone(),
            source: e,
        })?;
        copy_tree(&src.0, &tmp.join("layer"), shift)?;
        fs::rename(&tmp, &dest).map_err(|e| SandboxError::SnapshotCopy {
            path: dest.clone(),
            source: e,
        })
    })();
    let mut snaps = inner
        .snapshots
        .lock()
        .map_err(|_| SandboxError::Snapshot("state lock poisoned".into()))?;
    match result {
        Ok(()) => {
            layers.insert(0, name.to_owned());
            snaps.insert(name.to_owned(), layers);
            Ok(crate::SnapshotId(name.to_owned()))
        }
        Err(e) => {
            snaps.remove(name);
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
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

    #[test]
    fn ids_shift_back_into_the_image_range() {
        assert_eq!(unshift(2_000_000_000, Some(2_000_000_000)), 0);
        assert_eq!(unshift(2_000_001_000, Some(2_000_000_000)), 1000);
        assert_eq!(unshift(1000, None), 1000);
        // Out of the range stays as it is.
        assert_eq!(unshift(5, Some(2_000_000_000)), 5);
    }
}
