//! Model versions on a compacted Kafka topic, so that serving pods on many machines follow the
//! trainer without a shared filesystem.
//!
//! The topic has one partition; every message has a key, and compaction keeps each key's newest
//! value:
//!
//! - `chunk/{model}/{tensor}/{i}`: chunk `i` of a tensor (by the name its architecture gives
//!   it: `weights`, `factors`, …): [`CHUNK_ROWS`] rows (the last chunk fewer), little-endian
//!   `f32`;
//! - `fmap/{model}/{i}`: piece `i` of the FeatureMap's JSON, [`PIECE_BYTES`] each;
//! - `manifest/{model}`: the version's metadata and the XXH3-128 of every chunk and piece.
//!
//! A version's chunks and pieces come before its manifest. The publisher sends only the chunks
//! whose bytes changed since the version before (a sparse delta), so a reader that follows the
//! topic receives each version's changes, and a reader that starts on a compacted topic still
//! finds the newest bytes of every chunk. Readers share the blocks of unchanged chunks between
//! versions, like a version loaded from a directory ([`millrace_models::table`]).

use crate::error::{kafka, Error, Result};
use crate::kafka::admin::create_new_topics;
use crate::kafka::config::client_config;
use millrace_models::architecture::row_width;
use millrace_models::artifact::{declared_tensors, StoredTensor, StructureProblems, Tensor};
use millrace_models::table::{Table, CHUNK_ROWS};
use millrace_models::{LoadPace, ModelArtifact, ModelMeta, ServedModel, VersionSource};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use xxhash_rust::xxh3::xxh3_128;

/// Bytes per piece of a FeatureMap's JSON.
pub const PIECE_BYTES: usize = 512 << 10;

/// Versions a reader keeps per model (older ones only for rollbacks; they share most blocks).
const KEPT_VERSIONS: usize = 3;

/// How long a publication waits for the broker's acknowledgements.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// What a manifest says about one tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorManifest {
    name: String,
    rows: usize,
    width: usize,
    /// XXH3-128 of each chunk's bytes, hex.
    chunks: Vec<String>,
}

/// The last message of a version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    meta: ModelMeta,
    tensors: Vec<TensorManifest>,
    /// XXH3-128 of each piece of the FeatureMap's JSON, hex.
    feature_map: Vec<String>,
}

fn digest(bytes: &[u8]) -> String {
    format!("{:032x}", xxh3_128(bytes))
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

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
pub async fn create_registry_topic(bootstrap_servers: &str, topic: &str) -> Result<()> {
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    create_new_topics(bootstrap_servers, &[new]).await
}

impl RegistryPublisher {
    /// A publisher to `topic` (create it with [`create_registry_topic`]).
    ///
    /// # Errors
    ///
    /// When the producer cannot be created.
    pub fn new(bootstrap_servers: &str, topic: &str) -> Result<Self> {
        let failures = Arc::new(AtomicU64::new(0));
        let producer = client_config(bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("message.max.bytes", "2000000")
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
            sent: HashMap::new(),
        })
    }

    fn send(&mut self, key: String, payload: &[u8], published: &mut Published) -> Result<()> {
        let mut record = BaseRecord::to(&self.topic)
            .key(&key)
            .payload(payload)
            .partition(0);
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
        let mut manifest = Manifest {
            meta: artifact.meta.clone(),
            tensors: Vec::new(),
            feature_map: Vec::new(),
        };
        for tensor in &artifact.tensors {
            let values = &tensor.values;
            let rows = tensor.shape.first().copied().unwrap_or(1);
            let width = row_width(&tensor.shape).unwrap_or(1).max(1);
            let mut chunks = Vec::new();
            for (i, chunk) in values.chunks(CHUNK_ROWS * width).enumerate() {
                let bytes = le_bytes(chunk);
                let hash = digest(&bytes);
                let key = format!("chunk/{name}/{}/{i}", tensor.name);
                if self.sent.get(&key) != Some(&hash) {
                    self.send(key.clone(), &bytes, &mut published)?;
                    self.sent.insert(key, hash.clone());
                    published.chunks_sent += 1;
                }
                published.chunks += 1;
                chunks.push(hash);
            }
            manifest.tensors.push(TensorManifest {
                name: tensor.name.clone(),
                rows,
                width,
                chunks,
            });
        }
        // Only a fitted FeatureMap travels: a hashed spec's is made again by the reader.
        if let Some(map) = artifact.fitted_feature_map() {
            let json = serde_json::to_vec(map.as_ref())
                .map_err(|e| Error::Registry(format!("encoding the FeatureMap: {e}")))?;
            for (i, piece) in json.chunks(PIECE_BYTES).enumerate() {
                let hash = digest(piece);
                let key = format!("fmap/{name}/{i}");
                if self.sent.get(&key) != Some(&hash) {
                    self.send(key.clone(), piece, &mut published)?;
                    self.sent.insert(key, hash.clone());
                }
                manifest.feature_map.push(hash);
            }
        }
        let json = serde_json::to_vec(&manifest).expect("a manifest serializes");
        self.send(format!("manifest/{name}"), &json, &mut published)?;
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

/// A tensor's name, rows, width and blocks.
#[derive(Debug)]
struct Blocks {
    name: String,
    rows: usize,
    width: usize,
    blocks: Vec<Arc<[f32]>>,
}

/// A version complete on the topic.
#[derive(Debug)]
struct Snapshot {
    meta: ModelMeta,
    /// The tensors, in the manifest's order.
    tensors: Vec<Blocks>,
    feature_map: Option<Vec<u8>>,
}

/// What a reader has seen of the topic.
#[derive(Debug, Default)]
struct Seen {
    /// Each chunk key's newest digest and values.
    chunks: HashMap<String, (String, Arc<[f32]>)>,
    /// Each FeatureMap piece key's newest digest and bytes.
    pieces: HashMap<String, (String, Arc<[u8]>)>,
    /// The complete versions, newest [`KEPT_VERSIONS`] per model.
    ready: BTreeMap<String, BTreeMap<u64, Arc<Snapshot>>>,
}

impl Seen {
    fn take(&mut self, key: &str, payload: &[u8]) {
        if let Some(rest) = key.strip_prefix("manifest/") {
            self.manifest(rest, payload);
        } else if key.starts_with("chunk/") {
            if payload.len() % 4 != 0 {
                tracing::warn!(key, "a registry chunk that is not f32s; ignored");
                return;
            }
            let values: Arc<[f32]> = payload
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            self.chunks
                .insert(key.to_owned(), (digest(payload), values));
        } else if key.starts_with("fmap/") {
            self.pieces
                .insert(key.to_owned(), (digest(payload), payload.into()));
        } else {
            tracing::warn!(key, "an unknown registry key; ignored");
        }
    }

    fn manifest(&mut self, name: &str, payload: &[u8]) {
        let manifest = serde_json::from_slice::<serde_json::Value>(payload)
            .map_err(|e| e.to_string())
            .and_then(|value| {
                let meta = value.get("meta").unwrap_or(&serde_json::Value::Null);
                millrace_models::artifact::check_format_version(meta).map_err(|e| e.to_string())?;
                serde_json::from_value::<Manifest>(value).map_err(|e| e.to_string())
            });
        let manifest = match manifest {
            Ok(manifest) => manifest,
            Err(error) => {
                tracing::error!(model = name, %error, "an unreadable registry manifest; ignored");
                return;
            }
        };
        let version = manifest.meta.version;
        match self.snapshot(name, &manifest) {
            Ok(snapshot) => {
                let versions = self.ready.entry(name.to_owned()).or_default();
                versions.insert(version, Arc::new(snapshot));
                while versions.len() > KEPT_VERSIONS {
                    versions.pop_first();
                }
            }
            Err(missing) => tracing::warn!(
                model = name,
                version,
                missing,
                "a registry version is incomplete (compacted away, or its publisher failed); \
                 the versions before it stay"
            ),
        }
    }

    /// The version a manifest names, if every chunk and piece it lists is here.
    fn snapshot(&self, name: &str, manifest: &Manifest) -> Result<Snapshot, String> {
        let mut tensors = Vec::new();
        for tensor in &manifest.tensors {
            let mut blocks = Vec::with_capacity(tensor.chunks.len());
            for (i, want) in tensor.chunks.iter().enumerate() {
                let key = format!("chunk/{name}/{}/{i}", tensor.name);
                match self.chunks.get(&key) {
                    Some((have, values)) if have == want => blocks.push(values.clone()),
                    _ => return Err(key),
                }
            }
            tensors.push(Blocks {
                name: tensor.name.clone(),
                rows: tensor.rows,
                width: tensor.width,
                blocks,
            });
        }
        let feature_map = if manifest.feature_map.is_empty() {
            None
        } else {
            let mut json = Vec::new();
            for (i, want) in manifest.feature_map.iter().enumerate() {
                let key = format!("fmap/{name}/{i}");
                match self.pieces.get(&key) {
                    Some((have, bytes)) if have == want => json.extend_from_slice(bytes),
                    _ => return Err(key),
                }
            }
            Some(json)
        };
        Ok(Snapshot {
            meta: manifest.meta.clone(),
            tensors,
            feature_map,
        })
    }
}

/// The model versions of a registry topic, followed by a background reader: a
/// [`VersionSource`] for serving.
#[derive(Debug)]
pub struct KafkaVersions {
    topic: String,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl KafkaVersions {
    /// Starts following `topic` from its beginning.
    ///
    /// # Errors
    ///
    /// When the consumer cannot be created or assigned.
    pub fn follow(bootstrap_servers: &str, topic: &str) -> Result<Self> {
        let consumer: BaseConsumer = client_config(bootstrap_servers)
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
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::Builder::new()
                .name("millrace-registry".to_owned())
                .spawn(move || {
                    let mut logged = false;
                    while !stop.load(Ordering::Relaxed) {
                        match consumer.poll(Duration::from_millis(100)) {
                            None => {}
                            Some(Ok(message)) => {
                                let key = message.key().map(String::from_utf8_lossy);
                                let payload = message.payload().unwrap_or_default();
                                if let (Some(key), Ok(mut seen)) = (key, seen.lock()) {
                                    seen.take(&key, payload);
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

    fn snapshot(&self, name: &str, version: u64) -> Option<Arc<Snapshot>> {
        let seen = self.seen.lock().ok()?;
        seen.ready.get(name)?.get(&version).cloned()
    }

    fn invalid(
        &self,
        name: &str,
        version: u64,
        reason: impl std::fmt::Display,
    ) -> millrace_models::Error {
        millrace_models::Error::InvalidArtifact {
            path: self.path(name, version),
            reason: reason.to_string(),
        }
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
            .map(|seen| seen.ready.keys().cloned().collect())
            .unwrap_or_default())
    }

    fn versions(&self, name: &str) -> millrace_models::Result<Vec<u64>> {
        Ok(self
            .seen
            .lock()
            .ok()
            .and_then(|seen| seen.ready.get(name).map(|v| v.keys().copied().collect()))
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
            .snapshot(name, version)
            .ok_or_else(|| millrace_models::Error::NoVersion(format!("{name} v{version}")))?;
        let feature_map = match (&snapshot.feature_map, &snapshot.meta.feature_map) {
            (Some(json), Some(stored)) => Some(Arc::new(stored.read(json).map_err(|source| {
                millrace_models::Error::FeatureMap {
                    path: self.path(name, version),
                    source,
                }
            })?)),
            (None, None) => snapshot.meta.features.unfitted_map(),
            _ => return Err(self.invalid(name, version, "FeatureMap missing or unexpected")),
        };
        let stored = snapshot.tensors.iter().map(|t| StoredTensor {
            name: &t.name,
            rows: t.rows,
            width: Some(t.width),
            whole: true,
            shape: None,
        });
        let declared = declared_tensors(&snapshot.meta, feature_map.as_deref(), stored).map_err(
            |(StructureProblems::Meta(problems) | StructureProblems::Tensors(problems))| {
                self.invalid(name, version, problems.join("; "))
            },
        )?;
        let mut tensors = Vec::with_capacity(declared.len());
        for spec in declared {
            let stored = snapshot
                .tensors
                .iter()
                .find(|t| t.name == spec.name)
                .ok_or_else(|| self.invalid(name, version, format!("no tensor `{}`", spec.name)))?;
            let table = Table::from_blocks(stored.rows, stored.width, stored.blocks.clone())
                .map_err(|source| millrace_models::Error::Blocks {
                    path: self.path(name, version),
                    source,
                })?;
            tensors.push(Tensor::new(spec, table));
        }
        let model = ServedModel {
            meta: snapshot.meta.clone(),
            tensors,
            feature_map,
        };
        let problems = model.value_problems();
        if !problems.is_empty() {
            return Err(self.invalid(name, version, problems.join("; ")));
        }
        Ok(model)
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
