//! How a served model's requests are routed among versions: a pinned or newest primary, a
//! weighted A/B split and a shadow. An arm or the shadow may be a version of another served
//! model that reads the same fields ("a guest"), so that a deep version can be shadowed against
//! the online one, and then given a share of the traffic, before it is promoted.

use crate::version::LoadedVersion;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A version that traffic names: one of the served model's own, or one of another model's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(untagged)]
pub enum VersionRef {
    /// A version of the model itself (written as a bare number).
    Own(u64),
    /// A version of another served model (written `{"model": …, "version": …}`).
    Of {
        /// The other model's name.
        model: String,
        /// Its version.
        version: u64,
    },
}

impl VersionRef {
    /// `version` of `model`, or of the model itself without one.
    pub fn of(model: Option<String>, version: u64) -> VersionRef {
        match model {
            Some(model) => VersionRef::Of { model, version },
            None => VersionRef::Own(version),
        }
    }

    /// The same version as seen from the model `served`: its own when it names `served`.
    pub fn seen_from(self, served: &str) -> VersionRef {
        match self {
            VersionRef::Of { model, version } if model == served => VersionRef::Own(version),
            own => own,
        }
    }

    /// The version number.
    pub fn version(&self) -> u64 {
        match self {
            VersionRef::Own(version) | VersionRef::Of { version, .. } => *version,
        }
    }

    /// The other model's name; `None` for an own version.
    pub fn model(&self) -> Option<&str> {
        match self {
            VersionRef::Own(_) => None,
            VersionRef::Of { model, .. } => Some(model),
        }
    }

    /// The name to show beside the served model's in a version's label: `v` for its own,
    /// `model/v` for a guest.
    pub fn label(&self) -> String {
        match self {
            VersionRef::Own(version) => version.to_string(),
            VersionRef::Of { model, version } => format!("{model}/{version}"),
        }
    }
}

/// One arm of a traffic split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arm {
    /// Another served model whose version answers this arm; absent for the model's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The version that answers this arm's requests.
    pub version: u64,
    /// Its share, relative to the other arms' weights.
    pub weight: u32,
}

impl Arm {
    /// The version this arm names, as seen from the model `served`.
    pub fn target(&self, served: &str) -> VersionRef {
        VersionRef::of(self.model.clone(), self.version).seen_from(served)
    }
}

/// How a model's requests are routed among its versions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// The version that answers every request not split off; `None` follows the newest.
    pub pinned: Option<u64>,
    /// A weighted split by request key; empty sends everything to the primary version.
    pub split: Vec<Arm>,
    /// A version that also scores every request, whose answer is only compared, not returned.
    pub shadow: Option<VersionRef>,
}

impl Traffic {
    /// Every version the traffic names, as seen from the model `served`.
    pub(crate) fn named(&self, served: &str) -> BTreeSet<VersionRef> {
        self.pinned
            .map(VersionRef::Own)
            .into_iter()
            .chain(self.split.iter().map(|arm| arm.target(served)))
            .chain(self.shadow.clone())
            .collect()
    }
}

/// A change of a model's traffic, made through the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrafficChange {
    /// Every request not split off goes to this version.
    Pin(u64),
    /// Follow the newest version again.
    Unpin,
    /// A weighted split (empty for none) and a shadow version.
    Split {
        /// The arms.
        split: Vec<Arm>,
        /// The shadow version.
        shadow: Option<VersionRef>,
    },
    /// The version takes all traffic, with the split cleared (and the shadow, if it was this
    /// version): an own version is pinned; a guest becomes the split's only arm.
    Promote(VersionRef),
    /// Pin the newest valid version older than the primary.
    Rollback,
}

/// One model's served state.
#[derive(Clone, Debug)]
pub struct ServedEntry {
    /// The model's name.
    pub name: String,
    /// The versions in memory.
    pub versions: BTreeMap<u64, Arc<LoadedVersion>>,
    /// Versions of other models that the traffic names, shared with those models' entries.
    pub guests: BTreeMap<VersionRef, Arc<LoadedVersion>>,
    /// The routing policy.
    pub traffic: Traffic,
}

/// The versions that answer a request.
#[derive(Clone, Debug)]
pub struct Route {
    /// The version whose predictions are returned.
    pub answer: Arc<LoadedVersion>,
    /// Whether `answer` is a version of another model (an arm of the split).
    pub guest: bool,
    /// A version that scores the same instances for comparison.
    pub shadow: Option<Arc<LoadedVersion>>,
}

impl ServedEntry {
    /// An entry of `name` with no versions and the default traffic.
    pub(crate) fn empty(name: &str) -> ServedEntry {
        ServedEntry {
            name: name.to_owned(),
            versions: BTreeMap::new(),
            guests: BTreeMap::new(),
            traffic: Traffic::default(),
        }
    }

    /// The newest version in memory.
    pub fn newest(&self) -> Option<&Arc<LoadedVersion>> {
        self.versions.values().next_back()
    }

    /// The version in memory that `target` names, own or guest.
    pub fn get(&self, target: &VersionRef) -> Option<&Arc<LoadedVersion>> {
        match target {
            VersionRef::Own(version) => self.versions.get(version),
            VersionRef::Of { .. } => self.guests.get(target),
        }
    }

    /// The version that answers requests not split off: the pinned one, or the newest.
    pub fn primary(&self) -> Option<&Arc<LoadedVersion>> {
        match self.traffic.pinned {
            Some(v) => self.versions.get(&v),
            None => self.newest(),
        }
    }

    /// The versions for a request with `key` (a hash of the caller's sticky key, or any number
    /// for a caller without one): the split's arm that `key` falls in, else the primary.
    pub fn route(&self, key: u64) -> Option<Route> {
        let total: u64 = self.traffic.split.iter().map(|a| u64::from(a.weight)).sum();
        let (answer, guest) = if total == 0 {
            (self.primary()?, false)
        } else {
            let mut point = key % total;
            let arm = self
                .traffic
                .split
                .iter()
                .find(|arm| {
                    let inside = point < u64::from(arm.weight);
                    point = point.saturating_sub(u64::from(arm.weight));
                    inside
                })
                .expect("the point is below the total");
            let target = arm.target(&self.name);
            (self.get(&target)?, target.model().is_some())
        };
        let shadow = self
            .traffic
            .shadow
            .as_ref()
            .and_then(|v| self.get(v))
            .filter(|shadow| !Arc::ptr_eq(shadow, answer))
            .cloned();
        Some(Route {
            answer: answer.clone(),
            guest,
            shadow,
        })
    }

    /// The weight of `target` in the traffic, in percent of the requests it answers.
    pub fn share_percent(&self, target: &VersionRef) -> f64 {
        let total: u64 = self.traffic.split.iter().map(|a| u64::from(a.weight)).sum();
        if total == 0 {
            let primary = self
                .primary()
                .map(|p| VersionRef::Own(p.model.meta.version));
            return if primary.as_ref() == Some(target) {
                100.0
            } else {
                0.0
            };
        }
        let weight: u64 = self
            .traffic
            .split
            .iter()
            .filter(|a| a.target(&self.name) == *target)
            .map(|a| u64::from(a.weight))
            .sum();
        100.0 * weight as f64 / total as f64
    }

    /// Every version in memory, own then guests, each with the name it goes by.
    pub fn all(&self) -> impl Iterator<Item = (VersionRef, &Arc<LoadedVersion>)> {
        let own = self.versions.iter().map(|(v, l)| (VersionRef::Own(*v), l));
        own.chain(self.guests.iter().map(|(r, l)| (r.clone(), l)))
    }

    /// Keeps the newest version and those the traffic names: a rollback loads its version
    /// again, sharing chunks with the newest.
    pub(crate) fn retain(&mut self) {
        let mut keep = self.traffic.named(&self.name);
        keep.extend(
            self.versions
                .keys()
                .next_back()
                .copied()
                .map(VersionRef::Own),
        );
        self.versions
            .retain(|v, _| keep.contains(&VersionRef::Own(*v)));
        self.guests.retain(|r, _| keep.contains(r));
    }
}
