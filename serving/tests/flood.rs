//! A flood of large predict requests, many more at once than the server takes: the ones past
//! its bounds are refused at once (503 past `max_in_flight`, 429 past the batcher's queue),
//! every request gets an answer, and the process's resident memory grows by what the bounds
//! allow, not by what the clients send (this test alone in its binary, so that its peak is its
//! own).

mod common;

use common::Server;
use millrace_serving::{BatchOptions, ServeOptions};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const CLIENTS: usize = 96;
const REQUESTS: usize = 6;
/// Instances per request, each with a long category value: a body of about 1.9 MiB.
const INSTANCES: usize = 1000;

/// The process's peak resident memory, in bytes (`VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[test]
fn a_flood_is_refused_at_once_and_memory_stays_bounded() {
    let server = Server::start(ServeOptions {
        max_in_flight: 8,
        max_batch: INSTANCES,
        batching: Some(BatchOptions {
            max_instances: INSTANCES,
            timeout: Duration::from_micros(500),
            threads: 1,
            max_queue: 2,
        }),
        ..ServeOptions::default()
    });
    let instances: Vec<String> = (0..INSTANCES)
        .map(|i| format!(r#"{{"I1":{},"C1":"{}"}}"#, i % 7, "x".repeat(1900)))
        .collect();
    let body = format!(r#"{{"instances":[{}]}}"#, instances.join(","));
    let predict = |body: &str| {
        let started = Instant::now();
        let (status, _) = server.request("POST", "/v1/models/ctr:predict", body);
        (status, started.elapsed())
    };
    let (status, _) = predict(&body);
    assert_eq!(status, 200, "one request alone is answered");
    let before = peak_rss();
    let started = Instant::now();
    let answers: Vec<(u16, Duration)> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| scope.spawn(|| (0..REQUESTS).map(|_| predict(&body)).collect::<Vec<_>>()))
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    let flood_seconds = started.elapsed().as_secs_f64();
    let grown = peak_rss().saturating_sub(before);
    let mut by_status: BTreeMap<u16, (usize, Duration)> = BTreeMap::new();
    for (status, took) in &answers {
        let entry = by_status.entry(*status).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(*took);
    }
    eprintln!(
        "{} requests of {} KiB from {CLIENTS} clients in {flood_seconds:.1} s: {by_status:?} (count, slowest); peak RSS grew {} MiB",
        answers.len(),
        body.len() >> 10,
        grown >> 20
    );
    let refused = by_status.get(&503).map_or(0, |s| s.0) + by_status.get(&429).map_or(0, |s| s.0);
    assert!(refused > 0, "{by_status:?}");
    assert!(
        by_status.get(&200).is_some_and(|s| s.0 > 0),
        "{by_status:?}"
    );
    assert!(
        by_status.keys().all(|s| matches!(s, 200 | 429 | 503)),
        "every request answered 200, 429 or 503: {by_status:?}"
    );
    // The clients send 96 × 1.9 MiB at once (each held parsed too, some 450 MiB); the server
    // holds at most 8 of them.
    assert!(
        grown < 128 << 20,
        "peak RSS grew {} MiB under the flood",
        grown >> 20
    );
    assert!(server.metric("millrace_serving_in_flight_refused_total") > 0);
}
