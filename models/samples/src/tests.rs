use super::*;
use millrace_events::fmap::{FeatureMapSpec, Layout};
use millrace_events::{CsrBatch, Schema};
use proptest::prelude::*;
use std::path::Path;

fn layout() -> Layout {
    FeatureMapSpec::criteo_default()
        .compile(&Schema::criteo())
        .expect("the Criteo spec compiles")
}

/// Rows of `layout`: per row a label, an event time and entries given as (feature, id, value),
/// ids taken modulo the feature's width; the bias slot first when the layout has one.
fn batch(layout: &Layout, version: u64, rows: &[RowSpec]) -> CsrBatch {
    let mut batch = CsrBatch::new(version, layout.dimension);
    for (label, time, entries) in rows {
        if layout.bias {
            batch.indices.push(0);
            batch.values.push(1.0);
        }
        for &(feature, id, value) in entries {
            let f = &layout.features[feature % layout.features.len()];
            batch.indices.push(f.offset + id % f.width);
            batch.values.push(value);
        }
        batch.indptr.push(batch.indices.len() as u32);
        batch.labels.push(*label);
        batch.times.push(*time);
    }
    batch
}

/// A row to make: label, event time, entries as (feature, id, value).
type RowSpec = (bool, u64, Vec<(usize, u32, f32)>);
type Rows = Vec<RowSpec>;
/// A row read plainly: label, event time, version, entries as (feature, id, value).
type Plain = (bool, u64, u64, Vec<(u16, u32, f32)>);

fn rows_strategy() -> impl Strategy<Value = Rows> {
    prop::collection::vec(
        (
            any::<bool>(),
            0u64..4_000_000_000_000,
            prop::collection::vec((0usize..64, any::<u32>(), -1e6f32..1e6), 0..12),
        ),
        0..40,
    )
}

/// The plain reading of `batch`: per row (label, time, version, entries as (feature, id,
/// value)), the bias left out.
fn plain(layout: &Layout, batch: &CsrBatch) -> Vec<Plain> {
    (0..batch.len())
        .map(|i| {
            let (indices, values) = batch.row(i);
            let entries = indices
                .iter()
                .zip(values)
                .filter_map(|(&slot, &value)| {
                    let (at, f) = layout
                        .features
                        .iter()
                        .enumerate()
                        .find(|(_, f)| f.offset <= slot && slot < f.offset + f.width)?;
                    Some((at as u16, slot - f.offset, value))
                })
                .collect();
            (batch.labels[i], batch.times[i], batch.version, entries)
        })
        .collect()
}

fn read_plain(rows: &SampleRows) -> Vec<Plain> {
    (0..rows.len())
        .map(|i| {
            let (fields, ids, values) = rows.entries(i);
            let entries = fields
                .iter()
                .zip(ids)
                .zip(values)
                .map(|((&f, &id), &v)| (f, id, v))
                .collect();
            let time = rows.event_times[i].map_or(0, |t| t as u64);
            (rows.labels[i], time, rows.versions[i], entries)
        })
        .collect()
}

proptest! {
    #[test]
    fn rows_survive_arrow_and_match_a_plain_reading(rows in rows_strategy(), version in 0u64..1000, epoch in 0u64..1000) {
        let layout = layout();
        let fields = SampleFields::of_layout(&layout).unwrap();
        let batch = batch(&layout, version, &rows);
        let samples = SampleRows::of_batch(&fields, epoch, &batch).unwrap();
        prop_assert_eq!(read_plain(&samples), plain(&layout, &batch));
        prop_assert!(samples.epochs.iter().all(|&e| e == epoch));
        let record = samples.to_record_batch(&fields).unwrap();
        let back = SampleRows::of_record_batch(&record, &fields).unwrap();
        prop_assert_eq!(back, samples);
    }

    #[test]
    fn rows_sent_as_bytes_come_back_whole(rows in rows_strategy(), version in 0u64..1000, epoch in 0u64..1000) {
        let layout = layout();
        let fields = SampleFields::of_layout(&layout).unwrap();
        let samples = SampleRows::of_batch(&fields, epoch, &batch(&layout, version, &rows)).unwrap();
        let (named, back) = decode_rows(&encode_rows(&fields, &samples).unwrap()).unwrap();
        prop_assert_eq!(named, fields);
        prop_assert_eq!(back, samples);
    }

    #[test]
    fn any_bytes_from_a_peer_are_an_error_or_rows(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_rows(&bytes);
    }

    #[test]
    fn any_bytes_as_a_segment_are_an_error_or_rows(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.arrow");
        std::fs::write(&path, &bytes).unwrap();
        let _ = read_segment(&path);
    }
}

/// A buffer of the Criteo layout in `dir`.
fn buffer(dir: &Path, retention: Retention, checkpointed: bool) -> SampleBuffer {
    let fields = SampleFields::of_layout(&layout()).unwrap();
    SampleBuffer::create(dir, fields, retention, checkpointed).unwrap()
}

const KEEP_ALL: Retention = Retention {
    max_age_ms: u64::MAX,
    max_bytes: u64::MAX,
    segment_bytes: 64 << 10,
    segment_ms: 0,
};

/// Epoch `e`'s rows: a few rows with event time `1000 * (e + 1)`.
fn epoch_rows(e: u64) -> SampleRows {
    let layout = layout();
    let fields = SampleFields::of_layout(&layout).unwrap();
    let rows: Rows = (0..5)
        .map(|r| {
            (
                (e + r) % 3 == 0,
                1000 * (e + 1),
                vec![(r as usize, e as u32, 1.0), (20, r as u32, 0.5)],
            )
        })
        .collect();
    SampleRows::of_batch(&fields, e, &batch(&layout, e, &rows)).unwrap()
}

fn all_rows(epochs: std::ops::Range<u64>) -> SampleRows {
    let mut all = SampleRows::new();
    for e in epochs {
        all.extend(&epoch_rows(e));
    }
    all
}

#[test]
fn a_buffer_reads_back_every_epoch_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let small = Retention {
        segment_bytes: 8192,
        ..KEEP_ALL
    };
    let mut buf = buffer(dir.path(), small, false);
    for e in 0..40 {
        buf.append(e, &epoch_rows(e)).unwrap();
        buf.retain(e).unwrap();
    }
    buf.close().unwrap();
    assert!(
        buf.live().len() > 1,
        "small segments roll: {:?}",
        buf.live()
    );
    assert_eq!(buf.rows(), 200);
    let (fields, rows) = read_buffer(dir.path()).unwrap();
    assert_eq!(fields.unwrap(), SampleFields::of_layout(&layout()).unwrap());
    assert_eq!(rows, all_rows(0..40));
    let on_disk: u64 = segments(dir.path())
        .unwrap()
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, buf.bytes());
}

#[test]
fn the_open_segment_is_not_read_until_it_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut buf = buffer(dir.path(), KEEP_ALL, false);
    buf.append(0, &epoch_rows(0)).unwrap();
    assert_eq!(read_buffer(dir.path()).unwrap().1.len(), 0);
    buf.close().unwrap();
    assert_eq!(read_buffer(dir.path()).unwrap().1, epoch_rows(0));
}

#[test]
fn retention_by_bytes_keeps_the_newest_segments_under_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        max_bytes: 12_000,
        segment_bytes: 4096,
        ..KEEP_ALL
    };
    let mut buf = buffer(dir.path(), retention, false);
    for e in 0..60 {
        buf.append(e, &epoch_rows(e)).unwrap();
        buf.retain(e).unwrap();
        assert!(
            buf.bytes() <= 12_000,
            "{} bytes after epoch {e}",
            buf.bytes()
        );
    }
    buf.close().unwrap();
    let (_, rows) = read_buffer(dir.path()).unwrap();
    let first = rows.epochs[0];
    assert!(first > 0, "the oldest epochs are gone");
    assert_eq!(
        rows,
        all_rows(first..60),
        "what is left is every epoch from {first} on"
    );
}

#[test]
fn retention_by_age_follows_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        max_age_ms: 10_000,
        segment_bytes: 1,
        ..KEEP_ALL
    };
    let mut buf = buffer(dir.path(), retention, false);
    for e in 0..30 {
        buf.append(e, &epoch_rows(e)).unwrap();
        buf.retain(e).unwrap();
    }
    let (_, rows) = read_buffer(dir.path()).unwrap();
    // Epoch e's events are at 1000·(e + 1): those within 10 s of the newest (30 s) stay.
    assert_eq!(rows, all_rows(19..30));
}

#[test]
fn a_restored_buffer_holds_what_the_uninterrupted_one_does() {
    let retention = Retention {
        max_age_ms: 15_000,
        segment_bytes: 4096,
        ..KEEP_ALL
    };
    // Uninterrupted, with checkpoints at epochs 9 and 19.
    let whole = tempfile::tempdir().unwrap();
    let mut buf = buffer(whole.path(), retention, true);
    for e in 0..30 {
        buf.append(e, &epoch_rows(e)).unwrap();
        buf.retain(e).unwrap();
        if e == 9 || e == 19 {
            buf.checkpoint().unwrap();
            buf.kept_from(e).unwrap();
        }
    }
    buf.close().unwrap();
    let want = read_buffer(whole.path()).unwrap().1;

    // Interrupted after epoch 24 (its open segment never finished), restored from epoch 19.
    let dir = tempfile::tempdir().unwrap();
    let mut buf = buffer(dir.path(), retention, true);
    let mut state = None;
    for e in 0..25 {
        buf.append(e, &epoch_rows(e)).unwrap();
        buf.retain(e).unwrap();
        if e == 9 || e == 19 {
            state = Some(buf.checkpoint().unwrap());
            buf.kept_from(e).unwrap();
        }
    }
    drop(buf);
    let fields = SampleFields::of_layout(&layout()).unwrap();
    let (mut buf, missing) =
        SampleBuffer::restore(dir.path(), fields, retention, true, state.unwrap()).unwrap();
    assert!(missing.is_empty());
    assert_eq!(read_buffer(dir.path()).unwrap().1, {
        let mut at_19 = SampleRows::new();
        for s in buf.live() {
            at_19.extend(&all_rows(s.first_epoch..s.last_epoch + 1));
        }
        at_19
    });
    for e in 20..30 {
        buf.append(e, &epoch_rows(e)).unwrap();
        buf.retain(e).unwrap();
    }
    buf.close().unwrap();
    assert_eq!(read_buffer(dir.path()).unwrap().1, want);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(SEGMENT_SUFFIX) && !n.ends_with(".retired"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_retired_segment_waits_for_a_checkpoint_that_does_not_list_it() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        max_age_ms: 2_000,
        segment_bytes: 1,
        ..KEEP_ALL
    };
    let mut buf = buffer(dir.path(), retention, true);
    for e in 0..3 {
        buf.append(e, &epoch_rows(e)).unwrap();
    }
    let state = buf.checkpoint().unwrap();
    buf.kept_from(2).unwrap();
    buf.append(3, &epoch_rows(3)).unwrap();
    buf.retain(3).unwrap();
    // Epoch 0's segment is retired: gone for readers, still on disk for the checkpoint.
    assert_eq!(read_buffer(dir.path()).unwrap().1, all_rows(1..4));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
    // A restore from the checkpoint of epoch 2 brings it back.
    let fields = SampleFields::of_layout(&layout()).unwrap();
    let (buf2, _) =
        SampleBuffer::restore(dir.path(), fields, retention, true, state.clone()).unwrap();
    assert_eq!(buf2.live(), state.live.as_slice());
    assert_eq!(read_buffer(dir.path()).unwrap().1, all_rows(0..3));
    // Without a restore, once the oldest checkpoint kept is of epoch 3 it goes.
    buf.kept_from(3).unwrap();
    assert!(!dir
        .path()
        .join(format!("{}.retired", state.live[0].name))
        .exists());
}

#[test]
fn a_fresh_buffer_clears_what_a_former_run_left() {
    let dir = tempfile::tempdir().unwrap();
    let mut buf = buffer(dir.path(), KEEP_ALL, false);
    buf.append(0, &epoch_rows(0)).unwrap();
    buf.close().unwrap();
    buf.append(1, &epoch_rows(1)).unwrap();
    drop(buf);
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let _ = buffer(dir.path(), KEEP_ALL, false);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["notes.txt".to_owned()]);
}

#[test]
fn a_segment_of_other_columns_is_an_error_naming_them() {
    use arrow_array::{RecordBatch, UInt64Array};
    use std::sync::Arc;
    let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
        "epoch",
        arrow_schema::DataType::UInt64,
        false,
    )]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(UInt64Array::from(vec![1u64]))],
    )
    .unwrap();
    let fields = SampleFields::of_layout(&layout()).unwrap();
    let error = SampleRows::of_record_batch(&batch, &fields)
        .unwrap_err()
        .to_string();
    for column in ["event_time", "label", "fields", "ids", "values"] {
        assert!(error.contains(column), "{error}");
    }
}

#[test]
fn a_retired_segment_stays_while_an_older_checkpoint_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        max_age_ms: 2_000,
        segment_bytes: 1,
        ..KEEP_ALL
    };
    let mut buf = buffer(dir.path(), retention, true);
    for e in 0..4 {
        buf.append(e, &epoch_rows(e)).unwrap();
        buf.retain(e).unwrap();
    }
    let first = buf.state().retired[0].clone();
    let retired = dir.path().join(format!("{}.retired", first.segment.name));
    assert!(retired.exists());
    buf.checkpoint().unwrap();
    buf.kept_from(first.epoch - 1).unwrap();
    buf.kept_from(first.epoch - 1).unwrap();
    assert!(
        retired.exists(),
        "a kept checkpoint older than its retirement lists it"
    );
    buf.kept_from(first.epoch).unwrap();
    assert!(!retired.exists(), "no kept checkpoint lists it");
}

#[test]
fn a_batch_refused_midway_appends_nothing() {
    let layout = layout();
    let fields = SampleFields::of_layout(&layout).unwrap();
    let mut rows = epoch_rows(0);
    let before = rows.clone();
    let mut bad = batch(&layout, 1, &[(true, 5, vec![(0, 1, 1.0)])]);
    bad.indices.push(u32::MAX);
    bad.values.push(1.0);
    *bad.indptr.last_mut().unwrap() += 1;
    assert!(rows.push_batch(&fields, 1, &bad).is_err());
    assert_eq!(rows, before);
}
