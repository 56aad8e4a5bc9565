//! Message types shared by host and agent, and the frame codec that carries them.
//!
//! # Wire format
//! A frame is a 4-byte big-endian payload length followed by the payload. A payload is one
//! [`RequestFrame`] (host -> agent) or [`ResponseFrame`] (agent -> host) serialized with
//! `postcard` (a compact serde format: varint integers, byte strings stored raw). Every frame
//! starts with the request id, so even a payload that fails to decode usually yields the id to
//! answer with an error. Frames longer than [`MAX_FRAME_LEN`] are skipped whole (the stream
//! stays synchronised) and reported as [`InFrame::Oversized`].
//!
//! # Conversation
//! - The host sends [`Request::Hello`] first; the agent answers [`Response::Hello`] or an error
//!   when it does not speak that version.
//! - Bulk payloads (stdin, file contents, tar streams) travel as [`Request::Data`] /
//!   [`Response::Data`] chunks of at most [`CHUNK_LEN`] bytes, terminated by [`Request::End`] /
//!   [`Response::Done`], so no single frame has to hold a whole file.
//! - An exec is answered by [`Response::Started`], then [`Response::Output`] chunks, then exactly
//!   one [`Response::Exit`]; or by one [`Response::Error`] when it could not start.
//! - [`Request::ExecWithFiles`] is an exec that also creates a command's file command files
//!   (`GITHUB_ENV`, `GITHUB_OUTPUT`, ...) before starting it and returns them after it: between
//!   the last `Output` and the `Exit` come the directory's tar as [`Response::Data`] chunks and
//!   one [`Response::FilesEnd`]. One round trip per step instead of three.
//! - Id 0 is reserved for connection-level errors (a frame whose id could not be decoded).
//!
//! # Compatibility
//! Requests added after version 1 ([`Request::ExecWithFiles`], [`Request::RemoveAll`],
//! [`Request::Which`]) are
//! appended variants: a version-1 agent answers them with an "undecodable request" error and
//! runs nothing, which the client turns into a fallback (see
//! [`crate::AgentClient::supports_command_files`]); the version number stays 1.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::codec::{Decoder, Encoder};

/// Version of this protocol; bumped on any incompatible change to the messages below.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame payload either side accepts. Bulk data is chunked well below this, so only a
/// broken or hostile peer ever hits it.
pub const MAX_FRAME_LEN: usize = 8 * 1024 * 1024;

/// Size of the chunks bulk payloads are split into.
pub const CHUNK_LEN: usize = 256 * 1024;

/// Id used for errors that cannot be attributed to a request.
pub const CONNECTION_ID: u64 = 0;

/// What to run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Program {
    /// argv[0] looked up in PATH, then its arguments.
    Argv(Vec<String>),
    /// A script body written to a file inside the guest and run by `shell` (`{0}` = file path),
    /// e.g. `["bash", "-e", "{0}"]`.
    Script {
        /// The shell's argv; `{0}` is replaced by the script path (appended when absent).
        shell: Vec<String>,
        /// The script's text.
        body: String,
        /// Where the script is written inside the guest (relative: from the working directory).
        path: String,
    },
}

/// One command to execute inside the guest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecRequest {
    /// What to run.
    pub program: Program,
    /// The complete environment (nothing is inherited from the agent unless listed here).
    pub env: BTreeMap<String, String>,
    /// Working directory; `/` when missing.
    pub cwd: Option<String>,
    /// Bytes fed to the command's stdin, which is then closed; `/dev/null` when missing.
    #[serde(with = "serde_bytes")]
    pub stdin: Option<Vec<u8>>,
    /// The agent kills the whole process group when this elapses.
    pub timeout: Option<Duration>,
}

impl ExecRequest {
    /// A request for `program` with an empty environment, `/` as cwd, no stdin, no timeout.
    pub fn new(program: Program) -> Self {
        ExecRequest {
            program,
            env: BTreeMap::new(),
            cwd: None,
            stdin: None,
            timeout: None,
        }
    }

    /// Shorthand for `ExecRequest::new(Program::Argv(..))`.
    pub fn argv<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(Program::Argv(argv.into_iter().map(Into::into).collect()))
    }
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Stream {
    /// The command's standard output.
    Stdout,
    /// The command's standard error.
    Stderr,
}

/// How a command ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code when it exited normally.
    pub code: Option<i32>,
    /// Signal number when it was killed by a signal.
    pub signal: Option<i32>,
    /// True when the agent killed it because its timeout elapsed.
    pub timed_out: bool,
    /// True when it was killed by a cancel request.
    pub cancelled: bool,
    /// Wall time from spawn to exit.
    pub duration: Duration,
}

impl ExitStatus {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// A host -> agent message with the id its answers will carry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestFrame {
    /// Chosen by the host, unique among its in-flight requests; never [`CONNECTION_ID`].
    pub id: u64,
    /// What is asked.
    pub body: Request,
}

/// What the host asks of the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Request {
    /// Version check; answered by [`Response::Hello`].
    /// Version check; answered by [`Response::Hello`].
    Hello {
        /// The host's [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// Start a command. When `stdin_follows` is set, stdin arrives as `Data` chunks under this
    /// request's id, closed by `End` (used when it does not fit in one chunk).
    Exec {
        /// The command.
        req: ExecRequest,
        /// Stdin arrives as `Data` chunks instead of inside `req`.
        stdin_follows: bool,
    },
    /// Send `signal` to the process group of running exec `target`.
    Signal {
        /// Request id of the exec.
        target: u64,
        /// Signal number (e.g. 15 for SIGTERM).
        signal: i32,
    },
    /// Kill the process group of exec `target`: SIGTERM, then SIGKILL after `grace` (SIGKILL at
    /// once when `grace` is zero). Answered `Ok` even when the command already ended, because a
    /// cancel racing a command's natural exit is normal.
    Cancel {
        /// Request id of the exec.
        target: u64,
        /// Time between SIGTERM and SIGKILL.
        grace: Duration,
    },
    /// Write a file (parents created) from the `Data` chunks that follow, then set `mode`.
    WriteFile {
        /// Guest path.
        path: String,
        /// Permission bits, e.g. `0o644`.
        mode: u32,
    },
    /// Read a file; answered by `Data` chunks and `Done`.
    ReadFile {
        /// Guest path.
        path: String,
    },
    /// Unpack the tar stream in the following `Data` chunks into directory `dest` (created).
    PutTar {
        /// Guest directory to unpack into.
        dest: String,
    },
    /// Pack `path` (a file or a directory's contents) as a tar stream of `Data` chunks + `Done`.
    GetTar {
        /// Guest file or directory.
        path: String,
    },
    /// A chunk of the bulk payload of the request with this frame's id.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// End of the bulk payload of the request with this frame's id.
    End,
    /// Answered by `Pong`.
    Ping,
    /// Kill every process group and exit after answering `Ok`.
    Shutdown,
    /// [`Request::Exec`] plus the command's file command files: before the command starts,
    /// `files.dir` is created with each of `files.names` empty in it; after the command ended
    /// the directory comes back as a tar (`Data` chunks, then `FilesEnd`) before the `Exit`.
    ExecWithFiles {
        /// The command.
        req: ExecRequest,
        /// Stdin arrives as `Data` chunks instead of inside `req`.
        stdin_follows: bool,
        /// The files to create and return.
        files: CommandFiles,
    },
    /// Remove a file or a directory tree (like `rm -rf`; a missing path is fine); answered `Ok`.
    RemoveAll {
        /// Guest path.
        path: String,
    },
    /// Find programs the way `command -v` does (the first executable file of that name in a
    /// `PATH` entry); answered by [`Response::Found`].
    Which {
        /// Program names (no `/`).
        names: Vec<String>,
        /// The `PATH` to search, `:`-separated.
        path: String,
    },
}

/// The file command files of one command (see [`Request::ExecWithFiles`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommandFiles {
    /// Guest directory that holds them, created with its parents.
    pub dir: String,
    /// File names in `dir`, each created empty (an existing file is truncated).
    pub names: Vec<String>,
    /// Permission bits of the files, e.g. `0o666`.
    pub mode: u32,
}

/// An agent -> host message for the request with `id`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResponseFrame {
    /// The id of the request this answers ([`CONNECTION_ID`] when unattributable).
    pub id: u64,
    /// The answer.
    pub body: Response,
}

/// What the agent answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Response {
    /// The agent's protocol version and its own pid (1 when it is init of its namespace).
    Hello {
        /// Protocol version the agent speaks.
        version: u32,
        /// The agent's pid.
        pid: u32,
    },
    /// The exec was spawned; `pid` is its process (and process group) id.
    Started {
        /// Pid (and process group id) of the command.
        pid: u32,
    },
    /// A chunk of a command's output, in the order it was read from that stream.
    Output {
        /// Which stream the bytes came from.
        stream: Stream,
        #[serde(with = "serde_bytes")]
        /// The bytes, raw.
        data: Vec<u8>,
    },
    /// The command ended; last message of an exec.
    Exit(ExitStatus),
    /// A chunk of a bulk download (read file, get tar).
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// End of a bulk download.
    Done,
    /// The request succeeded and has nothing more to say.
    Ok,
    /// Answer to `Ping`.
    Pong,
    /// The request failed; last message for this id.
    Error {
        /// What went wrong, lowercase, naming the path or command.
        message: String,
    },
    /// End of the file command files' tar of an [`Request::ExecWithFiles`] (sent before its
    /// `Exit`); `error` says why the tar is missing or incomplete (e.g. the command removed
    /// the directory).
    FilesEnd {
        /// Why packing the directory failed, if it did.
        error: Option<String>,
    },
    /// The answer to [`Request::Which`]: per name, where it was found.
    Found {
        /// Guest paths, in the order of the request's names.
        paths: Vec<Option<String>>,
    },
}

impl Response {
    /// Whether this is the last message for its id.
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            Response::Started { .. }
                | Response::Output { .. }
                | Response::Data(_)
                | Response::FilesEnd { .. }
        )
    }
}

/// Errors turning payloads into messages and back.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The peer sent bytes that are not a valid message (a peer bug or a corrupted channel).
    #[error("undecodable message")]
    Decode(#[source] postcard::Error),
    /// A message could not be serialized (an ignis bug).
    #[error("unencodable message")]
    Encode(#[source] postcard::Error),
    /// A message would exceed [`MAX_FRAME_LEN`] (e.g. a gigantic argv or script body).
    #[error("message of {len} bytes exceeds the {max} byte frame limit")]
    TooLarge {
        /// Size of the message.
        len: usize,
        /// The limit.
        max: usize,
    },
    #[error("channel i/o")]
    /// Reading or writing the channel failed.
    Io(#[from] std::io::Error),
}

/// Serialize a message into a frame payload, refusing payloads over [`MAX_FRAME_LEN`].
pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, CodecError> {
    let buf = postcard::to_allocvec(msg).map_err(CodecError::Encode)?;
    if buf.len() > MAX_FRAME_LEN {
        return Err(CodecError::TooLarge {
            len: buf.len(),
            max: MAX_FRAME_LEN,
        });
    }
    Ok(Bytes::from(buf))
}

/// Deserialize a frame payload. Trailing bytes are an error: a frame holds exactly one message.
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, CodecError> {
    let (msg, rest) = postcard::take_from_bytes(payload).map_err(CodecError::Decode)?;
    if !rest.is_empty() {
        return Err(CodecError::Decode(postcard::Error::DeserializeBadEncoding));
    }
    Ok(msg)
}

/// The id at the start of a payload, if it can be read: lets a peer answer an undecodable
/// message under the id its sender is waiting on.
pub fn peek_id(payload: &[u8]) -> Option<u64> {
    postcard::take_from_bytes::<u64>(payload)
        .ok()
        .map(|(id, _)| id)
}

/// One incoming frame.
#[derive(Debug, PartialEq, Eq)]
pub enum InFrame {
    /// A complete payload.
    Payload(BytesMut),
    /// A frame over the limit, skipped without buffering it. `id` is read from its first bytes
    /// when they could be decoded, so the sender can be answered.
    Oversized {
        /// Declared payload length.
        len: usize,
        /// Request id read from the payload's first bytes.
        id: Option<u64>,
    },
}

/// Length-delimited framing (u32 big-endian length + payload) with an explicit maximum.
///
/// Unlike `LengthDelimitedCodec`, which fails the whole stream on an oversized frame, this codec
/// skips the oversized payload byte for byte and yields [`InFrame::Oversized`], so a peer can be
/// answered with an error and the stream stays usable.
#[derive(Debug)]
pub struct FrameCodec {
    max: usize,
    state: DecodeState,
}

#[derive(Debug)]
enum DecodeState {
    Head,
    Body(usize),
    /// Discarding an oversized frame: bytes still to drop, total length, id if already known.
    Skip {
        remaining: usize,
        len: usize,
        id_reported: bool,
    },
}

const HEADER_LEN: usize = 4;
/// A postcard u64 varint takes at most 10 bytes.
const MAX_ID_LEN: usize = 10;

impl FrameCodec {
    /// A codec with the protocol's [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max(MAX_FRAME_LEN)
    }

    /// A codec with a custom maximum payload length (for tests of the limit).
    pub fn with_max(max: usize) -> Self {
        FrameCodec {
            max,
            state: DecodeState::Head,
        }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for FrameCodec {
    type Item = InFrame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<InFrame>, CodecError> {
        loop {
            match self.state {
                DecodeState::Head => {
                    if src.len() < HEADER_LEN {
                        src.reserve(HEADER_LEN - src.len());
                        return Ok(None);
                    }
                    let len = src.get_u32() as usize;
                    if len > self.max {
                        self.state = DecodeState::Skip {
                            remaining: len,
                            len,
                            id_reported: false,
                        };
                    } else {
                        self.state = DecodeState::Body(len);
                    }
                }
                DecodeState::Body(len) => {
                    if src.len() < len {
                        src.reserve(len - src.len());
                        return Ok(None);
                    }
                    self.state = DecodeState::Head;
                    return Ok(Some(InFrame::Payload(src.split_to(len))));
                }
                DecodeState::Skip {
                    remaining,
                    len,
                    id_reported,
                } => {
                    if !id_reported {
                        // Wait for enough bytes to read the id, unless the frame ends first.
                        let want = MAX_ID_LEN.min(remaining);
                        if src.len() < want {
                            return Ok(None);
                        }
                        let id = peek_id(&src[..want]);
                        self.state = DecodeState::Skip {
                            remaining,
                            len,
                            id_reported: true,
                        };
                        return Ok(Some(InFrame::Oversized { len, id }));
                    }
                    let n = remaining.min(src.len());
                    src.advance(n);
                    if n < remaining {
                        self.state = DecodeState::Skip {
                            remaining: remaining - n,
                            len,
                            id_reported,
                        };
                        return Ok(None);
                    }
                    self.state = DecodeState::Head;
                }
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<InFrame>, CodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None => {
                // A truncated last frame is dropped: the peer is gone, nobody waits for an answer.
                src.clear();
                Ok(None)
            }
        }
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        if payload.len() > self.max {
            return Err(CodecError::TooLarge {
                len: payload.len(),
                max: self.max,
            });
        }
        dst.reserve(HEADER_LEN + payload.len());
        // Cast is lossless: payload.len() <= max <= usize, and max is far below u32::MAX.
        dst.put_u32(payload.len() as u32);
        dst.extend_from_slice(&payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn request_round_trip() {
        let mut req = ExecRequest::argv(["echo", "hi"]);
        req.env.insert("A".into(), "b".into());
        req.stdin = Some(vec![0, 1, 2, 255]);
        req.timeout = Some(Duration::from_millis(1500));
        let frames = [
            RequestFrame {
                id: 7,
                body: Request::Exec {
                    req,
                    stdin_follows: false,
                },
            },
            RequestFrame {
                id: u64::MAX,
                body: Request::Data(vec![9; 1000]),
            },
            RequestFrame {
                id: 3,
                body: Request::Cancel {
                    target: 7,
                    grace: Duration::ZERO,
                },
            },
        ];
        for f in frames {
            let bytes = encode(&f).expect("encodable");
            assert_eq!(decode::<RequestFrame>(&bytes).expect("decodable"), f);
            assert_eq!(peek_id(&bytes), Some(f.id));
        }
    }

    #[test]
    fn output_chunks_are_raw_bytes() {
        let data = vec![0xffu8; 4096];
        let f = ResponseFrame {
            id: 1,
            body: Response::Output {
                stream: Stream::Stdout,
                data: data.clone(),
            },
        };
        let bytes = encode(&f).expect("encodable");
        // id + variant + stream + length varint + raw bytes: no per-byte expansion.
        assert!(bytes.len() <= data.len() + 8, "{} bytes", bytes.len());
        assert_eq!(decode::<ResponseFrame>(&bytes).expect("decodable"), f);
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&RequestFrame {
            id: 1,
            body: Request::Ping,
        })
        .expect("encodable")
        .to_vec();
        bytes.push(0);
        assert!(decode::<RequestFrame>(&bytes).is_err());
    }

    #[test]
    fn codec_splits_frames_across_reads() {
        let mut codec = FrameCodec::new();
        let mut all = frame(b"abc");
        all.extend(frame(b""));
        all.extend(frame(b"defg"));
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in all {
            buf.put_u8(b);
            while let Some(f) = codec.decode(&mut buf).expect("no error") {
                out.push(f);
            }
        }
        assert_eq!(
            out,
            vec![
                InFrame::Payload(BytesMut::from(&b"abc"[..])),
                InFrame::Payload(BytesMut::new()),
                InFrame::Payload(BytesMut::from(&b"defg"[..])),
            ]
        );
    }

    #[test]
    fn codec_skips_oversized_frame_and_resynchronises() {
        let mut codec = FrameCodec::with_max(16);
        let big_payload = encode(&RequestFrame {
            id: 300,
            body: Request::Data(vec![1; 100]),
        })
        .expect("encodable");
        let mut all = frame(&big_payload);
        all.extend(frame(b"ok"));
        // Feed in small pieces to exercise the partial-skip path.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in all.chunks(7) {
            buf.extend_from_slice(piece);
            while let Some(f) = codec.decode(&mut buf).expect("no error") {
                out.push(f);
            }
        }
        assert_eq!(
            out,
            vec![
                InFrame::Oversized {
                    len: big_payload.len(),
                    id: Some(300)
                },
                InFrame::Payload(BytesMut::from(&b"ok"[..])),
            ]
        );
    }

    #[test]
    fn encoder_refuses_oversized_payload() {
        let mut codec = FrameCodec::with_max(4);
        let mut dst = BytesMut::new();
        assert!(matches!(
            codec.encode(Bytes::from_static(b"12345"), &mut dst),
            Err(CodecError::TooLarge { len: 5, max: 4 })
        ));
        codec
            .encode(Bytes::from_static(b"1234"), &mut dst)
            .expect("fits");
        assert_eq!(&dst[..], &frame(b"1234")[..]);
    }

    #[test]
    fn terminal_responses() {
        assert!(!Response::Started { pid: 1 }.is_terminal());
        assert!(!Response::Data(vec![]).is_terminal());
        assert!(Response::Done.is_terminal());
        assert!(
            Response::Error {
                message: String::new()
            }
            .is_terminal()
        );
    }
}
