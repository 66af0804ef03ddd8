//! The `cairn` command: parse arguments, run, map the outcome to an exit code.

fn main() -> std::process::ExitCode {
    cairn::mmap::catch_bus_errors();
    cairn::cli::main()
}
