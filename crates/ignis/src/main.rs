//! The `ignis` command line: a thin layer over the library crates.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
