//! The `jailtx` binary; everything it does lives in the library.
fn main() -> std::process::ExitCode {
    jailtx::cli::main()
}
