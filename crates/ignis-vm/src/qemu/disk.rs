//! Root-disk layers: per-VM qcow2 overlays on the image's raw ext4 disk, frozen layers of
//! snapshots, and their garbage collection.
//!
//! A VM writes to its own overlay `<disk_dir>/<vm>/disk-N.qcow2`. A snapshot freezes the current
//! overlay: it is hard-linked as `<snapshot_dir>/<snap>.qcow2` (the durable name, same inode, so
//! QEMU's open file is untouched) and the VM goes on writing to a new overlay `disk-N+1.qcow2`
//! whose backing file is that durable name. Every overlay is created with an absolute backing
//! path that outlives the VM (the image's disk or a snapshot layer), so a chain stays valid in
//! a later process.
//!
//! Removing a snapshot deletes its memory state at once, but its layer only when no other layer
//! (of a snapshot or of a live VM, which may be snapshotted later) names it as backing file:
//! otherwise a `<snap>.removed` marker is left and [`collect`] deletes the layer once the last
//! user is gone (it runs after every release, reap and snapshot removal).

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The backing file named in a qcow2 header (absolute, or resolved against the file's
/// directory), `None` for a file without one or that is not qcow2.
pub fn qcow2_backing(path: &Path) -> Option<PathBuf> {
    let mut f = fs::File::open(path).ok()?;
    let mut hdr = [0u8; 20];
    f.read_exact(&mut hdr).ok()?;
    if hdr[..4] != *b"QFI\xfb" {
        return None;
    }
    let offset = u64::from_be_bytes(hdr[8..16].try_into().ok()?);
    let size = u32::from_be_bytes(hdr[16..20].try_into().ok()?);
    // the qcow2 spec caps the name at 1023 bytes
    if offset == 0 || size == 0 || size > 1023 {
        return None;
    }
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut name = vec![0u8; size as usize];
    f.read_exact(&mut name).ok()?;
    let name = PathBuf::from(String::from_utf8(name).ok()?);
    Some(if name.is_absolute() {
        name
    } else {
        path.parent().unwrap_or(Path::new("/")).join(name)
    })
}

/// `qemu-img create -f qcow2 -F FORMAT -b BACKING -u OVERLAY SIZE`. `-u` with an explicit size:
/// the backing file may be held open for writing by a running QEMU (a layer being frozen), and
/// its size is known anyway.
pub async fn create_overlay(
    qemu_img: &Path,
    backing: &Path,
    backing_format: &str,
    overlay: &Path,
    size: u64,
) -> Result<(), String> {
    let out = tokio::process::Command::new(qemu_img)
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-F",
            backing_format,
            "-b",
        ])
        .arg(backing)
        .arg(overlay)
        .arg(size.to_string())
        .output()
        .await
        .map_err(|e| format!("running {}: {e}", qemu_img.display()))?;
    if !out.status.success() {
        return Err(format!(
            "qemu-img create {}: {}",
            overlay.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Give `from` a second name `to`: a hard link, or a copy across filesystems (only while the
/// file is not being written: the guest is stopped when a layer is frozen).
pub fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => fs::copy(from, to).map(|_| ()),
        Err(e) => Err(e),
    }
}

/// The marker that says a snapshot's layer is to be deleted once nothing uses it.
pub fn removed_marker(layer: &Path) -> PathBuf {
    layer.with_extension("removed")
}

fn qcow2_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() && depth > 0 => qcow2_files(&p, depth - 1, out),
            Ok(t) if t.is_file() && p.extension().is_some_and(|x| x == "qcow2") => out.push(p),
            _ => {}
        }
    }
}

/// Delete every layer marked removed that no other layer (snapshot or live overlay) names as
/// its backing file, repeating until nothing changes (deleting one can free its own backing).
/// Returns the layers deleted.
pub fn collect(snapshot_dir: &Path, disk_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut deleted = Vec::new();
    loop {
        let mut layers = Vec::new();
        qcow2_files(snapshot_dir, 0, &mut layers);
        qcow2_files(disk_dir, 1, &mut layers);
        let used: HashSet<PathBuf> = layers.iter().filter_map(|l| qcow2_backing(l)).collect();
        let mut changed = false;
        for l in layers.iter().filter(|l| l.starts_with(snapshot_dir)) {
            let marker = removed_marker(l);
            if marker.is_file() && !used.contains(l) {
                match fs::remove_file(l) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                let _ = fs::remove_file(&marker);
                deleted.push(l.clone());
                changed = true;
            }
        }
        // a marker whose layer is gone is stale
        for e in fs::read_dir(snapshot_dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "removed") && !p.with_extension("qcow2").exists()
            {
                let _ = fs::remove_file(&p);
            }
        }
        if !changed {
            return Ok(deleted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_img() -> Option<PathBuf> {
        let p = crate::image::which_program("qemu-img")?;
        Some(p)
    }

    #[tokio::test]
    async fn chains_are_collected_only_when_unused() {
        let Some(img) = qemu_img() else {
            eprintln!("skipped: qemu-img not installed");
            return;
        };
        let t = tempfile::tempdir().expect("tempdir");
        let snaps = t.path().join("snapshots");
        let disks = t.path().join("disks");
        fs::create_dir_all(&snaps).expect("snaps");
        fs::create_dir_all(disks.join("vm-1")).expect("disks");
        let base = t.path().join("base.raw");
        fs::write(&base, vec![0u8; 1 << 20]).expect("base");
        let a = snaps.join("a.qcow2");
        let b = snaps.join("b.qcow2");
        let live = disks.join("vm-1/disk-0.qcow2");
        create_overlay(&img, &base, "raw", &a, 1 << 20)
            .await
            .expect("a");
        create_overlay(&img, &a, "qcow2", &b, 1 << 20)
            .await
            .expect("b");
        create_overlay(&img, &b, "qcow2", &live, 1 << 20)
            .await
            .expect("live");
        assert_eq!(qcow2_backing(&a), Some(base.clone()));
        assert_eq!(qcow2_backing(&live), Some(b.clone()));
        assert_eq!(qcow2_backing(&base), None, "raw has no header");

        // a removed, but b uses it: kept
        fs::write(removed_marker(&a), b"").expect("mark a");
        assert!(collect(&snaps, &disks).expect("gc").is_empty());
        assert!(a.is_file());
        // b removed, but the live overlay uses it: both kept
        fs::write(removed_marker(&b), b"").expect("mark b");
        assert!(collect(&snaps, &disks).expect("gc").is_empty());
        assert!(a.is_file() && b.is_file());
        // the VM is released: b goes, then a
        fs::remove_dir_all(disks.join("vm-1")).expect("release");
        let gone = collect(&snaps, &disks).expect("gc");
        assert_eq!(gone.len(), 2, "{gone:?}");
        assert!(!a.exists() && !b.exists());
        assert!(!removed_marker(&a).exists() && !removed_marker(&b).exists());
    }

    #[test]
    fn link_or_copy_links_on_one_filesystem() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().expect("tempdir");
        let a = t.path().join("a");
        fs::write(&a, b"x").expect("a");
        link_or_copy(&a, &t.path().join("b")).expect("link");
        assert_eq!(fs::metadata(&a).expect("meta").nlink(), 2);
        assert!(qcow2_backing(&a).is_none(), "not qcow2");
    }
}
