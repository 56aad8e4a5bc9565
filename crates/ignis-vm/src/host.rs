//! Host-process helpers every backend shares: naming a process by (pid, start time) so a
//! recycled pid is never mistaken for it, killing such a process, and removing leftover
//! paths. They only read `/proc` and signal processes the caller recorded; they must never
//! touch a process or path the caller did not name.

use std::io;
use std::path::Path;

/// Start time of a process in clock ticks since boot (`/proc/PID/stat` field 22); `None` when
/// the process is gone. Together with the pid it names one process for its whole life: a
/// recycled pid has a later start time.
pub fn process_start_time(pid: u32) -> Option<u64> {
    parse_start_time(&read_stat(pid)?)
}

/// Field 22 of a `/proc/PID/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after the last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    // After ")" come field 3 (state) onwards; field 22 is the 20th of those.
    after_comm(stat)?.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process `pid` that started at `start_time` still runs: same start time and
/// neither a zombie nor dead (an exited process nobody has waited for yet holds no resources,
/// and its parent, or an init slow to reap, will collect it).
pub fn process_running(pid: u32, start_time: u64) -> bool {
    let Some(stat) = read_stat(pid) else {
        return false;
    };
    let state = after_comm(&stat).and_then(|rest| rest.split_whitespace().next());
    !matches!(state, None | Some("Z" | "X")) && parse_start_time(&stat) == Some(start_time)
}

/// SIGKILL `pid` if it is still the process that started at `start_time`. `Ok(true)` when a
/// signal was sent, `Ok(false)` when the process is already gone (or the pid was recycled).
pub fn kill_if_same(pid: u32, start_time: u64) -> io::Result<bool> {
    if process_start_time(pid) != Some(start_time) {
        return Ok(false);
    }
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return Ok(false);
    };
    match rustix::process::kill_process(p, rustix::process::Signal::KILL) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::SRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Remove a file or directory tree (a symlink itself, never its target); a missing path is
/// not an error.
pub fn remove_path(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn read_stat(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

/// The fields after the command name (field 3 onwards).
fn after_comm(stat: &str) -> Option<&str> {
    stat.rfind(')').map(|i| &stat[i + 1..])
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
    fn own_process_is_named_by_pid_and_start_time() {
        let me = std::process::id();
        let t = process_start_time(me).expect("own stat");
        assert_eq!(process_start_time(me), Some(t));
        assert_eq!(process_start_time(u32::MAX), None);
        assert!(process_running(me, t));
        assert!(!process_running(me, t + 1));
        assert!(!process_running(u32::MAX, t));
    }

    #[test]
    fn zombie_is_not_running() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        let start = process_start_time(pid).expect("start time");
        // Not waited for yet: once it exits it stays a zombie until `wait` below.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_running(pid, start) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(!process_running(pid, start), "exited child still counted");
        assert_eq!(
            process_start_time(pid),
            Some(start),
            "zombie keeps its stat"
        );
        child.wait().expect("wait");
    }

    #[test]
    fn kill_if_same_refuses_wrong_start_time() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let start = process_start_time(pid).expect("start time");
        assert!(!kill_if_same(pid, start + 1).expect("kill"));
        assert!(kill_if_same(pid, start).expect("kill"));
        let status = child.wait().expect("wait");
        assert!(!status.success());
    }

    #[test]
    fn remove_path_takes_files_trees_and_missing_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").expect("write");
        let tree = dir.path().join("t");
        std::fs::create_dir_all(tree.join("a/b")).expect("mkdir");
        remove_path(&file).expect("file");
        remove_path(&tree).expect("tree");
        remove_path(&dir.path().join("missing")).expect("missing");
        assert!(!file.exists() && !tree.exists());
    }
}
