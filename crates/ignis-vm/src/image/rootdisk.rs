//! The ext4 root disk: Debian packages (with their dependency closure) unpacked into a directory
//! tree and turned into a filesystem image by `mkfs.ext4 -d`, without installing anything on the
//! host, without loop mounts and without root.
//!
//! - Resolution: `apt-get install --print-uris` against an *empty* dpkg status file (so every
//!   dependency is listed, not just the ones the host lacks) and an empty archive dir (so debs
//!   already in the host's apt cache are listed too). `--no-install-recommends`: recommends
//!   would pull in hundreds of MB nobody asked for. The answer is remembered until apt's lists
//!   change, like the kernel's.
//! - Download: `apt-get download NAME=VERSION...` (apt checks the index hashes), cached by file
//!   name under `<cache>/debs/` so a new agent or init script does not download again.
//! - Unpack: `dpkg-deb -x` of each deb into one tree; no maintainer scripts run (none of the
//!   default packages needs one to work). Then the tree is usr-merged like a bookworm system
//!   (`/bin`, `/sbin`, `/lib`, `/lib64` become links into `/usr`) and docs, man pages and
//!   locales are dropped.
//! - Image: `mkfs.ext4 -d TREE` into a sparse raw file of [`ROOT_DISK_BYTES`]: the guest sees
//!   that much space, the host stores only what was written.

use super::{ImageError, io_err, run, sanitize_name};
use sha2::Digest;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian packages the root disk gets by default: what workflow scripts expect beyond
/// busybox (python3, GNU coreutils/findutils/grep/sed/diffutils/tar/gzip, bash, a full git
/// with its helpers).
pub const DEFAULT_PACKAGES: &[&str] = &[
    "python3",
    "bash",
    "coreutils",
    "findutils",
    "grep",
    "sed",
    "diffutils",
    "tar",
    "gzip",
    "git",
];

/// Virtual size of the root filesystem (the raw file is sparse: only written blocks use host
/// disk, and each session's writes land in its own qcow2 overlay).
pub const ROOT_DISK_BYTES: u64 = 8 << 30;

/// Directories dropped from the tree: nothing in a CI guest reads them.
const PRUNE: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
];

/// One package file of the closure, as `apt-get --print-uris` names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Deb {
    /// The file name apt downloads to (`name_version_arch.deb`, `:` escaped as `%3a`).
    pub file: String,
    /// The index hash apt verifies the download against (`MD5Sum:...` or `SHA256:...`).
    pub hash: String,
}

impl Deb {
    /// `name=version` for `apt-get download`.
    fn spec(&self) -> Option<String> {
        let stem = self.file.strip_suffix(".deb")?;
        let mut parts = stem.splitn(3, '_');
        let (name, version) = (parts.next()?, parts.next()?);
        (!name.is_empty() && !version.is_empty())
            .then(|| format!("{name}={}", version.replace("%3a", ":").replace("%3A", ":")))
    }
}

/// The `'URI' FILE SIZE HASH` lines of `apt-get --print-uris`.
pub fn parse_print_uris(text: &str) -> Vec<Deb> {
    let mut out: Vec<Deb> = text
        .lines()
        .filter(|l| l.starts_with('\''))
        .filter_map(|l| {
            let mut f = l.split_whitespace().skip(1);
            let file = f.next()?;
            let _size = f.next()?;
            let hash = f.next().unwrap_or("");
            (file.ends_with(".deb") && !file.contains('/')).then(|| Deb {
                file: file.to_owned(),
                hash: hash.to_owned(),
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The dependency closure of `packages` (no recommends), as apt would download it onto an
/// empty system.
fn resolve(packages: &[String]) -> Result<Vec<Deb>, ImageError> {
    let scratch = tempfile::tempdir().map_err(io_err("creating an apt scratch dir"))?;
    let status = scratch.path().join("status");
    fs::write(&status, b"").map_err(io_err("writing an empty dpkg status"))?;
    let archives = scratch.path().join("archives");
    fs::create_dir_all(archives.join("partial")).map_err(io_err("creating an apt archive dir"))?;
    let mut cmd = Command::new("apt-get");
    cmd.args(["-q", "-y", "--no-install-recommends", "--print-uris"])
        .arg("-o")
        .arg(format!("Dir::State::status={}", status.display()))
        .arg("-o")
        .arg(format!("Dir::Cache::archives={}", archives.display()))
        .args(["-o", "Debug::NoLocking=1", "install"])
        .args(packages);
    let text = run(&mut cmd)?;
    let debs = parse_print_uris(&text);
    if debs.is_empty() {
        return Err(ImageError::Command {
            command: format!("apt-get install --print-uris {}", packages.join(" ")),
            detail: "apt listed no package files".into(),
        });
    }
    Ok(debs)
}

/// [`resolve`], remembered in `<cache>/debs/` until apt's lists change (an apt run costs ~2 s,
/// and the resolution is needed for the image key on every start of a provider).
pub fn resolve_cached(cache: &Path, packages: &[String]) -> Result<Vec<Deb>, ImageError> {
    let stamp = super::apt_stamp();
    // named by a hash: a long package list would make too long a file name
    let list = packages.join("\0");
    let memo = cache.join("debs").join(format!(
        "{}-{}.resolved",
        sanitize_name(packages.first().map_or("", String::as_str)),
        &super::hex(&sha2::Sha256::digest(list.as_bytes()))[..16]
    ));
    if !stamp.is_empty()
        && let Ok(text) = fs::read_to_string(&memo)
        && let Some((s, json)) = text.split_once('\n')
        && s == stamp
        && let Ok(debs) = serde_json::from_str::<Vec<Deb>>(json)
        && !debs.is_empty()
    {
        return Ok(debs);
    }
    let debs = resolve(packages)?;
    if let Some(dir) = memo.parent()
        && fs::create_dir_all(dir).is_ok()
        && let Ok(json) = serde_json::to_string(&debs)
    {
        // best effort: a missing memo only costs the apt run next time
        let _ = fs::write(&memo, format!("{stamp}\n{json}"));
    }
    Ok(debs)
}

/// Every deb of `debs` in `<cache>/debs/`, downloading the missing ones in one `apt-get
/// download` run.
fn ensure_debs(cache: &Path, debs: &[Deb]) -> Result<Vec<PathBuf>, ImageError> {
    let dir = cache.join("debs");
    fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let missing: Vec<&Deb> = debs
        .iter()
        .filter(|d| !dir.join(&d.file).is_file())
        .collect();
    if !missing.is_empty() {
        let work = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(&dir)
            .map_err(io_err("creating a download dir"))?;
        let specs = missing
            .iter()
            .map(|d| {
                d.spec().ok_or_else(|| ImageError::Command {
                    command: "apt-get --print-uris".into(),
                    detail: format!("cannot read a package name and version from {}", d.file),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        run(Command::new("apt-get")
            .args(["download", "-q"])
            .args(&specs)
            .current_dir(work.path()))?;
        for d in &missing {
            let got = work.path().join(&d.file);
            if !got.is_file() {
                return Err(ImageError::Command {
                    command: format!("apt-get download {}", specs.join(" ")),
                    detail: format!("{} was not downloaded", d.file),
                });
            }
            fs::rename(&got, dir.join(&d.file)).map_err(io_err(format!("caching {}", d.file)))?;
        }
    }
    Ok(debs.iter().map(|d| dir.join(&d.file)).collect())
}

/// Unpack the closure into `tree` (created), usr-merge it and drop docs.
pub fn unpack(cache: &Path, debs: &[Deb], tree: &Path) -> Result<(), ImageError> {
    let files = ensure_debs(cache, debs)?;
    fs::create_dir_all(tree).map_err(io_err(format!("creating {}", tree.display())))?;
    for f in &files {
        run(Command::new("dpkg-deb").arg("-x").arg(f).arg(tree))?;
    }
    usr_merge(tree).map_err(io_err("usr-merging the root tree"))?;
    for p in PRUNE {
        match fs::remove_dir_all(tree.join(p)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("pruning {p}"))(e)),
        }
    }
    precompile_python(tree)?;
    Ok(())
}

/// Byte-compile the tree's Python modules, as Debian's `py3compile` postinst would: without
/// it every session compiles the stdlib on its first import (measured under TCG: 8.5 s for
/// `import json, subprocess, pathlib, re`, 1.3 s with the `.pyc` files). The tree's own
/// interpreter does it (run through the tree's loader and libraries, so the bytecode matches
/// the guest's Python whatever the host has), with the tree prefix stripped from the recorded
/// source paths. `unchecked-hash`: the image is immutable, so the `.pyc` files are used
/// without comparing source timestamps. A tree without python3 is left alone.
fn precompile_python(tree: &Path) -> Result<(), ImageError> {
    let Ok(target) = fs::read_link(tree.join("usr/bin/python3")) else {
        return Ok(());
    };
    let python = tree.join("usr/bin").join(target);
    let libdir = tree.join("usr/lib/x86_64-linux-gnu");
    let loader = libdir.join("ld-linux-x86-64.so.2");
    if !python.is_file() || !loader.is_file() {
        return Ok(());
    }
    let dirs: Vec<PathBuf> = fs::read_dir(tree.join("usr/lib"))
        .map_err(io_err("listing the tree's usr/lib"))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    if dirs.is_empty() {
        return Ok(());
    }
    let out = Command::new(&loader)
        .env_clear()
        .env("PYTHONHOME", tree.join("usr"))
        .arg("--library-path")
        .arg(&libdir)
        .arg(&python)
        .args(["-m", "compileall", "-q", "-j", "0"])
        .args(["--invalidation-mode", "unchecked-hash", "-p", "/", "-s"])
        .arg(tree)
        .args(&dirs)
        .output()
        .map_err(io_err(format!("running {}", python.display())))?;
    // a module that does not compile (compileall exits 1 but writes the rest) only costs the
    // guest that module's compilation: worth a warning, not a failed image
    if !out.status.success() {
        tracing::warn!(
            "byte-compiling the guest's python modules: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Make `/bin`, `/sbin`, `/lib` and `/lib64` links into `/usr`, moving what packages put there
/// (bookworm's packages still ship files under `/bin` and `/lib`; a real system is merged by
/// the `usrmerge` logic, which `dpkg-deb -x` does not run).
fn usr_merge(tree: &Path) -> std::io::Result<()> {
    for d in ["bin", "sbin", "lib", "lib64"] {
        let top = tree.join(d);
        let under = tree.join("usr").join(d);
        match fs::symlink_metadata(&top) {
            Ok(m) if m.file_type().is_symlink() => continue,
            Ok(m) if m.is_dir() => {
                move_into(&top, &under)?;
                fs::remove_dir_all(&top)?;
            }
            Ok(_) => fs::remove_file(&top)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::create_dir_all(&under)?;
        std::os::unix::fs::symlink(format!("usr/{d}"), &top)?;
    }
    Ok(())
}

/// Move every entry of `from` into `to`, merging directories that exist on both sides.
fn move_into(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dest = to.join(entry.file_name());
        let src_is_dir = entry.file_type()?.is_dir();
        match fs::symlink_metadata(&dest) {
            Ok(m) if m.is_dir() && src_is_dir => {
                move_into(&src, &dest)?;
                continue;
            }
            Ok(m) if m.is_dir() => fs::remove_dir_all(&dest)?,
            Ok(_) => fs::remove_file(&dest)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::rename(&src, &dest)?;
    }
    Ok(())
}

/// `mkfs.ext4 -d tree` into a sparse raw file of [`ROOT_DISK_BYTES`]. No journal: a session's
/// disk is thrown away with it, and snapshots are taken with the guest stopped and the block
/// layer flushed, so a journal would only cost writes.
pub fn make_ext4(tree: &Path, out: &Path) -> Result<(), ImageError> {
    let mkfs = super::which("mkfs.ext4")
        .ok_or_else(|| ImageError::MissingProgram("mkfs.ext4 (package e2fsprogs)".into()))?;
    run(Command::new(mkfs)
        .args([
            "-q",
            "-F",
            "-L",
            "ignis-root",
            "-m",
            "0",
            "-O",
            "^has_journal",
        ])
        .args(["-E", "root_owner=0:0"])
        .arg("-d")
        .arg(tree)
        .arg(out)
        .arg(format!("{}k", ROOT_DISK_BYTES / 1024)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_uris_lines_become_debs() {
        let text = "Reading package lists...\n\
            'http://deb.debian.org/debian/pool/main/g/glibc/libc6_2.36-9%2bdeb12u14_amd64.deb' libc6_2.36-9+deb12u14_amd64.deb 2759320 MD5Sum:8d98f0c882f269aaee8437bcfe89346e\n\
            'http://x/pool/main/p/perl/perl_1%3a5.36.0-7_amd64.deb' perl_1%3a5.36.0-7_amd64.deb 10 SHA256:ab\n\
            'http://x/evil' ../../etc/passwd 1 MD5Sum:00\n\
            E: something\n";
        let debs = parse_print_uris(text);
        assert_eq!(debs.len(), 2, "{debs:?}");
        assert_eq!(debs[0].file, "libc6_2.36-9+deb12u14_amd64.deb");
        assert_eq!(debs[0].hash, "MD5Sum:8d98f0c882f269aaee8437bcfe89346e");
        assert_eq!(debs[0].spec().as_deref(), Some("libc6=2.36-9+deb12u14"));
        assert_eq!(debs[1].spec().as_deref(), Some("perl=1:5.36.0-7"));
        assert_eq!(
            Deb {
                file: "x.deb".into(),
                hash: String::new()
            }
            .spec(),
            None
        );
    }

    #[test]
    fn usr_merge_moves_and_links() {
        let t = tempfile::tempdir().expect("tempdir");
        let r = t.path();
        fs::create_dir_all(r.join("bin")).expect("bin");
        fs::write(r.join("bin/bash"), b"bash").expect("bash");
        fs::create_dir_all(r.join("lib/x86_64-linux-gnu")).expect("lib");
        fs::write(r.join("lib/x86_64-linux-gnu/libc.so.6"), b"c").expect("libc");
        fs::create_dir_all(r.join("usr/lib/x86_64-linux-gnu")).expect("usr lib");
        fs::write(r.join("usr/lib/x86_64-linux-gnu/libz.so"), b"z").expect("libz");
        usr_merge(r).expect("merge");
        for d in ["bin", "sbin", "lib", "lib64"] {
            let m = fs::symlink_metadata(r.join(d)).expect("link");
            assert!(m.file_type().is_symlink(), "{d}");
        }
        assert_eq!(fs::read(r.join("usr/bin/bash")).expect("moved"), b"bash");
        assert_eq!(
            fs::read(r.join("lib/x86_64-linux-gnu/libc.so.6")).expect("through link"),
            b"c"
        );
        assert!(
            r.join("usr/lib/x86_64-linux-gnu/libz.so").is_file(),
            "merged"
        );
        usr_merge(r).expect("merging twice is a no-op");
    }
}
