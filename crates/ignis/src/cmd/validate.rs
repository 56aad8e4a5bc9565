//! `ignis validate [-W PATH]...`: parse and validate workflow files without running
//! anything. Exit 0 when every file is valid, 2 with every located error
//! (`file:line:column: message`) on stderr otherwise, or when a path is missing.

use crate::workflows;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `ignis validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Workflow file or directory (`*.yml`/`*.yaml`, no recursion); repeatable. Defaults to
    /// `.github/workflows`.
    #[arg(short = 'W', long = "workflows")]
    pub workflows: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = match workflows::load(&args.workflows) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("ignis: {err}");
            return Ok(ExitCode::from(2));
        }
    };
    let rendered = workflows::render_diagnostics(&loaded);
    if !rendered.is_empty() {
        eprintln!("{rendered}");
        let invalid = loaded.iter().filter(|l| l.result.is_err()).count();
        eprintln!(
            "ignis: {invalid} of {} workflow file(s) invalid",
            loaded.len()
        );
        return Ok(ExitCode::from(2));
    }
    eprintln!("ignis: {} workflow file(s) valid", loaded.len());
    Ok(ExitCode::SUCCESS)
}
