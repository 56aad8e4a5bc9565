//! Finding and parsing the workflow files named by `-W` (shared by `validate`, `list`,
//! `graph` and `run`).
//!
//! A `-W` target is a file, or a directory whose `*.yml`/`*.yaml` files are taken in name
//! order without recursion (GitHub only reads `.github/workflows/*.yml`; act's recursive
//! default is not followed). Without `-W` the target is `.github/workflows`. Every file is
//! parsed even after one fails, so one run reports every located error of every file.

use ignis_workflow::model::Workflow;
use ignis_workflow::{Diagnostics, parse};
use std::path::{Path, PathBuf};

/// The directory used when no `-W` is given.
pub const DEFAULT_DIR: &str = ".github/workflows";

/// Why the workflow files could not be found or read. Invalid workflows are not an error
/// here: they come back as [`Diagnostics`] per file.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowsError {
    /// A `-W` target does not exist.
    #[error("workflow path {0} does not exist")]
    Missing(PathBuf),
    /// A directory target holds no `*.yml`/`*.yaml` file.
    #[error("no workflow files (*.yml, *.yaml) in {0}")]
    Empty(PathBuf),
    /// Reading a file or listing a directory failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The path that could not be read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// One workflow file and what parsing it gave.
#[derive(Debug)]
pub struct Loaded {
    /// The file, as found from the `-W` target (used as the file name in diagnostics).
    pub path: PathBuf,
    /// The model, or every located error of the file.
    pub result: Result<Workflow, Diagnostics>,
}

/// The files named by `targets` (or [`DEFAULT_DIR`] when empty), in order, without
/// duplicates.
pub fn workflow_files(targets: &[PathBuf]) -> Result<Vec<PathBuf>, WorkflowsError> {
    let default = [PathBuf::from(DEFAULT_DIR)];
    let targets = if targets.is_empty() {
        &default[..]
    } else {
        targets
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for target in targets {
        let meta = std::fs::metadata(target).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                WorkflowsError::Missing(target.clone())
            } else {
                WorkflowsError::Io {
                    path: target.clone(),
                    source,
                }
            }
        })?;
        let found = if meta.is_dir() {
            let found = directory_workflows(target)?;
            if found.is_empty() {
                return Err(WorkflowsError::Empty(target.clone()));
            }
            found
        } else {
            vec![target.clone()]
        };
        for f in found {
            if !files.contains(&f) {
                files.push(f);
            }
        }
    }
    Ok(files)
}

fn directory_workflows(dir: &Path) -> Result<Vec<PathBuf>, WorkflowsError> {
    let io = |source| WorkflowsError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let is_yaml = path.extension().is_some_and(|e| e == "yml" || e == "yaml");
        if is_yaml && path.is_file() {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Reads and parses every workflow file named by `targets`.
pub fn load(targets: &[PathBuf]) -> Result<Vec<Loaded>, WorkflowsError> {
    workflow_files(targets)?
        .into_iter()
        .map(|path| {
            let source = std::fs::read_to_string(&path).map_err(|source| WorkflowsError::Io {
                path: path.clone(),
                source,
            })?;
            let result = parse(&path.display().to_string(), &source);
            Ok(Loaded { path, result })
        })
        .collect()
}

/// Every diagnostic of every file, one `file:line:column: message` per line; empty when all
/// files are valid.
pub fn render_diagnostics(loaded: &[Loaded]) -> String {
    loaded
        .iter()
        .filter_map(|l| l.result.as_ref().err())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The valid workflows, or every diagnostic of every invalid file rendered for stderr.
pub fn load_valid(targets: &[PathBuf]) -> anyhow::Result<Result<Vec<(PathBuf, Workflow)>, String>> {
    let loaded = load(targets)?;
    let rendered = render_diagnostics(&loaded);
    if !rendered.is_empty() {
        return Ok(Err(rendered));
    }
    Ok(Ok(loaded
        .into_iter()
        .filter_map(|l| l.result.ok().map(|w| (l.path, w)))
        .collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    const VALID: &str = "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n";

    #[test]
    fn directory_takes_yml_and_yaml_without_recursion() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "b.yaml", VALID);
        write(dir.path(), "a.yml", VALID);
        write(dir.path(), "notes.txt", "x");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        write(&dir.path().join("sub"), "c.yml", VALID);
        let files = workflow_files(&[dir.path().to_path_buf()]).expect("files");
        let names: Vec<_> = files
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.yml", "b.yaml"]);
    }

    #[test]
    fn missing_and_empty_targets_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        assert!(matches!(
            workflow_files(&[missing]),
            Err(WorkflowsError::Missing(_))
        ));
        assert!(matches!(
            workflow_files(&[dir.path().to_path_buf()]),
            Err(WorkflowsError::Empty(_))
        ));
    }

    #[test]
    fn every_invalid_file_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a.yml", "");
        write(dir.path(), "b.yml", VALID);
        write(
            dir.path(),
            "c.yml",
            "on: push\njobs:\n  1bad:\n    runs-on: x\n    steps:\n      - run: echo\n",
        );
        let loaded = load(&[dir.path().to_path_buf()]).expect("load");
        let text = render_diagnostics(&loaded);
        let a = dir.path().join("a.yml").display().to_string();
        let c = dir.path().join("c.yml").display().to_string();
        assert!(text.contains(&format!("{a}:1:1: file is empty")), "{text}");
        assert!(
            text.contains(&format!("{c}:3:3: job id `1bad` is invalid")),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2, "{text}");
    }
}
