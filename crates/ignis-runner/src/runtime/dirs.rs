//! Directories created in the machine by one `put_tar` instead of a `mkdir -p` process: a
//! job leg's workspace, temp and file command directories cost a round trip, not a process
//! start.

/// A tar of empty directories (mode 0755, modification time `mtime`, seconds since the
/// epoch) at `paths`, relative to the directory it will be unpacked in. Unpacking creates
/// missing parents, like `mkdir -p`, and leaves what is already in an existing directory.
///
/// # Errors
/// A path the tar format refuses (`..`, absolute, too long) is an `InvalidInput` error.
pub fn directories_tar(paths: &[&str], mtime: u64) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for p in paths {
        let invalid =
            p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c == ".." || c == ".");
        if invalid {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("directory path {p:?} must be relative and plain"),
            ));
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_mtime(mtime);
        b.append_data(
            &mut h,
            format!("{}/", p.trim_end_matches('/')),
            std::io::empty(),
        )?;
    }
    b.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_only_relative_and_plain() {
        let tar = directories_tar(&["work/repo", "temp", "files/"], 7).expect("tar");
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, bool, u64)> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let h = e.header();
                (
                    e.path().expect("path").display().to_string(),
                    h.entry_type().is_dir(),
                    h.mtime().expect("mtime"),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("work/repo/".to_string(), true, 7),
                ("temp/".to_string(), true, 7),
                ("files/".to_string(), true, 7),
            ]
        );
        for bad in ["", "/abs", "a/../b", "./x"] {
            assert!(directories_tar(&[bad], 0).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unpacking_creates_parents_and_keeps_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("temp")).expect("mkdir");
        std::fs::write(dir.path().join("temp/keep"), "x").expect("write");
        let tar = directories_tar(&["work/a/b", "temp"], 0).expect("tar");
        tar::Archive::new(tar.as_slice())
            .unpack(dir.path())
            .expect("unpack");
        assert!(dir.path().join("work/a/b").is_dir());
        assert!(dir.path().join("temp/keep").is_file());
    }
}
