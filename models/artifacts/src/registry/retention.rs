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

    /// The versions of the model `name` that fresh hold files name. Stale ones (their servers
    /// gone) are removed as they are found.
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
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if !fresh {
                // Best effort, and only long past its time (a server may be renaming a fresh
                // one into its place): a stale hold holds nothing whether or not it goes.
                let long_stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|at| now.duration_since(at).unwrap_or_default() >= 2 * HOLD_TTL);
                if long_stale {
                    let _ = fs::remove_file(entry.path());
                }
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
    /// versions they never renamed into place (`.tmp-v<version>-<pid>`, of a process not
    /// running on this host), and versions they were removing. A registry has one publishing
    /// job: a publisher on another host, or in another PID namespace, writing to the same
    /// directory would lose its version in the making. Returns how many.
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
                let orphan = match name.strip_prefix(".tmp-v") {
                    Some(rest) => !publisher_alive(rest),
                    None => name.starts_with(".gone-v"),
                };
                if orphan {
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

/// Whether the process that named a temporary directory `<version>-<pid>` is still running
/// here (a publisher of another job on this host, mid-version): its directory is not an
/// orphan. This process's own are (it has not published yet when it cleans up); on a system
/// without `/proc`, every other one is taken for running.
fn publisher_alive(version_and_pid: &str) -> bool {
    let Some(pid) = version_and_pid
        .rsplit_once('-')
        .and_then(|(_, pid)| pid.parse::<u32>().ok())
    else {
        return false;
    };
    if pid == std::process::id() {
        return false;
    }
    !Path::new("/proc/self").exists() || Path::new("/proc").join(pid.to_string()).exists()
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
        fs::remove_file(dir.path().join("ctr").join(HOLDS).join("server-a")).unwrap();
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
        fs::create_dir_all(model.join(".tmp-v2-4194999")).unwrap();
        fs::write(model.join(".tmp-v2-4194999").join("meta.json"), b"{").unwrap();
        fs::create_dir_all(model.join(".gone-v0")).unwrap();
        // Another live publisher's version in the making stays.
        let live = model.join(format!(".tmp-v3-{}", std::os::unix::process::parent_id()));
        fs::create_dir_all(&live).unwrap();
        assert_eq!(registry.remove_orphans().unwrap(), 2);
        assert!(live.exists());
        assert_eq!(registry.versions("ctr").unwrap(), vec![1]);
        assert!(!model.join(".tmp-v2-4194999").exists());
        registry.load("ctr", 1).unwrap();
    }
}
