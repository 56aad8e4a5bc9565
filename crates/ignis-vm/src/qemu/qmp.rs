//! A minimal QMP client: one JSON object per line each way, events interleaved with answers.

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// QMP failures.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("qmp i/o on {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("qmp connection closed")]
    Closed,
    #[error("qmp protocol: {0}")]
    Protocol(String),
    #[error("qmp command {command} failed: {desc}")]
    Command { command: String, desc: String },
    #[error("qmp timed out waiting for {0}")]
    Timeout(String),
}

/// A connected, capability-negotiated QMP session.
#[derive(Debug)]
pub struct Qmp {
    path: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Events received while waiting for answers, oldest first.
    pub events: Vec<Value>,
}

impl Qmp {
    /// Connect (retrying until `deadline` while QEMU creates the socket) and negotiate.
    pub async fn connect(path: &Path, wait: Duration) -> Result<Self, QmpError> {
        let shown = path.display().to_string();
        let start = std::time::Instant::now();
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) if start.elapsed() < wait => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(source) => {
                    return Err(QmpError::Io {
                        path: shown,
                        source,
                    });
                }
            }
        };
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            path: shown,
            reader: BufReader::new(r),
            writer: w,
            events: Vec::new(),
        };
        let greeting = qmp.read_value().await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "unexpected greeting {greeting}"
            )));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    async fn read_value(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .await
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        serde_json::from_str(&line).map_err(|e| QmpError::Protocol(format!("{e}: {line}")))
    }

    /// Run one command and return its `return` value.
    pub async fn execute(&mut self, command: &str, args: Option<Value>) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        loop {
            let v = self.read_value().await?;
            if v.get("event").is_some() {
                self.events.push(v);
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    desc: e
                        .get("desc")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown error")
                        .to_owned(),
                });
            }
            return Err(QmpError::Protocol(format!("unexpected message {v}")));
        }
    }

    /// `query-status`: the run state (`running`, `paused`, `internal-error`, `inmigrate`...).
    pub async fn status(&mut self) -> Result<String, QmpError> {
        let r = self.execute("query-status", None).await?;
        r.get("status")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| QmpError::Protocol(format!("query-status without status: {r}")))
    }

    /// Wait until `query-migrate` reports `completed` (or fails).
    pub async fn wait_migration(&mut self, timeout: Duration) -> Result<(), QmpError> {
        let start = std::time::Instant::now();
        loop {
            let r = self.execute("query-migrate", None).await?;
            match r.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some("failed") | Some("cancelled") => {
                    return Err(QmpError::Command {
                        command: "migrate".into(),
                        desc: r
                            .get("error-desc")
                            .and_then(Value::as_str)
                            .unwrap_or("migration failed")
                            .to_owned(),
                    });
                }
                _ => {}
            }
            if start.elapsed() > timeout {
                return Err(QmpError::Timeout("migration".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// States in which the guest will never make progress again without help.
pub fn is_dead_state(status: &str) -> bool {
    matches!(
        status,
        "internal-error" | "guest-panicked" | "shutdown" | "io-error"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn negotiates_and_skips_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.expect("accept");
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"{\"QMP\": {\"version\": {}}}\n")
                .await
                .expect("greet");
            let mut line = String::new();
            r.read_line(&mut line).await.expect("caps");
            assert!(line.contains("qmp_capabilities"));
            w.write_all(b"{\"return\": {}}\n").await.expect("ret");
            line.clear();
            r.read_line(&mut line).await.expect("status");
            assert!(line.contains("query-status"));
            w.write_all(b"{\"event\": \"STOP\"}\n{\"return\": {\"status\": \"internal-error\", \"running\": false}}\n")
                .await
                .expect("ret");
            line.clear();
            r.read_line(&mut line).await.expect("bad");
            w.write_all(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n")
                .await
                .expect("err");
        });
        let mut q = Qmp::connect(&path, Duration::from_secs(5))
            .await
            .expect("connect");
        let st = q.status().await.expect("status");
        assert_eq!(st, "internal-error");
        assert!(is_dead_state(&st));
        assert_eq!(q.events.len(), 1);
        let err = q.execute("bogus", None).await.expect_err("error answer");
        assert!(err.to_string().contains("nope"), "{err}");
        server.await.expect("server");
    }
}
