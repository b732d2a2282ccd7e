//! Joining delayed labels: impressions and clicks into labeled examples.
//!
//! Records of the impression/click stream ([`millrace_models::labels`]) are exchanged by
//! request id, so an impression and its clicks meet on one worker. Each epoch is joined once
//! it is complete (the frontier has passed it), so the result depends only on the epochs of
//! the events, never on the order they arrived in:
//!
//! - an impression of epoch `t` is clicked if a click of the same request id comes in an epoch
//!   `c` with `t <= c <= t + window`: it is emitted as a positive at `c` (the first such
//!   click; later ones count as duplicates);
//! - an impression not clicked by then becomes a negative at `t + window`;
//! - a click after the window closed, up to `t + 2 * window`, is late: it is counted, and
//!   handled by the [`LatePolicy`] — dropped (the negative stands), or corrected (the
//!   impression is emitted once more as a positive, the "fake negative" correction of Ktena et
//!   al., RecSys 2019, so a learner sees both);
//! - a click with no impression in that span (none at all, one later than the click, or one
//!   forgotten after `t + 2 * window`) is counted as unmatched;
//! - a record that is neither, or a second impression of a request id while the first is
//!   remembered, goes to the dead letters when its epoch is joined;
//! - an impression that finds its worker remembering `max_pending` impressions already goes to
//!   the dead letters too (`label_join_full`, counted in [`LabelJoinStats::overflowed`]): the
//!   join's memory is bounded by configuration, not by the stream.
//!
//! Times are the dataflow's epochs: with the job's event-time source the window is measured in
//! event time, `window_ms / epoch_ms` epochs. Each epoch's records are joined in the order of
//! (partition, offset), so what the join emits does not depend on how the exchange interleaved
//! them either. The join's state (impressions remembered, windows closing, counters) is a
//! checkpoint part, `labels`.
//!
//! Output records are labeled Criteo lines ([`millrace_models::labels::labeled_line`]) that keep
//! the impression's partition, offset and timestamp, ready for the parser of the Criteo preset.

use crate::checkpoint::Part;
use crate::featurize::stash_for;
use crate::part_spec::{Checkpoints, PartSpec};
use millrace_models::labels::{labeled_line, LabelEvent};
use millrace_models::{DeadLetter, RawRecord};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::progress::frontier::AntichainRef;

/// What a click after its impression's window does.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    /// Count it; the negative stands.
    #[default]
    Drop,
    /// Count it and emit the impression again, as a positive.
    Correct,
}

/// The join's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabelJoinConfig {
    /// The attribution window, in epochs.
    pub window: u64,
    /// What a late click does.
    pub late: LatePolicy,
    /// Impressions a worker remembers at most (pending, or labeled and kept for late clicks).
    pub max_pending: usize,
}

/// Counters of the join, shared by all workers of a process.
#[derive(Debug, Default)]
pub struct LabelJoinStats {
    /// Impressions received.
    pub impressions: AtomicU64,
    /// Clicks received.
    pub clicks: AtomicU64,
    /// Impressions emitted as positives (clicked in the window).
    pub positives: AtomicU64,
    /// Impressions emitted as negatives (window closed without a click).
    pub negatives: AtomicU64,
    /// Clicks after the window of their impression.
    pub late_clicks: AtomicU64,
    /// Late clicks that re-emitted their impression as a positive ([`LatePolicy::Correct`]).
    pub corrections: AtomicU64,
    /// Clicks of an impression that was already clicked.
    pub duplicate_clicks: AtomicU64,
    /// Clicks without an impression to join.
    pub unmatched_clicks: AtomicU64,
    /// Impressions waiting for their window to close.
    pub pending: AtomicU64,
    /// Records sent to the dead letters.
    pub dead_letters: AtomicU64,
    /// Of those, impressions refused because their worker remembered `max_pending` already
    /// (since the process started).
    pub overflowed: AtomicU64,
}

/// Joins impressions and clicks into labeled examples.
pub trait JoinLabels<'scope> {
    /// Joins the stream as the module describes; returns the labeled records and the dead
    /// letters.
    ///
    /// # Examples
    ///
    /// ```
    /// use millrace_models::RawRecord;
    /// use millrace_operators::{Checkpoints, JoinLabels, LabelJoinConfig, LabelJoinStats, LatePolicy};
    /// use std::sync::{atomic::Ordering, Arc};
    /// use timely::dataflow::operators::{Inspect, ToStream};
    ///
    /// let stats = Arc::new(LabelJoinStats::default());
    /// let shared = stats.clone();
    /// timely::example(move |scope| {
    ///     let record = |payload: &str| RawRecord { partition: 0, offset: 0, payload: payload.into(), timestamp_ms: None };
    ///     let features = "\t".repeat(38);
    ///     let records = vec![record(&format!("imp\tr1\t{features}")), record("clk\tr1")];
    ///     let config = LabelJoinConfig { window: 2, late: LatePolicy::Drop, max_pending: 1000 };
    ///     let none = Checkpoints::none();
    ///     let (labeled, _dead) = records.to_stream(scope).join_labels(config, shared, &none);
    ///     labeled.inspect(|r| assert!(r.payload.starts_with(b"1\t")));
    /// });
    /// assert_eq!(stats.positives.load(Ordering::Relaxed), 1);
    /// ```
    fn join_labels(
        self,
        config: LabelJoinConfig,
        stats: Arc<LabelJoinStats>,
        checkpoints: &Checkpoints,
    ) -> (
        StreamVec<'scope, u64, RawRecord>,
        StreamVec<'scope, u64, DeadLetter>,
    );
}

impl<'scope> JoinLabels<'scope> for StreamVec<'scope, u64, RawRecord> {
    fn join_labels(
        self,
        config: LabelJoinConfig,
        stats: Arc<LabelJoinStats>,
        checkpoints: &Checkpoints,
    ) -> (
        StreamVec<'scope, u64, RawRecord>,
        StreamVec<'scope, u64, DeadLetter>,
    ) {
        let worker = self.scope().index();
        let part = checkpoints.part(worker, &LABELS);
        let mut builder = OperatorBuilder::new("JoinLabels".to_owned(), self.scope());
        let route = |record: &RawRecord| {
            LabelEvent::parse(&record.payload).map_or(record.partition as u64, |e| e.route())
        };
        let mut input = builder.new_input(self, Exchange::new(route));
        let (labeled_out, labeled) = builder.new_output::<Vec<RawRecord>>();
        let (dead_out, dead) = builder.new_output::<Vec<DeadLetter>>();
        let mut labeled_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(labeled_out);
        let mut dead_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(dead_out);
        builder.build(move |capabilities| {
            let mut join = Join::new(config, stats);
            join.part = part;
            if let Some(part) = join.part.as_mut() {
                join.lo = part.resume_epoch().saturating_sub(1);
                if let Some((_, _, bytes)) = part.take_restored() {
                    match LABELS.decode(&bytes) {
                        Ok(state) => {
                            if let Some(cap) = capabilities.first() {
                                join.restore(state, cap);
                            }
                        }
                        Err(error) => tracing::error!(%error, "the label join's checkpoint part is unreadable; joining from scratch"),
                    }
                }
            }
            move |frontiers| {
                let mut labeled_out = labeled_out.activate();
                let mut dead_out = dead_out.activate();
                input.for_each(|cap, data| {
                    let fresh = |_| Received {
                        dead: cap.retain_least(1),
                        records: Vec::new(),
                    };
                    if let Some(stash) = stash_for(&mut join.records, &cap, fresh) {
                        stash.records.append(data);
                    }
                });
                let frontier = frontiers[0].frontier();
                let mut letters = Vec::new();
                join.advance(
                    |epoch| !frontier.less_equal(&epoch),
                    |cap, record| labeled_out.session(cap).give(record),
                    &mut letters,
                );
                for (cap, letter) in letters {
                    dead_out.session(&cap).give(letter);
                }
                join.settle(frontier);
            }
        });
        (labeled, dead)
    }
}

/// An impression waiting for its click, or remembered after its label for late clicks.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Impression {
    epoch: u64,
    record: RawRecord,
    /// Where the feature fields start in the record's payload.
    features_at: usize,
    clicked: bool,
}

impl Impression {
    fn labeled(&self, label: bool) -> RawRecord {
        RawRecord {
            payload: labeled_line(label, &self.record.payload[self.features_at..]),
            ..self.record.clone()
        }
    }
}

/// An epoch's records, with a capability for its dead letters.
struct Received {
    dead: Option<Capability<u64>>,
    records: Vec<RawRecord>,
}

/// The label join's checkpoint part: its remembered impressions and counters.
pub(crate) const LABELS: PartSpec<JoinState> = PartSpec::new("labels");

/// What the join checkpoints: its remembered impressions, the windows closing and the ids
/// forgotten by epoch, and this worker's counters in the order of [`LabelJoinStats::counters`].
#[derive(Serialize, Deserialize)]
pub(crate) struct JoinState {
    counts: [u64; 9],
    impressions: Vec<(Vec<u8>, Impression)>,
    closing: Vec<(u64, Vec<Vec<u8>>)>,
    forgetting: Vec<(u64, Vec<Vec<u8>>)>,
}

impl LabelJoinStats {
    /// The counters a worker's join adds to, in the order its checkpoint keeps them.
    fn counters(&self) -> [&AtomicU64; 9] {
        [
            &self.impressions,
            &self.clicks,
            &self.positives,
            &self.negatives,
            &self.late_clicks,
            &self.corrections,
            &self.duplicate_clicks,
            &self.unmatched_clicks,
            &self.dead_letters,
        ]
    }
}

/// One worker's join state.
struct Join {
    config: LabelJoinConfig,
    stats: Arc<LabelJoinStats>,
    /// This worker's share of the counters, as [`LabelJoinStats::counters`] orders them.
    counts: [u64; 9],
    /// The checkpoint part, and the last epoch joined.
    part: Option<Part>,
    lo: u64,
    /// Received records by epoch, not yet joined (parsed when their epoch is).
    records: BTreeMap<u64, (Capability<u64>, Received)>,
    /// Impressions by request id: pending, or labeled and remembered for late clicks.
    impressions: HashMap<Vec<u8>, Impression>,
    /// Request ids whose window closes at an epoch, with a capability for that epoch.
    closing: BTreeMap<u64, (Capability<u64>, Vec<Vec<u8>>)>,
    /// Request ids forgotten at an epoch (two windows after their impression).
    forgetting: BTreeMap<u64, Vec<Vec<u8>>>,
}

impl Join {
    fn new(config: LabelJoinConfig, stats: Arc<LabelJoinStats>) -> Self {
        Join {
            config,
            stats,
            counts: [0; 9],
            part: None,
            lo: 0,
            records: BTreeMap::new(),
            impressions: HashMap::new(),
            closing: BTreeMap::new(),
            forgetting: BTreeMap::new(),
        }
    }

    fn count(&mut self, counter: usize) {
        self.counts[counter] += 1;
        self.stats.counters()[counter].fetch_add(1, Ordering::Relaxed);
    }

    fn covers(&mut self, hi: u64) {
        if let Some(mut part) = self.part.take() {
            part.covers(self.lo, hi, || self.snapshot());
            self.part = Some(part);
        }
    }

    /// Offers the state once every epoch the frontier passed is joined.
    fn settle(&mut self, frontier: AntichainRef<'_, u64>) {
        let waiting = self.records.keys().next().copied();
        if let Some(hi) = crate::checkpoint::settled_through(&[frontier])
            .and_then(|s| crate::checkpoint::before_waiting(s, waiting))
        {
            self.covers(hi);
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut impressions: Vec<(Vec<u8>, Impression)> = self
            .impressions
            .iter()
            .map(|(id, i)| (id.clone(), i.clone()))
            .collect();
        impressions.sort_by(|a, b| a.0.cmp(&b.0));
        LABELS.encode(&JoinState {
            counts: self.counts,
            impressions,
            closing: self
                .closing
                .iter()
                .map(|(epoch, (_, ids))| (*epoch, ids.clone()))
                .collect(),
            forgetting: self
                .forgetting
                .iter()
                .map(|(epoch, ids)| (*epoch, ids.clone()))
                .collect(),
        })
    }

    /// Takes up a checkpointed state; `cap` is a capability for the labeled output from which
    /// the closing windows' capabilities are made.
    fn restore(&mut self, state: JoinState, cap: &Capability<u64>) {
        self.counts = state.counts;
        for (counter, n) in self.stats.counters().iter().zip(state.counts) {
            counter.fetch_add(n, Ordering::Relaxed);
        }
        self.impressions = state.impressions.into_iter().collect();
        let mut pending = 0;
        for (epoch, ids) in state.closing {
            pending += ids
                .iter()
                .filter(|id| self.impressions.contains_key(*id))
                .count() as u64;
            self.closing.insert(epoch, (cap.delayed(&epoch), ids));
        }
        self.stats.pending.fetch_add(pending, Ordering::Relaxed);
        self.forgetting = state.forgetting.into_iter().collect();
    }

    /// Joins every complete epoch, in order: its impressions, then its clicks, then the
    /// windows that close at it, then what is forgotten at it.
    fn advance(
        &mut self,
        complete: impl Fn(u64) -> bool,
        mut emit: impl FnMut(&Capability<u64>, RawRecord),
        letters: &mut Vec<(Capability<u64>, DeadLetter)>,
    ) {
        loop {
            let next = [
                self.records.keys().next(),
                self.closing.keys().next(),
                self.forgetting.keys().next(),
            ]
            .into_iter()
            .flatten()
            .min()
            .copied();
            let Some(epoch) = next.filter(|&e| complete(e)) else {
                return;
            };
            if epoch > self.lo {
                if epoch > 0 {
                    self.covers(epoch - 1);
                }
                self.lo = epoch;
            }
            if let Some((cap, received)) = self.records.remove(&epoch) {
                self.join_epoch(epoch, &cap, received, &mut emit, letters);
            }
            if let Some((cap, ids)) = self.closing.remove(&epoch) {
                for id in ids {
                    let Some(impression) = self.impressions.get(&id) else {
                        continue;
                    };
                    self.stats.pending.fetch_sub(1, Ordering::Relaxed);
                    if !impression.clicked {
                        emit(&cap, impression.labeled(false));
                        self.count(3);
                    }
                }
            }
            for id in self.forgetting.remove(&epoch).into_iter().flatten() {
                self.impressions.remove(&id);
            }
        }
    }

    fn join_epoch(
        &mut self,
        epoch: u64,
        cap: &Capability<u64>,
        received: Received,
        emit: &mut impl FnMut(&Capability<u64>, RawRecord),
        letters: &mut Vec<(Capability<u64>, DeadLetter)>,
    ) {
        let window = self.config.window;
        let mut clicks = Vec::new();
        let mut records = received.records;
        records.sort_by_key(|r| (r.partition, r.offset));
        for record in records {
            let (request_id, features) = match LabelEvent::parse(&record.payload) {
                Ok(LabelEvent::Impression {
                    request_id,
                    features,
                }) => (request_id, features),
                Ok(LabelEvent::Click { .. }) => {
                    clicks.push(record);
                    continue;
                }
                Err(error) => {
                    self.count(8);
                    if let Some(dead) = received.dead.as_ref() {
                        letters.push((
                            dead.clone(),
                            DeadLetter {
                                error_kind: error.kind().to_owned(),
                                error: error.to_string(),
                                record,
                            },
                        ));
                    }
                    continue;
                }
            };
            self.count(0);
            if self.impressions.contains_key(request_id) {
                self.count(8);
                // The dead-letter capability exists for every epoch that received records.
                if let Some(dead) = received.dead.as_ref() {
                    letters.push((
                        dead.clone(),
                        DeadLetter {
                            error_kind: "label_join_duplicate_impression".to_owned(),
                            error: "a second impression of a request id still remembered"
                                .to_owned(),
                            record,
                        },
                    ));
                }
                continue;
            }
            if self.impressions.len() >= self.config.max_pending {
                self.count(8);
                self.stats.overflowed.fetch_add(1, Ordering::Relaxed);
                if let Some(dead) = received.dead.as_ref() {
                    letters.push((
                        dead.clone(),
                        DeadLetter {
                            error_kind: "label_join_full".to_owned(),
                            error: format!(
                                "the join remembers its limit of {} impressions on this worker ([labels] max_pending)",
                                self.config.max_pending
                            ),
                            record,
                        },
                    ));
                }
                continue;
            }
            let id = request_id.to_vec();
            let features_at = record.payload.len() - features.len();
            let close = epoch.saturating_add(window);
            self.closing
                .entry(close)
                .or_insert_with(|| (cap.delayed(&close), Vec::new()))
                .1
                .push(id.clone());
            self.forgetting
                .entry(close.saturating_add(window))
                .or_default()
                .push(id.clone());
            self.stats.pending.fetch_add(1, Ordering::Relaxed);
            self.impressions.insert(
                id,
                Impression {
                    epoch,
                    record,
                    features_at,
                    clicked: false,
                },
            );
        }
        for record in clicks {
            self.count(1);
            let Ok(event) = LabelEvent::parse(&record.payload) else {
                continue;
            };
            let correct = self.config.late == LatePolicy::Correct;
            let Some(impression) = self.impressions.get_mut(event.request_id()) else {
                self.count(7);
                continue;
            };
            // The counters this click adds to, and whether it labels its impression a positive.
            let (counters, positive): (&[usize], bool) = if impression.clicked {
                (&[6], false)
            } else if epoch <= impression.epoch.saturating_add(window) {
                (&[2], true)
            } else if correct {
                (&[4, 5], true)
            } else {
                (&[4], false)
            };
            if positive {
                impression.clicked = true;
                emit(cap, impression.labeled(true));
            }
            for &counter in counters {
                self.count(counter);
            }
        }
    }
}
