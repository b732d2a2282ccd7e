//! A registry directory stays bounded: after each publish, a model keeps its newest `keep`
//! versions and every version a server holds; the others are removed. A server holds the
//! versions it serves (its primary, a pinned one, a split's and a shadow's) by writing them to
//! a hold file, `<model>/.holds/<holder>`, which it rewrites while it runs; a hold file not
//! rewritten for [`HOLD_TTL`] is a server that went away, and holds nothing.
//!
//! A version is removed by renaming it out of sight first (a reader sees it whole or not at
//! all), then deleting it. Temporary directories that a publisher left behind when it died
//! are removed when a publisher opens the registry ([`Registry::remove_orphans`]).

use super::{sync_dir, Registry};
use crate::error::{Error, Result};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The directory of a model's hold files.
const HOLDS: &str = ".holds";

/// How long a hold file holds without being rewritten.
pub const HOLD_TTL: Duration = Duration::from_secs(600);

/// How often a holder rewrites an unchanged hold file (well within [`HOLD_TTL`]).
pub const HOLD_REFRESH: Duration = Duration::from_secs(60);

impl Registry {
    /// Records that `holder` (a name unique to one server process) serves `versions` of the
    /// model `name`: a publisher keeps them while the hold is fresh. The file is replaced
    /// whole, so a publisher reads the old list or the new one.
    ///
    /// # Errors
    ///
    /// For an invalid model or holder name, or when the file cannot be written.
    pub fn hold(&self, name: &str, holder: &str, versions: &[u64]) -> Result<()> {
        if !super::valid_model_name(holder) {
            return Err(Error::InvalidModelName(holder.to_owned()));
        }
        let dir = self.model_dir(name)?.join(HOLDS);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join(holder);
        let tmp = dir.join(format!(".{holder}.tmp"));
        let text = serde_json::to_vec(versions).expect("versions serialize");
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| Error::io(&path, e))
    }

    /// Withdraws `holder`'s hold on the model `name` (a server that stops).
    ///
    /// # Errors
    ///
    /// For an invalid name, or when the file exists and cannot be removed.
    pub fn release(&self, name: &str, holder: &str) -> Result<()> {
        let path = self.model_dir(name)?.join(HOLDS).join(holder);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path, e)),
            _ => Ok(()),
        }
    }

    /// The versions of the model `name` that fresh hold files name.
    ///
    /// # Errors
    ///
    /// When the holds directory exists and cannot be read.
    pub fn held(&self, name: &str) -> Result<BTreeSet<u64>> {
        let dir = self.model_dir(name)?.join(HOLDS);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let now = SystemTime::now();
        let mut held = BTreeSet::new();
        for entry in entries.flatten() {
            let fresh = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| now.duration_since(at).unwrap_or_default() < HOLD_TTL);
            if !fresh || entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            // An unreadable hold (a holder's partial write cannot be: it renames) holds
            // nothing rather than stopping the publisher.
            if let Ok(versions) = fs::read(entry.path())
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Vec<u64>>(&b).map_err(|e| e.to_string()))
            {
                held.extend(versions);
            }
        }
        Ok(held)
    }

    /// Removes the versions of the model `name` older than its newest `keep` that no fresh
    /// hold names; returns them.
    ///
    /// # Errors
    ///
    /// When the model's directory cannot be read or a version cannot be removed.
    pub fn prune(&self, name: &str, keep: usize) -> Result<Vec<u64>> {
        let versions = self.versions(name)?;
        let held = self.held(name)?;
        let old = versions.len().saturating_sub(keep.max(1));
        let doomed: Vec<u64> = versions[..old]
            .iter()
            .copied()
            .filter(|v| !held.contains(v))
            .collect();
        let dir = self.model_dir(name)?;
        for &version in &doomed {
            let path = self.version_dir(name, version)?;
            let hidden = dir.join(format!(".gone-v{version}"));
            fs::rename(&path, &hidden).map_err(|e| Error::io(&path, e))?;
            fs::remove_dir_all(&hidden).map_err(|e| Error::io(&hidden, e))?;
        }
        if !doomed.is_empty() {
            sync_dir(&dir)?;
        }
        Ok(doomed)
    }

    /// Removes what publishers that died left in the registry: the temporary directories of
    /// versions they never renamed into place, and versions they were removing. Call it when
    /// no other publisher writes to the registry (one job publishes to it). Returns how many.
    ///
    /// # Errors
    ///
    /// When a directory cannot be read or removed.
    pub fn remove_orphans(&self) -> Result<usize> {
        let mut removed = 0;
        for model in self.model_dirs()? {
            for entry in fs::read_dir(&model).map_err(|e| Error::io(&model, e))? {
                let entry = entry.map_err(|e| Error::io(&model, e))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(".tmp-v") || name.starts_with(".gone-v") {
                    let path = entry.path();
                    fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// The directories of the registry's models.
    fn model_dirs(&self) -> Result<Vec<std::path::PathBuf>> {
        let root: &Path = self.root();
        let mut dirs = Vec::new();
        for entry in fs::read_dir(root).map_err(|e| Error::io(root, e))? {
            let entry = entry.map_err(|e| Error::io(root, e))?;
            let is_model = entry.file_type().is_ok_and(|t| t.is_dir())
                && entry
                    .file_name()
                    .to_str()
                    .is_some_and(super::valid_model_name);
            if is_model {
                dirs.push(entry.path());
            }
        }
        Ok(dirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelArtifact;
    use millrace_events::features::FeatureSpec;

    fn publish(registry: &Registry, n: usize) {
        for _ in 0..n {
            let mut artifact = ModelArtifact::logistic_regression(
                "ctr",
                FeatureSpec::Hashed { hash_bits: 3 },
                vec![0.5; 8],
            );
            registry.publish(&mut artifact).unwrap();
        }
    }

    #[test]
    fn the_newest_and_the_held_versions_stay() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        publish(&registry, 6);
        registry.hold("ctr", "server-a", &[2]).unwrap();
        registry.hold("ctr", "server-b", &[3, 6]).unwrap();
        assert_eq!(registry.prune("ctr", 2).unwrap(), vec![1, 4]);
        assert_eq!(registry.versions("ctr").unwrap(), vec![2, 3, 5, 6]);
        registry.release("ctr", "server-a").unwrap();
        assert_eq!(registry.prune("ctr", 2).unwrap(), vec![2]);
        // A stale hold (its server went away) holds nothing.
        let stale = dir.path().join("ctr").join(HOLDS).join("server-b");
        let long_ago = SystemTime::now() - HOLD_TTL - Duration::from_secs(1);
        fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        assert_eq!(registry.prune("ctr", 2).unwrap(), vec![3]);
        assert_eq!(registry.versions("ctr").unwrap(), vec![5, 6]);
        assert_eq!(registry.models().unwrap(), vec!["ctr".to_owned()]);
        // The newest version stays whatever `keep` says.
        assert_eq!(registry.prune("ctr", 0).unwrap(), vec![5]);
        assert!(registry.hold("ctr", "../escape", &[1]).is_err());
    }

    #[test]
    fn what_a_dead_publisher_left_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        publish(&registry, 1);
        let model = dir.path().join("ctr");
        fs::create_dir_all(model.join(".tmp-v2-4242")).unwrap();
        fs::write(model.join(".tmp-v2-4242").join("meta.json"), b"{").unwrap();
        fs::create_dir_all(model.join(".gone-v0")).unwrap();
        assert_eq!(registry.remove_orphans().unwrap(), 2);
        assert_eq!(registry.versions("ctr").unwrap(), vec![1]);
        assert!(!model.join(".tmp-v2-4242").exists());
        registry.load("ctr", 1).unwrap();
    }
}
