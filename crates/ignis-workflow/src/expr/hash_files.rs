//! The pure half of `hashFiles`: GitHub's digest over the matched files.
//!
//! The runner (`actions/runner`, `hashFiles.ts`) hashes each matched regular file with
//! SHA-256 and feeds the 32 raw digest bytes, file after file, into an outer SHA-256; the
//! result is the outer digest in lower-case hex, or `""` when no file matched. (act instead
//! hashes the concatenated contents; that differs for every non-empty match.)
//!
//! Order matters. The runner emits files in `@actions/glob` traversal order; callers should
//! pass them sorted by their workspace-relative path (byte order), which is the order the
//! conformance data assumes and what a directory walk that sorts entries produces.
//! The file-matching half is [`super::glob::GlobPatterns`]; reading files is the runtime's job.

use sha2::{Digest, Sha256};

/// Incremental form: add each matched file (its contents, or its own SHA-256 when the
/// caller streamed it), then [`FilesHasher::finish`].
#[derive(Debug, Clone, Default)]
pub struct FilesHasher {
    outer: Sha256,
    count: usize,
}

impl FilesHasher {
    /// Starts an empty digest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one file by contents.
    pub fn add_file(&mut self, contents: &[u8]) {
        let inner = Sha256::digest(contents);
        self.add_file_digest(inner.into());
    }

    /// Adds one file by its SHA-256 (for callers that stream large files themselves).
    pub fn add_file_digest(&mut self, sha256: [u8; 32]) {
        self.outer.update(sha256);
        self.count += 1;
    }

    /// How many files were added.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no file was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `hashFiles` result: lower-case hex, or `""` when no file was added.
    pub fn finish(self) -> String {
        if self.count == 0 {
            return String::new();
        }
        to_hex(&self.outer.finalize())
    }
}

/// `hashFiles` over the given file contents, in order.
pub fn hash_files_digest<B: AsRef<[u8]>>(files: impl IntoIterator<Item = B>) -> String {
    let mut h = FilesHasher::new();
    for f in files {
        h.add_file(f.as_ref());
    }
    h.finish()
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_match_is_empty_string() {
        assert_eq!(hash_files_digest(Vec::<Vec<u8>>::new()), "");
        assert!(FilesHasher::new().is_empty());
    }

    #[test]
    fn digest_of_digests() {
        // sha256("") = e3b0c442…; the outer hash is over those 32 raw bytes, not over "".
        let one = hash_files_digest([b"".as_slice()]);
        let inner = Sha256::digest(b"");
        assert_eq!(one, to_hex(&Sha256::digest(inner)));
        assert_ne!(one, to_hex(&Sha256::digest(b"")));
        let mut h = FilesHasher::new();
        h.add_file_digest(inner.into());
        assert_eq!(h.len(), 1);
        assert_eq!(h.finish(), one);
    }
}
