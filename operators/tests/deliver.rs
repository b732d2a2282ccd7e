//! A delivering operator as a checkpoint part: no checkpoint covers an epoch whose outputs the
//! sink has not settled, and one does once they are.

use millrace_operators::checkpoint::{Checkpoint, Choice, Collector, Persist};
use millrace_operators::{Checkpoints, Deliver, Outlet, RecordSink};
use std::sync::{Arc, Mutex};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

struct Kept(Arc<Mutex<Vec<Checkpoint>>>);

impl Persist for Kept {
    fn persist(&mut self, checkpoint: &Checkpoint) -> Result<u64, millrace_operators::BoxError> {
        let mut kept = self.0.lock().unwrap();
        kept.push(checkpoint.clone());
        Ok(kept[0].epoch)
    }
}

/// A sink whose records are settled only when the test says so: `unsettled` is the least
/// epoch still on its way.
struct Pending {
    unsettled: Arc<Mutex<Option<u64>>>,
}

impl RecordSink<u32> for Pending {
    fn send(&mut self, epoch: u64, _: u32) {
        let mut unsettled = self.unsettled.lock().unwrap();
        *unsettled = Some(unsettled.map_or(epoch, |u| u.min(epoch)));
    }

    fn flush(&mut self) {}

    fn unsettled_from(&mut self) -> Option<u64> {
        *self.unsettled.lock().unwrap()
    }
}

#[test]
fn a_checkpoint_waits_for_the_sink_to_settle_its_epochs() {
    let written = Arc::new(Mutex::new(Vec::new()));
    let collector = Collector::new(
        vec![0],
        &["predictions"],
        Choice::EveryNth(1),
        Box::new(Kept(written.clone())),
        None,
    );
    let unsettled = Arc::new(Mutex::new(None));
    let (kept, pending) = (written.clone(), unsettled.clone());
    timely::execute(timely::Config::thread(), move |worker| {
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<u32>>>::new();
        let probe = ProbeHandle::new();
        let checkpoints = Checkpoints::from_collector(collector.clone());
        let sink = Pending {
            unsettled: pending.clone(),
        };
        worker.dataflow::<u64, _, _>(|scope| {
            let stream = scope.input_from(&mut input);
            stream
                .probe_with(&probe)
                .deliver(Outlet::PREDICTIONS, sink, &checkpoints);
        });
        let newest = || kept.lock().unwrap().last().map(|c: &Checkpoint| c.epoch);
        // Epochs 0 and 1 are settled as they go; epoch 2's record stays on its way.
        for epoch in 0..2 {
            input.advance_to(epoch);
            input.send(7);
            input.advance_to(epoch + 1);
            worker.step_while(|| probe.less_than(&(epoch + 1)));
            *pending.lock().unwrap() = None;
            worker.step();
        }
        input.advance_to(2);
        input.send(7);
        input.advance_to(6);
        worker.step_while(|| probe.less_than(&6));
        for _ in 0..20 {
            worker.step();
        }
        assert_eq!(newest(), Some(1), "a checkpoint covered an unsettled epoch");
        // Settled: the sink looks again by itself and covers through the frontier.
        *pending.lock().unwrap() = None;
        let started = std::time::Instant::now();
        while newest() != Some(5) && started.elapsed().as_secs() < 10 {
            worker.step();
        }
        assert_eq!(newest(), Some(5));
    })
    .unwrap();
}
