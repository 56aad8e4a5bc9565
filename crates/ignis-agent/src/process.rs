//! Spawning commands in their own process groups and collecting their exit statuses.
//!
//! # Why not `tokio::process`
//! As PID 1 of a sandbox the agent inherits every orphan, and zombies must be reaped or the pid
//! namespace fills up. Reaping means `waitpid(-1)`, which would also steal the statuses that
//! `tokio::process` waits for with `waitpid(pid)`; the alternative (peeking with
//! `waitid(WNOWAIT)` and reaping only unknown pids) stalls behind an unreaped child of our own
//! and can miss orphans until the next SIGCHLD. So the agent owns reaping: commands are spawned
//! with `std::process::Command` (never waited on through `std`), and one SIGCHLD-driven loop
//! calls `waitpid(-1, WNOHANG)` and hands each status to the task waiting for that pid. Statuses
//! of unknown pids (orphans) are simply discarded, which is exactly what reaping them means.
//!
//! The table lock is held across `spawn` and pid registration, and across each `waitpid` and
//! its dispatch, so a child that exits instantly cannot be reaped before its waiter exists.
//!
//! In-process users that share the process with other children (unit tests) use
//! [`ReapMode::OwnChildren`], which only waits for the pids this table spawned.

use rustix::process::{Pid, Signal, WaitOptions};
use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::oneshot;

/// Which children a [`Children`] table reaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReapMode {
    /// `waitpid(-1)`: every child, including orphans re-parented to us. For the agent binary,
    /// whose only children are its commands (and, as PID 1, every orphan).
    All,
    /// `waitpid(pid)` for each spawned pid only. For running the agent inside a process that
    /// has other children (tests), whose statuses must not be stolen.
    OwnChildren,
}

/// The commands spawned by one agent, their exit-status waiters, and every process group it
/// ever created (killed when the agent exits).
#[derive(Debug)]
pub struct Children {
    mode: ReapMode,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    waiters: HashMap<i32, oneshot::Sender<ExitStatus>>,
    /// Process groups ever created. Kept after a leader exits because background processes of
    /// a finished command still belong to its group. A pgid can only be reused after the whole
    /// group is gone and pids wrapped around, which the agent's lifetime makes negligible.
    groups: HashSet<i32>,
}

impl Children {
    pub fn new(mode: ReapMode) -> Self {
        Children {
            mode,
            table: Mutex::new(Table::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every critical section leaves the table consistent, so a poisoned lock is usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawn `cmd` as the leader of a new process group and register a waiter for its status.
    pub fn spawn(
        &self,
        cmd: &mut Command,
    ) -> std::io::Result<(Child, oneshot::Receiver<ExitStatus>)> {
        // `process_group(0)` (setpgid in the child) keeps std on its posix_spawn fast path,
        // unlike a `pre_exec` setsid, and is all that killing the whole group needs.
        std::os::unix::process::CommandExt::process_group(cmd, 0);
        let mut table = self.lock();
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        // Cast is lossless: pids are positive i32 values on Linux.
        let pid = child.id() as i32;
        table.waiters.insert(pid, tx);
        table.groups.insert(pid);
        Ok((child, rx))
    }

    /// Collect every exited child that is ready and notify its waiter. Call on each SIGCHLD.
    pub fn reap(&self) {
        let mut table = self.lock();
        match self.mode {
            ReapMode::All => loop {
                // NOTE: `waitpid(None)` would be `waitpid(0)` (own process group only); `wait` is -1.
                match rustix::process::wait(WaitOptions::NOHANG) {
                    Ok(Some((pid, status))) => dispatch(&mut table, pid, status.as_raw()),
                    Ok(None) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    // ECHILD: no children at all.
                    Err(_) => break,
                }
            },
            ReapMode::OwnChildren => {
                let pids: Vec<i32> = table.waiters.keys().copied().collect();
                for raw in pids {
                    let Some(pid) = Pid::from_raw(raw) else {
                        continue;
                    };
                    if let Ok(Some((pid, status))) =
                        rustix::process::waitpid(Some(pid), WaitOptions::NOHANG)
                    {
                        dispatch(&mut table, pid, status.as_raw());
                    }
                }
            }
        }
    }

    /// Send `signal` to every process group this table created; returns how many were signalled.
    pub fn signal_all(&self, signal: Signal) -> usize {
        let table = self.lock();
        table
            .groups
            .iter()
            .filter(|&&pgid| kill_group(pgid, signal).is_ok())
            .count()
    }

    /// Kill every process group (SIGKILL). Used when the host goes away.
    pub fn kill_all(&self) {
        self.signal_all(Signal::KILL);
    }

    /// Pids of commands whose exit has not been collected yet.
    pub fn running(&self) -> usize {
        self.lock().waiters.len()
    }
}

fn dispatch(table: &mut Table, pid: Pid, raw: i32) {
    if let Some(tx) = table.waiters.remove(&pid.as_raw_nonzero().get()) {
        // The waiter may have given up (its task ended); the status is then simply dropped.
        let _ = tx.send(ExitStatus::from_raw(raw));
    } else {
        tracing::trace!(pid = pid.as_raw_nonzero().get(), "reaped an orphan");
    }
}

/// Send `signal` to process group `pgid`.
pub fn kill_group(pgid: i32, signal: Signal) -> std::io::Result<()> {
    let pid = Pid::from_raw(pgid).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid process group id")
    })?;
    rustix::process::kill_process_group(pid, signal).map_err(std::io::Error::from)
}

/// A signal number from the host, refused when it is not a real signal.
pub fn signal_from_raw(signal: i32) -> Option<Signal> {
    Signal::from_named_raw(signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn own_children_mode_delivers_exit_status() {
        let children = Children::new(ReapMode::OwnChildren);
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
            .expect("sigchld handler");
        let (_child, mut rx) = children
            .spawn(Command::new("sh").args(["-c", "exit 7"]))
            .expect("spawn sh");
        let status = loop {
            tokio::select! {
                st = &mut rx => break st.expect("status delivered"),
                _ = sigchld.recv() => children.reap(),
            }
        };
        assert_eq!(status.code(), Some(7));
        assert_eq!(children.running(), 0);
    }

    #[test]
    fn signal_numbers_are_validated() {
        assert_eq!(signal_from_raw(9), Some(Signal::KILL));
        assert_eq!(signal_from_raw(0), None);
        assert_eq!(signal_from_raw(-3), None);
        assert_eq!(signal_from_raw(100_000), None);
    }
}
