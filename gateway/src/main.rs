//! The `clawgate` binary: parse arguments, run the command, exit with its code.

use clap::Parser as _;

/// jemalloc, not glibc's malloc: on the call path (1 KB arguments, every label, record and
/// response a few allocations of a kilobyte or more) glibc spent about a fifth of the gateway's
/// CPU in malloc and free, much of it consolidating its fast bins before each allocation of
/// 1 KB or more. With jemalloc the full pipeline used about a third less CPU per call at 32
/// sessions (docs/performance.md, "What changed since run 3", change 3). Its options (one arena, dirty pages returned after a
/// second) are compiled in from `.cargo/config.toml`, keeping the idle footprint within a few
/// MB of glibc's.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = clawgate::cli::Cli::parse();
    match clawgate::cli::run(cli).await {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
