//! The `psk-guard` binary: everything lives in the library; see `psk_guard::cli`.

fn main() -> std::process::ExitCode {
    psk_guard::cli::main()
}
