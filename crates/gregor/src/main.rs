//! `gregor`: one binary for the broker and, later, the tools that talk to it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use gregor_broker::BrokerConfig;

#[cfg(feature = "bench")]
mod bench;
mod broker;
mod client;
mod group;
mod txn;

/// Gregor: a Kafka-compatible event streaming platform in one binary.
///
/// With no subcommand, runs `gregor broker` with its defaults: a single-node broker on
/// 127.0.0.1:9092 with its data under ./gregor-data.
#[derive(Parser, Debug)]
#[command(name = "gregor", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a broker (the default).
    Broker(BrokerArgs),
    /// Consumer groups: list them, or describe one with its members and lag.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Load generator through librdkafka: produce, consume or end-to-end, with rates and
    /// latency percentiles.
    #[cfg(feature = "bench")]
    Bench(bench::BenchArgs),
    /// Load generator (this build has none: rebuild with `--features bench`).
    #[cfg(not(feature = "bench"))]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// Transactions: list them with their age, describe one, or abort a hanging one.
    Txn {
        #[command(subcommand)]
        command: TxnCommand,
    },
}

#[derive(Subcommand, Debug)]
enum TxnCommand {
    /// Every transactional id with its state, producer, age of its open transaction
    /// (OVERDUE past its timeout) and partition count.
    List(ClientArgs),
    /// One transactional id: state, producer id and epoch, timeout, age, partitions.
    Describe {
        /// The transactional id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Aborts the open transaction of a transactional id and fences the producer holding
    /// it (as a new producer with that id would).
    Abort {
        /// The transactional id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// Every group with its state, member count and total lag.
    List(ClientArgs),
    /// Per partition: committed offset, log end offset, lag, and the member that owns it.
    Describe {
        /// The group id.
        group: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Options shared by the commands that talk to a broker.
#[derive(Args, Debug)]
struct ClientArgs {
    /// A broker to talk to (any Kafka-compatible broker).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs a Kafka-compatible broker that stores every partition in a durable, segmented log.
#[derive(Args, Debug)]
pub struct BrokerArgs {
    /// Directory for partition logs and cluster metadata; created if missing.
    #[arg(long, value_name = "DIR", default_value = "./gregor-data")]
    pub data_dir: PathBuf,
    /// Address to accept Kafka clients on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    pub listen: String,
    /// Address clients are told to connect to (in Metadata); defaults to --listen.
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised: Option<String>,
    /// This broker's id in the cluster; a data directory keeps the id it was created with.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub node_id: i32,
    /// TOML file of Kafka-named settings as flat quoted keys, e.g. `"num.partitions" = 3`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to serve Prometheus metrics on (HTTP, any path), or `off`.
    #[arg(long, value_name = "HOST:PORT|off", default_value = "127.0.0.1:9644")]
    pub metrics: String,
}

fn parse_host_port(flag: &str, value: &str) -> Result<(String, u16), String> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| format!("--{flag} {value}: expected HOST:PORT, e.g. 127.0.0.1:9092"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("--{flag} {value}: '{port}' is not a port number"))?;
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    ))
}

fn resolve(flag: &str, value: &str) -> Result<SocketAddr, String> {
    parse_host_port(flag, value)?;
    value
        .to_socket_addrs()
        .map_err(|e| format!("--{flag} {value}: cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("--{flag} {value}: resolves to no address"))
}

fn broker_config(args: &BrokerArgs) -> Result<BrokerConfig, String> {
    let listen = resolve("listen", &args.listen)?;
    let advertised = args
        .advertised
        .as_deref()
        .map(|a| parse_host_port("advertised", a))
        .transpose()?;
    let mut config = BrokerConfig::new(args.data_dir.clone(), listen, advertised, args.node_id);
    if args.metrics != "off" {
        config.metrics = Some(resolve("metrics", &args.metrics)?);
    }
    if let Some(path) = &args.config {
        config.load_file(path)?;
    }
    Ok(config)
}

/// Prints `value` as JSON with `--json`, else as the command's table.
fn show<T: serde::Serialize + ?Sized>(
    json: bool,
    value: &T,
    table: impl Fn(&T),
) -> Result<(), String> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).map_err(|e| e.to_string())?
        );
    } else {
        table(value);
    }
    Ok(())
}

fn run_txn(command: TxnCommand) -> ExitCode {
    run_client(async {
        match command {
            TxnCommand::List(a) => {
                let mut c = client::Client::connect(&a.bootstrap).await?;
                let txns = txn::list(&mut c).await?;
                show(a.json, &txns, |t| txn::print_list(t))
            }
            TxnCommand::Describe { id, client: a } => {
                let mut c = client::Client::connect(&a.bootstrap).await?;
                let d = txn::describe(&mut c, &id).await?;
                show(a.json, &d, txn::print_describe)
            }
            TxnCommand::Abort { id, client: a } => {
                let mut c = client::Client::connect(&a.bootstrap).await?;
                let d = txn::abort(&mut c, &id).await?;
                show(a.json, &d, txn::print_aborted)
            }
        }
    })
}

fn run_group(command: GroupCommand) -> ExitCode {
    run_client(async {
        match command {
            GroupCommand::List(a) => {
                let mut c = client::Client::connect(&a.bootstrap).await?;
                let groups = group::list(&mut c).await?;
                show(a.json, &groups, |g| group::print_list(g))
            }
            GroupCommand::Describe {
                group: id,
                client: a,
            } => {
                let mut c = client::Client::connect(&a.bootstrap).await?;
                let d = group::describe(&mut c, &id).await?;
                show(a.json, &d, group::print_describe)
            }
        }
    })
}

/// Runs a command that talks to a broker; prints its error and fails.
fn run_client(work: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gregor: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), String> = runtime.block_on(work);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gregor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GREGOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = match cli.command {
        Some(Command::Group { command }) => return run_group(command),
        Some(Command::Txn { command }) => return run_txn(command),
        #[cfg(feature = "bench")]
        Some(Command::Bench(args)) => {
            let json = args.json;
            return match bench::run(args) {
                Ok(r) => match show(json, &r, bench::print) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("gregor: {e}");
                        ExitCode::FAILURE
                    }
                },
                Err(e) => {
                    eprintln!("gregor bench: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        #[cfg(not(feature = "bench"))]
        Some(Command::Bench { .. }) => {
            eprintln!("gregor: this build has no load generator; build it with `cargo build --release --features bench` (it compiles librdkafka, which needs cmake and a C++ compiler: `apt-get install cmake g++`)");
            return ExitCode::from(2);
        }
        Some(Command::Broker(args)) => args,
        None => match Cli::parse_from(["gregor", "broker"]).command {
            Some(Command::Broker(args)) => args,
            _ => unreachable!("the broker subcommand was given"),
        },
    };
    let config = match broker_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gregor: {e}");
            return ExitCode::from(2);
        }
    };
    match broker::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("gregor: {e}");
            ExitCode::FAILURE
        }
    }
}
