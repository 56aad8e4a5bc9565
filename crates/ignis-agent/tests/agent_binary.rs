//! The real `ignis-agent` binary over stdio, driven by `AgentClient`.

use ignis_agent::testing::spawn_agent_at;
use ignis_agent::{AgentClient, AgentError, CommandFiles, ExecEvent, ExecRequest, Program, Stream};
use std::future::Future;
use std::path::Path;
use std::time::Duration;
use tokio::process::Child;

const AGENT: &str = env!("CARGO_BIN_EXE_ignis-agent");

/// Safety net against a hung test (not a speed assertion).
const HANG: Duration = Duration::from_secs(60);

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, f).await.expect("test hung")
}

fn agent() -> (AgentClient, Child) {
    spawn_agent_at(Path::new(AGENT)).expect("spawn agent")
}

/// `sh -c script` with a usable PATH (the request's env is the command's whole environment).
fn sh(script: &str) -> ExecRequest {
    let mut req = ExecRequest::argv(["sh", "-c", script]);
    req.env
        .insert("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into());
    req
}

/// Whether a pid is gone or a zombie (dead, waiting for its parent to reap it).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // Format: "pid (comm) S ..."; comm may contain spaces, so split after the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

async fn wait_dead(pid: u32) {
    within(async {
        while !is_dead(pid) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Read events until stdout contains `needle`; panics if the command exits first.
async fn wait_for_output(h: &mut ignis_agent::ExecHandle, needle: &str) -> String {
    let mut seen = String::new();
    while !seen.contains(needle) {
        match within(h.next()).await {
            Some(Ok(ExecEvent::Output(Stream::Stdout, d))) => {
                seen.push_str(&String::from_utf8_lossy(&d))
            }
            Some(Ok(ExecEvent::Output(Stream::Stderr, _))) => {}
            other => panic!("command ended before printing {needle:?}: {other:?} (saw {seen:?})"),
        }
    }
    seen
}

#[cfg(test)]
mod agent {
    use super::*;

    #[tokio::test]
    async fn exec_true_and_exit_codes() {
        let (client, _child) = agent();
        within(async {
            let out = client.exec_collect(sh("true")).await.expect("exec");
            assert!(out.status.success());
            let out = client.exec_collect(sh("exit 42")).await.expect("exec");
            assert_eq!(out.status.code, Some(42));
            assert!(!out.status.success());
            let out = client.exec_collect(sh("kill -9 $$")).await.expect("exec");
            assert_eq!((out.status.code, out.status.signal), (None, Some(9)));
            assert!(!out.status.timed_out && !out.status.cancelled);
        })
        .await
    }

    /// The entries of a tar as (name without `./`, contents; symlinks as `-> target`).
    fn tar_entries(tar: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut archive = tar::Archive::new(tar);
        for e in archive.entries().expect("entries") {
            let mut e = e.expect("entry");
            let name = e.path().expect("path").display().to_string();
            let name = name.trim_start_matches("./").to_string();
            let body = if e.header().entry_type().is_symlink() {
                format!(
                    "-> {}",
                    e.link_name().expect("link").expect("target").display()
                )
            } else {
                let mut b = String::new();
                std::io::Read::read_to_string(&mut e, &mut b).expect("read");
                b
            };
            out.push((name, body));
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn exec_with_files_creates_them_first_and_returns_them_before_exit() {
        let (client, _child) = agent();
        let dir = tempfile::tempdir().expect("tempdir");
        let files_dir = dir.path().join("files/step-1");
        let files = CommandFiles {
            dir: files_dir.display().to_string(),
            names: vec!["env".into(), "output".into()],
            mode: 0o666,
        };
        within(async {
            // A stale file of the same name is emptied before the command runs.
            std::fs::create_dir_all(&files_dir).expect("mkdir");
            std::fs::write(files_dir.join("env"), "OLD=1\n").expect("write");
            let script = "test -f \"$D/output\" && test ! -s \"$D/env\" || exit 9; \
                          echo A=1 >> \"$D/env\"; echo out; ln -s /etc/hostname \"$D/link\"";
            let mut req = sh(script);
            req.env.insert("D".into(), files_dir.display().to_string());
            let mut h = client
                .exec_with_files(req, files.clone())
                .await
                .expect("exec");
            assert!(h.take_files().is_none(), "nothing before the command ran");
            let mut stdout = String::new();
            let status = loop {
                match h.next().await.expect("event").expect("ok") {
                    ExecEvent::Output(_, d) => stdout.push_str(&String::from_utf8_lossy(&d)),
                    ExecEvent::Exit(st) => break st,
                }
            };
            assert_eq!(
                status.code,
                Some(0),
                "files existed, empty, before the command"
            );
            assert_eq!(stdout, "out\n");
            let tar = h.take_files().expect("files sent").expect("packed");
            assert_eq!(
                tar_entries(&tar),
                vec![
                    ("env".to_string(), "A=1\n".to_string()),
                    ("link".to_string(), "-> /etc/hostname".to_string()),
                    ("output".to_string(), String::new()),
                ]
            );
            let mode = std::fs::metadata(files_dir.join("output")).expect("meta");
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
                0o666
            );
            // A symlink planted under a file's name is replaced, not followed.
            let target = dir.path().join("target");
            std::fs::write(&target, "keep").expect("write");
            std::fs::remove_file(files_dir.join("env")).expect("rm");
            std::os::unix::fs::symlink(&target, files_dir.join("env")).expect("symlink");
            let mut h = client
                .exec_with_files(sh("true"), files.clone())
                .await
                .expect("exec");
            while let Some(ev) = h.next().await {
                ev.expect("event");
            }
            assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep");
            assert!(
                std::fs::symlink_metadata(files_dir.join("env"))
                    .expect("meta")
                    .is_file()
            );
            // A command that removes the directory: the files come back as an error.
            let mut req = sh("rm -rf \"$D\"");
            req.env.insert("D".into(), files_dir.display().to_string());
            let mut h = client
                .exec_with_files(req, files.clone())
                .await
                .expect("exec");
            while let Some(ev) = h.next().await {
                ev.expect("event");
            }
            let err = h.take_files().expect("files end").expect_err("dir gone");
            assert!(err.contains("step-1"), "{err}");
            // Names that would leave the directory are refused before anything runs.
            let bad = CommandFiles {
                names: vec!["../x".into()],
                ..files.clone()
            };
            let err = client
                .exec_with_files(sh("true"), bad)
                .await
                .expect_err("bad name");
            assert!(
                matches!(err, AgentError::Remote(ref m) if m.contains("invalid")),
                "{err}"
            );
            assert!(client.supports_command_files());
            // A plain exec has no files.
            let mut h = client.exec(sh("true")).await.expect("exec");
            while h.next().await.is_some() {}
            assert!(h.take_files().is_none());
        })
        .await
    }

    #[tokio::test]
    async fn which_searches_path_like_command_v() {
        let (client, _child) = agent();
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        std::fs::write(bin.join("tool"), "#!/bin/sh\n").expect("write");
        std::fs::write(bin.join("plain"), "not executable").expect("write");
        std::fs::set_permissions(
            bin.join("tool"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let path = format!("/nonexistent:{}", bin.display());
        let found = within(client.which(&["tool", "plain", "absent", "a/b"], &path))
            .await
            .expect("which");
        assert_eq!(
            found,
            vec![
                Some(bin.join("tool").display().to_string()),
                None,
                None,
                None
            ]
        );
    }

    #[tokio::test]
    async fn remove_all_is_rm_rf() {
        let (client, _child) = agent();
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("run");
        std::fs::create_dir_all(tree.join("a/b")).expect("mkdir");
        std::fs::write(tree.join("a/b/f"), "x").expect("write");
        std::os::unix::fs::symlink(dir.path(), tree.join("up")).expect("symlink");
        within(async {
            client
                .remove_all(&tree.display().to_string())
                .await
                .expect("rm");
            assert!(!tree.exists());
            assert!(dir.path().exists(), "a symlink is removed, not followed");
            // Missing is fine.
            client
                .remove_all(&tree.display().to_string())
                .await
                .expect("rm again");
        })
        .await
    }

    #[tokio::test]
    async fn unknown_program_fails_to_start() {
        let (client, _child) = agent();
        let err = within(client.exec(ExecRequest::argv(["/nonexistent/program"])))
            .await
            .expect_err("cannot start");
        assert!(
            matches!(err, AgentError::Remote(ref m) if m.contains("nonexistent")),
            "{err}"
        );
        let mut req = sh("true");
        req.cwd = Some("/nonexistent-dir".into());
        let err = within(client.exec(req)).await.expect_err("bad cwd");
        assert!(
            matches!(err, AgentError::Remote(ref m) if m.contains("working directory")),
            "{err}"
        );
        // The agent is still fine.
        within(client.ping()).await.expect("ping");
    }

    #[tokio::test]
    async fn env_is_complete_and_cwd_defaults_to_root() {
        let (client, _child) = agent();
        within(async {
            let mut req = ExecRequest::argv(["/usr/bin/env"]);
            req.env.insert("FOO".into(), "bar baz".into());
            let out = client.exec_collect(req).await.expect("exec");
            assert_eq!(String::from_utf8_lossy(&out.stdout), "FOO=bar baz\n");

            let out = client.exec_collect(sh("pwd")).await.expect("exec");
            assert_eq!(out.stdout, b"/\n");
            let dir = tempfile::tempdir().expect("tempdir");
            let mut req = sh("pwd");
            req.cwd = Some(dir.path().to_string_lossy().into_owned());
            let out = client.exec_collect(req).await.expect("exec");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim_end(),
                dir.path().to_string_lossy()
            );
        })
        .await
    }

    #[tokio::test]
    async fn output_is_streamed_in_order_per_stream() {
        let (client, _child) = agent();
        within(async {
            let out = client
                .exec_collect(sh(
                    "i=0; while [ $i -lt 300 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done",
                ))
                .await
                .expect("exec");
            let want = |p: &str| (0..300).map(|i| format!("{p}{i}\n")).collect::<String>();
            assert_eq!(String::from_utf8_lossy(&out.stdout), want("out"));
            assert_eq!(String::from_utf8_lossy(&out.stderr), want("err"));

            // Streaming: output arrives while the command still runs (it waits for a file that is
            // only created after the test saw the output).
            let dir = tempfile::tempdir().expect("tempdir");
            let flag = dir.path().join("go");
            let script = format!(
                "echo ready; while [ ! -e {} ]; do sleep 0.01; done; echo done",
                flag.display()
            );
            let mut h = client.exec(sh(&script)).await.expect("exec");
            wait_for_output(&mut h, "ready").await;
            std::fs::write(&flag, b"").expect("create flag");
            let rest = h.collect().await.expect("collect");
            assert_eq!(rest.stdout, b"done\n");
            assert!(rest.status.success());
        })
        .await
    }

    #[tokio::test]
    async fn concurrent_execs_share_one_channel() {
        let (client, _child) = agent();
        within(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let flag = dir.path().join("flag");
            // The first command can only finish once the second one ran: proves they overlap.
            let mut waiter = sh(&format!(
                "while [ ! -e {} ]; do sleep 0.01; done; echo waited",
                flag.display()
            ));
            waiter.timeout = Some(Duration::from_secs(30));
            let first = client.exec(waiter).await.expect("exec waiter");
            let mut others = Vec::new();
            for n in 0..8 {
                let c = client.clone();
                others.push(tokio::spawn(async move {
                    c.exec_collect(sh(&format!("echo {n}"))).await
                }));
            }
            for (n, t) in others.into_iter().enumerate() {
                let out = t.await.expect("join").expect("exec");
                assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{n}\n"));
            }
            client
                .exec_collect(sh(&format!("touch {}", flag.display())))
                .await
                .expect("exec touch");
            let out = first.collect().await.expect("collect");
            assert_eq!(out.stdout, b"waited\n");
            assert!(!out.status.timed_out);
        })
        .await
    }

    #[tokio::test]
    async fn stdin_bytes_small_and_large() {
        let (client, _child) = agent();
        within(async {
            let mut req = sh("cat");
            let small: Vec<u8> = (0..=255).collect();
            req.stdin = Some(small.clone());
            let out = client.exec_collect(req).await.expect("exec");
            assert_eq!(out.stdout, small);

            // Larger than one chunk: streamed after the exec frame.
            let big: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
            let mut req = sh("cat");
            req.stdin = Some(big.clone());
            let out = client.exec_collect(req).await.expect("exec");
            assert_eq!(out.stdout.len(), big.len());
            assert!(out.stdout == big);

            // No stdin: /dev/null, so `cat` ends at once.
            let out = client.exec_collect(sh("cat")).await.expect("exec");
            assert!(out.stdout.is_empty() && out.status.success());
        })
        .await
    }

    #[tokio::test]
    async fn timeout_kills_whole_process_group() {
        let (client, _child) = agent();
        within(async {
            let mut req = sh("sleep 120 & echo $!; wait");
            req.timeout = Some(Duration::from_millis(300));
            let mut h = client.exec(req).await.expect("exec");
            let leader = h.pid();
            let line = wait_for_output(&mut h, "\n").await;
            let grandchild: u32 = line.trim().parse().expect("background pid");
            let out = h.collect().await.expect("collect");
            assert!(out.status.timed_out);
            assert!(!out.status.cancelled);
            assert_eq!(out.status.signal, Some(9));
            wait_dead(leader).await;
            wait_dead(grandchild).await;
        })
        .await
    }

    #[tokio::test]
    async fn cancel_mid_command() {
        let (client, _child) = agent();
        within(async {
            let mut h = client
                .exec(sh("sleep 120 & echo started; wait"))
                .await
                .expect("exec");
            wait_for_output(&mut h, "started").await;
            h.cancel().await.expect("cancel");
            let out = h.collect().await.expect("collect");
            assert!(out.status.cancelled);
            assert!(!out.status.timed_out);
            assert_eq!(out.status.signal, Some(9));
            // Cancelling a finished command is not an error.
            let done = client.exec(sh("true")).await.expect("exec");
            let id = done.id();
            done.collect().await.expect("collect");
            client.cancel(id).await.expect("cancel after exit");
        })
        .await
    }

    #[tokio::test]
    async fn cancel_with_grace_lets_command_clean_up() {
        let (client, _child) = agent();
        within(async {
            let mut h = client
                .exec(sh(
                    "trap 'echo cleanup; exit 7' TERM; echo ready; while :; do sleep 0.05; done",
                ))
                .await
                .expect("exec");
            wait_for_output(&mut h, "ready").await;
            client
                .cancel_with_grace(h.id(), Duration::from_secs(20))
                .await
                .expect("cancel");
            let out = h.collect().await.expect("collect");
            assert_eq!(out.stdout, b"cleanup\n");
            assert_eq!(out.status.code, Some(7));
            assert!(out.status.cancelled);
        })
        .await
    }

    #[tokio::test]
    async fn signal_reaches_process_group() {
        let (client, _child) = agent();
        within(async {
            let mut h = client
                .exec(sh(
                    "trap 'echo usr1; exit 5' USR1; echo ready; while :; do sleep 0.05; done",
                ))
                .await
                .expect("exec");
            wait_for_output(&mut h, "ready").await;
            client.signal(h.id(), 10).await.expect("signal USR1");
            let out = h.collect().await.expect("collect");
            assert_eq!(out.stdout, b"usr1\n");
            assert_eq!(out.status.code, Some(5));
            assert!(!out.status.cancelled);
            let err = client.signal(999_999, 10).await.expect_err("no such exec");
            assert!(matches!(err, AgentError::Remote(_)));
        })
        .await
    }

    #[tokio::test]
    async fn script_program_writes_file_and_runs_shell() {
        let (client, _child) = agent();
        within(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let script = dir.path().join("nested/dir/step.sh");
            let mut req = ExecRequest::new(Program::Script {
                shell: vec!["sh".into(), "-e".into(), "{0}".into()],
                body: "echo \"from $0\"\nexit 3\n".into(),
                path: script.to_string_lossy().into_owned(),
            });
            req.env.insert("PATH".into(), "/usr/bin:/bin".into());
            let out = client.exec_collect(req).await.expect("exec");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                format!("from {}\n", script.display())
            );
            assert_eq!(out.status.code, Some(3));
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&script)
                .expect("script")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);

            // No `{0}`: the path is appended.
            let mut req = ExecRequest::new(Program::Script {
                shell: vec!["sh".into()],
                body: "echo appended".into(),
                path: script.to_string_lossy().into_owned(),
            });
            req.env.insert("PATH".into(), "/usr/bin:/bin".into());
            let out = client.exec_collect(req).await.expect("exec");
            assert_eq!(out.stdout, b"appended\n");
        })
        .await
    }

    #[tokio::test]
    async fn write_and_read_files() {
        let (client, _child) = agent();
        within(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("a/b/file.bin");
            let p = path.to_string_lossy().into_owned();
            let data: Vec<u8> = (0..700_001u32).map(|i| (i * 7 % 256) as u8).collect();
            client
                .write_file(&p, data.clone(), 0o640)
                .await
                .expect("write");
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(&path).expect("written");
            assert_eq!(meta.permissions().mode() & 0o777, 0o640);
            assert_eq!(std::fs::read(&path).expect("read back"), data);
            assert_eq!(client.read_file(&p).await.expect("read"), data);

            // Empty file, overwrite.
            client
                .write_file(&p, Vec::new(), 0o600)
                .await
                .expect("write empty");
            assert!(client.read_file(&p).await.expect("read").is_empty());

            let missing = dir.path().join("missing").to_string_lossy().into_owned();
            let err = client.read_file(&missing).await.expect_err("missing");
            assert!(
                matches!(err, AgentError::Remote(ref m) if m.contains("missing")),
                "{err}"
            );
            // Writing below a regular file fails cleanly.
            let bad = path.join("child").to_string_lossy().into_owned();
            assert!(client.write_file(&bad, b"x".to_vec(), 0o600).await.is_err());
            client.ping().await.expect("still alive");
        })
        .await
    }

    #[tokio::test]
    async fn put_and_get_tar_round_trip() {
        let (client, _child) = agent();
        within(async {
            let mut builder = tar::Builder::new(Vec::new());
            let mut add = |name: &str, data: &[u8], mode: u32| {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(mode);
                h.set_cksum();
                builder.append_data(&mut h, name, data).expect("append");
            };
            let big: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
            add("top.txt", b"top\n", 0o644);
            add("sub/dir/run.sh", b"#!/bin/sh\necho hi\n", 0o755);
            add("sub/big.bin", &big, 0o600);
            let archive = builder.into_inner().expect("finish");

            let dir = tempfile::tempdir().expect("tempdir");
            let dest = dir.path().join("unpacked");
            let d = dest.to_string_lossy().into_owned();
            client.put_tar(&d, archive).await.expect("put tar");
            assert_eq!(std::fs::read(dest.join("top.txt")).expect("top"), b"top\n");
            assert_eq!(std::fs::read(dest.join("sub/big.bin")).expect("big"), big);
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dest.join("sub/dir/run.sh"))
                .expect("run.sh")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o755);

            let packed = client.get_tar(&d).await.expect("get tar");
            let mut archive = tar::Archive::new(packed.as_slice());
            let mut files = std::collections::BTreeMap::new();
            for entry in archive.entries().expect("entries") {
                let mut entry = entry.expect("entry");
                if entry.header().entry_type().is_file() {
                    let name = entry.path().expect("path").to_string_lossy().into_owned();
                    let mut data = Vec::new();
                    std::io::Read::read_to_end(&mut entry, &mut data).expect("data");
                    files.insert(name, data);
                }
            }
            assert_eq!(files.len(), 3, "{:?}", files.keys());
            assert_eq!(files["top.txt"], b"top\n");
            assert_eq!(files["sub/big.bin"], big);

            // A single file packs under its own name.
            let one = dest.join("top.txt").to_string_lossy().into_owned();
            let packed = client.get_tar(&one).await.expect("get tar of file");
            let mut archive = tar::Archive::new(packed.as_slice());
            let names: Vec<String> = archive
                .entries()
                .expect("entries")
                .map(|e| {
                    e.expect("entry")
                        .path()
                        .expect("path")
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            assert_eq!(names, vec!["top.txt".to_string()]);

            // Garbage is an error, not a crash.
            let err = client.put_tar(&d, vec![1; 1000]).await;
            assert!(err.is_err());
            client.ping().await.expect("still alive");
        })
        .await
    }

    #[tokio::test]
    async fn host_eof_kills_children_and_agent_exits() {
        let (client, mut child) = agent();
        within(async {
            let mut h = client
                .exec(sh("sleep 120 & echo $!; sleep 120"))
                .await
                .expect("exec");
            let leader = h.pid();
            let line = wait_for_output(&mut h, "\n").await;
            let grandchild: u32 = line.trim().parse().expect("background pid");
            // A finished command's background process is killed too.
            let out = client
                .exec_collect(sh("sleep 120 >/dev/null 2>&1 & echo $!"))
                .await
                .expect("exec");
            let orphan: u32 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("pid");
            assert!(!is_dead(orphan));
            // Losing every client handle closes the agent's stdin: the host is gone.
            drop(h);
            drop(client);
            let status = child.wait().await.expect("agent exit");
            assert!(status.success(), "{status:?}");
            wait_dead(leader).await;
            wait_dead(grandchild).await;
            wait_dead(orphan).await;
        })
        .await
    }

    #[tokio::test]
    async fn agent_death_fails_running_exec_with_channel_closed() {
        let (client, mut child) = agent();
        within(async {
            let mut h = client.exec(sh("echo up; sleep 120")).await.expect("exec");
            wait_for_output(&mut h, "up").await;
            child.start_kill().expect("kill agent");
            assert!(matches!(
                h.next().await,
                Some(Err(AgentError::ChannelClosed))
            ));
            assert!(h.next().await.is_none());
            client.closed().await;
            assert!(matches!(
                client.ping().await,
                Err(AgentError::ChannelClosed)
            ));
            // A SIGKILLed agent cannot clean up (in a sandbox its pid namespace does): do it here.
            let pgid = rustix::process::Pid::from_raw(h.pid() as i32).expect("valid pid");
            rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL)
                .expect("kill leftover group");
            wait_dead(h.pid()).await;
        })
        .await
    }

    #[tokio::test]
    async fn shutdown_kills_everything_and_exits() {
        let (client, mut child) = agent();
        within(async {
            let mut h = client.exec(sh("echo up; sleep 120")).await.expect("exec");
            wait_for_output(&mut h, "up").await;
            let pid = h.pid();
            assert_eq!(
                client.hello().await.expect("hello"),
                child.id().expect("pid")
            );
            client.shutdown().await.expect("shutdown");
            assert!(child.wait().await.expect("exit").success());
            wait_dead(pid).await;
            assert!(matches!(
                h.next().await,
                Some(Err(AgentError::ChannelClosed))
            ));
        })
        .await
    }

    #[tokio::test]
    async fn spawn_local_agent_finds_binary() {
        // Integration tests live in target/<profile>/deps; the binary is one level up.
        let (client, _child) =
            ignis_agent::testing::spawn_local_agent().expect("found and spawned");
        within(client.ping()).await.expect("ping");
        let found = ignis_agent::agent_binary_path().expect("path");
        assert_eq!(
            found.canonicalize().expect("canonical"),
            Path::new(AGENT).canonicalize().expect("canonical")
        );
    }

    /// The agent as PID 1 of a fresh pid namespace (as in the sandbox), or `None` with a loud
    /// skip when this host cannot create one.
    fn agent_as_init() -> Option<(AgentClient, Child)> {
        let probe = std::process::Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "true"])
            .stderr(std::process::Stdio::null())
            .status();
        if !matches!(probe, Ok(s) if s.success()) {
            eprintln!("skipped: cannot create a pid namespace here (needs root and unshare)");
            return None;
        }
        let mut child = tokio::process::Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
                AGENT,
                "--stdio",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn unshare");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        Some((AgentClient::new(stdout, stdin), child))
    }

    #[tokio::test]
    async fn as_init_reaps_orphans_and_forwards_sigterm() {
        let Some((client, mut child)) = agent_as_init() else {
            return;
        };
        within(async {
            assert_eq!(client.hello().await.expect("hello"), 1, "agent is PID 1");

            // An orphan re-parented to the agent must be reaped, not left a zombie: wait until
            // its /proc entry is gone entirely (a zombie keeps it).
            let out = client
                .exec_collect(sh("sleep 0.1 >/dev/null 2>&1 & echo $!"))
                .await
                .expect("exec");
            let orphan = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let mut req = sh(&format!("while [ -e /proc/{orphan} ]; do sleep 0.01; done"));
            req.timeout = Some(Duration::from_secs(20));
            let out = client.exec_collect(req).await.expect("exec");
            assert!(!out.status.timed_out, "orphan {orphan} was never reaped");

            // SIGTERM to init is forwarded to the commands' process groups, and init survives.
            // The sender ignores TERM itself: it is one of the groups the signal goes to.
            let mut h = client
                .exec(sh(
                    "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.05; done",
                ))
                .await
                .expect("exec");
            wait_for_output(&mut h, "ready").await;
            let kill = client
                .exec_collect(sh("trap '' TERM; kill -TERM 1"))
                .await
                .expect("exec kill");
            assert!(kill.status.success(), "{kill:?}");
            let out = h.collect().await.expect("collect");
            assert_eq!(out.stdout, b"got-term\n");
            assert_eq!(out.status.code, Some(0));
            client.ping().await.expect("init survived SIGTERM");

            drop(client);
            let status = child.wait().await.expect("wait");
            assert!(status.success(), "{status:?}");
        })
        .await
    }

    /// Start the agent with one end of a socketpair, the way the sandbox backend does, and
    /// connect a client to the other end.
    fn agent_over_socketpair(shell_redirect: &str, args: &[&str]) -> (AgentClient, Child) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let theirs = std::os::fd::OwnedFd::from(theirs);
        let stdout = theirs.try_clone().expect("dup");
        let script = format!("exec \"$0\" \"$@\" {shell_redirect}");
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(AGENT)
            .args(args)
            .stdin(std::process::Stdio::from(theirs))
            .stdout(std::process::Stdio::from(stdout))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn agent");
        ours.set_nonblocking(true).expect("nonblocking");
        let stream = tokio::net::UnixStream::from_std(ours).expect("register");
        let (r, w) = stream.into_split();
        (AgentClient::new(r, w), child)
    }

    async fn exercise(client: AgentClient, mut child: Child) {
        within(async {
            let out = client.exec_collect(sh("echo hi")).await.expect("exec");
            assert_eq!(out.stdout, b"hi\n");
            drop(client);
            assert!(child.wait().await.expect("exit").success());
        })
        .await
    }

    #[tokio::test]
    async fn stdio_transport_on_a_socketpair() {
        let (client, child) = agent_over_socketpair("", &["--stdio"]);
        exercise(client, child).await;
    }

    #[tokio::test]
    async fn fd_transport_on_an_inherited_socket() {
        // The socket arrives as fd 3; stdin/stdout are /dev/null.
        let (client, child) = agent_over_socketpair("3<&0 0</dev/null 1>/dev/null", &["--fd", "3"]);
        exercise(client, child).await;
    }

    #[tokio::test]
    async fn serial_transport_on_a_pty_is_raw() {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master = match openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("skipped: no pty available: {e}");
                return;
            }
        };
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let slave = ptsname(&master, Vec::new()).expect("ptsname");
        let slave = slave.to_str().expect("utf-8 pty path").to_owned();
        let mut child = tokio::process::Command::new(AGENT)
            .args(["--serial", &slave])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn agent");
        // Bytes written before the agent switched the pty to raw mode would be echoed and
        // translated by the line discipline (a real virtio-serial port has none): wait for it.
        within(async {
            loop {
                let t = rustix::termios::tcgetattr(&master).expect("tcgetattr");
                if !t.local_modes.contains(rustix::termios::LocalModes::ICANON) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        let writer = master.try_clone().expect("dup master");
        let reader = ignis_agent::transport::FdStream::new(master).expect("register master");
        let writer = ignis_agent::transport::FdStream::new(writer).expect("register master");
        let client = AgentClient::new(reader, writer);
        within(async {
            // Every byte value, including ^C, ^D, ^S, CR and LF, must pass untranslated.
            let all: Vec<u8> = (0..=255).collect();
            let mut req = sh("cat");
            req.stdin = Some(all.clone());
            let out = client.exec_collect(req).await.expect("exec over serial");
            assert_eq!(out.stdout, all);
            client.shutdown().await.expect("shutdown");
            assert!(child.wait().await.expect("exit").success());
        })
        .await
    }
}
