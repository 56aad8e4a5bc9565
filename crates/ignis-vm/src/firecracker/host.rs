//! Host-side helpers of the Firecracker backend: copy-on-write disk copies, log tails and
//! fresh entropy; process identity and path removal come from [`crate::host`].

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// How a disk copy was made (reported in traces and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// `FICLONE`: shares extents with the source until written (btrfs, xfs).
    Reflink,
    /// Byte copy that skips zero blocks, leaving holes.
    Sparse,
}

/// Copy `src` to `dst` (created, must not exist): a reflink where the filesystem supports
/// it, else a sparse copy, so a per-session disk costs no more than the blocks it writes.
pub fn cow_copy(src: &Path, dst: &Path) -> io::Result<CopyKind> {
    let mut from = File::open(src)?;
    let mut to = File::options().write(true).create_new(true).open(dst)?;
    if rustix::fs::ioctl_ficlone(&to, &from).is_ok() {
        return Ok(CopyKind::Reflink);
    }
    let len = from.metadata()?.len();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            to.seek(SeekFrom::Current(n as i64))?;
        } else {
            to.write_all(&buf[..n])?;
        }
        pos += n as u64;
    }
    debug_assert_eq!(pos, len);
    to.set_len(len)?;
    to.sync_all()?;
    Ok(CopyKind::Sparse)
}

// Process identity and path removal are shared with the other backends.
pub use crate::host::{kill_if_same, parse_start_time, process_start_time, remove_path};

/// Up to the last `max` bytes of a file, lossily decoded (for error messages).
pub fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > max {
        let _ = f.seek(SeekFrom::Start(len - max));
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim().to_owned()
}

/// Fresh random bytes from the host kernel (used to reseed restored clones).
pub fn random_bytes(n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cow_copy_keeps_content_and_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.img");
        let mut f = File::create(&src).expect("create");
        f.write_all(b"head").expect("write");
        f.set_len(4 * 1024 * 1024).expect("len");
        f.seek(SeekFrom::Start(3 * 1024 * 1024)).expect("seek");
        f.write_all(b"tail").expect("write");
        drop(f);
        let dst = dir.path().join("dst.img");
        let kind = cow_copy(&src, &dst).expect("copy");
        assert_eq!(
            std::fs::read(&src).expect("read"),
            std::fs::read(&dst).expect("read")
        );
        if kind == CopyKind::Sparse {
            use std::os::unix::fs::MetadataExt;
            let blocks = std::fs::metadata(&dst).expect("meta").blocks();
            assert!(
                blocks * 512 < 1024 * 1024,
                "sparse copy allocated {} bytes",
                blocks * 512
            );
        }
        assert!(cow_copy(&src, &dst).is_err(), "must not overwrite");
    }
}
