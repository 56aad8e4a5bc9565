//! A small HTTP/1.1 client for Firecracker's REST API on its Unix socket.
//!
//! Firecracker speaks plain HTTP/1.1 with JSON bodies and `Content-Length` framing on a Unix
//! domain socket; a full HTTP stack buys nothing here, so requests are written by hand and
//! responses are parsed with `httparse` (the parser hyper uses). Every call is bounded by a
//! timeout so a hung VMM can never hang the caller, and every error body's `fault_message` is
//! kept verbatim.

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Largest response accepted: Firecracker's answers are a few hundred bytes.
const MAX_RESPONSE: usize = 1 << 20;

/// Errors of one API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Firecracker answered with an error status; `fault_message` is its text, verbatim.
    #[error("{method} {path} returned {status}: {fault_message}")]
    Fault {
        method: &'static str,
        path: String,
        status: u16,
        fault_message: String,
    },
    /// No complete answer within the timeout.
    #[error("{method} {path} timed out after {timeout:?} (firecracker api hung)")]
    Timeout {
        method: &'static str,
        path: String,
        timeout: Duration,
    },
    /// The socket could not be reached or broke mid-call.
    #[error("{method} {path} on {socket}: {source}")]
    Io {
        method: &'static str,
        path: String,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The answer was not valid HTTP/1.1.
    #[error("{method} {path}: malformed response: {reason}")]
    Protocol {
        method: &'static str,
        path: String,
        reason: String,
    },
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Client for one Firecracker process's API socket. Cheap to clone; one connection per call
/// (connecting to a Unix socket costs microseconds and keeps calls independent).
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
}

impl ApiClient {
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            socket: socket.into(),
            timeout,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `PUT path` with a JSON body.
    pub async fn put<T: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<ApiResponse, ApiError> {
        self.call("PUT", path, Some(to_json("PUT", path, body)?))
            .await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch<T: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<ApiResponse, ApiError> {
        self.call("PATCH", path, Some(to_json("PATCH", path, body)?))
            .await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<ApiResponse, ApiError> {
        self.call("GET", path, None).await
    }

    /// One request/response exchange, bounded by the client's timeout. Non-2xx answers become
    /// [`ApiError::Fault`] carrying Firecracker's `fault_message`.
    pub async fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<ApiResponse, ApiError> {
        let fut = self.exchange(method, path, body);
        let resp = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ApiError::Timeout {
                    method,
                    path: path.to_owned(),
                    timeout: self.timeout,
                });
            }
        };
        if (200..300).contains(&resp.status) {
            return Ok(resp);
        }
        Err(ApiError::Fault {
            method,
            path: path.to_owned(),
            status: resp.status,
            fault_message: fault_message(&resp.body),
        })
    }

    async fn exchange(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<ApiResponse, ApiError> {
        let io_err = |source| ApiError::Io {
            method,
            path: path.to_owned(),
            socket: self.socket.clone(),
            source,
        };
        let mut stream = UnixStream::connect(&self.socket).await.map_err(io_err)?;
        let request = encode_request(method, path, body.as_deref());
        stream.write_all(&request).await.map_err(io_err)?;
        read_response(&mut stream).await.map_err(|e| match e {
            ReadError::Io(source) => io_err(source),
            ReadError::Protocol(reason) => ApiError::Protocol {
                method,
                path: path.to_owned(),
                reason,
            },
        })
    }
}

fn to_json<T: Serialize + ?Sized>(
    method: &'static str,
    path: &str,
    body: &T,
) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(body).map_err(|e| ApiError::Protocol {
        method,
        path: path.to_owned(),
        reason: format!("encoding request body: {e}"),
    })
}

/// The request bytes, exactly as sent on the wire.
pub fn encode_request(method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut out =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n")
            .into_bytes();
    if let Some(body) = body {
        out.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(body);
    } else {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `fault_message` of an error body, or the raw body when it is not Firecracker's error shape.
pub fn fault_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Fault {
        fault_message: String,
    }
    match serde_json::from_slice::<Fault>(body) {
        Ok(f) => f.fault_message,
        Err(_) if body.is_empty() => "(empty error body)".to_owned(),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

#[derive(Debug)]
enum ReadError {
    Io(std::io::Error),
    Protocol(String),
}

async fn read_response(stream: &mut UnixStream) -> Result<ApiResponse, ReadError> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Protocol(
                "connection closed before a complete response".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            return Err(ReadError::Protocol("response larger than 1 MiB".into()));
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(ReadError::Protocol(format!("bad response head: {e}"))),
        };
        let status = resp
            .code
            .ok_or_else(|| ReadError::Protocol("no status code".into()))?;
        let mut content_length = 0usize;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                content_length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| ReadError::Protocol("bad content-length".into()))?;
            }
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(ReadError::Protocol(
                    "transfer-encoding is not supported".into(),
                ));
            }
        }
        if content_length > MAX_RESPONSE {
            return Err(ReadError::Protocol("response larger than 1 MiB".into()));
        }
        while buf.len() < head_len + content_length {
            let n = stream.read(&mut chunk).await.map_err(ReadError::Io)?;
            if n == 0 {
                return Err(ReadError::Protocol(
                    "connection closed inside the response body".into(),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[head_len..head_len + content_length].to_vec();
        return Ok(ApiResponse { status, body });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    #[test]
    fn encodes_put_with_length() {
        let req = encode_request("PUT", "/vm", Some(br#"{"state":"Paused"}"#));
        let text = String::from_utf8(req).expect("ascii");
        assert!(text.starts_with("PUT /vm HTTP/1.1\r\n"));
        assert!(text.contains("Content-Length: 18\r\n\r\n{\"state\":\"Paused\"}"));
    }

    #[test]
    fn fault_message_is_verbatim_or_raw() {
        assert_eq!(
            fault_message(br#"{"fault_message":"Invalid kernel path: x"}"#),
            "Invalid kernel path: x"
        );
        assert_eq!(fault_message(b"oops"), "oops");
        assert_eq!(fault_message(b""), "(empty error body)");
    }

    async fn serve_once(answer: &'static [u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("api.sock");
        let listener = UnixListener::bind(&sock).expect("bind");
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b).await;
                let _ = s.write_all(answer).await;
                // Keep the connection open: the client must rely on Content-Length.
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        (dir, sock)
    }

    #[tokio::test]
    async fn surfaces_fault_message() {
        let (_d, sock) =
            serve_once(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 28\r\n\r\n{\"fault_message\":\"no drive\"}").await;
        let err = ApiClient::new(sock, Duration::from_secs(5))
            .put("/drives/rootfs", &serde_json::json!({}))
            .await;
        match err {
            Err(ApiError::Fault {
                status: 400,
                fault_message,
                ..
            }) => assert_eq!(fault_message, "no drive"),
            other => panic!("expected fault, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn reads_204_without_body() {
        let (_d, sock) = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        let resp = ApiClient::new(sock, Duration::from_secs(5))
            .get("/")
            .await
            .expect("ok");
        assert_eq!(resp.status, 204);
        assert!(resp.body.is_empty());
    }

    #[tokio::test]
    async fn hung_server_times_out() {
        let (_d, sock) = serve_once(b"").await;
        let err = ApiClient::new(sock, Duration::from_millis(200))
            .get("/")
            .await;
        assert!(matches!(err, Err(ApiError::Timeout { .. })), "{err:?}");
    }
}
