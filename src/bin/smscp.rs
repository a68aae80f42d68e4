//! smscp: scp with the cluster key from AWS Secrets Manager. Parses arguments and calls the
//! library; see ARCHITECTURE.md.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Every freed heap block is wiped, so copies of key material made inside the AWS SDK, serde
/// and the SSH crates, which we cannot wrap in zeroizing types, do not outlive their use.
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<std::alloc::System> =
    zeroizing_alloc::ZeroAlloc(std::alloc::System);

fn main() -> ExitCode {
    // Called as pdcp or rpdcp (a link), or with `--as NAME` first: that tool's command line.
    if let Some(code) = smssh::cli::pdsh::run_if_personality(
        smssh::cli::args::Program::Smscp,
        std::env::args_os().collect(),
    ) {
        return ExitCode::from(code);
    }
    let args = match smssh::cli::args::ScpArgs::try_parse() {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() {
                smssh::cli::app::SCP_FAILURE
            } else {
                0
            });
        }
    };
    ExitCode::from(smssh::cli::app::smscp(args))
}
