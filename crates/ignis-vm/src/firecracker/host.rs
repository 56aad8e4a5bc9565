//! Host-side helpers of the Firecracker backend: copy-on-write disk copies, process identity
//! from `/proc`, and killing a recorded process without ever hitting a recycled pid.

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

/// Start time of a process in clock ticks since boot (`/proc/PID/stat` field 22); `None` when
/// the process is gone. Together with the pid it names one process for its whole life.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/PID/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after the last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")" come field 3 (state) onwards; field 22 is the 20th of those.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// SIGKILL `pid` if it is still the process that started at `start_time`. Returns whether a
/// signal was sent.
pub fn kill_if_same(pid: u32, start_time: u64) -> bool {
    if process_start_time(pid) != Some(start_time) {
        return false;
    }
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    rustix::process::kill_process(p, rustix::process::Signal::KILL).is_ok()
}

/// Remove a file or directory tree; a missing path is not an error.
pub fn remove_path(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

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
    fn start_time_survives_odd_command_names() {
        let stat =
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn own_start_time_is_readable() {
        assert!(process_start_time(std::process::id()).is_some());
        assert_eq!(process_start_time(u32::MAX), None);
    }

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

    #[test]
    fn kill_if_same_refuses_wrong_start_time() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let start = process_start_time(pid).expect("start time");
        assert!(!kill_if_same(pid, start + 1));
        assert!(kill_if_same(pid, start));
        let status = child.wait().expect("wait");
        assert!(!status.success());
    }
}
