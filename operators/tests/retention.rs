//! Sharing the processes' newest checkpoints: two workers stand for two processes, each with
//! its own collector and retention; each learns the other's newest checkpoint, the floor is the
//! least of the two, and the operator ends with the stream it follows.

use millrace_operators::checkpoint::{Checkpoint, Choice, Collector, Persist};
use millrace_operators::{Checkpoints, ClusterRetention, ShareCheckpoints};
use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Input;
use timely::dataflow::InputHandle;

/// Keeps nothing but says the newest is kept.
struct Newest;

impl Persist for Newest {
    fn persist(&mut self, checkpoint: &Checkpoint) -> Result<u64, millrace_operators::BoxError> {
        Ok(checkpoint.epoch)
    }
}

/// Steps `worker` until `retention`'s floor is `floor`, for at most a minute.
fn step_until_floor(
    worker: &mut timely::worker::Worker,
    retention: &ClusterRetention,
    floor: u64,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    while retention.floor() < floor && Instant::now() < deadline {
        worker.step_or_park(Some(Duration::from_millis(10)));
    }
    retention.floor()
}

#[test]
fn each_process_learns_the_others_newest_checkpoint() {
    let floors = timely::execute(timely::Config::process(2), |worker| {
        let process = worker.index();
        let collector = Collector::new(
            vec![process],
            &["a"],
            Choice::EveryNth(1),
            Box::new(Newest),
            None,
        );
        let retention = ClusterRetention::new(2);
        let checkpoints = Checkpoints::from_collector(collector.clone());
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<u32>>>::new();
        worker.dataflow::<u64, _, _>(|scope| {
            scope.input_from(&mut input).share_checkpoints(
                &checkpoints,
                process,
                retention.clone(),
            );
        });
        let mut part = collector.part(process, "a");
        // Process 0 has written through epoch 4, process 1 through 14.
        part.covers(0, 4 + 10 * process as u64, Vec::new);
        let first = step_until_floor(worker, &retention, 4);
        if process == 0 {
            part.covers(5, 20, Vec::new);
        }
        let second = step_until_floor(worker, &retention, 14);
        drop(input);
        while worker.step_or_park(Some(Duration::from_millis(10))) {}
        (first, second)
    })
    .unwrap()
    .join();
    let floors: Vec<(u64, u64)> = floors.into_iter().map(Result::unwrap).collect();
    // Process 0's own newest is 4 until it writes on; process 1 may hear 4 and 20 at once.
    assert_eq!(floors[0], (4, 14));
    assert!(matches!(floors[1], (4 | 14, 14)), "{floors:?}");
}

/// A report from a process the job does not have changes nothing.
#[test]
fn a_report_of_an_unknown_process_is_ignored() {
    let retention = ClusterRetention::new(2);
    retention.heard(0, 9);
    retention.heard(5, 30);
    assert_eq!(retention.floor(), 0);
    retention.heard(1, 3);
    assert_eq!(retention.floor(), 3);
    retention.heard(1, 2);
    assert_eq!(
        retention.floor(),
        3,
        "a report older than one heard is not a step back"
    );
    retention.restored(1);
    assert_eq!(retention.floor(), 3);
}
