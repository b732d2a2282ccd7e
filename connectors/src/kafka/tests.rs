//! Tests against the real broker that `make test` starts (its address in `MILLRACE_TEST_BROKER`).

use super::*;
use millrace_models::RawRecord;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn broker() -> Brokers {
    Brokers::new(std::env::var("MILLRACE_TEST_BROKER").expect(
        "MILLRACE_TEST_BROKER is unset: run the tests with `make test`, which starts the broker",
    ))
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn config(topic: &str, group: &str) -> KafkaSourceConfig {
    KafkaSourceConfig {
        bootstrap_servers: broker().servers().to_owned(),
        topic: topic.to_owned(),
        group_id: group.to_owned(),
        dead_letter_topic: format!("{topic}-dlq"),
        partitions: 4,
        idle_ms: 200,
        stop_after_records: None,
        event_time_field: None,
        on_missing_offsets: MissingOffsets::default(),
        kafka: BTreeMap::new(),
        kafka_file: None,
    }
}

/// Reads until `expected` records arrived, polling the readers in turn.
fn read_all(readers: &mut [KafkaReader], expected: usize) -> Vec<RawRecord> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < expected {
        assert!(
            Instant::now() < deadline,
            "read {} of {expected} records",
            out.len()
        );
        let mut got = 0;
        for reader in readers.iter_mut() {
            got += reader.poll_into(&mut out, 1000).unwrap_or(0);
        }
        if got == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    out
}

/// `line 0`, `line 1`, … up to `n`.
fn lines(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("line {i}")).collect()
}

/// A new topic named after `name` with `partitions` partitions, holding `lines(n)` written in
/// turn to its first `written` partitions.
fn topic_of_lines(name: &str, partitions: i32, written: i32, n: usize) -> String {
    let topic = unique(name);
    runtime()
        .block_on(create_topics(&broker(), &[&topic], partitions))
        .unwrap();
    let mut producer = LineProducer::new(&broker(), &topic, written).unwrap();
    for line in lines(n) {
        producer.send(line.as_bytes()).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(producer.sent(), n as u64);
    topic
}

/// A new topic named after `name` with `partitions` partitions, holding `lines(100)` written in
/// turn to all of them, flushed every 7 lines: record batches of a few records each.
fn topic_in_batches_of_7(name: &str, partitions: i32) -> String {
    let topic = unique(name);
    runtime()
        .block_on(create_topics(&broker(), &[&topic], partitions))
        .unwrap();
    let mut producer = LineProducer::new(&broker(), &topic, partitions).unwrap();
    for (i, line) in lines(100).iter().enumerate() {
        producer.send(line.as_bytes()).unwrap();
        if i % 7 == 6 {
            producer.flush(Duration::from_secs(30)).unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    topic
}

#[test]
fn every_record_is_read_exactly_once_with_1_2_and_4_workers() {
    let topic = topic_of_lines("source", 4, 4, 2000);
    let lines = lines(2000);

    for workers in [1usize, 2, 4] {
        let config = config(&topic, &unique("group"));
        let partitions = KafkaReader::topic_partitions(&config, &broker()).unwrap();
        assert_eq!(partitions, 4);
        let mut readers: Vec<KafkaReader> = (0..workers)
            .map(|w| KafkaReader::assign(&config, &broker(), w, workers, partitions).unwrap())
            .collect();
        let mut owned: Vec<i32> = readers
            .iter()
            .flat_map(|r| r.partitions().to_vec())
            .collect();
        owned.sort_unstable();
        assert_eq!(owned, vec![0, 1, 2, 3], "{workers} workers");

        let records = read_all(&mut readers, lines.len());
        // The batch answer: each line once; per partition, offsets 0..n in order.
        let mut got: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8(r.payload.clone()).unwrap())
            .collect();
        got.sort();
        let mut want = lines.clone();
        want.sort();
        assert_eq!(got, want, "{workers} workers");
        let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for r in &records {
            per_partition.entry(r.partition).or_default().push(r.offset);
        }
        for offsets in per_partition.values() {
            assert!(offsets.iter().enumerate().all(|(i, &o)| o == i as i64));
        }
        // The producer stamps each record with its create time; the reader hands it on.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            records.iter().all(|r| r
                .timestamp_ms
                .is_some_and(|t| t <= now && t + 600_000 > now)),
            "{workers} workers: records without a recent timestamp"
        );
        // tansu 0.6 answers ListOffsets with per-batch offsets, so its watermarks are not
        // checked against the record count here; the probe must still answer.
        let probe = WatermarkProbe::new(&broker(), &topic, partitions).unwrap();
        assert_eq!(probe.high_watermarks().unwrap().len(), 4);
    }
}

#[test]
fn a_reader_resumes_at_sought_positions_and_commits_them_to_its_group() {
    // Small record batches, so that the sought offset falls inside one.
    let topic = topic_in_batches_of_7("seek", 2);
    let group = unique("group");
    let config = config(&topic, &group);
    let all = read_all(
        &mut [KafkaReader::assign(&config, &broker(), 0, 1, 2).unwrap()],
        100,
    );
    let count = |p: i32| all.iter().filter(|r| r.partition == p).count() as i64;
    let (n0, n1) = (count(0), count(1));

    // A restarted reader resumes partition 0 at offset 11 (inside a batch) and partition 1 at
    // its end: what follows is exactly partition 0's records from 11 on.
    let mut readers = vec![KafkaReader::assign(&config, &broker(), 0, 1, 2).unwrap()];
    readers[0].seek(&[(0, 11), (1, n1)]).unwrap();
    let again = read_all(&mut readers, (n0 - 11) as usize);
    assert!(again.iter().all(|r| r.partition == 0 && r.offset >= 11));
    let mut offsets: Vec<i64> = again.iter().map(|r| r.offset).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (11..n0).collect::<Vec<_>>());

    readers[0].commit(&[(0, 11), (1, n1)]).unwrap();
    let probe: BaseConsumer = broker()
        .client_config()
        .set("group.id", &group)
        .create()
        .unwrap();
    let mut wanted = rdkafka::TopicPartitionList::new();
    wanted.add_partition(&topic, 0);
    wanted.add_partition(&topic, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let committed = probe
            .committed_offsets(wanted.clone(), Duration::from_secs(5))
            .unwrap();
        let got: Vec<rdkafka::Offset> = committed.elements().iter().map(|e| e.offset()).collect();
        if got == [rdkafka::Offset::Offset(11), rdkafka::Offset::Offset(n1)] {
            break;
        }
        assert!(Instant::now() < deadline, "committed offsets: {got:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// tansu 0.6 answers a fetch from inside a record batch with the batch after it, and librdkafka
/// drops what it had fetched of a partition when it pauses it: a resumed partition must be
/// sought back, or the rest of the batch it was paused in is lost.
#[test]
fn a_paused_partition_resumes_with_its_next_record() {
    // Small record batches, so that the reader pauses inside one.
    let topic = topic_in_batches_of_7("pause", 1);
    let config = config(&topic, &unique("group"));
    let mut reader = KafkaReader::assign(&config, &broker(), 0, 1, 1).unwrap();
    let mut out = Vec::new();
    let mut pause_at = vec![90, 45, 10, 3];
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < 100 {
        assert!(
            Instant::now() < deadline,
            "read {} of 100 records: offsets {:?}",
            out.len(),
            out.iter().map(|r: &RawRecord| r.offset).collect::<Vec<_>>()
        );
        if reader.poll_into(&mut out, 1).unwrap_or(0) == 0 {
            std::thread::sleep(Duration::from_millis(5));
        } else if pause_at.last() == Some(&out.len()) {
            pause_at.pop();
            reader.pause(0, true).unwrap();
            // Nothing comes while paused.
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(reader.poll_into(&mut out, 100).unwrap(), 0);
            reader.pause(0, false).unwrap();
        }
    }
    let offsets: Vec<i64> = out.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..100).collect::<Vec<_>>());
}

#[test]
fn a_reader_knows_which_partitions_it_has_read_to_their_end() {
    // Three partitions; the producer writes to the first two only.
    let topic = topic_of_lines("ends", 3, 2, 50);
    let config = config(&topic, &unique("group"));
    let mut reader = KafkaReader::assign(&config, &broker(), 0, 1, 3).unwrap();
    let until_all_at_end = |reader: &mut KafkaReader| {
        let mut records = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(0..3).all(|p| reader.at_end(p)) {
            assert!(Instant::now() < deadline, "read {} records", records.len());
            // Errors (a dropped connection, say) are the client's to recover from.
            if reader.poll_into(&mut records, 1000).unwrap_or(0) == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        records
    };
    // The ends come after every record, the empty partition's as well.
    assert_eq!(until_all_at_end(&mut reader).len(), 50);

    // A seek starts over: the ends come again only after the records from the sought
    // positions (without the reset, nothing would be read here).
    reader.seek(&[(0, 20)]).unwrap();
    let again = until_all_at_end(&mut reader);
    let from_0: Vec<i64> = again
        .iter()
        .filter(|r| r.partition == 0)
        .map(|r| r.offset)
        .collect();
    assert_eq!(from_0, (20..25).collect::<Vec<_>>());
}

/// Reads `topic` from the start until `expected` messages arrived or `wait` passed, as (value,
/// headers).
fn read_topic(
    topic: &str,
    expected: usize,
    wait: Duration,
) -> Vec<(Vec<u8>, BTreeMap<String, String>)> {
    let consumer: BaseConsumer = broker()
        .client_config()
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while Instant::now() < deadline && out.len() < expected {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            let headers = text_headers(&message);
            out.push((message.payload().unwrap_or_default().to_vec(), headers));
        }
    }
    out
}

#[test]
fn an_output_keeps_its_payload_and_headers_and_names_its_epoch() {
    let topic = unique("dlq");
    runtime()
        .block_on(create_topics(&broker(), &[&topic], 1))
        .unwrap();
    let lost = Arc::new(AtomicU64::new(0));
    let mut sink = OutputSink::new(
        &broker(),
        &topic,
        "dead letters",
        lost.clone(),
        Undelivered::Block,
    )
    .unwrap();
    sink.send(Output {
        epoch: 5,
        key: None,
        payload: b"bad\tline",
        headers: &[("error_type", b"field_count"), ("source_offset", b"17")],
    })
    .unwrap();
    sink.flush().unwrap();
    assert_eq!(sink.unsettled_from(), None, "acknowledged, so settled");

    let read = read_topic(&topic, 1, Duration::from_secs(30));
    assert_eq!(read.len(), 1, "no dead letter arrived");
    let (payload, headers) = &read[0];
    assert_eq!(payload, b"bad\tline");
    assert_eq!(headers["error_type"], "field_count");
    assert_eq!(headers["source_offset"], "17");
    assert_eq!(headers[EPOCH_HEADER], "5");
    assert_eq!(lost.load(Ordering::Relaxed), 0);
}

/// One message of `epoch`.
fn output(epoch: u64) -> Output<'static> {
    Output {
        epoch,
        key: None,
        payload: b"p",
        headers: &[],
    }
}

/// A sink made by `make` (from the brokers and its lost-message counter) on an embedded broker
/// that becomes unreachable once a first message went through; messages of epochs 1 to 3 are
/// then sent. The broker, the sink and its count of lost messages.
fn sink_in_an_outage(
    make: impl FnOnce(&Brokers, Arc<AtomicU64>) -> OutputSink,
) -> (EmbeddedBroker, OutputSink, Arc<AtomicU64>) {
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("out", 1).unwrap();
    let lost = Arc::new(AtomicU64::new(0));
    let mut sink = make(&broker.brokers(), lost.clone());
    // The first message connects the producer (on a loaded machine it may itself time out).
    sink.send(output(0)).unwrap();
    sink.flush().unwrap();
    lost.store(0, Ordering::Relaxed);
    broker.set_reachable(false).unwrap();
    for epoch in 1..=3 {
        sink.send(output(epoch)).unwrap();
    }
    assert_eq!(sink.unsettled_from(), Some(1));
    (broker, sink, lost)
}

/// Messages the broker never acknowledges (it is unreachable past the message timeout) are
/// counted as lost, not dropped silently; until then their epochs are unsettled.
#[test]
fn an_output_sink_counts_what_it_loses() {
    let (_broker, mut sink, lost) = sink_in_an_outage(|brokers, lost| {
        let timeout = Some(Duration::from_secs(3));
        OutputSink::with_message_timeout(brokers, "out", "predictions", lost, timeout).unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while lost.load(Ordering::Relaxed) < 3 {
        assert!(Instant::now() < deadline, "{lost:?} lost");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = sink.flush();
    assert_eq!(lost.load(Ordering::Relaxed), 3);
    assert_eq!(sink.unsettled_from(), None, "lost and counted, so settled");
}

/// A blocking sink (`Undelivered::Block`) keeps every message through an outage longer than a
/// dropping sink's timeout: none is lost, and their epochs stay unsettled until the broker
/// acknowledges them.
#[test]
fn a_blocking_output_sink_rides_out_an_outage() {
    let (broker, mut sink, lost) = sink_in_an_outage(|brokers, lost| {
        OutputSink::new(brokers, "out", "predictions", lost, Undelivered::Block).unwrap()
    });
    // Longer than the dropping sink above waits before it counts its messages lost.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(lost.load(Ordering::Relaxed), 0);
    assert_eq!(sink.unsettled_from(), Some(1));
    broker.set_reachable(true).unwrap();
    sink.flush().unwrap();
    assert_eq!(sink.unsettled_from(), None, "acknowledged");
    assert_eq!(lost.load(Ordering::Relaxed), 0);
}

/// The embedded broker keeps 5 MiB per partition (librdkafka's mock cluster drops the oldest
/// record batches past it), as retention would: a position before what is left either fails
/// the reader, naming what is gone, or is skipped with the exact count of records lost.
#[test]
fn a_position_retention_deleted_fails_or_is_skipped_and_counted() {
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("kept", 1).unwrap();
    let mut producer = LineProducer::new(&broker.brokers(), "kept", 1).unwrap();
    let payload = vec![b'x'; 100_000];
    for _ in 0..120 {
        producer.send(&payload).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let probe: BaseConsumer = broker.brokers().client_config().create().unwrap();
    let (low, high) = probe
        .fetch_watermarks("kept", 0, Duration::from_secs(10))
        .unwrap();
    assert!(low > 5 && high == 120, "{low}..{high}");
    let failing = KafkaSourceConfig {
        bootstrap_servers: broker.bootstrap_servers(),
        partitions: 1,
        ..config("kept", "g")
    };
    assert_eq!(failing.on_missing_offsets, MissingOffsets::Fail);
    let mut reader = KafkaReader::assign(&failing, &broker.brokers(), 0, 1, 1).unwrap();
    let gone = reader.seek(&[(0, 5)]).unwrap_err();
    assert!(
        matches!(gone, crate::Error::OffsetGone { offset: 5, low: l, .. } if l == low),
        "{gone}"
    );
    assert!(gone.to_string().contains("on_missing_offsets"), "{gone}");
    // A position the broker still has is no loss.
    reader.seek(&[(0, low + 1)]).unwrap();
    assert_eq!(reader.skipped_records(), 0);

    let skipping = KafkaSourceConfig {
        on_missing_offsets: MissingOffsets::Skip,
        ..failing
    };
    let mut reader = KafkaReader::assign(&skipping, &broker.brokers(), 0, 1, 1).unwrap();
    reader.seek(&[(0, 5)]).unwrap();
    assert_eq!(reader.skipped_records(), (low - 5) as u64);
    let mut readers = [reader];
    let records = read_all(&mut readers, (high - low) as usize);
    assert_eq!(records[0].offset, low);
    assert_eq!(records.len() as i64, high - low);
}

#[test]
fn event_time_comes_from_a_named_field_or_else_the_kafka_timestamp() {
    let topic = unique("event-time");
    runtime()
        .block_on(create_topics(&broker(), &[&topic], 1))
        .unwrap();
    let mut producer = LineProducer::new(&broker(), &topic, 1).unwrap();
    let records = [
        r#"{"label": 0, "ts": 1000}"#,
        r#"{"label": 1, "ts": "2000"}"#,
        r#"{"label": 0}"#,
        r#"{"label": 0, "ts": "soon"}"#,
        "0\t1\t2",
    ];
    for (i, record) in records.iter().enumerate() {
        producer
            .send_at(record.as_bytes(), Some(5_000 + i as i64))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let config = KafkaSourceConfig {
        event_time_field: Some("ts".into()),
        on_missing_offsets: MissingOffsets::default(),
        kafka: BTreeMap::new(),
        kafka_file: None,
        ..config(&topic, &unique("group"))
    };
    let mut readers = vec![KafkaReader::assign(&config, &broker(), 0, 1, 1).unwrap()];
    let read = read_all(&mut readers, records.len());
    let times: Vec<Option<u64>> = read.iter().map(|r| r.timestamp_ms).collect();
    assert_eq!(
        times,
        [
            Some(1000),
            Some(2000),
            Some(5_002),
            Some(5_003),
            Some(5_004)
        ]
    );
    assert_eq!(readers[0].missing_event_times(), 3);
}

#[test]
fn embedded_broker_serves_standard_clients() {
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("demo", 2).unwrap();
    let servers = broker.bootstrap_servers();
    assert!(
        servers.starts_with("127.0.0.1:") || servers.starts_with("localhost:"),
        "{servers}"
    );
    let mut producer = LineProducer::new(&broker.brokers(), "demo", 2).unwrap();
    for i in 0..10 {
        producer.send(format!("{i}").as_bytes()).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let config = KafkaSourceConfig {
        bootstrap_servers: servers.clone(),
        ..config("demo", "g")
    };
    let mut readers = vec![KafkaReader::assign(&config, &broker.brokers(), 0, 1, 2).unwrap()];
    assert_eq!(read_all(&mut readers, 10).len(), 10);
}
