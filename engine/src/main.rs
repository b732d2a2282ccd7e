//! The `millrace` command: run a job, serve a registry, produce and generate events, benchmark.

mod kafka_args;
mod progress_bar;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use kafka_args::KafkaArgs;
use millrace_connectors::kafka::{Brokers, KafkaVersions, LineProducer, RateLimit};
use millrace_engine::bench;
use millrace_engine::bench::online::{OnlineBenchConfig, OnlineModel};
use millrace_engine::logs::LogFormat;
use millrace_engine::secret::read_secret;
use millrace_engine::{Cluster, Job, JobSpec, RunOptions};
use millrace_models::synth::CriteoGenerator;
use millrace_models::topic::RegistryKey;
use millrace_models::{FeatureMapSpec, FeatureSpec, FmParams, FtrlParams, LearnerParams, Registry};
use millrace_serving::{BatchOptions, ModelStore, Precision, ServeOptions};
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "millrace",
    version,
    about = "A streaming machine-learning engine for CTR and recommendation"
)]
struct Cli {
    /// How log lines are written to stderr: human text, or one JSON object per line.
    #[arg(long, global = true, value_enum, env = "MILLRACE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job until Ctrl-C (SIGINT) or SIGTERM; a final model version is published on stop.
    Run {
        /// The job file (TOML).
        job: PathBuf,
        /// Timely worker threads in this process.
        #[arg(long, env = "MILLRACE_WORKERS", default_value_t = 2,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        workers: usize,
        /// This process's index in a job of several processes (with `--hosts`).
        #[arg(long, env = "MILLRACE_PROCESS", default_value_t = 0)]
        process: usize,
        /// A file with the `host:port` of every process of the job, one per line, in process
        /// order: runs the job as a timely cluster of that many processes.
        #[arg(long, env = "MILLRACE_HOSTS")]
        hosts: Option<PathBuf>,
        /// Start afresh when the job's checkpoints cannot be restored (written by another
        /// number of workers, unreadable, or none common to the processes), as Flink's
        /// `--allowNonRestoredState`; without it the job refuses to start and keeps them.
        #[arg(long)]
        allow_fresh_start: bool,
        /// Serve this process's metrics, `/healthz` and `/readyz` on this address (each
        /// process of a cluster its own), whether or not it serves predictions.
        #[arg(long, env = "MILLRACE_METRICS_BIND")]
        metrics_bind: Option<std::net::SocketAddr>,
        /// In a cluster: seconds a peer may stop answering before this process gives it up and
        /// ends (killed by itself, status 137), as every other process then does, to be restarted
        /// together.
        #[arg(long, env = "MILLRACE_PEER_TIMEOUT_SECS", default_value_t = 10,
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        peer_timeout_secs: u64,
        /// In a cluster: seconds to wait at start for every peer to connect.
        #[arg(long, env = "MILLRACE_PEER_WAIT_SECS", default_value_t = 600,
              value_parser = clap::value_parser!(u64).range(1..))]
        peer_wait_secs: u64,
    },
    /// Serve the models of a registry directory over HTTP, following new versions.
    Serve {
        /// The registry: a directory, or `kafka://BROKERS/TOPIC` for a registry topic (a job's
        /// `[publish] registry_topic`).
        #[arg(long, env = "MILLRACE_REGISTRY")]
        registry: PathBuf,
        /// The address to listen on.
        #[arg(long, env = "MILLRACE_BIND", default_value = "127.0.0.1:8080")]
        bind: String,
        /// A file holding the bearer token of the admin endpoints (pin, promote, rollback,
        /// traffic); without one they answer 403.
        #[arg(long, env = "MILLRACE_ADMIN_TOKEN_FILE")]
        admin_token_file: Option<PathBuf>,
        /// With a registry topic: a file holding the key its manifests are signed with (the
        /// job's `[publish] registry_key_file`); versions not signed with it are refused.
        #[arg(long, env = "MILLRACE_REGISTRY_KEY_FILE")]
        registry_key_file: Option<PathBuf>,
        /// With a registry topic: how its clients reach a secured cluster.
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Most instances in one predict request.
        #[arg(long, env = "MILLRACE_MAX_BATCH", default_value_t = 1024,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        max_batch: usize,
        /// Largest request body, in bytes.
        #[arg(long, env = "MILLRACE_MAX_BODY_BYTES", default_value_t = 4 << 20,
              value_parser = clap::value_parser!(u64).range(1..))]
        max_body_bytes: u64,
        /// Longest a client may take to send a request body, in milliseconds.
        #[arg(long, env = "MILLRACE_REQUEST_TIMEOUT_MS", default_value_t = 10_000,
              value_parser = clap::value_parser!(u64).range(1..))]
        request_timeout_ms: u64,
        /// The share of one core that loading a new version may take (1: full speed).
        #[arg(long, env = "MILLRACE_LOAD_CPU_SHARE", default_value_t = millrace_serving::DEFAULT_LOAD_CPU_SHARE,
              value_parser = cpu_share)]
        load_cpu_share: f64,
        /// Transformed instances cached per loaded version (0: no cache).
        #[arg(long, env = "MILLRACE_ROW_CACHE_ENTRIES", default_value_t = millrace_serving::DEFAULT_ROW_CACHE_ENTRIES)]
        row_cache_entries: usize,
        /// How the weights are held: `f32`, `q213` (16-bit fixed point, half the memory) or
        /// `int8` (8 bits with a scale per 256 numbers, about a quarter).
        #[arg(long, env = "MILLRACE_WEIGHTS", value_enum, default_value_t = Weights::F32)]
        weights: Weights,
        /// Batch concurrent predict requests (the dynamic batcher): a batch stops waiting once
        /// it holds this many instances. Without it each request is scored on its own.
        #[arg(long, env = "MILLRACE_BATCH_MAX_INSTANCES",
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        batch_max_instances: Option<usize>,
        /// With batching, the longest a batch waits for more requests after its first, in
        /// microseconds.
        #[arg(long, env = "MILLRACE_BATCH_TIMEOUT_US", default_value_t = 500, requires = "batch_max_instances",
              value_parser = clap::value_parser!(u64).range(..=60_000_000))]
        batch_timeout_us: u64,
        /// With batching, the threads that form and score batches.
        #[arg(long, env = "MILLRACE_BATCH_THREADS", default_value_t = 1, requires = "batch_max_instances",
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        batch_threads: usize,
        /// With batching, the requests that may wait in the queue; one more is answered 429 at
        /// once.
        #[arg(long, env = "MILLRACE_BATCH_MAX_QUEUE", default_value_t = millrace_serving::DEFAULT_MAX_QUEUE, requires = "batch_max_instances",
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        batch_max_queue: usize,
        /// Shadow scorings that may run at once; past it a request's shadow scoring is skipped
        /// and counted.
        #[arg(long, env = "MILLRACE_MAX_SHADOW_IN_FLIGHT", default_value_t = millrace_serving::DEFAULT_MAX_SHADOW_IN_FLIGHT,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        max_shadow_in_flight: usize,
        /// Connections open at once; one more is closed at once.
        #[arg(long, env = "MILLRACE_MAX_CONNECTIONS", default_value_t = 10_000,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
        max_connections: usize,
        /// Longest a client may take to send a request's headers (or to start its next
        /// request on a kept-alive connection), in milliseconds; past it the connection closes.
        #[arg(long, env = "MILLRACE_HEADER_TIMEOUT_MS", default_value_t = 10_000,
              value_parser = clap::value_parser!(u64).range(1..))]
        header_timeout_ms: u64,
        /// Predict requests in flight at once; one more is answered 503 at once.
        #[arg(long, env = "MILLRACE_MAX_IN_FLIGHT", default_value_t = 256,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        max_in_flight: usize,
        /// Serve HTTPS with this PEM certificate chain (with `--tls-key`).
        #[arg(long, env = "MILLRACE_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of `--tls-cert` (not readable by others).
        #[arg(long, env = "MILLRACE_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Produce the lines of a file (or `-` for stdin) to a Kafka topic.
    Produce {
        /// The file to replay.
        file: PathBuf,
        /// The records' format (Criteo lines), or `--job`.
        #[arg(long, value_enum, default_value_t = Format::Criteo)]
        format: Format,
        /// A job file whose `[schema]` the file holds: a header line it declares is checked
        /// and not produced.
        #[arg(long)]
        job: Option<PathBuf>,
        /// The brokers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// How the producer reaches a secured cluster.
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The topic.
        #[arg(long, default_value = "criteo")]
        topic: String,
        /// Partitions of the topic, created with them when it does not exist (lines go to them
        /// in turn).
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Records per second; 0 for as fast as possible.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
    },
    /// Generate synthetic events with a planted signal, as lines on stdout.
    Gen {
        /// The format (`criteo`), or `--job`.
        #[arg(value_enum, required_unless_present = "job", conflicts_with = "job")]
        format: Option<Format>,
        /// A job file: events of its `[schema]` (a header line first when it declares one);
        /// their Bayes AUC (the AUC of the probabilities they were drawn with) goes to stderr.
        #[arg(long)]
        job: Option<PathBuf>,
        /// How many rows.
        #[arg(long)]
        rows: u64,
        /// The seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// With `--job`: plant preferences between the first three category fields of at most
        /// 5,000 values, latent vectors of this many numbers per value whose dot products enter
        /// the log-odds (as users and items do); 0 for none.
        #[arg(long, default_value_t = 0, requires = "job",
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=64))]
        interactions: usize,
        /// The log-odds scale of those preferences.
        #[arg(long, default_value_t = 2.0, requires = "job")]
        interaction_strength: f32,
    },
    /// Check a job file: every problem, each as `FILE:LINE:COLUMN: problem` (exit status 1
    /// when there is one); or print the job file's JSON Schema or reference.
    Validate {
        /// The job file (TOML), read as `run` reads it (with `MILLRACE__…` overrides).
        #[arg(required_unless_present_any = ["json_schema", "reference"])]
        job: Option<PathBuf>,
        /// Print the job file's JSON Schema (draft 2020-12) instead, for editors.
        #[arg(long, conflicts_with_all = ["job", "reference"])]
        json_schema: bool,
        /// Print the job file's reference in Markdown instead (`docs/job-file.md`).
        #[arg(long, conflicts_with = "job")]
        reference: bool,
    },
    /// Schema tools.
    Schema {
        #[command(subcommand)]
        schema: SchemaCommand,
    },
    /// Benchmarks that print one JSON line.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
    /// Print the shell completion script of `millrace` (bash: `source <(millrace completions
    /// bash)`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Print a `[schema]` block guessed from a file's header and first rows, to edit.
    Infer {
        /// The file.
        file: PathBuf,
        /// Its format (csv, tsv, json or libfm); guessed from the first line when absent.
        #[arg(long)]
        format: Option<String>,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// The whole job: produce N generated events to a broker, then time the job learning them all.
    Job {
        /// The brokers (a real one: the embedded broker keeps only a bounded window per partition).
        #[arg(long, default_value = "127.0.0.1:19092")]
        brokers: String,
        /// Events to generate.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Timely workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// `hashed` (2^20 slots) or `map` (the Criteo FeatureMap spec of `bench featurize`).
        #[arg(long, default_value = "hashed", value_parser = ["hashed", "map"])]
        features: String,
        /// Checkpoint into RocksDB (in a temporary directory) at most every this many
        /// milliseconds; 0 checkpoints every epoch. Without it the job does not checkpoint.
        #[arg(long)]
        checkpoint_ms: Option<u64>,
    },
    /// The Kafka source alone: produce N generated events (event times 0.1 ms apart), then time
    /// reading them into event-time epochs with a checkpoint of every epoch in RocksDB.
    Ingest {
        /// The brokers.
        #[arg(long, default_value = "127.0.0.1:19092")]
        brokers: String,
        /// Events to generate.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Timely workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Epoch span in milliseconds of event time.
        #[arg(long, default_value_t = 200)]
        epoch_ms: u64,
    },
    /// Fit and transform a file's events with the Criteo FeatureMap spec (20 quantile buckets
    /// and standardization on I1–I13, vocabularies with min count 5 on C1–C26).
    Featurize {
        /// The input file.
        #[arg(long)]
        input: PathBuf,
        /// A job file whose `[schema]` and `[features]` (a FeatureMap) to run instead of the
        /// Criteo spec.
        #[arg(long)]
        job: Option<PathBuf>,
        /// The input's format.
        #[arg(long, value_enum, default_value_t = Format::Criteo)]
        format: Format,
        /// Timely workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Epochs the file is cut into: one FeatureMap version each.
        #[arg(long, default_value_t = 10)]
        epochs: u64,
    },
    /// Train a deep model on the first part of a file's events, read with a job file's schema
    /// and FeatureMap, and score the rest (libtorch; CUDA with `--device auto` when present).
    #[cfg(feature = "deep")]
    Train {
        /// The input file.
        #[arg(long)]
        input: PathBuf,
        /// The job file whose `[schema]` and `[features]` (a FeatureMap) read the file.
        #[arg(long)]
        job: PathBuf,
        /// `deepfm` or `dcnv2`.
        #[arg(long, default_value = "deepfm")]
        model: String,
        /// `auto`, `cpu`, `cuda` or `cuda:N`.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Rows per step.
        #[arg(long, default_value_t = 1024)]
        batch: usize,
        /// Fraction held out at the end of the file.
        #[arg(long, default_value_t = 0.2)]
        holdout: f64,
        /// Passes over the training rows.
        #[arg(long, default_value_t = 1)]
        passes: usize,
        /// Each field's embedding width.
        #[arg(long, default_value_t = 8)]
        embedding_dim: usize,
        /// The MLP's hidden widths, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "64,32")]
        mlp: Vec<usize>,
        /// DCN-v2's cross layers.
        #[arg(long, default_value_t = 2)]
        cross_layers: usize,
        /// Adam's learning rate.
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        /// The seed of the weights.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the rows as `train.arrow` and `holdout.arrow` in this directory (what
        /// `perf/train_pytorch.py` reads).
        #[arg(long)]
        samples: Option<PathBuf>,
        /// Where the embedding rows live: `device` (in the model) or `host` (a host-resident
        /// table gathered per step, learning by row-wise AdaGrad).
        #[arg(long, default_value = "device")]
        embeddings: String,
        /// Row-wise AdaGrad's step size (`--embeddings host`).
        #[arg(long, default_value_t = 0.05)]
        embedding_lr: f64,
        /// Mixed precision on CUDA (fp16 autocast, dynamic loss scaling); f32 on the CPU.
        #[arg(long)]
        mixed_precision: bool,
    },
    /// The deep trainer's all-reduce between processes, per size: the CPU backend (a TCP ring
    /// on loopback) beside raw TCP between the same processes, or NCCL on the GPUs beside a
    /// copy within a GPU's memory (libtorch's crate; the `deep` feature).
    #[cfg(feature = "deep")]
    Allreduce {
        /// `tcp-ring`, or `nccl` (one GPU per rank; the `nccl` feature).
        #[arg(long, default_value = "tcp-ring")]
        backend: String,
        /// Sizes per rank: `LO..HI` (every fourfold size between) or one size; `K`, `M`, `G`.
        #[arg(long, default_value = "1K..256M")]
        bytes: String,
        /// Ranks, one process each (at least 2 for `tcp-ring`).
        #[arg(long, default_value_t = 2)]
        ranks: usize,
        /// The first of the loopback ports the ranks listen on (one each, upwards).
        #[arg(long, default_value_t = 29500)]
        port: u16,
        /// Run as this rank (the bench starts ranks 1.. itself).
        #[arg(long, hide = true)]
        rank: Option<usize>,
    },
    /// The least work a reader of a delimited file must do (split, parse the numbers, hash the
    /// categories), on one thread: the yardstick of `bench featurize`.
    Bare {
        /// The input file.
        #[arg(long)]
        input: PathBuf,
        /// A job file whose `[schema]` the file holds (the Criteo preset when absent).
        #[arg(long)]
        job: Option<PathBuf>,
    },
    /// What serving's load of a new version costs by how much of the model it changes: publishes
    /// a logistic regression and one version per `--changed` fraction of its chunks into an
    /// empty registry, then loads each as serving does, sharing with the one before.
    Swap {
        /// The registry directory to publish into (empty; the versions stay there).
        #[arg(long)]
        registry: PathBuf,
        /// 2^N weights.
        #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(14..=28))]
        hash_bits: u32,
        /// The fractions of the chunks each later version changes, in order.
        #[arg(long, value_delimiter = ',', default_value = "0.01,1")]
        changed: Vec<f64>,
        /// The seed of the weights and the changes.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Train online on the first part of a file, evaluate on the rest: Criteo events with hashed
    /// features, or with `--job` a job file's schema, features and learner.
    Online {
        /// The input file.
        #[arg(long)]
        input: PathBuf,
        /// A job file whose `[schema]`, `[features]` and `[learner]` to run on the file; the
        /// hashed-feature and learner options do not apply then.
        #[arg(long, conflicts_with_all = ["hash_bits", "model", "alpha", "l1", "l2"])]
        job: Option<PathBuf>,
        /// With one worker: training lines per epoch (one FeatureMap version each).
        #[arg(long, default_value_t = 1000)]
        epoch_rows: usize,
        /// The input's format.
        #[arg(long, value_enum, default_value_t = Format::Criteo)]
        format: Format,
        /// Fraction held out at the end of the file.
        #[arg(long, default_value_t = 0.2)]
        holdout: f64,
        /// log2 of the number of hashed weights.
        #[arg(long, default_value_t = 20)]
        hash_bits: u32,
        /// The learner (default hyper-parameters).
        #[arg(long, value_enum, default_value_t = Model::Ftrl)]
        model: Model,
        /// Timely workers training together, synchronized by all-reduce (1: one thread, in
        /// file order).
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Training lines per synchronization round with several workers.
        #[arg(long, default_value_t = 10_000)]
        sync_rows: usize,
        /// FTRL's learning-rate scale α (also the FM's linear part); default 0.1.
        #[arg(long)]
        alpha: Option<f32>,
        /// FTRL's L1 regularization λ1 (also the FM's linear part); default 0.5.
        #[arg(long)]
        l1: Option<f32>,
        /// FTRL's L2 regularization λ2 (also the FM's linear part); default 1.
        #[arg(long)]
        l2: Option<f32>,
        /// Also score the holdout with the model's numbers in q2.13 fixed point (16 bits).
        #[arg(long)]
        q213: bool,
        /// Also score the holdout with the model's numbers in 8 bits (a scale per 256).
        #[arg(long)]
        int8: bool,
        /// Publish the trained model to this registry directory.
        #[arg(long)]
        registry: Option<PathBuf>,
        /// The model name to publish under.
        #[arg(long, default_value = "ctr")]
        name: String,
        /// With `--registry` and one worker, also publish a version every this many training
        /// rows (the versions a serving benchmark swaps in).
        #[arg(long)]
        publish_every: Option<usize>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Weights {
    /// 32-bit floats, as trained.
    F32,
    /// q2.13 fixed point: 16 bits a number.
    Q213,
    /// 8-bit codes with a scale per 256 numbers.
    Int8,
}

#[derive(Clone, Copy, ValueEnum)]
enum Model {
    /// FTRL-Proximal logistic regression.
    Ftrl,
    /// A factorization machine (8 factors).
    Fm,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Criteo tab-separated lines.
    Criteo,
}

/// A share of one core: in (0, 1].
fn cpu_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if share > 0.0 && share <= 1.0 => Ok(share),
        Ok(share) => Err(format!("a share of one core is in (0, 1] (got {share})")),
        Err(e) => Err(e.to_string()),
    }
}

/// `millrace validate`: the job file's problems, its JSON Schema or its reference.
fn validate(job: Option<PathBuf>, json_schema: bool, reference: bool) -> anyhow::Result<()> {
    if json_schema {
        println!(
            "{}",
            serde_json::to_string_pretty(&JobSpec::job_file_schema())?
        );
        return Ok(());
    }
    if reference {
        print!("{}", JobSpec::reference());
        return Ok(());
    }
    let job = job.context("a job file to validate")?;
    let catalog = millrace_engine::catalog::Catalog::builtin();
    let problems = JobSpec::validate_file_in(&job, &catalog)?;
    for problem in &problems {
        match problem.at {
            Some(_) => eprintln!("{}:{problem}", job.display()),
            None => eprintln!("{}: {problem}", job.display()),
        }
    }
    if !problems.is_empty() {
        bail!("{} problem(s) in {}", problems.len(), job.display());
    }
    eprintln!("{}: valid", job.display());
    Ok(())
}

fn main() {
    if let Err(error) = run_cli() {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run_cli() -> anyhow::Result<()> {
    let cli = Cli::parse();
    millrace_engine::logs::init(cli.log_format);
    match cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "millrace", &mut std::io::stdout());
            Ok(())
        }
        Command::Run {
            job,
            workers,
            process,
            hosts,
            allow_fresh_start,
            metrics_bind,
            peer_timeout_secs,
            peer_wait_secs,
        } => {
            if process > 0 && hosts.is_none() {
                bail!("`--process {process}` needs `--hosts`, the file of the job's processes");
            }
            let options = RunOptions {
                workers,
                allow_fresh_start,
                metrics_bind,
                peer_timeout: Duration::from_secs(peer_timeout_secs),
                peer_wait: Duration::from_secs(peer_wait_secs),
                ..RunOptions::default()
            };
            run(job, (process, hosts), options)
        }
        Command::Serve {
            registry,
            bind,
            admin_token_file,
            registry_key_file,
            kafka,
            max_batch,
            max_body_bytes,
            request_timeout_ms,
            load_cpu_share,
            row_cache_entries,
            weights,
            batch_max_instances,
            batch_timeout_us,
            batch_threads,
            batch_max_queue,
            max_shadow_in_flight,
            max_connections,
            header_timeout_ms,
            max_in_flight,
            tls_cert,
            tls_key,
        } => {
            let batching = batch_max_instances.map(|max_instances| BatchOptions {
                max_instances,
                timeout: std::time::Duration::from_micros(batch_timeout_us),
                threads: batch_threads,
                max_queue: batch_max_queue,
            });
            // Every problem of the batching options at once (each flag's range is checked as
            // it is parsed).
            let problems = batching.map(|b| b.problems()).unwrap_or_default();
            if !problems.is_empty() {
                bail!("{}", problems.join("; "));
            }
            let admin_token = admin_token_file
                .as_deref()
                .map(read_admin_token)
                .transpose()?;
            let registry_key = registry_key_file
                .as_deref()
                .map(read_registry_key)
                .transpose()?;
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => {
                    read_secret(&key, "TLS key").map_err(anyhow::Error::msg)?;
                    Some(millrace_serving::tls_config(&cert, &key).map_err(anyhow::Error::msg)?)
                }
                _ => None,
            };
            let options = ServeOptions {
                max_batch,
                max_body_bytes,
                request_timeout: std::time::Duration::from_millis(request_timeout_ms),
                admin_token,
                batching,
                max_shadow_in_flight,
                max_connections,
                header_timeout: std::time::Duration::from_millis(header_timeout_ms),
                max_in_flight,
                tls,
                ..ServeOptions::default()
            };
            let precision = match weights {
                Weights::F32 => Precision::F32,
                Weights::Q213 => Precision::Q213,
                Weights::Int8 => Precision::Int8,
            };
            let store = (load_cpu_share, row_cache_entries, precision);
            serve((registry, &kafka, registry_key), &bind, options, store)
        }
        Command::Produce {
            file,
            format: Format::Criteo,
            job,
            brokers,
            kafka,
            topic,
            partitions,
            rate,
        } => {
            let brokers = kafka.brokers(&brokers)?;
            let schema = match job {
                Some(job) => millrace_engine::spec::JobSpec::from_file(&job)?.event_schema()?,
                None => millrace_models::Schema::criteo(),
            };
            let created = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(millrace_connectors::kafka::create_topics(
                    &brokers,
                    &[&topic],
                    partitions,
                ));
            // Topics made by whoever runs the brokers are fine: producing needs only to write.
            if let Err(error) = created {
                tracing::warn!(%error, %topic, "the topic could not be created; producing to it as it is");
            }
            produce(&file, &schema, &brokers, &topic, partitions, rate)
        }
        Command::Gen {
            job: None,
            rows,
            seed,
            ..
        } => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            let bar = progress_bar::bar(Some(rows), "generating");
            for event in CriteoGenerator::new(seed).take(rows as usize) {
                writeln!(out, "{}", event.to_tsv())?;
                bar.inc(1);
            }
            bar.finish_and_clear();
            out.flush()?;
            Ok(())
        }
        Command::Gen {
            job: Some(job),
            rows,
            seed,
            interactions,
            interaction_strength,
            ..
        } => gen_schema(&job, rows, seed, (interactions, interaction_strength)),
        Command::Bench {
            bench:
                Bench::Job {
                    brokers,
                    rows,
                    workers,
                    features,
                    checkpoint_ms,
                },
        } => {
            let registry = tempfile::tempdir()?;
            let state = tempfile::tempdir()?;
            let features = match features.as_str() {
                "map" => FeatureSpec::Map(FeatureMapSpec::criteo_default()),
                _ => FeatureSpec::Hashed { hash_bits: 20 },
            };
            let checkpoint = checkpoint_ms.map(|ms| (ms, state.path()));
            let figures = bench::job(
                &brokers,
                rows,
                workers,
                features,
                registry.path(),
                checkpoint,
            )?;
            println!("{}", serde_json::to_string(&figures)?);
            Ok(())
        }
        Command::Bench {
            bench:
                Bench::Ingest {
                    brokers,
                    rows,
                    workers,
                    epoch_ms,
                },
        } => {
            let state = tempfile::tempdir()?;
            let figures = bench::ingest(&brokers, rows, workers, epoch_ms, state.path())?;
            println!("{}", serde_json::to_string(&figures)?);
            Ok(())
        }
        Command::Bench {
            bench:
                Bench::Featurize {
                    input,
                    job,
                    format: Format::Criteo,
                    workers,
                    epochs,
                },
        } => {
            let layout = match job {
                Some(job) => {
                    let spec = millrace_engine::spec::JobSpec::from_file(&job)?;
                    let FeatureSpec::Map(features) = &spec.features else {
                        bail!("`bench featurize --job` runs a FeatureMap (`[features] type = \"map\"`)");
                    };
                    features
                        .compile(&spec.event_schema()?)
                        .map_err(|problems| anyhow::anyhow!("{}", problems.join("; ")))?
                }
                None => FeatureMapSpec::criteo_default()
                    .compile(&millrace_models::Schema::criteo())
                    .map_err(|problems| anyhow::anyhow!("{}", problems.join("; ")))?,
            };
            let figures = bench::featurize(&input, layout, workers, epochs)?;
            println!("{}", serde_json::to_string(&figures)?);
            Ok(())
        }
        #[cfg(feature = "deep")]
        Command::Bench {
            bench:
                Bench::Train {
                    input,
                    job,
                    model,
                    device,
                    batch,
                    holdout,
                    passes,
                    embedding_dim,
                    mlp,
                    cross_layers,
                    lr,
                    seed,
                    samples,
                    embeddings,
                    embedding_lr,
                    mixed_precision,
                },
        } => {
            let job = millrace_engine::spec::JobSpec::from_file(&job)?;
            let spec = millrace_deep::DeepSpec {
                model: model
                    .parse()
                    .map_err(|why: String| anyhow::anyhow!("--model: {why}"))?,
                embedding_dim,
                mlp,
                cross_layers,
                learning_rate: lr,
                batch_size: batch,
                passes,
                seed,
                embeddings: bench::train::embeddings(&embeddings, embedding_lr)?,
                mixed_precision,
            };
            let device = millrace_deep::parse_device(&device)?;
            let figures =
                bench::train::train(&input, &job, (&spec, holdout, device), samples.as_deref())?;
            println!("{}", serde_json::to_string(&figures)?);
            Ok(())
        }
        #[cfg(feature = "deep")]
        Command::Bench {
            bench:
                Bench::Allreduce {
                    backend,
                    bytes,
                    ranks,
                    port,
                    rank,
                },
        } => allreduce_bench(&backend, &bytes, (ranks, port), rank),
        Command::Bench {
            bench: Bench::Bare { input, job },
        } => {
            let schema = match job {
                Some(job) => millrace_engine::spec::JobSpec::from_file(&job)?.event_schema()?,
                None => millrace_models::Schema::criteo(),
            };
            let figures = bench::bare::bare(&input, &schema)?;
            println!("{}", serde_json::to_string(&figures)?);
            Ok(())
        }
        Command::Bench {
            bench:
                Bench::Swap {
                    registry,
                    hash_bits,
                    changed,
                    seed,
                },
        } => {
            let figures = bench::swap::swap(&registry, hash_bits, &changed, seed)?;
            println!("{}", serde_json::to_string(&figures)?);
            Ok(())
        }
        Command::Validate {
            job,
            json_schema,
            reference,
        } => validate(job, json_schema, reference),
        Command::Schema {
            schema: SchemaCommand::Infer { file, format },
        } => {
            let text =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let spec = millrace_models::schema::infer::infer(&text, format.as_deref())
                .map_err(|why| anyhow::anyhow!("{why}"))?;
            print!("{}", millrace_models::schema::infer::to_toml(&spec));
            Ok(())
        }
        Command::Bench {
            bench:
                Bench::Online {
                    input,
                    job,
                    epoch_rows,
                    format: Format::Criteo,
                    holdout,
                    hash_bits,
                    model,
                    workers,
                    sync_rows,
                    alpha,
                    l1,
                    l2,
                    q213,
                    int8,
                    registry,
                    name,
                    publish_every,
                },
        } => {
            let model = match job {
                Some(job) => {
                    OnlineModel::of_job(&millrace_engine::spec::JobSpec::from_file(&job)?)?
                }
                None => OnlineModel::hashed_criteo(hash_bits, learner(model, alpha, l1, l2)),
            };
            let config = OnlineBenchConfig {
                holdout,
                epoch_rows,
                workers,
                sync_rows,
                q213,
                int8,
                publish_every,
            };
            let registry = registry.map(Registry::open).transpose()?;
            let figures = bench::online::online(
                &input,
                &model,
                &config,
                registry.as_ref().map(|r| (r, name.as_str())),
            )?;
            println!("{}", serde_json::to_string(&figures)?);
            Ok(())
        }
    }
}

/// The learner of `bench online`'s flags: default hyper-parameters but for those given.
fn learner(model: Model, alpha: Option<f32>, l1: Option<f32>, l2: Option<f32>) -> LearnerParams {
    match model {
        Model::Ftrl => {
            let d = FtrlParams::default();
            LearnerParams::Ftrl(FtrlParams {
                alpha: alpha.unwrap_or(d.alpha),
                l1: l1.unwrap_or(d.l1),
                l2: l2.unwrap_or(d.l2),
                ..d
            })
        }
        Model::Fm => {
            let d = FmParams::default();
            LearnerParams::Fm(FmParams {
                alpha: alpha.unwrap_or(d.alpha),
                l1: l1.unwrap_or(d.l1),
                l2: l2.unwrap_or(d.l2),
                ..d
            })
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn run(
    job: PathBuf,
    (process, hosts): (usize, Option<PathBuf>),
    options: RunOptions,
) -> anyhow::Result<()> {
    let spec = JobSpec::from_file(&job)?;
    let cluster = match hosts {
        Some(file) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading the hosts file {}", file.display()))?;
            let hosts: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            anyhow::ensure!(
                process < hosts.len(),
                "--process {process} is not below the {} hosts of {}",
                hosts.len(),
                file.display()
            );
            Some(Cluster { process, hosts })
        }
        None => None,
    };
    let running = Job::start(spec, RunOptions { cluster, ..options })?;
    let stop = running.stop_handle();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(runtime) = runtime {
            runtime.block_on(shutdown_signal());
            tracing::info!("stopping: draining the dataflow and publishing a final version (signal again to exit at once)");
            stop.stop();
            runtime.block_on(shutdown_signal());
            tracing::warn!("second signal: exiting without waiting for the drain");
            std::process::exit(130);
        }
    });
    let report = running.wait()?;
    tracing::info!(?report, "job finished");
    // The report, for scripts: one JSON line on stdout.
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The admin token in `path` ([`read_secret`]).
fn read_admin_token(path: &std::path::Path) -> anyhow::Result<String> {
    read_secret(path, "admin token").map_err(anyhow::Error::msg)
}

/// The registry key in `path` ([`read_secret`]): the bytes of its text.
fn read_registry_key(path: &std::path::Path) -> anyhow::Result<RegistryKey> {
    let text = read_secret(path, "registry key").map_err(anyhow::Error::msg)?;
    RegistryKey::new(text.into_bytes())
        .map_err(|e| anyhow::anyhow!("the registry key file {}: {e}", path.display()))
}

fn serve(
    (registry, kafka, registry_key): (PathBuf, &KafkaArgs, Option<RegistryKey>),
    bind: &str,
    options: ServeOptions,
    (load_cpu_share, row_cache_entries, precision): (f64, usize, Precision),
) -> anyhow::Result<()> {
    let store = match registry.to_str().and_then(|r| r.strip_prefix("kafka://")) {
        Some(rest) => {
            let (brokers, topic) = rest
                .rsplit_once('/')
                .filter(|(b, t)| !b.is_empty() && !t.is_empty())
                .with_context(|| format!("`--registry {rest}`: use kafka://BROKERS/TOPIC"))?;
            let source = KafkaVersions::follow(&kafka.brokers(brokers)?, topic, registry_key)?;
            tracing::info!(brokers, topic, "following the registry topic");
            ModelStore::new(source)
        }
        None => {
            anyhow::ensure!(
                registry_key.is_none(),
                "`--registry-key-file` signs a registry topic's versions; a registry directory has none"
            );
            ModelStore::new(Registry::open(registry)?)
        }
    };
    let store = Arc::new(
        store
            .with_load_cpu_share(load_cpu_share)
            .with_row_cache(row_cache_entries)
            .with_precision(precision),
    );
    let outcome = store.refresh();
    tracing::info!(models = ?outcome.swapped, "loaded");
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding {bind}"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving");
        millrace_serving::serve(store, listener, options, shutdown_signal()).await;
        Ok(())
    })
}

fn produce(
    file: &PathBuf,
    schema: &millrace_models::Schema,
    brokers: &Brokers,
    topic: &str,
    partitions: i32,
    rate: f64,
) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
        ))
    };
    let mut producer = LineProducer::new(brokers, topic, partitions)?;
    let limit = RateLimit::new(Some(rate));
    let mut header = schema.record().header;
    // Bytes of the file when it is one; records counted otherwise.
    let size = (file.as_os_str() != "-")
        .then(|| std::fs::metadata(file).ok().map(|m| m.len()))
        .flatten();
    let bar = progress_bar::bar(size, "producing");
    for line in reader.split(b'\n') {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if std::mem::take(&mut header) {
            schema
                .check_header(&line)
                .map_err(|why| anyhow::anyhow!("{}: {why}", file.display()))?;
            continue;
        }
        limit.wait(producer.sent());
        producer.send(&line)?;
        bar.inc(if size.is_some() {
            line.len() as u64 + 1
        } else {
            1
        });
    }
    bar.finish_and_clear();
    producer.flush(Duration::from_secs(60))?;
    eprintln!("produced {} records to {topic}", producer.sent());
    Ok(())
}

/// `millrace gen --job`: `rows` events of the job's schema on stdout, with `(rank, strength)`
/// preferences planted when the rank is not 0; their Bayes AUC on stderr.
fn gen_schema(
    job: &std::path::Path,
    rows: u64,
    seed: u64,
    (rank, strength): (usize, f32),
) -> anyhow::Result<()> {
    use millrace_models::schema::synth::SchemaGenerator;
    let spec = millrace_engine::spec::JobSpec::from_file(job)?;
    let mut generator =
        SchemaGenerator::new(&spec.event_schema()?, seed).with_interactions(rank, strength, seed);
    let mut out = BufWriter::new(std::io::stdout().lock());
    if let Some(header) = generator.header() {
        writeln!(out, "{header}")?;
    }
    let (mut probabilities, mut labels) = (Vec::new(), Vec::new());
    let bar = progress_bar::bar(Some(rows), "generating");
    for generated in generator.by_ref().take(rows as usize) {
        writeln!(out, "{}", generated.record)?;
        probabilities.push(generated.probability);
        labels.push(generated.label);
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.flush()?;
    let clicks = labels.iter().filter(|l| **l).count();
    eprintln!(
        "{}",
        serde_json::json!({
            "rows": rows,
            "click_rate": clicks as f64 / labels.len().max(1) as f64,
            "bayes_auc": millrace_models::exact_auc(&probabilities, &labels),
            "interacting_fields": generator.interacting_fields(),
        })
    );
    Ok(())
}

/// `millrace bench allreduce` with `backend`: as rank `rank`, or (without one) as rank 0
/// starting the others as child processes and printing the figures.
#[cfg(feature = "deep")]
fn allreduce_bench(
    backend: &str,
    bytes: &str,
    (ranks, port): (usize, u16),
    rank: Option<usize>,
) -> anyhow::Result<()> {
    let sizes = bench::allreduce::sizes(bytes)?;
    let least = match backend {
        "tcp-ring" => 2,
        "nccl" if cfg!(feature = "nccl") => 1,
        "nccl" => anyhow::bail!("this binary was built without the `nccl` feature"),
        other => anyhow::bail!("`--backend`: {other:?} is neither `tcp-ring` nor `nccl`"),
    };
    if ranks < least || usize::from(port) + ranks > usize::from(u16::MAX) {
        anyhow::bail!(
            "`--ranks` must be >= {least} for {backend}, and `--port` + ranks a port (got {ranks}, {port})"
        );
    }
    let run = |rank: usize| -> anyhow::Result<Option<String>> {
        let line = match backend {
            #[cfg(feature = "nccl")]
            "nccl" => {
                bench::nccl::run_rank(rank, ranks, port, &sizes)?.map(|f| serde_json::to_string(&f))
            }
            _ => bench::allreduce::run_rank(rank, ranks, port, &sizes)?
                .map(|f| serde_json::to_string(&f)),
        };
        Ok(line.transpose()?)
    };
    if let Some(rank) = rank {
        run(rank)?;
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for r in 1..ranks {
        let child = std::process::Command::new(&exe)
            .args(["bench", "allreduce", "--backend", backend, "--bytes", bytes])
            .args(["--ranks", &ranks.to_string(), "--port", &port.to_string()])
            .args(["--rank", &r.to_string()])
            .spawn()?;
        children.push(child);
    }
    let line = run(0);
    for mut child in children {
        if line.is_err() {
            // Rank 0 failed: the others would wait on it until their sockets time out.
            let _ = child.kill();
        }
        let status = child.wait()?;
        if line.is_ok() && !status.success() {
            anyhow::bail!("a rank's process failed: {status}");
        }
    }
    if let Some(line) = line? {
        println!("{line}");
    }
    Ok(())
}
