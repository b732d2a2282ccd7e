//! The job thread: placement checks, the brokers and topics, the registry and its mirror,
//! serving, the background threads, then the dataflow, then the shutdown in order.

use super::background::{Background, Context};
use super::dataflow::run_dataflow;
use super::sinks::output_topics;
use super::{JobReport, RunOptions, Started};
use crate::error::{Error, Result};
use crate::file_source::Replay;
use crate::metrics::JobStats;
use crate::spec::{JobSpec, SourceSpec};
use millrace_connectors::kafka::{
    create_registry_topic, create_topics, EmbeddedBroker, KafkaReader, KafkaSourceConfig,
    RegistryPublisher, EMBEDDED,
};
use millrace_models::{ModelArtifact, Registry};
use millrace_operators::Mirror;
use millrace_serving::{ModelStore, ServeOptions};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Runs `spec` on the job thread, telling `started` once everything but the dataflow is up.
pub(super) fn run(
    spec: JobSpec,
    options: RunOptions,
    stop: Arc<AtomicBool>,
    started: mpsc::Sender<Started>,
) -> Result<JobReport> {
    check_placement(&spec, &options)?;
    let (kafka, replay) = source_topic(&spec)?;
    let process = options.cluster.as_ref().map_or(0, |c| c.process);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("millrace-io")
        .enable_all()
        .build()
        .map_err(|source| Error::Spawn {
            what: "the i/o runtime",
            source,
        })?;
    let embedded = brokers(&spec, &kafka, &runtime)?;
    let bootstrap = embedded.as_ref().map_or_else(
        || kafka.bootstrap_servers.clone(),
        EmbeddedBroker::bootstrap_servers,
    );
    let partitions = KafkaReader::topic_partitions(&kafka, &bootstrap)?;
    let stats = Arc::new(JobStats::new(&spec.name, partitions));
    let registry = Registry::open(&spec.publish.registry)?;
    let mirror = registry_mirror(&spec, embedded.as_ref(), &bootstrap, &runtime)?;
    let serving = match spec.serve.as_ref().filter(|_| process == 0) {
        Some(serve) => Some(Serving::start(
            &serve.bind,
            &spec.name,
            &registry,
            &stats,
            &runtime,
        )?),
        None => None,
    };
    let background = Background::start(
        &Context {
            bootstrap: &bootstrap,
            topic: &kafka.topic,
            partitions,
            stop: &stop,
            stats: &stats,
        },
        spec.generator.clone().filter(|_| process == 0),
        replay.filter(|_| process == 0),
        Duration::from_millis(spec.progress.interval_ms),
    );
    let background = match background {
        Ok(background) => background,
        Err(error) => {
            if let Some(serving) = serving {
                serving.stop(&runtime);
            }
            return Err(error);
        }
    };

    let _ = started.send(Started {
        bootstrap_servers: bootstrap.clone(),
        serve_addr: serving.as_ref().map(|s| s.addr),
        stats: stats.clone(),
    });

    let result = run_dataflow(
        &spec,
        (&kafka, &bootstrap),
        (registry, mirror),
        &options,
        &stop,
        &stats,
    );

    stop.store(true, Ordering::SeqCst);
    let replay_failed = background.finish();
    if let Some(serving) = serving {
        serving.stop(&runtime);
    }
    drop(embedded);
    if let Some(error) = replay_failed {
        return Err(error);
    }
    let restored_epoch = result?;
    check_published(&stats, process)?;
    Ok(JobReport::now(&stats, restored_epoch))
}

/// A `file` source replays through an embedded broker, and an embedded broker belongs to one
/// process: neither can be a job of several processes.
fn check_placement(spec: &JobSpec, options: &RunOptions) -> Result<()> {
    if options.cluster.is_none() {
        return Ok(());
    }
    let problem = match &spec.source {
        SourceSpec::File(_) => "[source] a `file` source replays through an embedded broker: it cannot run as a job of several processes",
        SourceSpec::Kafka(kafka) if kafka.bootstrap_servers == EMBEDDED => "[source] `bootstrap_servers` cannot be \"embedded\" for a job of several processes: each would run its own broker",
        SourceSpec::Kafka(_) => return Ok(()),
    };
    Err(Error::Config {
        problems: vec![problem.to_owned()],
    })
}

/// The topic the dataflow reads, and for a `file` source the replay of its file into it.
fn source_topic(spec: &JobSpec) -> Result<(KafkaSourceConfig, Option<Replay>)> {
    match &spec.source {
        SourceSpec::Kafka(kafka) => Ok((kafka.clone(), None)),
        SourceSpec::File(file) => {
            let replay = Replay::read(file.clone(), &spec.event_schema()?)?;
            Ok((replay.kafka_config(&spec.name), Some(replay)))
        }
    }
}

/// The broker with the job's topics: in-process for `embedded` (returned, to live as long as
/// the job), otherwise the configured cluster, whose topics are created when they can be.
fn brokers(
    spec: &JobSpec,
    kafka: &KafkaSourceConfig,
    runtime: &Runtime,
) -> Result<Option<EmbeddedBroker>> {
    let mut topics = vec![kafka.topic.as_str(), kafka.dead_letter_topic.as_str()];
    topics.extend(output_topics(spec));
    if kafka.bootstrap_servers == EMBEDDED {
        let broker = EmbeddedBroker::start()?;
        for topic in topics {
            broker.create_topic(topic, kafka.partitions)?;
        }
        tracing::info!(
            bootstrap_servers = %broker.bootstrap_servers(),
            topic = %kafka.topic,
            "embedded Kafka broker listening; any Kafka client can connect to it"
        );
        return Ok(Some(broker));
    }
    if let Err(error) = runtime.block_on(create_topics(
        &kafka.bootstrap_servers,
        &topics,
        kafka.partitions,
    )) {
        // Topics made by whoever runs the brokers are fine: the source needs only to read.
        KafkaReader::topic_partitions(kafka, &kafka.bootstrap_servers).map_err(|_| error)?;
        tracing::warn!("the topics could not be created but exist; going on");
    }
    Ok(None)
}

/// The publisher of every version to the registry topic too, when the job names one.
fn registry_mirror(
    spec: &JobSpec,
    embedded: Option<&EmbeddedBroker>,
    bootstrap: &str,
    runtime: &Runtime,
) -> Result<Option<Mirror>> {
    let Some(topic) = &spec.publish.registry_topic else {
        return Ok(None);
    };
    match embedded {
        Some(broker) => broker.create_topic(topic, 1)?,
        None => runtime.block_on(create_registry_topic(bootstrap, topic))?,
    }
    let publisher = Mutex::new(RegistryPublisher::new(bootstrap, topic)?);
    tracing::info!(topic = %topic, "model versions also go to the registry topic");
    Ok(Some(Mirror(Arc::new(move |artifact: &ModelArtifact| {
        let mut publisher = publisher
            .lock()
            .map_err(|_| "the registry publisher failed before")?;
        Ok(publisher.publish(artifact).map(drop)?)
    }))))
}

/// In-process serving of the registry's versions.
struct Serving {
    addr: SocketAddr,
    server: JoinHandle<()>,
    shutdown: oneshot::Sender<()>,
}

impl Serving {
    /// Binds `bind` and serves `model`'s versions from `registry` on `runtime`, with the job's
    /// figures beside serving's on `/metrics`.
    fn start(
        bind: &str,
        model: &str,
        registry: &Registry,
        stats: &Arc<JobStats>,
        runtime: &Runtime,
    ) -> Result<Self> {
        let bind_error = |source| Error::Bind {
            addr: bind.to_owned(),
            source,
        };
        let listener = std::net::TcpListener::bind(bind).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let store = Arc::new(ModelStore::new(registry.clone()));
        let metrics = stats.clone();
        let options = ServeOptions {
            extra_metrics: Some(Arc::new(move || metrics.render_prometheus())),
            ..ServeOptions::default()
        };
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let server = runtime.spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    let shutdown = async {
                        let _ = shutdown_rx.await;
                    };
                    millrace_serving::serve(store, listener, options, shutdown).await;
                }
                Err(error) => tracing::error!(%error, "cannot serve"),
            }
        });
        tracing::info!(%addr, model = %model, "serving POST /v1/models/{model}:predict");
        Ok(Serving {
            addr,
            server,
            shutdown,
        })
    }

    /// Shuts the server down and waits for it.
    fn stop(self, runtime: &Runtime) {
        let _ = self.shutdown.send(());
        let _ = runtime.block_on(self.server);
    }
}

/// Process 0 publishes a final version of everything learned; in a cluster its count of
/// learned events is its own workers' share.
fn check_published(stats: &JobStats, process: usize) -> Result<()> {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let (learned, published) = (
        load(&stats.trainer.learned),
        load(&stats.trainer.published_events),
    );
    if process == 0 && learned > published {
        return Err(Error::NotPublished { learned, published });
    }
    Ok(())
}
