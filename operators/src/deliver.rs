//! Handing a stream's records to an external sink.

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

/// Where [`Deliver`] sends records: a Kafka producer, a file, a channel.
pub trait RecordSink<D> {
    /// Sends one record of `epoch`. Sinks do their own retrying and report failures
    /// themselves.
    fn send(&mut self, epoch: u64, record: D);
    /// Waits until everything sent so far is delivered (called when the input is complete).
    fn flush(&mut self);
}

/// Delivers a stream to a sink.
pub trait Deliver<D> {
    /// Sends every record to `sink` on the worker that holds it, with its epoch, and flushes the sink once the
    /// stream is complete.
    ///
    /// # Examples
    ///
    /// ```
    /// use millrace_operators::{Deliver, RecordSink};
    /// use timely::dataflow::operators::ToStream;
    ///
    /// struct Print;
    /// impl RecordSink<u32> for Print {
    ///     fn send(&mut self, epoch: u64, record: u32) { println!("{epoch}: {record}"); }
    ///     fn flush(&mut self) {}
    /// }
    ///
    /// timely::example(|scope| (0..3u32).to_stream(scope).deliver("Print", Print));
    /// ```
    fn deliver<S: RecordSink<D> + 'static>(self, name: &str, sink: S);
}

impl<D: 'static> Deliver<D> for StreamVec<'_, u64, D> {
    fn deliver<S: RecordSink<D> + 'static>(self, name: &str, mut sink: S) {
        let mut flushed = false;
        self.sink(Pipeline, name, move |(input, frontier)| {
            input.for_each(|time, data| {
                let epoch = time.least().copied().unwrap_or_default();
                for record in data.drain(..) {
                    sink.send(epoch, record);
                }
            });
            if frontier.is_empty() && !flushed {
                sink.flush();
                flushed = true;
            }
        });
    }
}
