//! Model versions on a compacted Kafka topic, so that serving pods on many machines follow the
//! trainer without a shared filesystem: the publisher and the reader thread. The topic's wire
//! format, and the checks a reader makes, are [`millrace_models::topic`]'s.

use crate::error::{kafka, Error, Result};
use crate::kafka::admin::create_new_topics;
use crate::kafka::config::Brokers;
use millrace_models::topic::{
    encode, feature_map_json, RegistryKey, Taken, TopicReader, SIGNATURE_HEADER,
};
use millrace_models::{LoadPace, ModelArtifact, ServedModel, VersionSource};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a publication waits for the broker's acknowledgements.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Counts deliveries that failed.
struct Failures(Arc<AtomicU64>);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((error, _)) = result {
            if self.0.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::error!(%error, "a registry message was not delivered");
            }
        }
    }
}

/// What one [`RegistryPublisher::publish`] sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Chunks sent (those that changed).
    pub chunks_sent: usize,
    /// Chunks of the version.
    pub chunks: usize,
    /// Bytes of the messages sent.
    pub bytes: usize,
}

/// Publishes model versions to a registry topic (see the module docs).
pub struct RegistryPublisher {
    producer: BaseProducer<Failures>,
    failures: Arc<AtomicU64>,
    topic: String,
    /// The key that signs manifests, when there is one.
    key: Option<RegistryKey>,
    /// The digest of each key's last value sent.
    sent: HashMap<String, String>,
}

impl std::fmt::Debug for RegistryPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryPublisher")
            .field("topic", &self.topic)
            .field("keys", &self.sent.len())
            .finish()
    }
}

/// Creates the registry topic, compacted, with one partition, unless it exists.
///
/// # Errors
///
/// When the broker cannot be reached or refuses the topic.
pub async fn create_registry_topic(brokers: &Brokers, topic: &str) -> Result<()> {
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    create_new_topics(brokers, &[new]).await
}

impl RegistryPublisher {
    /// A publisher to `topic` (create it with [`create_registry_topic`]) that signs its
    /// manifests with `key` when given one.
    ///
    /// # Errors
    ///
    /// When the producer cannot be created.
    pub fn new(brokers: &Brokers, topic: &str, key: Option<RegistryKey>) -> Result<Self> {
        let failures = Arc::new(AtomicU64::new(0));
        let producer = brokers
            .client_config()
            .set("enable.idempotence", "true")
            // A broker's default limit: chunks are cut to fit it (`MAX_CHUNK_BYTES`).
            .set("message.max.bytes", "1000000")
            .set(
                "message.timeout.ms",
                PUBLISH_TIMEOUT.as_millis().to_string(),
            )
            .create_with_context(Failures(failures.clone()))
            .map_err(kafka("registry publisher"))?;
        Ok(RegistryPublisher {
            producer,
            failures,
            topic: topic.to_owned(),
            key,
            sent: HashMap::new(),
        })
    }

    fn send(
        &self,
        key: &str,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        published: &mut Published,
    ) -> Result<()> {
        let mut record = BaseRecord::to(&self.topic)
            .key(key)
            .payload(payload)
            .partition(0);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((error, back)) => {
                    if error.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
                        return Err(Error::Kafka {
                            connector: "registry publisher",
                            source: error,
                        });
                    }
                    self.producer.poll(Duration::from_millis(50));
                    record = back;
                }
            }
        }
        published.bytes += payload.len();
        Ok(())
    }

    /// Sends a published version (its version number and checksums filled in by
    /// [`millrace_models::Registry::publish`]): the chunks and FeatureMap pieces that changed
    /// since the last version this publisher sent, then its manifest, and waits until the broker
    /// has them all.
    ///
    /// # Errors
    ///
    /// When a message cannot be sent or is not acknowledged in time; the version is then not
    /// published (readers keep the one before), and the next publication sends every chunk.
    pub fn publish(&mut self, artifact: &ModelArtifact) -> Result<Published> {
        let name = &artifact.meta.name;
        let mut published = Published::default();
        let failed_before = self.failures.load(Ordering::Relaxed);
        let json = feature_map_json(artifact)
            .map_err(|e| Error::Registry(format!("encoding the FeatureMap: {e}")))?;
        let mut sent = std::mem::take(&mut self.sent);
        let mut listed = std::collections::HashSet::new();
        let manifest = encode(artifact, json.as_deref(), |key, bytes, hash| {
            let chunk = key.starts_with("chunk/");
            if sent.get(&key).map(String::as_str) != Some(hash) {
                self.send(&key, bytes, None, &mut published)?;
                sent.insert(key.clone(), hash.to_owned());
                published.chunks_sent += usize::from(chunk);
            }
            published.chunks += usize::from(chunk);
            listed.insert(key);
            Ok(())
        });
        // A reader forgets the parts of a model that its newest version does not list, so a
        // later version that lists one again must send it again.
        let (chunks, pieces) = (format!("chunk/{name}/"), format!("fmap/{name}/"));
        sent.retain(|key, _| {
            listed.contains(key) || !(key.starts_with(&chunks) || key.starts_with(&pieces))
        });
        self.sent = sent;
        let manifest = manifest?;
        let headers = self.key.as_ref().map(|key| {
            OwnedHeaders::new().insert(Header {
                key: SIGNATURE_HEADER,
                value: Some(key.sign(&manifest).as_bytes()),
            })
        });
        self.send(
            &format!("manifest/{name}"),
            &manifest,
            headers,
            &mut published,
        )?;
        let flushed = self.producer.flush(PUBLISH_TIMEOUT);
        if flushed.is_err() || self.failures.load(Ordering::Relaxed) != failed_before {
            // What the broker holds is unknown: send everything with the next version.
            self.sent.clear();
            return Err(Error::Registry(format!(
                "version {} of `{name}` was not acknowledged in full",
                artifact.meta.version
            )));
        }
        Ok(published)
    }
}

/// The model versions of a registry topic, followed by a background reader: a
/// [`VersionSource`] for serving.
#[derive(Debug)]
pub struct KafkaVersions {
    topic: String,
    seen: Arc<Mutex<TopicReader>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl KafkaVersions {
    /// Starts following `topic` from its beginning; with a `key`, only manifests signed with
    /// it are taken.
    ///
    /// # Errors
    ///
    /// When the consumer cannot be created or assigned.
    pub fn follow(brokers: &Brokers, topic: &str, key: Option<RegistryKey>) -> Result<Self> {
        let consumer: BaseConsumer = brokers
            .client_config()
            .set(
                "group.id",
                format!("millrace-serving-{}", std::process::id()),
            )
            .set("enable.auto.commit", "false")
            .set("fetch.message.max.bytes", "2000000")
            .create()
            .map_err(kafka("registry reader"))?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(kafka("registry reader"))?;
        consumer
            .assign(&assignment)
            .map_err(kafka("registry reader"))?;
        let seen = Arc::new(Mutex::new(TopicReader::new(key)));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::Builder::new()
                .name("millrace-registry".to_owned())
                .spawn(move || {
                    let mut logged = false;
                    let mut refused = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        match consumer.poll(Duration::from_millis(100)) {
                            None => {}
                            Some(Ok(message)) => {
                                let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                                // A panic on a message (a bug) loses that message, not the reader.
                                let taken = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                    take(&mut seen, &message, &mut refused);
                                }));
                                if taken.is_err() {
                                    tracing::error!("taking a registry message panicked; it is ignored");
                                }
                            }
                            Some(Err(error)) if !logged => {
                                tracing::warn!(%error, "the registry topic cannot be read yet; retrying");
                                logged = true;
                            }
                            Some(Err(_)) => {}
                        }
                    }
                })
                .map_err(|e| Error::Registry(format!("starting the reader thread: {e}")))?
        };
        Ok(KafkaVersions {
            topic: topic.to_owned(),
            seen,
            stop,
            reader: Some(reader),
        })
    }

    /// Where a version is, as errors name it.
    fn path(&self, name: &str, version: u64) -> std::path::PathBuf {
        format!("kafka:{}/{name}/v{version}", self.topic).into()
    }
}

impl Drop for KafkaVersions {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl VersionSource for KafkaVersions {
    fn models(&self) -> millrace_models::Result<Vec<String>> {
        Ok(self
            .seen
            .lock()
            .map(|seen| seen.models())
            .unwrap_or_default())
    }

    fn versions(&self, name: &str) -> millrace_models::Result<Vec<u64>> {
        Ok(self
            .seen
            .lock()
            .map(|seen| seen.versions(name))
            .unwrap_or_default())
    }

    /// Builds the version from the blocks the reader holds: unchanged chunks are the same
    /// blocks as the versions before, so `base` and `pace` have nothing to add.
    fn load_served(
        &self,
        name: &str,
        version: u64,
        _base: Option<&ServedModel>,
        _pace: LoadPace,
    ) -> millrace_models::Result<ServedModel> {
        let snapshot = self
            .seen
            .lock()
            .ok()
            .and_then(|seen| seen.snapshot(name, version))
            .ok_or_else(|| millrace_models::Error::NoVersion(format!("{name} v{version}")))?;
        snapshot.served(&self.path(name, version))
    }
}

/// Hands a message of the topic to the reader, and logs what it could not complete, and what
/// it refused (`refused` counts those: the first ones and then every power of two are logged,
/// so that whoever can write to the topic cannot flood the log).
fn take(reader: &mut TopicReader, message: &impl Message, refused: &mut u64) {
    let Some(key) = message.key().map(String::from_utf8_lossy) else {
        tracing::warn!("a registry message without a key; ignored");
        return;
    };
    let signature = message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|header| header.key == SIGNATURE_HEADER)
            .and_then(|header| header.value)
    });
    match reader.take(&key, message.payload().unwrap_or_default(), signature) {
        Ok(Taken::Part | Taken::Version(..)) => {}
        Ok(Taken::Incomplete {
            model,
            version,
            missing,
        }) => tracing::warn!(
            model,
            version,
            missing,
            "a registry version is incomplete (compacted away, or its publisher failed); \
             the versions before it stay"
        ),
        Err(error) => {
            *refused += 1;
            if refused.is_power_of_two() {
                tracing::error!(key = %key, %error, refused = *refused, "a registry message refused; ignored");
            }
        }
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
