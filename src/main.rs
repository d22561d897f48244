//! The `pavise` command line: parse, load config, run. Everything else is in the library.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pavise::config::{Config, EgressMode, Overrides};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "pavise", version, about = "A privacy relay in front of a fediverse instance")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay in front of the instance.
    Run {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        flags: RunFlags,
    },
    /// Validate the config and policies, print a summary; exit 1 with a clear error.
    Check {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        flags: RunFlags,
        /// Print which expiry rule applies to this post (JSON: a Mastodon Status, or
        /// {"visibility":"direct","account":"alice","tags":["x"],"has_media":false,"is_reply":false,"pinned":false}).
        #[arg(long)]
        sample_post: Option<String>,
    },
    /// Scheduled post deletions.
    Expiry {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        flags: RunFlags,
        #[command(subcommand)]
        action: ExpiryCommand,
    },
    /// Strip location and identifying metadata from media files; exit 1 if any is refused.
    Scrub {
        /// Image, video or audio files (recognised by their content, not their names).
        #[arg(required = true, num_args = 1..)]
        inputs: Vec<PathBuf>,
        /// Where to write the scrubbed file (one input) [default: standard output].
        #[arg(short = 'o', long = "output", conflicts_with = "out_dir")]
        output: Option<PathBuf>,
        /// Write each scrubbed file under this directory, with its own name (many inputs).
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Print what was removed (to standard error).
        #[arg(short, long)]
        verbose: bool,
    },
}

#[derive(Subcommand)]
enum ExpiryCommand {
    /// Counts by state, next due, failures with reasons, and the items in one state.
    List {
        /// pending | claimed | deleted | kept | failed | cancelled
        #[arg(long, default_value = "pending")]
        state: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Schedule an account's existing posts by the policies (posts from before pavise).
    Sweep {
        /// The local username whose posts are swept.
        #[arg(long)]
        account: String,
        /// A file holding that account's access token (sealed like every other token).
        #[arg(long)]
        token_file: PathBuf,
        /// Print what would be scheduled, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Benchmark the embedded store's schedule inserts, filling DIR (scripts/bench-expiry).
    #[command(hide = true)]
    BenchStore {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
    },
}

#[derive(clap::Args)]
struct CommonArgs {
    /// TOML config file (every key optional; defaults run in front of a stock Mastodon).
    #[arg(long, short = 'c', env = "PAVISE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RunFlags {
    /// Public listener address [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// The instance's web process [default: http://127.0.0.1:3000].
    #[arg(long)]
    upstream: Option<String>,
    /// The instance's streaming server [default: http://127.0.0.1:4000].
    #[arg(long)]
    streaming_upstream: Option<String>,
    /// Egress (forward proxy) listener for the instance's outbound federation [default: 127.0.0.1:8118].
    #[arg(long)]
    egress_listen: Option<std::net::SocketAddr>,
    /// `tor` (default) or `direct` (development only: reveals the server's address).
    #[arg(long, value_parser = parse_egress_mode)]
    egress_mode: Option<EgressMode>,
    /// Admin listener (loopback) [default: 127.0.0.1:9180].
    #[arg(long)]
    admin_listen: Option<std::net::SocketAddr>,
    /// Durable state: store, admin token, temp files [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Policy directory [default: ./policies].
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Extra arti configuration in arti's own TOML format.
    #[arg(long)]
    arti_config: Option<PathBuf>,
    /// The expiry key file [default: beside the data dir, `<data_dir>-expiry.key`; refused inside it].
    #[arg(long, env = "PAVISE_EXPIRY_KEY_FILE")]
    expiry_key_file: Option<PathBuf>,
}

fn parse_egress_mode(s: &str) -> Result<EgressMode, String> {
    match s {
        "tor" => Ok(EgressMode::Tor),
        "direct" => Ok(EgressMode::Direct),
        other => Err(format!("{other:?}: use tor or direct")),
    }
}

impl RunFlags {
    fn overrides(self) -> Overrides {
        Overrides {
            listen: self.listen,
            upstream: self.upstream,
            streaming_upstream: self.streaming_upstream,
            egress_listen: self.egress_listen,
            egress_mode: self.egress_mode,
            admin_listen: self.admin_listen,
            data_dir: self.data_dir,
            policies: self.policies,
            arti_config: self.arti_config,
            expiry_key_file: self.expiry_key_file,
        }
    }
}

// The CLI prints its summaries and results to stdout by design.
#[allow(clippy::print_stdout)]
fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pavise: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)]
fn real_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // arti and our TLS listener both use rustls; pick its crypto once, for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Run { common, flags } => {
            let config = Config::load(common.config.as_deref(), &flags.overrides())?;
            let _log_guard = pavise::telemetry::init(config.file.log.format);
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { common, flags, sample_post } => {
            let config = Config::load(common.config.as_deref(), &flags.overrides())?;
            print!("{}", pavise::check::summary(&config)?);
            if config.file.cluster.enabled() {
                let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
                let cluster = runtime.block_on(pavise::cluster::check::summary(&config.file.cluster));
                print!("{}", cluster.map_err(anyhow::Error::msg)?);
            }
            if let Some(sample) = sample_post {
                print!("{}", pavise::check::sample_post(&config, &sample)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Expiry { common, flags, action } => {
            let config = Config::load(common.config.as_deref(), &flags.overrides())?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let out = match action {
                ExpiryCommand::List { state, limit } => {
                    runtime.block_on(pavise::expiry::cli::list(&config.expiry_cli(), &state, limit))?
                }
                ExpiryCommand::Sweep { account, token_file, dry_run } => {
                    let token = std::fs::read_to_string(&token_file)
                        .with_context(|| format!("reading {}", token_file.display()))?;
                    let token = pavise::expiry::seal::Token::new(token.trim());
                    runtime.block_on(pavise::expiry::cli::sweep(&config.expiry_cli(), &account, token, dry_run))?
                }
                ExpiryCommand::BenchStore { dir, count } => {
                    runtime.block_on(pavise::expiry::cli::bench_store(&dir, count))?
                }
            };
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Scrub { inputs, output, out_dir, verbose } => {
            if inputs.len() > 1 && out_dir.is_none() {
                anyhow::bail!("several inputs need --out-dir DIR");
            }
            if let Some(dir) = &out_dir {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let mut targets = Vec::with_capacity(inputs.len());
            for input in &inputs {
                targets.push(match (&out_dir, input.file_name()) {
                    (Some(dir), Some(name)) => Some(dir.join(name)),
                    (Some(_), None) => anyhow::bail!("{}: not a file name", input.display()),
                    (None, _) => output.clone(),
                });
            }
            // Files are independent: one worker per core, results reported in input order.
            let outcomes: Vec<std::sync::OnceLock<Result<String, String>>> =
                inputs.iter().map(|_| std::sync::OnceLock::new()).collect();
            let next = std::sync::atomic::AtomicUsize::new(0);
            let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(inputs.len());
            std::thread::scope(|scope| {
                for _ in 0..workers {
                    scope.spawn(|| {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let (Some(input), Some(slot)) = (inputs.get(i), outcomes.get(i)) else { break };
                            let outcome = pavise::privacy::media::scrub_path(input, targets[i].as_deref())
                                .map(|done| pavise::privacy::media::describe(done.format, &done.report))
                                .map_err(|e| e.to_string());
                            let _ = slot.set(outcome);
                        }
                    });
                }
            });
            let mut refused = 0;
            for (input, outcome) in inputs.iter().zip(outcomes) {
                match outcome.into_inner() {
                    Some(Ok(said)) if verbose => eprint!("{}: {said}", input.display()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        eprintln!("pavise: {} refused: {e}", input.display());
                        refused += 1;
                    }
                    None => anyhow::bail!("{}: not scrubbed (a worker stopped)", input.display()),
                }
            }
            Ok(if refused == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Every listener draws on one descriptor limit; the usual soft 1,024 is far below
    // what the default caps may hold. Raise it to the hard limit and say if that is short.
    let need = pavise::accept::descriptor_need(&config);
    match pavise::accept::raise_nofile_limit() {
        Ok((before, after)) if after.hard < need => {
            tracing::warn!(raised_from = before.soft, "{}", pavise::accept::describe_descriptors(after, need))
        }
        Ok((before, after)) => tracing::info!(raised_from = before.soft, limit = after.soft, need, "descriptor limit"),
        Err(e) => tracing::warn!(error = %e, need, "could not raise the descriptor limit"),
    }
    let shutdown = CancellationToken::new();
    pavise::shutdown::cancel_on_signal(shutdown.clone());
    let (_bound, done) = pavise::app::start(config, shutdown).await?;
    done.await.context("the relay task failed")?;
    tracing::info!("pavise stopped");
    Ok(())
}
