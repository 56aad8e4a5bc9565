//! Byte channels the agent can speak over: inherited fds (stdio, a socketpair end), a
//! virtio-serial/tty character device, or an AF_VSOCK connection.
//!
//! Everything ends up as an [`FdStream`]: a non-blocking fd registered with tokio's reactor.
//! Using the fd directly (rather than `tokio::io::stdin`, which reads on a blocking thread)
//! keeps startup cheap and lets the agent notice EOF and exit without a thread stuck in read.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Errors setting up a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The fd given with `--fd` (or stdin/stdout) is not open (a host setup bug).
    #[error("fd {fd} is not open")]
    BadFd {
        /// The fd number.
        fd: RawFd,
    },
    /// The fd cannot be polled (e.g. a regular file), so it cannot carry the protocol.
    #[error("fd {fd} cannot be used as a channel")]
    Register {
        /// The fd.
        fd: RawFd,
        #[source]
        /// Why registration failed.
        source: io::Error,
    },
    #[error("cannot open serial device {path}")]
    /// Opening the serial device failed.
    OpenSerial {
        /// The device path.
        path: String,
        #[source]
        /// Why it failed.
        source: io::Error,
    },
    #[error("cannot set serial device {path} to raw mode")]
    /// The serial device is a tty that refused raw mode.
    RawMode {
        /// The device path.
        path: String,
        #[source]
        /// Why it failed.
        source: io::Error,
    },
    /// A vsock socket/bind/listen/accept step failed (no vsock device in this guest?).
    #[error("vsock {step} on port {port} failed")]
    Vsock {
        /// Which syscall failed.
        step: &'static str,
        /// The vsock port.
        port: u32,
        #[source]
        /// Why it failed.
        source: io::Error,
    },
}

/// A non-blocking fd driven by tokio's reactor, readable and writable.
#[derive(Debug)]
pub struct FdStream {
    fd: AsyncFd<OwnedFd>,
}

impl FdStream {
    /// Take ownership of `fd`, make it non-blocking and register it.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(fd.as_fd())?;
        // SAFETY: an `OwnedFd` keeps its descriptor open, and `as_raw_fd` returns that same
        // descriptor, until it is dropped together with the `AsyncFd` that owns it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(FdStream { fd })
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| rustix::io::read(fd, &mut *unfilled).map_err(io::Error::from)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| rustix::io::write(fd, data).map_err(io::Error::from)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The reading side of a channel.
#[derive(Debug)]
pub enum ChannelReader {
    /// A plain fd (stdio, socket, vsock).
    Fd(FdStream),
    /// A virtio-serial port, which reads EOF until the host side connects.
    Serial(WaitForHost<FdStream>),
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ChannelReader::Fd(r) => Pin::new(r).poll_read(cx, buf),
            ChannelReader::Serial(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

/// A reader and a writer for one channel.
pub type Channel = (ChannelReader, FdStream);

/// How often a serial port is polled while no host is connected.
const HOST_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// A reader that treats EOF as "host not connected yet" until the first byte arrives.
///
/// A virtio-serial port reads EOF (and polls as hung up) while the host end of its chardev is
/// not connected, which at boot is normal: the host may connect after the guest is up. After
/// the first byte, EOF means the host went away, as on any other channel.
#[derive(Debug)]
pub struct WaitForHost<R> {
    inner: R,
    connected: bool,
    retry: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<R> WaitForHost<R> {
    /// Wrap a reader that is not connected yet.
    pub fn new(inner: R) -> Self {
        WaitForHost {
            inner,
            connected: false,
            retry: None,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for WaitForHost<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.retry.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                this.retry = None;
            }
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            if buf.filled().len() > before {
                this.connected = true;
                return Poll::Ready(Ok(()));
            }
            if this.connected || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            this.retry = Some(Box::pin(tokio::time::sleep(HOST_POLL)));
        }
    }
}

/// Take ownership of an inherited fd number, checking that it is open.
fn adopt(fd: RawFd) -> Result<OwnedFd, TransportError> {
    // SAFETY: fcntl(F_GETFD) only queries the descriptor table; an invalid fd yields EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(TransportError::BadFd { fd });
    }
    // SAFETY: the fd is open (checked above) and was handed to this process to own (stdio or
    // `--fd N`); nothing else in the agent uses it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Split one bidirectional fd into a reader and a writer (two fds on the same open file).
fn split(fd: OwnedFd) -> Result<(FdStream, FdStream), TransportError> {
    let raw = fd.as_raw_fd();
    let dup = rustix::io::fcntl_dupfd_cloexec(&fd, 3).map_err(|e| TransportError::Register {
        fd: raw,
        source: e.into(),
    })?;
    let reg = |f: OwnedFd| {
        FdStream::new(f).map_err(|source| TransportError::Register { fd: raw, source })
    };
    Ok((reg(fd)?, reg(dup)?))
}

/// `--stdio`: frames arrive on fd 0 and leave on fd 1 (a socketpair end or two pipes).
pub fn stdio() -> Result<Channel, TransportError> {
    let input = adopt(0)?;
    let output = adopt(1)?;
    // Commands get their own stdio and logs go to stderr, so nothing else touches fds 0 and 1.
    let reader =
        FdStream::new(input).map_err(|source| TransportError::Register { fd: 0, source })?;
    let writer =
        FdStream::new(output).map_err(|source| TransportError::Register { fd: 1, source })?;
    Ok((ChannelReader::Fd(reader), writer))
}

/// `--fd N`: an inherited bidirectional socket.
pub fn inherited_fd(fd: RawFd) -> Result<Channel, TransportError> {
    let owned = adopt(fd)?;
    // The fd must not leak into commands the agent spawns.
    rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC).map_err(|e| {
        TransportError::Register {
            fd,
            source: e.into(),
        }
    })?;
    let (r, w) = split(owned)?;
    Ok((ChannelReader::Fd(r), w))
}

/// `--serial PATH`: a virtio-serial port (`/dev/vport0p1`, `/dev/virtio-ports/NAME`) or a tty,
/// which is switched to raw mode so no byte of a frame is translated.
pub fn serial(path: &str) -> Result<Channel, TransportError> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| TransportError::OpenSerial {
        path: path.to_owned(),
        source: e.into(),
    })?;
    if rustix::termios::isatty(&fd) {
        let raw_err = |e: rustix::io::Errno| TransportError::RawMode {
            path: path.to_owned(),
            source: e.into(),
        };
        let mut t = rustix::termios::tcgetattr(&fd).map_err(raw_err)?;
        t.make_raw();
        rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &t)
            .map_err(raw_err)?;
    }
    let (r, w) = split(fd)?;
    Ok((ChannelReader::Serial(WaitForHost::new(r)), w))
}

/// `--vsock-port P`: listen on AF_VSOCK (any CID) and accept one host connection.
///
/// Blocks until the host connects, which is what the agent wants at boot: nothing else to do.
pub fn vsock_accept(port: u32) -> Result<Channel, TransportError> {
    let err = |step: &'static str| {
        let source = io::Error::last_os_error();
        TransportError::Vsock { step, port, source }
    };
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(err("socket"));
    }
    // SAFETY: `raw` is a freshly created socket that nothing else owns.
    let listener = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid starting value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    addr.svm_port = port;
    let addr_len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_vm of `addr_len` bytes, living across the call.
    let rc = unsafe {
        libc::bind(
            listener.as_raw_fd(),
            (&addr as *const libc::sockaddr_vm).cast(),
            addr_len,
        )
    };
    if rc < 0 {
        return Err(err("bind"));
    }
    // SAFETY: plain listen(2) on a socket we own.
    if unsafe { libc::listen(listener.as_raw_fd(), 1) } < 0 {
        return Err(err("listen"));
    }
    let conn = loop {
        // SAFETY: accept4 with null address pointers is allowed (peer address not wanted).
        let c = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if c >= 0 {
            break c;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return Err(err("accept"));
        }
    };
    // SAFETY: `conn` is a freshly accepted socket that nothing else owns.
    let conn = unsafe { OwnedFd::from_raw_fd(conn) };
    // One host connection only: stop listening so a second connection is refused.
    drop(listener);
    let (r, w) = split(conn)?;
    Ok((ChannelReader::Fd(r), w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn socketpair_split_round_trip() {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let (mut ra, mut wa) = split(OwnedFd::from(a)).expect("split a");
        let (mut rb, mut wb) = split(OwnedFd::from(b)).expect("split b");
        wa.write_all(b"ping").await.expect("write a");
        let mut buf = [0u8; 4];
        rb.read_exact(&mut buf).await.expect("read b");
        assert_eq!(&buf, b"ping");
        wb.write_all(b"pong").await.expect("write b");
        ra.read_exact(&mut buf).await.expect("read a");
        assert_eq!(&buf, b"pong");
    }

    #[tokio::test]
    async fn serial_reader_waits_for_host_then_reports_eof() {
        // EOF first (no host yet), then data, then EOF again (host gone).
        let mock = scripted_reader(vec![Vec::new(), b"hi".to_vec(), Vec::new()]);
        let mut r = WaitForHost::new(mock);
        let mut buf = [0u8; 8];
        let n = r.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(r.read(&mut buf).await.expect("eof"), 0);
    }

    /// A reader returning the given reads in turn (an empty one is EOF), then EOF forever.
    fn scripted_reader(reads: Vec<Vec<u8>>) -> ScriptedReader {
        ScriptedReader {
            reads: reads.into(),
        }
    }

    struct ScriptedReader {
        reads: std::collections::VecDeque<Vec<u8>>,
    }

    impl AsyncRead for ScriptedReader {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(chunk) = self.reads.pop_front() {
                buf.put_slice(&chunk);
            }
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn closed_fd_is_rejected() {
        assert!(matches!(
            adopt(987_654),
            Err(TransportError::BadFd { fd: 987_654 })
        ));
    }
}
