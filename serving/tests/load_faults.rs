//! A version whose load fails for a transient reason (the process out of file descriptors) is
//! tried again at the next poll and then served; one whose load fails for what it holds is
//! rejected once and not tried again.

use millrace_models::{
    Error, FeatureSpec, LoadPace, ModelArtifact, Registry, ServedModel, VersionSource,
};
use millrace_serving::ModelStore;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// A directory registry whose next `failing` loads fail as a process out of file descriptors
/// fails to open a file (`EMFILE`): fault injection around the real registry.
#[derive(Debug)]
struct OutOfFiles {
    registry: Registry,
    failing: AtomicUsize,
    /// Loads asked for, shared with the test.
    loads: Arc<AtomicUsize>,
}

impl VersionSource for OutOfFiles {
    fn models(&self) -> millrace_models::Result<Vec<String>> {
        self.registry.models()
    }

    fn versions(&self, name: &str) -> millrace_models::Result<Vec<u64>> {
        self.registry.versions(name)
    }

    fn load_served(
        &self,
        name: &str,
        version: u64,
        base: Option<&ServedModel>,
        pace: LoadPace,
    ) -> millrace_models::Result<ServedModel> {
        self.loads.fetch_add(1, Relaxed);
        let failing = self
            .failing
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(Error::Io {
                path: self.registry.root().join(name),
                source: std::io::Error::from_raw_os_error(24),
            });
        }
        self.registry.load_served(name, version, base, pace)
    }
}

fn publish(registry: &Registry, weight: f32) -> u64 {
    let spec = FeatureSpec::Hashed { hash_bits: 8 };
    let n = spec.dimension(&millrace_models::Schema::criteo());
    let mut artifact = ModelArtifact::logistic_regression("ctr", spec, vec![weight; n]);
    registry.publish(&mut artifact).unwrap()
}

#[test]
fn a_transient_failure_is_tried_again_and_a_bad_version_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    publish(&registry, 0.01);
    let loads = Arc::new(AtomicUsize::new(0));
    let store = ModelStore::new(OutOfFiles {
        registry: registry.clone(),
        failing: AtomicUsize::new(2),
        loads: loads.clone(),
    });
    assert!(store.refresh().swapped.is_empty());
    assert!(store.refresh().swapped.is_empty());
    assert_eq!(store.refresh().swapped, vec![("ctr".to_owned(), 1)]);
    assert_eq!(store.stats().load_retries.load(Relaxed), 2);
    assert_eq!(store.stats().rejected_versions.load(Relaxed), 0);

    // Version 2 is corrupt on disk: rejected once, never loaded again.
    let v2 = publish(&registry, 0.02);
    let meta = dir
        .path()
        .join("ctr")
        .join(format!("v{v2:010}"))
        .join("meta.json");
    std::fs::write(&meta, b"{not json").unwrap();
    let before = loads.load(Relaxed);
    for _ in 0..3 {
        assert!(store.refresh().swapped.is_empty());
    }
    assert_eq!(loads.load(Relaxed), before + 1);
    assert_eq!(store.stats().rejected_versions.load(Relaxed), 1);
    assert_eq!(
        store
            .entry("ctr")
            .unwrap()
            .primary()
            .unwrap()
            .model
            .meta
            .version,
        1
    );
}
