//! The ignis guest agent: serves the host<->agent protocol on one channel until the host goes
//! away, then kills everything it started and exits. Logs go to stderr, never to the channel.
//!
//! Kept small and quick to start (it sits in the sandbox allocation hot path): no argument
//! parser crate, a current-thread runtime.

use ignis_agent::transport::{self, Channel, TransportError};
use ignis_agent::{AgentConfig, ServeEnd, serve};
use std::process::ExitCode;

const USAGE: &str =
    "usage: ignis-agent (--stdio | --fd N | --serial PATH | --vsock-port PORT) [--poweroff-on-exit]

Serves the ignis agent protocol on one channel:
  --stdio            frames on stdin/stdout (a socketpair end or two pipes)
  --fd N             an inherited bidirectional socket fd
  --serial PATH      a virtio-serial port or tty (e.g. /dev/virtio-ports/ignis.agent)
  --vsock-port PORT  listen on AF_VSOCK and accept one host connection
  --poweroff-on-exit power the machine off when done (init of a VM, where exiting
                     would panic the kernel)
Environment: IGNIS_AGENT_LOG=error|warn|info|debug|trace (default warn), logs on stderr.
Exits when the host closes the channel or sends shutdown, after killing every command.";

/// Where the frames travel.
#[derive(Debug, PartialEq, Eq)]
enum Transport {
    Stdio,
    Fd(i32),
    Serial(String),
    Vsock(u32),
}

/// Bad command line (a host setup bug); exit code 2.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
enum UsageError {
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("invalid value {value:?} for {flag}")]
    BadValue { flag: String, value: String },
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("exactly one of --stdio, --fd, --serial, --vsock-port is required")]
    NoTransport,
    #[error("only one transport may be given")]
    TwoTransports,
}

#[derive(Debug, PartialEq, Eq)]
struct RunArgs {
    transport: Transport,
    poweroff_on_exit: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Cli {
    Run(RunArgs),
    Help,
    Version,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Cli, UsageError> {
    let mut args = args.into_iter();
    let mut transport = None;
    let mut poweroff_on_exit = false;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |flag: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| UsageError::MissingValue(flag.to_owned()))
        };
        let bad = |flag: &str, value: String| UsageError::BadValue {
            flag: flag.to_owned(),
            value,
        };
        let t = match flag.as_str() {
            "-h" | "--help" => return Ok(Cli::Help),
            "-V" | "--version" => return Ok(Cli::Version),
            "--poweroff-on-exit" => {
                poweroff_on_exit = true;
                continue;
            }
            "--stdio" => Transport::Stdio,
            "--fd" => {
                let v = value("--fd")?;
                match v.parse::<i32>() {
                    Ok(fd) if fd >= 0 => Transport::Fd(fd),
                    _ => return Err(bad("--fd", v)),
                }
            }
            "--serial" => Transport::Serial(value("--serial")?),
            "--vsock-port" => {
                let v = value("--vsock-port")?;
                Transport::Vsock(v.parse().map_err(|_| bad("--vsock-port", v))?)
            }
            _ => return Err(UsageError::Unknown(arg)),
        };
        if transport.replace(t).is_some() {
            return Err(UsageError::TwoTransports);
        }
    }
    let transport = transport.ok_or(UsageError::NoTransport)?;
    Ok(Cli::Run(RunArgs {
        transport,
        poweroff_on_exit,
    }))
}

fn open(t: &Transport) -> Result<Channel, TransportError> {
    match t {
        Transport::Stdio => transport::stdio(),
        Transport::Fd(fd) => transport::inherited_fd(*fd),
        Transport::Serial(path) => transport::serial(path),
        Transport::Vsock(port) => transport::vsock_accept(*port),
    }
}

fn init_logging() {
    let level = match std::env::var("IGNIS_AGENT_LOG").as_deref() {
        Ok("error") => tracing::Level::ERROR,
        Ok("info") => tracing::Level::INFO,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("trace") => tracing::Level::TRACE,
        _ => tracing::Level::WARN,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(level)
        .init();
}

/// Print an error and its causes on one line each.
fn report(prefix: &str, err: &dyn std::error::Error) {
    eprintln!("ignis-agent: {prefix}: {err}");
    let mut source = err.source();
    while let Some(s) = source {
        eprintln!("  caused by: {s}");
        source = s.source();
    }
}

fn main() -> ExitCode {
    let run = match parse_args(std::env::args().skip(1)) {
        Ok(Cli::Run(run)) => run,
        Ok(Cli::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Cli::Version) => {
            println!(
                "ignis-agent {} (protocol {})",
                env!("CARGO_PKG_VERSION"),
                ignis_agent::protocol::PROTOCOL_VERSION
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ignis-agent: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    let config = AgentConfig::for_binary();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report("cannot start runtime", &e);
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let (reader, writer) = match open(&run.transport) {
            Ok(c) => c,
            Err(e) => {
                report("cannot open channel", &e);
                return ExitCode::FAILURE;
            }
        };
        match serve(reader, writer, config).await {
            Ok(end) => {
                tracing::info!(?end, "agent exiting");
                match end {
                    ServeEnd::HostGone | ServeEnd::Shutdown => ExitCode::SUCCESS,
                    ServeEnd::Signalled => ExitCode::from(143),
                }
            }
            Err(e) => {
                report("cannot serve", &e);
                ExitCode::FAILURE
            }
        }
    });
    // Do not wait for blocking helper threads (a tar upload stuck on a dead channel).
    runtime.shutdown_background();
    if run.poweroff_on_exit {
        // As init of a VM, exiting would panic the kernel. Not the default: as init of a pid
        // namespace (the sandbox) a plain exit is wanted, and there reboot() would turn into
        // the agent being killed by a signal.
        if let Err(e) = rustix::system::reboot(rustix::system::RebootCommand::PowerOff) {
            report("cannot power off", &std::io::Error::from(e));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Cli, UsageError> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    fn run(transport: Transport, poweroff_on_exit: bool) -> Result<Cli, UsageError> {
        Ok(Cli::Run(RunArgs {
            transport,
            poweroff_on_exit,
        }))
    }

    #[test]
    fn parses_each_transport() {
        assert_eq!(parse(&["--stdio"]), run(Transport::Stdio, false));
        assert_eq!(parse(&["--fd", "3"]), run(Transport::Fd(3), false));
        assert_eq!(parse(&["--fd=4"]), run(Transport::Fd(4), false));
        assert_eq!(
            parse(&["--serial", "/dev/vport0p1"]),
            run(Transport::Serial("/dev/vport0p1".into()), false)
        );
        assert_eq!(
            parse(&["--poweroff-on-exit", "--vsock-port", "1024"]),
            run(Transport::Vsock(1024), true)
        );
        assert_eq!(parse(&["--help"]), Ok(Cli::Help));
    }

    #[test]
    fn rejects_bad_command_lines() {
        assert_eq!(parse(&[]), Err(UsageError::NoTransport));
        assert_eq!(
            parse(&["--stdio", "--fd", "3"]),
            Err(UsageError::TwoTransports)
        );
        assert!(matches!(
            parse(&["--fd", "-1"]),
            Err(UsageError::BadValue { .. })
        ));
        assert!(matches!(
            parse(&["--vsock-port", "x"]),
            Err(UsageError::BadValue { .. })
        ));
        assert!(matches!(
            parse(&["--serial"]),
            Err(UsageError::MissingValue(_))
        ));
        assert!(matches!(parse(&["--bogus"]), Err(UsageError::Unknown(_))));
    }
}
