//! `gregor`: one binary for the broker and, later, the tools that talk to it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use gregor_broker::BrokerConfig;

#[cfg(feature = "bench")]
mod bench;
mod broker;
mod client;
mod cluster;
mod commands;
mod consume;
mod data;
mod group;
mod produce;
mod progress;
mod quota;
mod security;
mod table;
mod topic;
mod txn;

use client::Cluster;

/// Gregor: a Kafka-compatible event streaming platform in one binary.
///
/// With no subcommand, runs `gregor broker` with its defaults: a single-node broker on
/// 127.0.0.1:9092 with its data under ./gregor-data.
///
/// The commands that talk to a broker speak the Kafka protocol to any Kafka-compatible
/// broker (`--bootstrap HOST:PORT`, default 127.0.0.1:9092). Exit codes: 0 success; 1 the
/// operation failed (the broker refused it, or what it names does not exist); 2 bad usage;
/// 3 no broker reachable; 4 `cluster status` found partitions that need attention.
#[derive(Parser, Debug)]
#[command(name = "gregor", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Kafka client properties for the tools (key=value lines): security.protocol,
    /// sasl.mechanism, sasl.username, sasl.password, ssl.ca.location,
    /// ssl.keystore.location (docs/security.md).
    #[arg(
        long,
        global = true,
        env = "GREGOR_COMMAND_CONFIG",
        value_name = "FILE"
    )]
    command_config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// Check every batch of every partition (length, offsets, CRC-32C) and list damaged
    /// segments; exit code 1 when any is damaged. Read-only.
    Verify {
        /// The broker's data directory.
        #[arg(long, value_name = "DIR", default_value = "./gregor-data")]
        data_dir: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a broker (the default).
    Broker(BrokerArgs),
    /// Topics: create, list, describe, delete, change settings, add partitions.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Consumer groups: list, describe with lag, delete, reset offsets.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Produce lines from stdin (or --file) as records.
    Produce(ProduceCmd),
    /// Consume records and print them (kcat-style --format, or --json lines).
    Consume(ConsumeCmd),
    /// The cluster: brokers, controller, partitions without a leader or under-replicated.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// SCRAM users: create (online, or offline into a data directory before the first
    /// start), delete, list.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Access-control entries: add, list, remove.
    Acl {
        #[command(subcommand)]
        command: AclCommand,
    },
    /// Client quotas (produce and fetch byte rates, request time) of users and client
    /// ids: set, remove, list.
    Quota {
        #[command(subcommand)]
        command: QuotaCommand,
    },
    /// Transactions: list them with their age, describe one, or abort a hanging one.
    Txn {
        #[command(subcommand)]
        command: TxnCommand,
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
    /// A data directory, offline: `verify` checks every batch's CRC and lists damage.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Print a shell completion script: `source <(gregor completions bash)`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the configuration reference (docs/configuration.md is this output).
    #[command(hide = true)]
    ConfigReference,
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Create a topic.
    Create {
        topic: String,
        /// Partitions (default: the broker's num.partitions).
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// Replicas of each partition (default: the broker's default.replication.factor).
        #[arg(long, short = 'r')]
        replication_factor: Option<i16>,
        /// A topic setting, KEY=VALUE (repeatable), e.g. --config retention.ms=86400000.
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Succeed if the topic exists already.
        #[arg(long)]
        if_not_exists: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List topics with their partition count and replication factor.
    List {
        /// Include internal topics (__consumer_offsets, __transaction_state).
        #[arg(long)]
        internal: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One topic: partitions with leader, replicas, in-sync replicas and offsets, and the
    /// settings that differ from the defaults.
    Describe {
        topic: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete topics and their data.
    Delete {
        #[arg(required = true)]
        topics: Vec<String>,
        /// Succeed if a topic does not exist.
        #[arg(long)]
        if_exists: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change a topic's settings: --set KEY=VALUE, --delete KEY (back to the default).
    AlterConfig {
        topic: String,
        #[arg(long, value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long, value_name = "KEY")]
        delete: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Grow a topic to --total partitions (keyed records may then map elsewhere).
    AddPartitions {
        topic: String,
        /// The partition count after the change.
        #[arg(long)]
        total: i32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move a partition's replicas to other brokers (the new ones copy the log, at most at
    /// the brokers' follower.replication.throttled.rate), list the moves in progress, or
    /// cancel one.
    Reassign {
        topic: String,
        /// The partition to move (all moves of the topic with --list).
        #[arg(long, required_unless_present = "list")]
        partition: Option<i32>,
        /// The broker ids to hold it afterwards, the preferred leader first, e.g. 2,3,4.
        #[arg(long, value_delimiter = ',', conflicts_with_all = ["cancel", "list"], required_unless_present_any = ["cancel", "list"])]
        replicas: Vec<i32>,
        /// Cancel the move in progress: back to the replicas it started from.
        #[arg(long, conflicts_with = "list")]
        cancel: bool,
        /// List the moves in progress.
        #[arg(long)]
        list: bool,
        /// Wait until the move is complete (or cancelled), showing progress.
        #[arg(long, conflicts_with = "list")]
        wait: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user, or replace its credential. With --data-dir, offline: the broker
    /// using that directory adds it at its next start (for the first users, before any
    /// can authenticate); otherwise through --bootstrap.
    Create {
        user: String,
        /// A file whose first line is the password.
        #[arg(long, value_name = "FILE")]
        password_file: PathBuf,
        #[arg(long, value_enum, default_value = "SCRAM-SHA-512")]
        mechanism: security::ScramMechanism,
        /// PBKDF2 iterations (4096 to 16384).
        #[arg(long, default_value_t = gregor_broker::security::scram::ITERATIONS_DEFAULT)]
        iterations: u32,
        /// Write into this (stopped or not yet started) broker's data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a user's credentials (both mechanisms unless --mechanism).
    Delete {
        user: String,
        #[arg(long, value_enum)]
        mechanism: Option<security::ScramMechanism>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Users with their SCRAM mechanisms and iteration counts.
    List(ClientArgs),
}

#[derive(Subcommand, Debug)]
enum QuotaCommand {
    /// Set quotas of an entity: producer_byte_rate=BYTES, consumer_byte_rate=BYTES (per
    /// second, per broker), request_percentage=PERCENT (of one thread).
    Set {
        #[command(flatten)]
        entity: quota::EntityArgs,
        /// KEY=VALUE, one or more.
        #[arg(required = true, value_name = "KEY=VALUE")]
        quotas: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove quotas of an entity (by key).
    Remove {
        #[command(flatten)]
        entity: quota::EntityArgs,
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Quotas of every entity, or of the one named.
    List {
        #[command(flatten)]
        entity: quota::EntityArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
enum AclCommand {
    /// Allow (or with --deny, deny) a principal operations on a resource.
    Add {
        #[command(flatten)]
        spec: security::AclSpec,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// ACLs, all or those matching the resource, principal and operation given.
    List {
        #[command(flatten)]
        spec: security::AclSpec,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove the ACLs matching the resource, principal, operations given.
    Remove {
        #[command(flatten)]
        spec: security::AclSpec,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Brokers, the controller, and partitions without a leader or under-replicated;
    /// exits 4 when there are any.
    Status(ClientArgs),
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
    /// Delete groups (with no active members) and their committed offsets.
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move a group's committed offsets on a topic; the group must have no active members.
    #[command(group(clap::ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"])))]
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        /// Only these partitions (repeatable); default all.
        #[arg(long)]
        partition: Vec<i32>,
        #[arg(long)]
        to_earliest: bool,
        #[arg(long)]
        to_latest: bool,
        #[arg(long, value_name = "OFFSET")]
        to_offset: Option<i64>,
        /// ISO 8601, e.g. 2026-11-24T10:00:00Z: the first offset at or after that time.
        #[arg(long, value_name = "TIME")]
        to_datetime: Option<String>,
        /// Move each committed offset by N (negative: back).
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        shift_by: Option<i64>,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args, Debug)]
struct ProduceCmd {
    topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Split each line at the first SEP into key and value.
    #[arg(long, short = 'K', value_name = "SEP")]
    key_separator: Option<String>,
    /// A header on every record, KEY=VALUE (repeatable).
    #[arg(long, short = 'H', value_name = "KEY=VALUE")]
    header: Vec<String>,
    /// Send every record to this partition (default: by key, else spread).
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, short = 'z', default_value = "none")]
    compression: String,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args, Debug)]
struct ConsumeCmd {
    topic: String,
    /// Start at the earliest offset (default: the end, or the group's committed offsets).
    #[arg(long)]
    from_beginning: bool,
    /// Join this consumer group, start from its committed offsets and commit progress.
    #[arg(long, short = 'g')]
    group: Option<String>,
    /// Read only these partitions (repeatable).
    #[arg(long, short = 'p')]
    partition: Vec<i32>,
    /// Where to start: beginning, end, an offset, or -N for N records before the end.
    #[arg(long, short = 'o', allow_hyphen_values = true)]
    offset: Option<String>,
    /// Stop after N records.
    #[arg(long, short = 'c')]
    count: Option<u64>,
    /// Output format: %t topic, %p partition, %o offset, %k key, %s value, %K/%S their
    /// lengths, %T timestamp, %h headers; \n \t escapes. Default "%s\n".
    #[arg(long, short = 'F')]
    format: Option<String>,
    /// read_uncommitted or read_committed (skip aborted transactions).
    #[arg(long, default_value = "read_uncommitted")]
    isolation: String,
    /// Exit at the end of the partitions instead of waiting for more (kcat -e).
    #[arg(long, short = 'e')]
    exit: bool,
    /// Exit after this many milliseconds without a record.
    #[arg(long, value_name = "MS")]
    idle_timeout_ms: Option<u64>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Options shared by the commands that talk to a broker.
#[derive(Args, Debug)]
struct ClientArgs {
    /// A broker to talk to (any Kafka-compatible broker).
    #[arg(
        long,
        short = 'b',
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs a Kafka-compatible broker that stores every partition in a durable, segmented log.
///
/// Settings come from the defaults, then the --config file, then GREGOR_* environment
/// variables (GREGOR_NUM_PARTITIONS=3 sets num.partitions), then these flags.
#[derive(Args, Debug)]
pub struct BrokerArgs {
    /// Directory for partition logs and cluster metadata; created if missing [log.dirs;
    /// default ./gregor-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to accept Kafka clients on [listeners; default 127.0.0.1:9092].
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Address clients are told to connect to, in Metadata [advertised.listeners; default
    /// the --listen address].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised: Option<String>,
    /// This broker's id; a data directory keeps the id it was created with [node.id;
    /// default 0].
    #[arg(long, value_name = "N")]
    pub node_id: Option<i32>,
    /// The controllers of a cluster, e.g. `1@127.0.0.1:19091,2@127.0.0.1:19092,3@127.0.0.1:19093`:
    /// their metadata-log addresses. A broker whose --node-id is listed is a voter, any
    /// other a learner [controller.quorum.voters; default: a single node].
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    pub controllers: Option<String>,
    /// Where this node serves the metadata log, when it is not among --controllers
    /// [controller.listener].
    #[arg(long, value_name = "HOST:PORT")]
    pub controller_listener: Option<String>,
    /// This broker's rack, to spread replicas across racks [broker.rack].
    #[arg(long, value_name = "RACK")]
    pub rack: Option<String>,
    /// TOML file of Kafka-named settings, e.g. `num.partitions = 3`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to serve Prometheus metrics on (HTTP, any path), or `off`
    /// [metrics.listener; default 127.0.0.1:9644].
    #[arg(long, value_name = "HOST:PORT|off")]
    pub metrics: Option<String>,
    /// Print the effective configuration, with where each value came from, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// With --print-config: JSON.
    #[arg(long, requires = "print_config")]
    pub json: bool,
}

fn broker_config(args: &BrokerArgs) -> Result<BrokerConfig, String> {
    let mut flags: Vec<(&str, String, &str)> = Vec::new();
    if let Some(d) = &args.data_dir {
        flags.push(("log.dirs", d.display().to_string(), "--data-dir"));
    }
    if let Some(l) = &args.listen {
        flags.push(("listeners", l.clone(), "--listen"));
    }
    if let Some(a) = &args.advertised {
        flags.push(("advertised.listeners", a.clone(), "--advertised"));
    }
    if let Some(n) = args.node_id {
        flags.push(("node.id", n.to_string(), "--node-id"));
    }
    if let Some(m) = &args.metrics {
        flags.push(("metrics.listener", m.clone(), "--metrics"));
    }
    if let Some(c) = &args.controllers {
        flags.push(("controller.quorum.voters", c.clone(), "--controllers"));
    }
    if let Some(c) = &args.controller_listener {
        flags.push(("controller.listener", c.clone(), "--controller-listener"));
    }
    if let Some(r) = &args.rack {
        flags.push(("broker.rack", r.clone(), "--rack"));
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    BrokerConfig::from_layers(args.config.as_deref(), &env, &flags)
}

fn print_config(config: &BrokerConfig, json: bool) -> Result<(), String> {
    #[derive(serde::Serialize)]
    struct Row {
        name: &'static str,
        value: String,
        source: String,
    }
    let rows: Vec<Row> = config
        .effective()
        .into_iter()
        .map(|(name, value, source)| Row {
            name,
            value,
            source,
        })
        .collect();
    show(json, &rows, |rows| {
        let t: Vec<Vec<String>> = rows
            .iter()
            .map(|r| vec![r.name.to_string(), r.value.clone(), r.source.clone()])
            .collect();
        println!("{}", table::table(&["SETTING", "VALUE", "SOURCE"], &t));
    })
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

/// How a tool command ended: its exit code.
enum Fail {
    /// The operation failed: exit 1.
    Failed(String),
    /// Bad usage: exit 2.
    Usage(String),
}

impl From<String> for Fail {
    fn from(e: String) -> Self {
        Fail::Failed(e)
    }
}

fn usage(e: String) -> Fail {
    Fail::Usage(e)
}

/// Connects to `bootstrap` (exit 3 if no broker answers), runs `work`, and maps its
/// result to an exit code.
fn with_cluster<F>(bootstrap: &str, work: F) -> ExitCode
where
    F: AsyncFnOnce(&mut Cluster) -> Result<u8, Fail>,
{
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
    runtime.block_on(async {
        let mut cluster = match Cluster::connect(bootstrap).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("gregor: {e}");
                return ExitCode::from(3);
            }
        };
        match work(&mut cluster).await {
            Ok(code) => ExitCode::from(code),
            Err(Fail::Failed(e)) => {
                eprintln!("gregor: {e}");
                ExitCode::FAILURE
            }
            Err(Fail::Usage(e)) => {
                eprintln!("gregor: {e}");
                ExitCode::from(2)
            }
        }
    })
}

use commands::{
    run_acl, run_cluster, run_consume, run_group, run_produce, run_quota, run_topic, run_txn,
    run_user,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GREGOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error")),
        )
        .init();
    if let Some(path) = &cli.command_config {
        if let Err(e) = client::configure(path) {
            eprintln!("gregor: {e}");
            return ExitCode::from(2);
        }
    }
    let args = match cli.command {
        Some(Command::User { command }) => return run_user(command),
        Some(Command::Acl { command }) => return run_acl(command),
        Some(Command::Quota { command }) => return run_quota(command),
        Some(Command::Topic { command }) => return run_topic(command),
        Some(Command::Group { command }) => return run_group(command),
        Some(Command::Txn { command }) => return run_txn(command),
        Some(Command::Produce(cmd)) => return run_produce(cmd),
        Some(Command::Consume(cmd)) => return run_consume(cmd),
        Some(Command::Cluster { command }) => return run_cluster(command),
        Some(Command::Data {
            command: DataCommand::Verify { data_dir, json },
        }) => {
            return match data::verify(&data_dir) {
                Ok(r) => {
                    if json {
                        match serde_json::to_string(&r) {
                            Ok(text) => println!("{text}"),
                            Err(e) => {
                                eprintln!("gregor: {e}");
                                return ExitCode::FAILURE;
                            }
                        }
                    } else {
                        data::print(&r);
                    }
                    if r.damaged.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("gregor: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Completions { shell }) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "gregor", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Some(Command::ConfigReference) => {
            print!("{}", gregor_broker::config::reference_markdown());
            return ExitCode::SUCCESS;
        }
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
    if args.print_config {
        return match print_config(&config, args.json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gregor: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match broker::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("gregor: {e}");
            ExitCode::FAILURE
        }
    }
}
