//! Checkpoints in RocksDB: every part of a complete checkpoint in one write batch, the last `keep`
//! kept, and the newest one that reads back whole restored on start-up.
//!
//! Keys, in the job's `state_dir`:
//!
//! - `c/{epoch:016x}/meta`: the checkpoint's epoch, resume epoch and its parts' lengths and
//!   xxh3 checksums, as JSON;
//! - `c/{epoch:016x}/p/{worker:04}/{name}`: a part's bytes.
//!
//! A checkpoint whose meta or parts are missing, or whose bytes do not match their checksums,
//! is skipped on restore with an error in the log and in [`Restored::skipped`]: the job falls
//! back to the previous one, loudly. Writing a checkpoint deletes every checkpoint of a later
//! epoch: after a restart those belong to a past the job has left (the end-of-input checkpoint
//! of a clean stop, whose epoch is the largest there is, or one that could not be read).
//!
//! A process of a cluster also keeps every checkpoint from its [`ClusterRetention`]'s floor
//! on (the newest checkpoint every process has written), so that the processes hold one in
//! common whichever of them is lost; it tells the retention what it writes.

use crate::error::{chain, CheckpointError, Error, Result};
use millrace_operators::checkpoint::{Checkpoint, PartState, Persist};
use millrace_operators::parts::{DECODE_REPLACED_BY, LEGACY_DECODE};
use millrace_operators::{BoxError, ClusterRetention};
use rocksdb::{Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;

/// A job's checkpoint store.
#[derive(Clone)]
pub struct CheckpointStore {
    db: Arc<DB>,
    dir: PathBuf,
    keep: usize,
    /// Parts of older checkpoints and the parts that replace them, started afresh.
    replaced: &'static [(&'static str, &'static [&'static str])],
    /// The workers of the whole job (over all its processes), written into every checkpoint
    /// and checked on restore, when known.
    job_workers: Option<usize>,
    /// A cluster's retention: no checkpoint from its floor on is deleted.
    cluster: Option<ClusterRetention>,
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStore")
            .field("dir", &self.dir)
            .field("keep", &self.keep)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    epoch: u64,
    resume_epoch: u64,
    parts: Vec<PartMeta>,
    /// The workers of the whole job that wrote it (absent in checkpoints written before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job_workers: Option<usize>,
}

#[derive(Serialize, Deserialize)]
struct PartMeta {
    worker: usize,
    name: String,
    lo: u64,
    len: usize,
    xxh3: u64,
}

/// What start-up found in the store.
#[derive(Debug, Default)]
pub struct Restored {
    /// The newest checkpoint that read back whole, if any.
    pub checkpoint: Option<Checkpoint>,
    /// Newer checkpoints that did not, with the reason.
    pub skipped: Vec<(u64, CheckpointError)>,
}

const PREFIX: &str = "c/";

fn meta_key(epoch: u64) -> String {
    format!("{PREFIX}{epoch:016x}/meta")
}

fn part_key(epoch: u64, worker: usize, name: &str) -> String {
    format!("{PREFIX}{epoch:016x}/p/{worker:04}/{name}")
}

fn epoch_prefix(epoch: u64) -> String {
    format!("{PREFIX}{epoch:016x}/")
}

/// For a job of hashed features: the part of its checkpoints written before hashed features
/// were a FeatureMap (`decode`) and the parts that replace it, started afresh. A FeatureMap
/// that fits nothing has no state but its counters, so nothing else is lost; a job of other
/// features never had the old part, and reads no checkpoint holding it.
pub const HASHED_DECODE: &[(&str, &[&str])] = &[(LEGACY_DECODE, &DECODE_REPLACED_BY)];

impl CheckpointStore {
    /// Opens (or creates) the store in `dir`, keeping the newest `keep` checkpoints.
    ///
    /// # Errors
    ///
    /// When RocksDB cannot open the directory.
    pub fn open(dir: &Path, keep: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        let mut options = Options::default();
        options.create_if_missing(true);
        // The log and memtable are bounded by this, not by how many checkpoints a job writes:
        // a checkpoint replaces the one before it, and only a flush lets the log go.
        options.set_write_buffer_size(WRITE_BUFFER_BYTES);
        let db = DB::open(&options, dir).map_err(|source| CheckpointError::Open {
            dir: dir.to_owned(),
            source,
        })?;
        Ok(CheckpointStore {
            db: Arc::new(db),
            dir: dir.to_owned(),
            keep: keep.max(1),
            replaced: &[],
            job_workers: None,
            cluster: None,
        })
    }

    /// The store of a job of `workers` workers over all its processes: its checkpoints say
    /// so, and one written by a job of another number is not restored.
    pub fn of_job(mut self, workers: usize) -> Self {
        self.job_workers = Some(workers);
        self
    }

    /// The store of a process of a cluster, keeping (beyond its newest `keep`) every
    /// checkpoint from `retention`'s floor on.
    pub fn in_cluster(mut self, retention: ClusterRetention) -> Self {
        self.cluster = Some(retention);
        self
    }

    /// The store, reading checkpoints whose parts include an old one of `replaced` with the
    /// new ones that replace it started afresh (see [`HASHED_DECODE`]).
    pub fn replacing(
        mut self,
        replaced: &'static [(&'static str, &'static [&'static str])],
    ) -> Self {
        self.replaced = replaced;
        self
    }

    /// The epochs of the checkpoints in the store, oldest first (whole or not).
    ///
    /// One seek per checkpoint: the scan reads each epoch's first key (its meta, when it has
    /// one) and jumps past the rest, never reading the parts (a model's can be tens of MB, and this runs at every write).
    pub fn epochs(&self) -> Vec<u64> {
        let mut epochs = Vec::new();
        let mut keys = self.db.raw_iterator();
        keys.seek(PREFIX);
        while let Some(key) = keys.key() {
            let Some(rest) = key.strip_prefix(PREFIX.as_bytes()) else {
                break;
            };
            let epoch = std::str::from_utf8(rest.get(..16).unwrap_or_default())
                .ok()
                .and_then(|hex| u64::from_str_radix(hex, 16).ok());
            let Some(epoch) = epoch else {
                keys.next();
                continue;
            };
            // An epoch's meta key sorts before its parts' (`meta` < `p/`).
            if key == meta_key(epoch).as_bytes() {
                epochs.push(epoch);
            }
            match epoch.checked_add(1) {
                Some(next) => keys.seek(epoch_prefix(next)),
                None => break,
            }
        }
        epochs
    }

    /// The newest checkpoint that reads back whole and has every part of `parts` for every
    /// worker of `workers`; newer ones that do not are skipped and reported.
    pub fn restore(&self, workers: &[usize], parts: &[&str]) -> Restored {
        let mut restored = Restored::default();
        for epoch in self.epochs().into_iter().rev() {
            match self.checkpoint(epoch, workers, parts) {
                Ok(checkpoint) => {
                    restored.checkpoint = Some(checkpoint);
                    break;
                }
                Err(reason) => {
                    tracing::error!(epoch, reason = %chain(&reason), "a checkpoint cannot be restored; falling back to the one before it");
                    restored.skipped.push((epoch, reason));
                }
            }
        }
        restored
    }

    /// The epochs of the checkpoints that read back whole, oldest first, and the others with
    /// the reason (each logged as an error).
    pub fn readable(
        &self,
        workers: &[usize],
        parts: &[&str],
    ) -> (Vec<u64>, Vec<(u64, CheckpointError)>) {
        let (mut readable, mut skipped) = (Vec::new(), Vec::new());
        for epoch in self.epochs() {
            match self.checkpoint(epoch, workers, parts) {
                Ok(_) => readable.push(epoch),
                Err(reason) => {
                    tracing::error!(epoch, reason = %chain(&reason), "a checkpoint cannot be restored; it is skipped");
                    skipped.push((epoch, reason));
                }
            }
        }
        (readable, skipped)
    }

    /// The checkpoint of `epoch`, with every part of `parts` for every worker of `workers`.
    ///
    /// # Errors
    ///
    /// Why it does not read back whole.
    pub fn checkpoint(
        &self,
        epoch: u64,
        workers: &[usize],
        parts: &[&str],
    ) -> std::result::Result<Checkpoint, CheckpointError> {
        let meta = self
            .db
            .get(meta_key(epoch))?
            .ok_or(CheckpointError::NoMeta)?;
        let meta: Meta = serde_json::from_slice(&meta)?;
        if let (Some(stored), Some(have)) = (meta.job_workers, self.job_workers) {
            if stored != have {
                return Err(CheckpointError::JobWorkers { stored, have });
            }
        }
        let stored: std::collections::BTreeSet<usize> =
            meta.parts.iter().map(|p| p.worker).collect();
        if !stored.iter().eq(workers.iter()) {
            return Err(CheckpointError::Workers {
                stored: stored.into_iter().collect(),
                have: workers.to_vec(),
            });
        }
        let mut states = Vec::new();
        // Parts of an older job's checkpoint that this job's parts replace.
        let mut replaced = 0;
        for &worker in workers {
            for &name in parts {
                let has = |name: &str| {
                    meta.parts
                        .iter()
                        .find(|p| p.worker == worker && p.name == name)
                };
                let Some(part) = has(name) else {
                    match self.replaced.iter().find(|(_, new)| new.contains(&name)) {
                        Some((old, new)) if has(old).is_some() => {
                            // Started afresh; the old part counts once, with its first new one.
                            replaced += usize::from(new[0] == name);
                            continue;
                        }
                        _ => {
                            return Err(CheckpointError::NoPart {
                                name: name.to_owned(),
                                worker,
                            })
                        }
                    }
                };
                let bytes = self.db.get(part_key(epoch, worker, name))?.ok_or_else(|| {
                    CheckpointError::PartMissing {
                        name: name.to_owned(),
                        worker,
                    }
                })?;
                if bytes.len() != part.len || xxh3_64(&bytes) != part.xxh3 {
                    return Err(CheckpointError::Checksum {
                        name: name.to_owned(),
                        worker,
                    });
                }
                states.push(PartState {
                    worker,
                    name: name.to_owned(),
                    lo: part.lo,
                    bytes,
                });
            }
        }
        if meta.parts.len() != states.len() + replaced {
            return Err(CheckpointError::PartCount {
                stored: meta.parts.len(),
                expected: states.len() + replaced,
            });
        }
        Ok(Checkpoint {
            epoch: meta.epoch,
            resume_epoch: meta.resume_epoch,
            parts: states,
        })
    }

    /// The path of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The free space a checkpoint write leaves besides twice its size (its log record, then its
/// table file): room for RocksDB's flushes, so that a write is refused before RocksDB meets a
/// full disk (its error path for that can abort the process). It is a margin, not a promise:
/// a compaction, or another writer on the file system, can still fill it.
pub const HEADROOM_BYTES: u64 = 16 << 20;

/// The memtable size of the checkpoint store (so its log too): a flush follows every 16 MiB
/// of checkpoints.
const WRITE_BUFFER_BYTES: usize = 16 << 20;

impl CheckpointStore {
    /// Refuses a write of `bytes` that would leave the state directory's file system with less
    /// than [`HEADROOM_BYTES`] besides it.
    fn check_room(&self, bytes: usize) -> std::result::Result<(), BoxError> {
        let stats = rustix::fs::statvfs(&self.dir)?;
        let free = stats.f_bavail.saturating_mul(stats.f_frsize);
        let needed = (bytes as u64)
            .saturating_mul(2)
            .saturating_add(HEADROOM_BYTES);
        if free < needed {
            return Err(format!(
                "the state directory {} has {free} bytes free; a checkpoint of {bytes} bytes is written only with {needed} free (twice its size and {HEADROOM_BYTES} more)",
                self.dir.display()
            )
            .into());
        }
        Ok(())
    }
}

impl Persist for CheckpointStore {
    fn persist(&mut self, checkpoint: &Checkpoint) -> std::result::Result<u64, BoxError> {
        let epoch = checkpoint.epoch;
        let mut batch = WriteBatch::default();
        let mut parts = Vec::with_capacity(checkpoint.parts.len());
        for part in &checkpoint.parts {
            batch.put(part_key(epoch, part.worker, &part.name), &part.bytes);
            parts.push(PartMeta {
                worker: part.worker,
                name: part.name.clone(),
                lo: part.lo,
                len: part.bytes.len(),
                xxh3: xxh3_64(&part.bytes),
            });
        }
        let meta = Meta {
            epoch,
            resume_epoch: checkpoint.resume_epoch,
            parts,
            job_workers: self.job_workers,
        };
        batch.put(meta_key(epoch), serde_json::to_vec(&meta)?);
        // In the same batch go the older checkpoints beyond the newest `keep` (this one
        // included) and before a cluster's floor, and every later one: a job writes a
        // checkpoint only after restoring the newest it could, so a later one is the end of a
        // life it has gone past (the checkpoint at the end of the input, or one it could not
        // read). Kept, it would be restored after the next crash in place of this one.
        let (mut older, later): (Vec<u64>, Vec<u64>) =
            self.epochs().into_iter().partition(|&e| e < epoch);
        let floor = self
            .cluster
            .as_ref()
            .map_or(u64::MAX, ClusterRetention::floor);
        let kept_from = oldest_kept(&older, epoch, self.keep, floor);
        older.retain(|&e| e < kept_from);
        for old in older
            .into_iter()
            .chain(later.into_iter().filter(|&e| e > epoch))
        {
            let from = epoch_prefix(old);
            let to = epoch_prefix(old + 1);
            batch.delete_range(from.as_bytes(), to.as_bytes());
        }
        self.check_room(batch.size_in_bytes())?;
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        if let Some(retention) = &self.cluster {
            retention.wrote(epoch);
        }
        Ok(kept_from)
    }
}

/// The oldest checkpoint kept once the one of `epoch` is written, after the `older` ones
/// (oldest first): the newest `keep` in all, and every one from `floor` on.
fn oldest_kept(older: &[u64], epoch: u64, keep: usize, floor: u64) -> u64 {
    let by_count = older
        .get(older.len().saturating_sub(keep.saturating_sub(1)))
        .copied()
        .unwrap_or(epoch);
    let by_floor = older.iter().copied().find(|&e| e >= floor).unwrap_or(epoch);
    by_count.min(by_floor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_operators::checkpoint::FINAL;

    fn checkpoint(epoch: u64) -> Checkpoint {
        Checkpoint {
            epoch,
            resume_epoch: epoch.saturating_add(1),
            parts: vec![PartState {
                worker: 0,
                name: "a".into(),
                lo: epoch,
                bytes: epoch.to_le_bytes().to_vec(),
            }],
        }
    }

    #[test]
    fn the_newest_keep_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(dir.path(), 3).unwrap();
        for epoch in [2, 5, 9, 14] {
            store.persist(&checkpoint(epoch)).unwrap();
        }
        assert_eq!(store.epochs(), vec![5, 9, 14]);
        let restored = store.restore(&[0], &["a"]).checkpoint.unwrap();
        assert_eq!((restored.epoch, restored.resume_epoch), (14, 15));
    }

    /// A write says which is the oldest checkpoint kept: with `keep` 2, the one before it.
    #[test]
    fn a_write_says_the_oldest_checkpoint_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(dir.path(), 2).unwrap();
        let kept: Vec<u64> = [3, 7, 11]
            .into_iter()
            .map(|epoch| store.persist(&checkpoint(epoch)).unwrap())
            .collect();
        assert_eq!(kept, vec![3, 3, 7]);
        assert_eq!(store.epochs(), vec![7, 11]);
    }

    /// A process of a cluster keeps every checkpoint from the floor on (the newest every
    /// process has written), beyond its newest `keep`: three processes checkpoint the same
    /// epochs, one far behind the others, and at every moment they hold one in common.
    #[test]
    fn a_cluster_keeps_a_checkpoint_every_process_holds() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let retention: Vec<ClusterRetention> =
            (0..3).map(|p| ClusterRetention::new(p, 3)).collect();
        let stores: Vec<CheckpointStore> = dirs
            .iter()
            .zip(&retention)
            .map(|(dir, r)| {
                CheckpointStore::open(dir.path(), 2)
                    .unwrap()
                    .in_cluster(r.clone())
            })
            .collect();
        // Clones of the stores write (the same databases), the stores are read.
        let mut writers = stores.clone();
        let mut write = |process: usize, epoch: u64| {
            writers[process].persist(&checkpoint(epoch)).unwrap();
            for r in &retention {
                r.heard(process, epoch);
            }
        };
        let common = |stores: &[CheckpointStore]| {
            let lists: Vec<Vec<u64>> = stores.iter().map(CheckpointStore::epochs).collect();
            lists[0]
                .iter()
                .rev()
                .find(|e| lists.iter().all(|l| l.contains(e)))
                .copied()
        };
        for epoch in [9, 19] {
            for process in 0..3 {
                write(process, epoch);
            }
        }
        // Processes 1 and 2 run five checkpoints ahead of process 0.
        for epoch in [29, 39, 49, 59, 69] {
            write(1, epoch);
            write(2, epoch);
        }
        assert_eq!(stores[1].epochs(), vec![19, 29, 39, 49, 59, 69]);
        assert_eq!(common(&stores), Some(19));
        write(0, 29);
        assert_eq!(stores[1].epochs(), vec![19, 29, 39, 49, 59, 69]);
        write(1, 79);
        assert_eq!(stores[1].epochs(), vec![29, 39, 49, 59, 69, 79]);
        assert_eq!(common(&stores), Some(29));
        // Once process 0 has caught up, each keeps its newest two again.
        for epoch in [39, 49, 59, 69, 79, 89] {
            write(0, epoch);
        }
        write(2, 79);
        write(2, 89);
        assert_eq!(common(&stores), Some(79));
        write(1, 89);
        write(1, 99);
        assert_eq!(stores[1].epochs(), vec![89, 99]);
        assert_eq!(common(&stores), Some(89));
    }

    /// Until a newer checkpoint is common to every process, a process keeps what it restored
    /// and everything after.
    #[test]
    fn a_cluster_keeps_the_restored_checkpoint_until_a_newer_one_is_common() {
        let dir = tempfile::tempdir().unwrap();
        let retention = ClusterRetention::new(0, 2);
        retention.restored(5);
        let mut store = CheckpointStore::open(dir.path(), 1)
            .unwrap()
            .in_cluster(retention.clone());
        for epoch in [2, 5, 9, 14] {
            store.persist(&checkpoint(epoch)).unwrap();
        }
        assert_eq!(store.epochs(), vec![5, 9, 14]);
        retention.heard(1, 9);
        store.persist(&checkpoint(19)).unwrap();
        assert_eq!(store.epochs(), vec![9, 14, 19]);
        retention.heard(1, 19);
        store.persist(&checkpoint(24)).unwrap();
        assert_eq!(store.epochs(), vec![19, 24]);
    }

    #[test]
    fn the_oldest_kept_is_the_newest_keeps_or_the_floors() {
        assert_eq!(oldest_kept(&[], 5, 3, u64::MAX), 5);
        assert_eq!(oldest_kept(&[1, 2, 3], 5, 1, u64::MAX), 5);
        assert_eq!(oldest_kept(&[1, 2, 3], 5, 2, u64::MAX), 3);
        assert_eq!(oldest_kept(&[1, 2, 3], 5, 9, u64::MAX), 1);
        assert_eq!(oldest_kept(&[1, 2, 3], 5, 1, 2), 2);
        assert_eq!(oldest_kept(&[1, 2, 3], 5, 1, 0), 1);
        assert_eq!(oldest_kept(&[1, 2, 3], 5, 1, 4), 5);
        assert_eq!(oldest_kept(&[1, 2, 3], 5, 3, 3), 2);
    }

    /// A checkpoint of a job of 4 workers in all is not restored by a job of 6 (a process
    /// added), though this process's workers are the same; one written before checkpoints
    /// said (no count) still is.
    #[test]
    fn a_checkpoint_of_another_number_of_workers_in_all_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(dir.path(), 3).unwrap().of_job(4);
        store.persist(&checkpoint(3)).unwrap();
        drop(store);
        let store = CheckpointStore::open(dir.path(), 3).unwrap().of_job(6);
        let restored = store.restore(&[0], &["a"]);
        assert!(restored.checkpoint.is_none());
        assert!(matches!(
            restored.skipped[0].1,
            CheckpointError::JobWorkers { stored: 4, have: 6 }
        ));
        drop(store);
        let store = CheckpointStore::open(dir.path(), 3).unwrap().of_job(4);
        assert_eq!(store.restore(&[0], &["a"]).checkpoint.unwrap().epoch, 3);
        drop(store);
        let mut unsaid = CheckpointStore::open(dir.path(), 3).unwrap();
        unsaid.persist(&checkpoint(5)).unwrap();
        drop(unsaid);
        let store = CheckpointStore::open(dir.path(), 3).unwrap().of_job(6);
        assert_eq!(store.restore(&[0], &["a"]).checkpoint.unwrap().epoch, 5);
    }

    /// A clean stop writes the end-of-input checkpoint, the largest epoch there is. The job
    /// restarted from it goes on and checkpoints again: the first of those replaces it, so a
    /// crash after that restores the newer state, not the clean stop's.
    #[test]
    fn a_checkpoint_after_a_restart_replaces_every_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(dir.path(), 3).unwrap();
        store.persist(&checkpoint(7)).unwrap();
        store.persist(&checkpoint(FINAL)).unwrap();
        assert_eq!(store.epochs(), vec![7, FINAL]);
        assert_eq!(store.restore(&[0], &["a"]).checkpoint.unwrap().epoch, FINAL);
        store.persist(&checkpoint(12)).unwrap();
        assert_eq!(store.epochs(), vec![7, 12]);
        assert_eq!(store.restore(&[0], &["a"]).checkpoint.unwrap().epoch, 12);
    }

    /// A hashed job's checkpoint from before hashed features were a FeatureMap (a `decode`
    /// part) restores into today's parts: the others as written, `parse`, `fit` and
    /// `transform` afresh. Not into another job's store, nor with a part this job lacks.
    #[test]
    fn a_decode_part_is_replaced_by_fresh_featuremap_parts() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(dir.path(), 3).unwrap();
        let part = |worker, name: &str| PartState {
            worker,
            name: name.into(),
            lo: 4,
            bytes: vec![worker as u8, name.len() as u8],
        };
        let old = ["source", "decode", "dead_letters", "train"];
        let checkpoint = Checkpoint {
            epoch: 4,
            resume_epoch: 5,
            parts: [0, 1]
                .into_iter()
                .flat_map(|w| old.map(|name| part(w, name)))
                .collect(),
        };
        store.persist(&checkpoint).unwrap();
        let new = [
            "source",
            "parse",
            "fit",
            "transform",
            "dead_letters",
            "train",
        ];
        // Only a store told so (a hashed job's) reads it.
        assert!(matches!(
            store.checkpoint(4, &[0, 1], &new),
            Err(CheckpointError::NoPart { name, worker: 0 }) if name == "parse"
        ));
        let store = store.replacing(HASHED_DECODE);
        let restored = store.checkpoint(4, &[0, 1], &new).unwrap();
        let names: Vec<(usize, &str)> = restored
            .parts
            .iter()
            .map(|p| (p.worker, p.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (0, "source"),
                (0, "dead_letters"),
                (0, "train"),
                (1, "source"),
                (1, "dead_letters"),
                (1, "train")
            ]
        );
        assert_eq!(restored.parts[2].bytes, vec![0, 5]);
        assert!(matches!(
            store.checkpoint(
                4,
                &[0, 1],
                &["source", "parse", "fit", "transform", "train"]
            ),
            Err(CheckpointError::PartCount {
                stored: 8,
                expected: 6
            })
        ));
        assert!(matches!(
            store.checkpoint(4, &[0, 1], &["source", "dead_letters", "train"]),
            Err(CheckpointError::PartCount {
                stored: 8,
                expected: 6
            })
        ));
    }

    #[test]
    fn a_part_that_does_not_match_its_checksum_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(dir.path(), 3).unwrap();
        store.persist(&checkpoint(7)).unwrap();
        store.db.put(part_key(7, 0, "a"), b"spoiled").unwrap();
        let error = store.checkpoint(7, &[0], &["a"]).unwrap_err();
        assert!(
            matches!(&error, CheckpointError::Checksum { name, worker: 0 } if name == "a"),
            "{error:?}"
        );
        let restored = store.restore(&[0], &["a"]);
        assert!(restored.checkpoint.is_none());
        assert_eq!(restored.skipped.len(), 1);
        store.db.delete(meta_key(7)).unwrap();
        assert!(matches!(
            store.checkpoint(7, &[0], &["a"]),
            Err(CheckpointError::NoMeta)
        ));
    }
}
