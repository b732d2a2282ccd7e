//! A source operator over anything that can be polled without blocking.
//!
//! Timestamps are epochs (`u64`): the source advances its capability to the next epoch every
//! `epoch` of processing time, so downstream operators see the frontier move while data flows.
//! When the source reports [`Polled::Done`], the operator releases its capability and the
//! dataflow drains and completes.

use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator;
use timely::dataflow::{Scope, StreamVec};

/// What one poll of a source found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polled {
    /// Records were appended (possibly fewer than asked for); poll again soon.
    Records,
    /// Nothing was available now; poll again after a short pause.
    Idle,
    /// The source is finished (stopped or exhausted): no more records will come.
    Done,
}

/// A source that appends up to `max` records to `out` without blocking.
pub trait PollSource<D> {
    /// Appends up to `max` records to `out` and says what it found.
    fn poll(&mut self, out: &mut Vec<D>, max: usize) -> Polled;
}

/// How long an idle source waits before it is polled again.
const IDLE_BACKOFF: Duration = Duration::from_millis(2);
/// The most records one activation emits, so that one source cannot starve the worker.
const MAX_PER_ACTIVATION: usize = 4096;

/// Creates a stream from `reader`, advancing the epoch every `epoch` of processing time.
///
/// # Examples
///
/// ```
/// use millrace_operators::{ingest, PollSource, Polled};
/// use std::time::Duration;
/// use timely::dataflow::operators::Inspect;
///
/// struct Countdown(u32);
/// impl PollSource<u32> for Countdown {
///     fn poll(&mut self, out: &mut Vec<u32>, _max: usize) -> Polled {
///         if self.0 == 0 { return Polled::Done; }
///         self.0 -= 1;
///         out.push(self.0);
///         Polled::Records
///     }
/// }
///
/// timely::example(|scope| {
///     ingest(scope, "Countdown", Countdown(3), Duration::from_millis(10))
///         .inspect(|x| assert!(*x < 3));
/// });
/// ```
pub fn ingest<'scope, D, S>(
    scope: Scope<'scope, u64>,
    name: &str,
    mut reader: S,
    epoch: Duration,
) -> StreamVec<'scope, u64, D>
where
    D: Clone + 'static,
    S: PollSource<D> + 'static,
{
    operator::source::<_, CapacityContainerBuilder<Vec<D>>, _, _>(
        scope,
        name,
        move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut capability = Some(capability);
            let mut epoch_started = Instant::now();
            let mut buffer = Vec::with_capacity(MAX_PER_ACTIVATION);
            move |output| {
                let Some(cap) = capability.as_mut() else {
                    return;
                };
                buffer.clear();
                let polled = reader.poll(&mut buffer, MAX_PER_ACTIVATION);
                if !buffer.is_empty() {
                    output.session(&*cap).give_iterator(buffer.drain(..));
                }
                if epoch_started.elapsed() >= epoch {
                    let next = *cap.time() + 1;
                    cap.downgrade(&next);
                    epoch_started = Instant::now();
                }
                match polled {
                    Polled::Records => activator.activate(),
                    Polled::Idle => activator.activate_after(IDLE_BACKOFF),
                    Polled::Done => capability = None,
                }
            }
        },
    )
}
