//! Cluster retention: the floor is the newest checkpoint every process has written, whatever
//! their paces and failed writes; and the operator that shares what each process writes, with
//! two workers standing for two processes, passes its stream through and ends with it.

use millrace_operators::checkpoint::FINAL;
use millrace_operators::{ClusterRetention, ShareCheckpoints};
use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::{Input, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

/// Process 1's write of 19 failed, and it wrote 29 before process 0 did: the floor never
/// names an epoch that one of them lacks.
#[test]
fn a_failed_write_leaves_the_floor_on_an_epoch_both_wrote() {
    let retention = ClusterRetention::new(0, 2);
    retention.wrote(9);
    retention.heard(1, 9);
    assert_eq!(retention.floor(), 9);
    retention.wrote(19);
    retention.heard(1, 29);
    assert_eq!(
        retention.floor(),
        9,
        "process 1 has no 19, process 0 no 29 yet"
    );
    retention.wrote(29);
    assert_eq!(retention.floor(), 29);
    retention.heard(1, 19);
    assert_eq!(retention.floor(), 29, "the floor does not step back");
}

/// Reports from a process the job does not have change nothing, and the end-of-input
/// checkpoint restored is no floor (the first checkpoint after it replaces it).
#[test]
fn unknown_processes_and_the_end_of_input_are_no_floor() {
    let retention = ClusterRetention::new(0, 2);
    retention.restored(FINAL);
    assert_eq!(retention.floor(), 0);
    retention.wrote(30);
    retention.heard(5, 30);
    assert_eq!(retention.floor(), 0);
    retention.heard(1, 30);
    assert_eq!(retention.floor(), 30);
    retention.restored(20);
    assert_eq!(retention.floor(), 30);
}

/// Steps `worker` until `done`, for at most a minute; whether it got there.
fn step_until(worker: &mut timely::worker::Worker, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        worker.step_or_park(Some(Duration::from_millis(10)));
    }
    true
}

#[test]
fn each_process_learns_what_the_other_wrote() {
    let results = timely::execute(timely::Config::process(2), |worker| {
        let process = worker.index();
        let retention = ClusterRetention::new(process, 2);
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<u32>>>::new();
        let probe = ProbeHandle::new();
        let passed = std::rc::Rc::new(std::cell::Cell::new(0));
        let seen = passed.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            scope
                .input_from(&mut input)
                .share_checkpoints(retention.clone())
                .inspect(move |_| seen.set(seen.get() + 1))
                .probe_with(&probe);
        });
        input.send(7);
        input.advance_to(1);
        // Both wrote 4; process 1 also wrote 14.
        retention.wrote(4);
        if process == 1 {
            retention.wrote(14);
        }
        let first = step_until(worker, || retention.floor() >= 4);
        if process == 0 {
            retention.wrote(14);
        }
        let second = step_until(worker, || retention.floor() >= 14);
        drop(input);
        let passed_through = step_until(worker, || probe.done());
        // Every dataflow of the worker ends: the operator let go of its reports too.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ended = false;
        while !ended && Instant::now() < deadline {
            ended = !worker.step_or_park(Some(Duration::from_millis(10)));
        }
        (
            first,
            second,
            passed_through && ended,
            retention.floor(),
            passed.get(),
        )
    })
    .unwrap()
    .join();
    for result in results {
        let (first, second, ended, floor, passed) = result.unwrap();
        assert!(first && second, "the floor did not rise: {floor}");
        assert!(ended, "the dataflow did not end with its input");
        assert_eq!((floor, passed), (14, 1));
    }
}
