//! `cujo`: run the span processor, or check a configuration file.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cujo::config::{Config, LogFormat};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (the version is pinned by
/// Cargo.lock; libmimalloc-sys has no named constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory committed for 10 s before returning it to the OS (mimalloc's default
/// is 1 s). Held traces live about `decision_wait`, so with 1 s the same pages were returned
/// and faulted in again all the time: with propagation on, 12% of cujo's CPU went to the
/// kernel zeroing pages, and throughput rose 11–13% with 10 s (BENCHMARKS.md). Peak RSS grew
/// about 5%. `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn tune_allocator() {
    if let Some(ms) = std::env::var("MIMALLOC_PURGE_DELAY")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
    {
        PURGE_DELAY_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
        return;
    }
    // SAFETY: mi_option_set only stores an integer option; it is called once, before the
    // runtime starts any thread, with a valid option number for the linked mimalloc.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
}

/// The purge delay cujo runs with: `MIMALLOC_PURGE_DELAY` when set, else 10 s.
static PURGE_DELAY_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(10_000);

/// Puts mimalloc under pressure (the allocator governor calls it when the resident set
/// passes the memory budget plus its slack): every freed page it keeps goes back to the OS
/// now, and later ones as soon as they are freed. `false` restores the purge delay.
fn allocator_pressure(on: bool) {
    let delay = if on {
        0
    } else {
        PURGE_DELAY_MS.load(std::sync::atomic::Ordering::Relaxed)
    };
    // SAFETY: mi_option_set stores an integer that mimalloc reads on each purge decision
    // (a word-sized store); mi_collect takes no pointers and, with `force`, frees what the
    // calling thread's heap keeps and purges the freed pages of every arena.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay as std::ffi::c_long);
        if on {
            libmimalloc_sys::mi_collect(true);
        }
    }
}

/// OpenTelemetry span processor for Critical User Journeys.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (YAML). Without it, the embedded default: localhost, no downstream.
    #[arg(long, short, global = true, env = "CUJO_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run cujo (the default).
    Run,
    /// Validate the configuration and exit: non-zero with a message naming file and key.
    Check,
    /// Print the SLO status of a running cujo; exit 1 when an error budget is below the bound
    /// (a deploy gate).
    Status(cujo_slo::surfaces::gate::StatusArgs),
    /// Write Prometheus recording and multiwindow burn-rate alert rules for the configured CUJs.
    Rules(cujo_slo::generators::rules::RulesArgs),
    /// Write a Grafana dashboard (JSON) for the configured CUJs.
    Dashboard(cujo_slo::generators::dashboard::DashboardArgs),
    /// Send the quick start's checkout journeys to a running cujo (config/quickstart.yaml),
    /// printing progress; `--fail-tier free` burns a budget.
    Demo(cujo::demo::DemoArgs),
}

fn main() -> ExitCode {
    tune_allocator();
    cujo::allocator::set_pressure(allocator_pressure);
    let cli = Cli::parse();
    // `status` talks to a running cujo and needs no configuration.
    if let Some(Command::Status(args)) = &cli.command {
        return cujo_slo::surfaces::gate::run(args);
    }
    // `demo` is a client of a running cujo too.
    if let Some(Command::Demo(args)) = &cli.command {
        return cujo::demo::run(args);
    }
    // The generators read the CUJs (and the SLO defaults) only, not the secrets elsewhere.
    let generator = matches!(cli.command, Some(Command::Rules(_) | Command::Dashboard(_)));
    let loaded = if generator {
        Config::load_slo_sections(cli.config.as_deref())
    } else {
        Config::load(cli.config.as_deref())
    };
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cujo: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => {
            let name = cli
                .config
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "embedded default".into());
            println!("{name}: ok");
            ExitCode::SUCCESS
        }
        Command::Run => run(config),
        Command::Rules(args) => cujo_slo::generators::rules::run(&config.cujs(), &args),
        Command::Dashboard(args) => cujo_slo::generators::dashboard::run(
            &config.cujs(),
            config.slo.trace_link().as_ref(),
            &args,
        ),
        Command::Status(_) | Command::Demo(_) => ExitCode::SUCCESS,
    }
}

fn run(config: Config) -> ExitCode {
    init_logging(&config);
    if !config.admission.allows_huge_pages() {
        disable_huge_pages();
        commit_on_demand();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cujo: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cujo::service::run(config, shutdown_signal())) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("cujo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for the process (`admission.huge_pages`). mimalloc asks
/// for them on its arenas (`madvise`) before `main` runs, so its own option would come too
/// late; the process-wide switch also covers what was reserved already. Logged, not fatal,
/// when the kernel refuses.
fn disable_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes a flag of the
    // calling process.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc == 0 {
        tracing::debug!("transparent huge pages off (admission.huge_pages)");
    } else {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot turn transparent huge pages off (admission.huge_pages)"
        );
    }
}

/// `mi_option_arena_eager_commit` in mimalloc v3's `mi_option_e`.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// For a small budget: arenas reserved from now on are committed as they are used, not ahead,
/// and what the allocator holds unused now is returned once (idle resident set 18 → 16 MiB).
/// The first arena was reserved, and committed ahead, before `main`: only
/// `MIMALLOC_ARENA_EAGER_COMMIT=0` in the environment reaches it (idle 12 MiB; the sidecar
/// manifest sets it). That variable, when set, also wins here.
fn commit_on_demand() {
    if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_some() {
        return;
    }
    // SAFETY: mi_option_set stores integers mimalloc reads on its next decisions; mi_collect
    // takes no pointers. Called before the runtime starts any thread.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
    }
    allocator_pressure(true);
    allocator_pressure(false);
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
