//! A fake Firecracker for tests: the same command line (`--api-sock PATH --id ID`), an
//! HTTP/1.1 API on the Unix socket that accepts exactly what `firecracker.yaml` accepts
//! (400 + `fault_message` otherwise), Firecracker's call-order rules, and a "guest" whose
//! vsock device bridges `CONNECT <port>` to a real `ignis-agent --stdio` process.
//!
//! It runs no VM: the "guest" agent runs on the host, unisolated. It exists so the provider's
//! process handling, API use and failure paths are exercised for real.
//!
//! Knobs (environment, so a wrapper script can give each test its own):
//! - `IGNIS_FAKE_FC_MODE`: `die-before-socket` (exit 1 with a message on stderr before
//!   binding), `hang-api` (accept, never answer), `agent-never` (the guest never listens).
//! - `IGNIS_FAKE_FC_CONTROL`: a file read on every request; lines `fail METHOD PATH message`
//!   answer 400 with that message, `hang METHOD PATH` never answers.
//! - `IGNIS_FAKE_FC_LOG`: append every request as one JSON line (method, path, body, status).
//! - `IGNIS_FAKE_FC_AGENT`: the agent binary (default: `ignis-agent` next to this binary).
//! - `IGNIS_FIRECRACKER_SPEC`: the spec (default: the repository's `shared/` copy).

use super::spec::{self, Spec};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Marker in snapshot files this fake writes.
const SNAPSHOT_MAGIC: &str = "ignis-fake-firecracker-snapshot-v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    DieBeforeSocket,
    HangApi,
    AgentNever,
}

#[derive(Debug)]
struct Settings {
    api_sock: PathBuf,
    id: String,
    mode: Mode,
    control: Option<PathBuf>,
    log: Option<PathBuf>,
    agent: PathBuf,
}

/// What Firecracker tracks between calls.
#[derive(Debug, Default)]
struct VmState {
    started: bool,
    paused: bool,
    /// Resources configured so far (`machine-config`, `boot-source`, `drives`, ...).
    configured: Vec<String>,
    machine: Option<Value>,
    boot: Option<Value>,
    drives: BTreeMap<String, Value>,
    vsock: Option<Value>,
    net: BTreeMap<String, Value>,
    /// Host port counter for `OK <port>` answers.
    next_host_port: u32,
}

struct Server {
    settings: Settings,
    spec: Spec,
    state: Mutex<VmState>,
}

/// Entry point of the `fake-firecracker` binary.
pub fn main() -> ExitCode {
    let settings = match parse_args() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fake-firecracker: {e}");
            return ExitCode::from(2);
        }
    };
    if settings.mode == Mode::DieBeforeSocket {
        eprintln!(
            "fake-firecracker: dying before the api socket as asked (IGNIS_FAKE_FC_MODE=die-before-socket)"
        );
        return ExitCode::from(1);
    }
    let spec_path = spec::default_path();
    let spec = match Spec::load(&spec_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fake-firecracker: {e}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake-firecracker: runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let server = Arc::new(Server {
        settings,
        spec,
        state: Mutex::new(VmState {
            next_host_port: 1 << 30,
            ..VmState::default()
        }),
    });
    match rt.block_on(serve(server)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-firecracker: {e}");
            ExitCode::from(1)
        }
    }
}

fn parse_args() -> Result<Settings, String> {
    let mut api_sock = None;
    let mut id = "anonymous-instance".to_owned();
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--api-sock") => api_sock = args.next().map(PathBuf::from),
            Some("--id") => {
                id = args
                    .next()
                    .and_then(|s| s.into_string().ok())
                    .ok_or("--id needs a value")?
            }
            Some("--version") => {
                println!("Firecracker v1.17.0-dev (ignis fake)");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {}", a.to_string_lossy())),
        }
    }
    let mode = match std::env::var("IGNIS_FAKE_FC_MODE").as_deref() {
        Err(_) | Ok("") => Mode::Normal,
        Ok("die-before-socket") => Mode::DieBeforeSocket,
        Ok("hang-api") => Mode::HangApi,
        Ok("agent-never") => Mode::AgentNever,
        Ok(other) => return Err(format!("unknown IGNIS_FAKE_FC_MODE {other}")),
    };
    let agent = match std::env::var_os("IGNIS_FAKE_FC_AGENT") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| agent_next_to(&e))
            .ok_or("cannot locate ignis-agent; set IGNIS_FAKE_FC_AGENT")?,
    };
    Ok(Settings {
        api_sock: api_sock.ok_or("--api-sock PATH is required")?,
        id,
        mode,
        control: std::env::var_os("IGNIS_FAKE_FC_CONTROL").map(PathBuf::from),
        log: std::env::var_os("IGNIS_FAKE_FC_LOG").map(PathBuf::from),
        agent,
    })
}

async fn serve(server: Arc<Server>) -> std::io::Result<()> {
    let listener = UnixListener::bind(&server.settings.api_sock)?;
    loop {
        let (stream, _) = listener.accept().await?;
        let s = Arc::clone(&server);
        tokio::spawn(async move {
            let _ = s.connection(stream).await;
        });
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

enum Answer {
    NoContent,
    Json(u16, Value),
    Hang,
    /// Answer 204, then exit (the guest rebooted).
    ExitAfter,
}

fn fault(status: u16, msg: impl Into<String>) -> Answer {
    Answer::Json(status, json!({ "fault_message": msg.into() }))
}

impl Server {
    async fn connection(self: &Arc<Self>, mut stream: UnixStream) -> std::io::Result<()> {
        let mut buf = Vec::new();
        loop {
            let Some(req) = read_request(&mut stream, &mut buf).await? else {
                return Ok(());
            };
            if self.settings.mode == Mode::HangApi {
                std::future::pending::<()>().await;
            }
            let answer = self.handle(&req);
            let status = match &answer {
                Answer::NoContent | Answer::ExitAfter => 204,
                Answer::Json(s, _) => *s,
                Answer::Hang => 0,
            };
            self.log(&req, status);
            match answer {
                Answer::Hang => std::future::pending::<()>().await,
                Answer::NoContent => stream.write_all(b"HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n").await?,
                Answer::ExitAfter => {
                    stream.write_all(b"HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n").await?;
                    stream.flush().await?;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    std::process::exit(0);
                }
                Answer::Json(status, body) => {
                    let body = body.to_string();
                    let reason = if status < 300 { "OK" } else { "Bad Request" };
                    let head = format!(
                        "HTTP/1.1 {status} {reason}\r\nServer: Firecracker API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    stream.write_all(head.as_bytes()).await?;
                    stream.write_all(body.as_bytes()).await?;
                }
            }
        }
    }

    fn log(&self, req: &Request, status: u16) {
        let Some(path) = &self.settings.log else {
            return;
        };
        let body = if req.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&req.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&req.body).into_owned()))
        };
        let line = json!({"id": self.settings.id, "method": req.method, "path": req.path, "body": body, "status": status});
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }

    /// Injected faults from the control file.
    fn injected(&self, req: &Request) -> Option<Answer> {
        let text = std::fs::read_to_string(self.settings.control.as_ref()?).ok()?;
        for line in text.lines() {
            let mut parts = line.splitn(4, ' ');
            let (verb, method, path, rest) = (
                parts.next()?,
                parts.next()?,
                parts.next()?,
                parts.next().unwrap_or(""),
            );
            if method != req.method || !spec::template_matches(path, &req.path) {
                continue;
            }
            match verb {
                "fail" => return Some(fault(400, rest)),
                "hang" => return Some(Answer::Hang),
                _ => {}
            }
        }
        None
    }

    fn handle(self: &Arc<Self>, req: &Request) -> Answer {
        let op = match self.spec.validate(&req.method, &req.path, Some(&req.body)) {
            Ok(op) => op.operation_id.clone(),
            Err(reason) => return fault(400, reason),
        };
        if let Some(a) = self.injected(req) {
            return a;
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        const AFTER_START: &str =
            "The requested operation is not supported after starting the microVM.";
        const BEFORE_START: &str =
            "The requested operation is not supported before starting the microVM.";
        let pre_boot = matches!(
            op.as_str(),
            "putMachineConfiguration"
                | "patchMachineConfiguration"
                | "putGuestBootSource"
                | "putGuestDriveByID"
                | "putGuestNetworkInterfaceByID"
                | "putGuestVsock"
                | "putCpuConfiguration"
                | "putBalloon"
                | "putEntropyDevice"
                | "putSerialDevice"
                | "putMmdsConfig"
                | "putGuestPmemByID"
                | "putMemoryHotplug"
                | "putLogger"
                | "putMetrics"
        );
        if pre_boot && st.started {
            return fault(400, AFTER_START);
        }
        let text = |v: &Value, k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match op.as_str() {
            "describeInstance" => Answer::Json(
                200,
                json!({"app_name": "Firecracker", "id": self.settings.id, "vmm_version": "1.17.0-dev",
                       "state": if !st.started { "Not started" } else if st.paused { "Paused" } else { "Running" }}),
            ),
            "getFirecrackerVersion" => {
                Answer::Json(200, json!({"firecracker_version": "1.17.0-dev"}))
            }
            "getMachineConfiguration" => Answer::Json(
                200,
                st.machine
                    .clone()
                    .unwrap_or_else(|| json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": false})),
            ),
            "putMachineConfiguration" => {
                let vcpus = body.get("vcpu_count").and_then(Value::as_u64).unwrap_or(1);
                if body.get("smt").and_then(Value::as_bool) == Some(true)
                    && vcpus > 1
                    && vcpus % 2 == 1
                {
                    return fault(
                        400,
                        "The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.",
                    );
                }
                st.machine = Some(body);
                st.configured.push("machine-config".into());
                Answer::NoContent
            }
            "putGuestBootSource" => {
                let kernel = text(&body, "kernel_image_path");
                if let Err(e) = std::fs::File::open(&kernel) {
                    return fault(400, format!("Invalid kernel path: {e}"));
                }
                if let Some(initrd) = body.get("initrd_path").and_then(Value::as_str)
                    && let Err(e) = std::fs::File::open(initrd)
                {
                    return fault(400, format!("The initrd file's path is invalid: {e}"));
                }
                st.boot = Some(body);
                st.configured.push("boot-source".into());
                Answer::NoContent
            }
            "putGuestDriveByID" => {
                if text(&body, "drive_id") != req.path.trim_start_matches("/drives/") {
                    return fault(
                        400,
                        "The id from the path does not match the id from the body!",
                    );
                }
                let path = text(&body, "path_on_host");
                if let Err(e) = std::fs::OpenOptions::new()
                    .read(true)
                    .write(body.get("is_read_only") != Some(&Value::Bool(true)))
                    .open(&path)
                {
                    return fault(
                        400,
                        format!("Unable to create the block device: BackingFile({e}, \"{path}\")"),
                    );
                }
                st.drives.insert(text(&body, "drive_id"), body);
                st.configured.push("drives".into());
                Answer::NoContent
            }
            "putGuestNetworkInterfaceByID" => {
                if text(&body, "iface_id") != req.path.trim_start_matches("/network-interfaces/") {
                    return fault(
                        400,
                        "The id from the path does not match the id from the body!",
                    );
                }
                // Firecracker opens the tap by name: it must exist on the host.
                let tap = text(&body, "host_dev_name");
                if !Path::new("/sys/class/net").join(&tap).exists() {
                    return fault(
                        400,
                        format!(
                            "Could not create the network device: Open tap device failed: {tap}"
                        ),
                    );
                }
                st.net.insert(text(&body, "iface_id"), body);
                st.configured.push("network-interfaces".into());
                Answer::NoContent
            }
            "putGuestVsock" => {
                st.vsock = Some(body);
                st.configured.push("vsock".into());
                Answer::NoContent
            }
            "putLogger" | "putMetrics" => Answer::NoContent,
            "createSyncAction" => match text(&body, "action_type").as_str() {
                "InstanceStart" => {
                    if st.started {
                        return fault(400, AFTER_START);
                    }
                    let Some(boot) = st.boot.clone() else {
                        return fault(400, "Cannot start microvm without kernel configuration.");
                    };
                    let kernel = text(&boot, "kernel_image_path");
                    let mut magic = [0u8; 4];
                    let elf = std::fs::File::open(&kernel)
                        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
                        .is_ok()
                        && &magic == b"\x7fELF";
                    if !elf {
                        return fault(
                            400,
                            format!(
                                "Cannot load kernel due to invalid memory configuration or invalid kernel image: {kernel}"
                            ),
                        );
                    }
                    st.started = true;
                    let port = agent_port(&text(&boot, "boot_args"));
                    if let Some(vsock) = st.vsock.clone()
                        && let Err(e) = self.start_guest(&text(&vsock, "uds_path"), port)
                    {
                        return fault(500, format!("vsock device: {e}"));
                    }
                    Answer::NoContent
                }
                "SendCtrlAltDel" if st.started => Answer::ExitAfter,
                "SendCtrlAltDel" => fault(400, BEFORE_START),
                _ => fault(400, "FlushMetrics needs a metrics configuration"),
            },
            "patchVm" => {
                if !st.started {
                    return fault(400, BEFORE_START);
                }
                st.paused = text(&body, "state") == "Paused";
                Answer::NoContent
            }
            "createSnapshot" => {
                if !st.started {
                    return fault(400, BEFORE_START);
                }
                if !st.paused {
                    return fault(400, "Cannot create snapshot: the microVM is not paused.");
                }
                let snap = json!({
                    "magic": SNAPSHOT_MAGIC, "machine": st.machine, "boot": st.boot,
                    "drives": st.drives, "vsock": st.vsock, "net": st.net,
                });
                let write = std::fs::write(text(&body, "snapshot_path"), snap.to_string())
                    .and_then(|()| {
                        std::fs::write(text(&body, "mem_file_path"), vec![0xA5u8; 4096])
                    });
                match write {
                    Ok(()) => Answer::NoContent,
                    Err(e) => fault(400, format!("Cannot create snapshot: {e}")),
                }
            }
            "loadSnapshot" => {
                if st.started || !st.configured.is_empty() {
                    return fault(
                        400,
                        "Loading a microVM snapshot not allowed after configuring boot-specific resources.",
                    );
                }
                match self.load_snapshot(&mut st, &body) {
                    Ok(()) => Answer::NoContent,
                    Err(e) => fault(400, format!("Load microVM snapshot error: {e}")),
                }
            }
            other => fault(
                400,
                format!("{other} is not implemented by the fake firecracker"),
            ),
        }
    }

    fn load_snapshot(self: &Arc<Self>, st: &mut VmState, body: &Value) -> Result<(), String> {
        let path = body
            .get("snapshot_path")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mem = match (
            body.get("mem_file_path"),
            body.pointer("/mem_backend/backend_path"),
        ) {
            (Some(m), None) | (None, Some(m)) => m.as_str().unwrap_or_default().to_owned(),
            _ => return Err("exactly one of mem_file_path and mem_backend must be given".into()),
        };
        std::fs::metadata(&mem).map_err(|e| format!("memory file {mem}: {e}"))?;
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("snapshot file {path}: {e}"))?;
        let snap: Value =
            serde_json::from_str(&text).map_err(|e| format!("snapshot file {path}: {e}"))?;
        if snap.get("magic").and_then(Value::as_str) != Some(SNAPSHOT_MAGIC) {
            return Err(format!("{path} is not a snapshot"));
        }
        // Firecracker reopens every drive at the path recorded in the snapshot.
        if let Some(drives) = snap.get("drives").and_then(Value::as_object) {
            for d in drives.values() {
                let p = d
                    .get("path_on_host")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(p)
                    .map_err(|e| format!("drive {p}: {e}"))?;
            }
        }
        let mut vsock = snap.get("vsock").cloned().filter(|v| !v.is_null());
        if let (Some(v), Some(o)) = (vsock.as_mut(), body.pointer("/vsock_override/uds_path")) {
            v["uds_path"] = o.clone();
        } else if body.get("vsock_override").is_some() {
            return Err("vsock_override given but the snapshot has no vsock device".into());
        }
        for o in body
            .get("network_overrides")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let iface = o
                .get("iface_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let tap = o
                .get("host_dev_name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if snap.pointer(&format!("/net/{iface}")).is_none() {
                return Err(format!("network override for unknown interface {iface}"));
            }
            if !Path::new("/sys/class/net").join(tap).exists() {
                return Err(format!("Open tap device failed: {tap}"));
            }
        }
        let boot = snap.get("boot").cloned().unwrap_or(Value::Null);
        st.machine = snap.get("machine").cloned();
        st.boot = Some(boot.clone());
        st.vsock = vsock.clone();
        st.started = true;
        st.paused = body.get("resume_vm").and_then(Value::as_bool) != Some(true);
        if let Some(v) = vsock {
            let port = agent_port(
                boot.get("boot_args")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            );
            self.start_guest(
                v.get("uds_path")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                port,
            )
            .map_err(|e| format!("vsock device: {e}"))?;
        }
        Ok(())
    }

    /// The "guest": listen on the vsock `uds_path`; `CONNECT <agent port>` gets a fresh
    /// `ignis-agent --stdio` process bridged to the stream, other ports are refused.
    fn start_guest(self: &Arc<Self>, uds_path: &str, agent_port: u32) -> std::io::Result<()> {
        let listener = UnixListener::bind(uds_path)?;
        let me = Arc::clone(self);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let me = Arc::clone(&me);
                tokio::spawn(async move {
                    let _ = me.vsock_connection(stream, agent_port).await;
                });
            }
        });
        Ok(())
    }

    async fn vsock_connection(&self, stream: UnixStream, agent_port: u32) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        let port: Option<u32> = line
            .trim_end()
            .strip_prefix("CONNECT ")
            .and_then(|p| p.parse().ok());
        // Nobody listening in the guest: Firecracker resets the connection.
        if port != Some(agent_port) || self.settings.mode == Mode::AgentNever {
            return Ok(());
        }
        let mut child = tokio::process::Command::new(&self.settings.agent)
            .arg("--stdio")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let host_port = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.next_host_port += 1;
            st.next_host_port
        };
        let (mut child_in, mut child_out) = match (child.stdin.take(), child.stdout.take()) {
            (Some(i), Some(o)) => (i, o),
            _ => return Ok(()),
        };
        let buffered = reader.buffer().to_vec();
        let mut stream = reader.into_inner();
        stream
            .write_all(format!("OK {host_port}\n").as_bytes())
            .await?;
        child_in.write_all(&buffered).await?;
        let (mut rd, mut wr) = stream.into_split();
        let up = async {
            let _ = tokio::io::copy(&mut rd, &mut child_in).await;
            drop(child_in);
        };
        let down = async {
            let _ = tokio::io::copy(&mut child_out, &mut wr).await;
            let _ = wr.shutdown().await;
        };
        tokio::join!(up, down);
        let _ = child.kill().await;
        Ok(())
    }
}

/// The agent's vsock port from the kernel command line (`--vsock-port N`), default 1024.
fn agent_port(boot_args: &str) -> u32 {
    let mut it = boot_args.split_whitespace();
    while let Some(a) = it.next() {
        if a == "--vsock-port" {
            return it.next().and_then(|p| p.parse().ok()).unwrap_or(1024);
        }
        if let Some(p) = a.strip_prefix("--vsock-port=") {
            return p.parse().unwrap_or(1024);
        }
        // the guest image's /init reads this one (see `image::TRANSPORT_PARAM`)
        if let Some(p) = a.strip_prefix("ignis.transport=vsock:") {
            return p.parse().unwrap_or(1024);
        }
    }
    1024
}

/// Read one HTTP/1.1 request (Content-Length framing); `None` at a clean end of stream.
async fn read_request(
    stream: &mut UnixStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Request>> {
    let mut chunk = [0u8; 4096];
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(head)) => {
                    let len = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| {
                            std::str::from_utf8(h.value)
                                .ok()?
                                .trim()
                                .parse::<usize>()
                                .ok()
                        })
                        .unwrap_or(0);
                    if buf.len() >= head + len {
                        let method = req.method.unwrap_or_default().to_owned();
                        let path = req.path.unwrap_or_default().to_owned();
                        let body = buf[head..head + len].to_vec();
                        buf.drain(..head + len);
                        return Ok(Some(Request { method, path, body }));
                    }
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        e.to_string(),
                    ));
                }
            }
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 20 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request too large",
            ));
        }
    }
}

/// Path helper for tests: the agent binary built next to `exe` (`target/<profile>/`), found
/// the way the agent crate finds it.
pub fn agent_next_to(exe: &Path) -> Option<PathBuf> {
    ignis_agent::agent_binary_near(exe).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_port_comes_from_the_command_line() {
        assert_eq!(agent_port("console=ttyS0 init=/a -- --vsock-port 52"), 52);
        assert_eq!(agent_port("--vsock-port=7"), 7);
        assert_eq!(agent_port("quiet"), 1024);
        assert_eq!(agent_port("console=ttyS0 ignis.transport=vsock:2048"), 2048);
    }
}
