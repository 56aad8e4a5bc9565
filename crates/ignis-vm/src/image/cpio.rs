//! A writer for the `newc` cpio format, the one format the kernel unpacks as an initramfs.
//!
//! Written here rather than shelling out to `cpio` so the archive is byte-for-byte
//! reproducible (fixed mtimes, inode numbers and owners) and needs no host tool.

use std::io::{self, Write};

/// Appends entries to a newc archive; [`NewcWriter::finish`] writes the trailer.
#[derive(Debug)]
pub struct NewcWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
}

/// File type bits of a cpio mode.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

impl<W: Write> NewcWriter<W> {
    pub fn new(out: W) -> Self {
        NewcWriter {
            out,
            next_ino: 1,
            written: 0,
        }
    }

    /// A directory (`name` without leading `/`).
    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.entry(name, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[])
    }

    /// A regular file with its contents.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, S_IFREG | (perm & 0o7777), 1, (0, 0), data)
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// A character device node (`/dev/console` must exist before init runs).
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[])
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let name = name.trim_start_matches('/');
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio entry over 4 GiB"))?;
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio name too long"))?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            0, 0, 0, 0, 0, rdev.0, rdev.1, 0
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    /// Pad to a 4-byte boundary, as newc requires after the name and after the data.
    fn pad(&mut self) -> io::Result<()> {
        let rem = (self.written % 4) as usize;
        if rem != 0 {
            self.put(&[0u8; 4][..4 - rem])?;
        }
        Ok(())
    }

    /// Write the trailer and hand back the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_and_padding() {
        let mut w = NewcWriter::new(Vec::new());
        w.file("init", 0o755, b"abc").expect("file");
        let out = w.finish().expect("finish");
        // 110-byte header, "init\0" (5) padded to 116, data 3 padded to 120.
        assert_eq!(&out[..6], b"070701");
        assert_eq!(&out[110..115], b"init\0");
        assert_eq!(&out[116..119], b"abc");
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("TRAILER!!!"));
        // mode field: regular file 0755
        assert_eq!(&out[14..22], b"000081ed");
    }

    #[test]
    fn host_cpio_lists_what_was_written() {
        let Ok(status) = std::process::Command::new("cpio").arg("--version").output() else {
            eprintln!("skipped: cpio not installed");
            return;
        };
        assert!(status.status.success());
        let mut w = NewcWriter::new(Vec::new());
        w.dir("usr", 0o755).expect("dir");
        w.file("usr/x", 0o644, b"hello").expect("file");
        w.symlink("bin", "usr/bin").expect("link");
        w.char_dev("console", 0o600, 5, 1).expect("dev");
        let data = w.finish().expect("finish");
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn cpio");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&data)
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{listing}");
        assert!(listing.contains("usr/x"), "{listing}");
        assert!(listing.contains("bin -> usr/bin"), "{listing}");
        assert!(
            listing.contains("5,   1") || listing.contains("5, 1"),
            "{listing}"
        );
    }
}
