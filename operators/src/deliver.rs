//! Handing a stream's records to an external sink.
//!
//! A delivering operator is its [`Outlet`]'s checkpoint part: it covers an epoch once its sink
//! has settled every record of that epoch and the ones before (acknowledged, or lost and
//! counted), so a checkpoint never covers an output still on its way. A restarted job replays
//! every epoch after its checkpoint, and with them their outputs.

use crate::checkpoint::{self, Part};
use crate::part_spec::{Checkpoints, PartSpec};
use std::time::Duration;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::StreamVec;

/// What a [`Deliver`] feeds, named: its checkpoint part. Each delivering operator of a
/// dataflow needs an outlet of its own, since two of one name would be one part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outlet {
    /// The part, which holds no state: its bytes are empty, it only covers an epoch once the
    /// epoch's records are settled.
    part: PartSpec<()>,
}

impl Outlet {
    /// The job's dead letters.
    pub const DEAD_LETTERS: Outlet = Outlet::new("dead_letters");
    /// The job's predictions.
    pub const PREDICTIONS: Outlet = Outlet::new("predictions");

    /// An outlet named `name` (its checkpoint part's name).
    pub const fn new(name: &'static str) -> Self {
        Outlet {
            part: PartSpec::new(name),
        }
    }

    /// The outlet's name.
    pub const fn name(&self) -> &'static str {
        self.part.name()
    }
}

/// Where [`Deliver`] sends records: a Kafka producer, a file, a channel.
pub trait RecordSink<D> {
    /// Sends one record of `epoch`. Sinks do their own retrying and report failures
    /// themselves.
    fn send(&mut self, epoch: u64, record: D);
    /// Waits until everything sent so far is delivered (called when the input is complete).
    fn flush(&mut self);
    /// The least epoch with a record sent but not settled yet (neither delivered nor lost and
    /// counted); `None` when every record sent is. A sink that buffers may write out what it
    /// holds first; one that delivers before `send` returns keeps the default.
    fn unsettled_from(&mut self) -> Option<u64> {
        None
    }
}

/// Delivers a stream to a sink.
pub trait Deliver<D> {
    /// Sends every record to `sink` on the worker that holds it, with its epoch, and flushes
    /// the sink once the stream is complete. The operator is `outlet`'s checkpoint part when
    /// `checkpoints` are enabled (see the module's documentation).
    ///
    /// # Examples
    ///
    /// ```
    /// use millrace_operators::{Checkpoints, Deliver, Outlet, RecordSink};
    /// use timely::dataflow::operators::ToStream;
    ///
    /// struct Print;
    /// impl RecordSink<u32> for Print {
    ///     fn send(&mut self, epoch: u64, record: u32) { println!("{epoch}: {record}"); }
    ///     fn flush(&mut self) {}
    /// }
    ///
    /// timely::example(|scope| {
    ///     let none = Checkpoints::none();
    ///     (0..3u32).to_stream(scope).deliver(Outlet::PREDICTIONS, Print, &none)
    /// });
    /// ```
    fn deliver<S: RecordSink<D> + 'static>(
        self,
        outlet: Outlet,
        sink: S,
        checkpoints: &Checkpoints,
    );
}

/// How often a sink with unsettled records is looked at again.
const SETTLE_POLL: Duration = Duration::from_millis(5);

impl<D: 'static> Deliver<D> for StreamVec<'_, u64, D> {
    fn deliver<S: RecordSink<D> + 'static>(
        self,
        outlet: Outlet,
        mut sink: S,
        checkpoints: &Checkpoints,
    ) {
        let scope = self.scope();
        let mut part: Option<Part> = checkpoints.part(scope.index(), &outlet.part);
        // The sink keeps no state: what it offers is valid from the epoch it resumed after.
        let lo = part
            .as_ref()
            .map_or(0, |p| p.resume_epoch().saturating_sub(1));
        let mut builder = OperatorBuilder::new(format!("Deliver({})", outlet.name()), scope);
        let activator = scope.activator_for(builder.operator_info().address);
        let mut input = builder.new_input(self, Pipeline);
        builder.build(move |_capabilities| {
            let mut flushed = false;
            move |frontiers| {
                input.for_each(|time, data| {
                    let epoch = time.least().copied().unwrap_or_default();
                    for record in data.drain(..) {
                        sink.send(epoch, record);
                    }
                });
                let frontier = frontiers[0].frontier();
                if frontier.is_empty() && !flushed {
                    sink.flush();
                    flushed = true;
                }
                let Some(part) = part.as_mut() else {
                    return;
                };
                let unsettled = sink.unsettled_from();
                if unsettled.is_some() {
                    // Acknowledgements arrive on the producer's thread: look again soon.
                    activator.activate_after(SETTLE_POLL);
                }
                let through = checkpoint::settled_through(&[frontier]);
                let through = match (through, unsettled) {
                    (Some(t), Some(u)) => u.checked_sub(1).map(|u| u.min(t)),
                    (through, _) => through,
                };
                if let Some(through) = through {
                    part.covers(lo, through, Vec::new);
                }
            }
        });
    }
}
