//! The job thread: placement checks, the brokers and topics, the registry and its mirror,
//! serving, the background threads, then the dataflow, then the shutdown in order.

use super::background::{Background, Context, Generate};
use super::dataflow::run_dataflow;
use super::http_task::HttpTask;
use super::keeper::Keeper;
use super::probes::start_probes;
use super::sinks::OutputSinks;
use super::{JobReport, RunOptions, Started};
use crate::brokers::secured_brokers;
use crate::catalog::{event_time_reader, Source, SourceContext};
use crate::error::{Error, Result};
use crate::metrics::{JobMetrics, JobStats};
use crate::secret::read_secret;
use crate::spec::JobSpec;
use millrace_connectors::kafka::{
    create_registry_topic, create_topics, Brokers, EmbeddedBroker, KafkaReader, KafkaSourceConfig,
    RegistryPublisher, EMBEDDED,
};
use millrace_models::topic::RegistryKey;
use millrace_models::{ModelArtifact, Registry};
use millrace_operators::Mirror;
use millrace_serving::{ModelStore, ServeOptions};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Runtime;

/// Runs `spec` on the job thread, telling `started` once everything but the dataflow is up.
pub(super) fn run(
    spec: JobSpec,
    options: RunOptions,
    stop: Arc<AtomicBool>,
    started: mpsc::Sender<Started>,
) -> Result<JobReport> {
    let factory = options
        .catalog
        .factory_of(&spec.source)
        .map_err(|problem| Error::Config {
            problems: vec![format!("[source] {problem}")],
        })?
        .clone();
    let kafka = spec.source.as_kafka().filter(|_| factory.is_kafka());
    let dead_letters = kafka.as_ref().map_or_else(
        || format!("{}-dead-letters", spec.name),
        |k| k.dead_letter_topic.clone(),
    );
    let outputs = OutputSinks::of(&spec, &dead_letters);
    let topics = JobTopics::of(&spec, kafka, outputs.kafka_topics(&options.catalog))?;
    check_placement(&spec, &topics, &options)?;
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
    let embedded = brokers(&spec, &topics, &runtime)?;
    let bootstrap = embedded.as_ref().map_or_else(
        || topics.brokers.clone().unwrap_or_default(),
        EmbeddedBroker::brokers,
    );
    let schema = Arc::new(spec.event_schema()?);
    let decoder = options
        .catalog
        .decoder_of(&spec.schema)
        .map_err(|problem| Error::Config {
            problems: vec![format!("[schema] {problem}")],
        })?;
    let source = factory
        .open(
            &spec.source.config,
            &SourceContext {
                job: &spec.name,
                schema: &schema,
                event_time: event_time_reader(&schema, decoder.clone()),
                bootstrap: &bootstrap,
            },
        )
        .map_err(|source| Error::Source {
            kind: spec.source.kind.clone(),
            source,
        })?;
    check_bounded(&spec, (&*source, factory.is_kafka()), &options)?;
    let stats = Arc::new(JobStats::new(&spec.name, source.partitions()));
    // Ready while the dataflow runs.
    let ready = Arc::new(AtomicBool::new(false));
    let probes = options
        .metrics_bind
        .map(|addr| start_probes(addr, &stats, &ready, &runtime))
        .transpose()?;
    let registry = Registry::open(&spec.publish.registry)?;
    // Process 0 publishes: it alone cleans the registry up and prunes it.
    let keeper = match process {
        0 => Keeper::start(&registry, spec.publish.keep_versions, &stats)?,
        _ => None,
    };
    let mirror = registry_mirror(&spec, embedded.as_ref(), &bootstrap, &runtime)?;
    let serving = match spec.serve.as_ref().filter(|_| process == 0) {
        Some(serve) => Some(start_serving(
            &serve.bind,
            &spec.name,
            &registry,
            &stats,
            &runtime,
        )?),
        None => None,
    };
    let generator = match (&spec.generator, &topics.source) {
        (Some(generator), Some((topic, partitions))) if process == 0 => Some(Generate {
            spec: generator.clone(),
            schema: spec.event_schema()?,
            topic: topic.as_str(),
            partitions: *partitions,
        }),
        _ => None,
    };
    let background = Background::start(
        &Context {
            bootstrap: &bootstrap,
            source: &source,
            stop: &stop,
            stats: &stats,
        },
        generator,
        Duration::from_millis(spec.progress.interval_ms),
    );
    let background = match background {
        Ok(background) => background,
        Err(error) => {
            if let Some(serving) = serving {
                serving.stop(&runtime);
            }
            if let Some(probes) = probes {
                probes.stop(&runtime);
            }
            return Err(error);
        }
    };

    #[cfg(feature = "deep")]
    let retrainer = {
        let workers = options.workers.max(1);
        let local: Vec<usize> = (process * workers..(process + 1) * workers).collect();
        super::retrain::Retrainer::start(&spec, &registry, &local, options.cluster.as_ref(), &stats)
    };

    let _ = started.send(Started {
        bootstrap_servers: bootstrap.servers().to_owned(),
        serve_addr: serving.as_ref().map(|s| s.addr),
        stats: stats.clone(),
    });

    let result = run_dataflow(
        &spec,
        (source, decoder),
        (&bootstrap, outputs),
        (registry, mirror),
        &options,
        (&stop, &ready),
        &stats,
    );

    // A stop asked for (SIGTERM) ends the retraining stage at once; an input that ended gets
    // one last run on everything buffered.
    ready.store(false, Ordering::SeqCst);
    let interrupted = stop.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    #[cfg(feature = "deep")]
    if let Some(retrainer) = retrainer {
        retrainer.finish(!interrupted && result.is_ok());
    }
    #[cfg(not(feature = "deep"))]
    let _ = interrupted;
    background.finish();
    if let Some(serving) = serving {
        serving.stop(&runtime);
    }
    if let Some(probes) = probes {
        probes.stop(&runtime);
    }
    drop(embedded);
    drop(keeper);
    let restored_epoch = result?;
    if let Some(reason) = stats.source.resume_failure() {
        return Err(Error::Resume(reason));
    }
    check_published(&stats, process)?;
    Ok(JobReport::now(&stats, restored_epoch))
}

/// The Kafka topics of a job: a `kafka` source's, on its brokers, with the outputs' Kafka
/// sinks' and the registry topic; for any other source, the outputs' and the registry topic
/// on an embedded broker of the job's own, or no broker at all when it has none.
struct JobTopics {
    /// The brokers (`embedded` for the job's own); `None` for a job without Kafka.
    brokers: Option<Brokers>,
    /// The source's topic and its partitions, for a `kafka` source.
    source: Option<(String, i32)>,
    /// The outputs' Kafka topics.
    outputs: Vec<String>,
}

impl JobTopics {
    fn of(spec: &JobSpec, kafka: Option<KafkaSourceConfig>, outputs: Vec<String>) -> Result<Self> {
        let needs_brokers = !outputs.is_empty() || spec.publish.registry_topic.is_some();
        Ok(match kafka {
            Some(kafka) => JobTopics {
                brokers: Some(source_brokers(&kafka)?),
                source: Some((kafka.topic, kafka.partitions)),
                outputs,
            },
            None => JobTopics {
                brokers: needs_brokers.then(|| Brokers::new(EMBEDDED)),
                source: None,
                outputs,
            },
        })
    }
}

/// The brokers of a `kafka` source, with its `kafka` settings and `kafka_file`.
fn source_brokers(kafka: &KafkaSourceConfig) -> Result<Brokers> {
    secured_brokers(
        &kafka.bootstrap_servers,
        ("[source] kafka", &kafka.kafka),
        kafka.kafka_file.as_deref(),
    )
    .map_err(|problems| Error::Config {
        problems: problems
            .into_iter()
            .map(|p| format!("[source] {p}"))
            .collect(),
    })
}

/// An embedded broker belongs to one process: a job on one cannot have several.
fn check_placement(spec: &JobSpec, topics: &JobTopics, options: &RunOptions) -> Result<()> {
    if options.cluster.is_none() || topics.brokers.as_ref().map(Brokers::servers) != Some(EMBEDDED)
    {
        return Ok(());
    }
    let problem = match topics.source {
        Some(_) => "[source] `bootstrap_servers` cannot be \"embedded\" for a job of several processes: each would run its own broker".to_owned(),
        None => format!("[sinks] a `{}` source's job keeps its Kafka outputs (the dead letters unless `dead_letters_sink` says otherwise, and `[publish] registry_topic`) on an embedded broker: it cannot run as a job of several processes", spec.source.kind),
    };
    Err(Error::Config {
        problems: vec![problem],
    })
}

/// A bounded source other than `kafka` ends the job on the whole job's count of records,
/// which one process of several does not see: such a job runs as one process.
fn check_bounded(
    spec: &JobSpec,
    (source, kafka): (&dyn Source, bool),
    options: &RunOptions,
) -> Result<()> {
    if options.cluster.is_none() || kafka || source.stop_after_records().is_none() {
        return Ok(());
    }
    Err(Error::Config {
        problems: vec![format!(
            "[source] a bounded `{}` source ends the job once every record is read, a count no process of several sees whole: run it as one process",
            spec.source.kind
        )],
    })
}

/// The broker with the job's topics (the source's and the outputs'): in-process for
/// `embedded` (returned, to live as long as the job), otherwise the configured cluster, whose
/// topics are created when they can be; none for a job without Kafka.
fn brokers(
    spec: &JobSpec,
    topics: &JobTopics,
    runtime: &Runtime,
) -> Result<Option<EmbeddedBroker>> {
    let Some(brokers) = &topics.brokers else {
        return Ok(None);
    };
    let partitions = topics.source.as_ref().map_or(1, |(_, p)| *p);
    let mut names: Vec<&str> = topics.source.iter().map(|(t, _)| t.as_str()).collect();
    names.extend(topics.outputs.iter().map(String::as_str));
    if brokers.servers() == EMBEDDED {
        let broker = EmbeddedBroker::start()?;
        for topic in names {
            broker.create_topic(topic, partitions)?;
        }
        tracing::info!(
            bootstrap_servers = %broker.bootstrap_servers(),
            "embedded Kafka broker listening; any Kafka client can connect to it"
        );
        return Ok(Some(broker));
    }
    if let Err(error) = runtime.block_on(create_topics(brokers, &names, partitions)) {
        // Topics made by whoever runs the brokers are fine: the source needs only to read.
        match spec.source.as_kafka() {
            Some(kafka) => {
                KafkaReader::topic_partitions(&kafka, brokers).map_err(|_| error)?;
            }
            None => return Err(error.into()),
        }
        tracing::warn!("the topics could not be created but exist; going on");
    }
    Ok(None)
}

/// The publisher of every version to the registry topic too, when the job names one.
fn registry_mirror(
    spec: &JobSpec,
    embedded: Option<&EmbeddedBroker>,
    bootstrap: &Brokers,
    runtime: &Runtime,
) -> Result<Option<Mirror>> {
    let Some(topic) = &spec.publish.registry_topic else {
        return Ok(None);
    };
    match embedded {
        Some(broker) => broker.create_topic(topic, 1)?,
        None => runtime.block_on(create_registry_topic(bootstrap, topic))?,
    }
    let key = match &spec.publish.registry_key_file {
        Some(path) => {
            let text = read_secret(path, "registry key").map_err(|e| Error::Config {
                problems: vec![format!("[publish] `registry_key_file`: {e}")],
            })?;
            Some(
                RegistryKey::new(text.into_bytes()).map_err(|e| Error::Config {
                    problems: vec![format!(
                        "[publish] `registry_key_file` {}: {e}",
                        path.display()
                    )],
                })?,
            )
        }
        None => None,
    };
    let publisher = Mutex::new(RegistryPublisher::new(bootstrap, topic, key)?);
    tracing::info!(topic = %topic, "model versions also go to the registry topic");
    Ok(Some(Mirror(Arc::new(move |artifact: &ModelArtifact| {
        let mut publisher = publisher
            .lock()
            .map_err(|_| "the registry publisher failed before")?;
        Ok(publisher.publish(artifact).map(drop)?)
    }))))
}

/// Binds `bind` and serves `model`'s versions from `registry` on `runtime`, with the job's
/// figures beside serving's on `/metrics`.
fn start_serving(
    bind: &str,
    model: &str,
    registry: &Registry,
    stats: &Arc<JobStats>,
    runtime: &Runtime,
) -> Result<HttpTask> {
    let store = Arc::new(ModelStore::new(registry.clone()));
    let options = ServeOptions {
        extra_metrics: Some(Arc::new(JobMetrics(stats.clone()))),
        ..ServeOptions::default()
    };
    let serving = HttpTask::start(bind, runtime, move |listener, shutdown| {
        millrace_serving::serve(store, listener, options, shutdown)
    })?;
    tracing::info!(addr = %serving.addr, model = %model, "serving POST /v1/models/{model}:predict");
    Ok(serving)
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
