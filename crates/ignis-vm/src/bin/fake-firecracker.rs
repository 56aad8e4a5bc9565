//! `fake-firecracker`: the test stand-in for `firecracker` (see
//! `ignis_vm::firecracker::fake_server`). Built only with the `fake-firecracker` feature.

fn main() -> std::process::ExitCode {
    ignis_vm::firecracker::fake_server::main()
}
