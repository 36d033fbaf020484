//! The `vpop` command line.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use vpop::cli;

/// vpop — in-silico clinical trials: sample virtual patients, simulate a PK/PD model for each of
/// them under a dosing regimen, and get per-subject exposure metrics as Parquet.
#[derive(Parser)]
#[command(name = "vpop", version, about, long_about = None, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an in-silico trial: sample subjects, simulate every arm, write Parquet.
    #[command(after_help = cli::run::RUN_EXAMPLES)]
    Run(cli::run::RunArgs),
    /// PNG charts of a run's output: metric distributions by arm, profile percentile bands.
    #[command(after_help = cli::report::EXAMPLES)]
    Report(cli::report::ReportArgs),
    /// Check a trial spec (or a population, sensitivity, simulate or model file, or a dataset)
    /// without running it.
    Check(cli::run::CheckArgs),
    /// Sample a population's covariates and parameters: to Parquet, or summarised.
    #[command(after_help = cli::sample::EXAMPLES)]
    Sample(cli::sample::SampleArgs),
    /// List the GPUs: CUDA devices, and wgpu adapters with their f64/f16 support.
    Devices(cli::devices::DevicesArgs),
    /// List the built-in models, or print one model's source.
    #[command(after_help = "Examples:\n  vpop models\n  vpop models two_cmt_oral")]
    Models(cli::models::ModelsArgs),
    /// List the built-in populations, or print one population's file.
    #[command(
        after_help = "Examples:\n  vpop populations\n  vpop populations adult_healthy > my_population.toml"
    )]
    Populations(cli::populations::PopulationsArgs),
    /// Global sensitivity analysis (Sobol, Morris, eFAST) of exposure metrics.
    #[command(after_help = cli::sensitivity::EXAMPLES)]
    Sensitivity(cli::sensitivity::SensitivityArgs),
    /// Run a trial on every available backend: subjects/s, ratio to the CPU, agreement.
    #[command(after_help = cli::bench::EXAMPLES)]
    Bench(cli::bench::BenchArgs),
    /// Simulate one subject and print its exposure metrics (and optionally its profile).
    #[command(after_help = cli::simulate::EXAMPLES)]
    Simulate(cli::simulate::SimulateArgs),
}

fn main() {
    // Output piped into `head` and the like: end quietly when the reader goes away, as other
    // command-line tools do, instead of failing on the broken pipe.
    #[cfg(unix)]
    // SAFETY: restores the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    quiet_vulkan_loader();
    vpop::tune_allocator();
    let matches = Cli::command().get_matches();
    let mut args = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Command::Simulate(a), Some(("simulate", m))) = (&mut args.command, matches.subcommand())
    {
        a.given = cli::simulate::SimulateArgs::given_in(m);
    }
    if let Err(e) = vpop::model::exec::check_cpu_jit_env() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    let result = match &args.command {
        Command::Run(a) => cli::run::run(a),
        Command::Check(a) => cli::run::check(a),
        Command::Report(a) => cli::report::run(a),
        Command::Sample(a) => cli::sample::run(a),
        Command::Devices(a) => cli::devices::run(a),
        Command::Models(a) => cli::models::run(a),
        Command::Populations(a) => cli::populations::run(a),
        Command::Simulate(a) => cli::simulate::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Sensitivity(a) => cli::sensitivity::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Vulkan's window-system code prints "error: XDG_RUNTIME_DIR is invalid or not set" when the
/// variable is missing (containers, CI, batch jobs), although vpop draws no window: give it a
/// private directory then, before any thread starts.
fn quiet_vulkan_loader() {
    #[cfg(unix)]
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        use std::os::unix::fs::DirBuilderExt;
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let dir = std::env::temp_dir().join(format!("vpop-runtime-{uid}"));
        let made = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        if made.is_ok() || dir.is_dir() {
            // SAFETY: called first thing in main, while the process has one thread.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}
