//! The sample buffer of one worker: a directory of segments, each an Arrow IPC file of the
//! rows of consecutive epochs, with retention by event-time age and by bytes.
//!
//! Rows are appended epoch by epoch to the open segment; it is closed (its footer written, the
//! file synced and renamed to `*.arrow`) once it holds `segment_bytes` or has been open
//! `segment_ms`, and whenever a
//! checkpoint takes the buffer's [`BufferState`], so that every row of the epochs a checkpoint
//! covers is in a whole file the state lists.
//!
//! Retention retires the oldest whole segments: those whose newest event is more than
//! `max_age_ms` older than the newest event the buffer has seen, then the oldest ones while the
//! buffer holds more than `max_bytes`. With checkpoints, a retired segment is renamed
//! `*.arrow.retired` (readers no longer see it) and deleted once the store keeps no checkpoint
//! older than its retirement epoch: until then a restore (from an older kept checkpoint, or the
//! one a cluster agrees on) may bring it back.
//!
//! [`SampleBuffer::restore`] makes the directory what the state lists: its segments whole and
//! live, every other file of the buffer (newer segments, the one that was being written,
//! retired ones) gone. The restored job then appends the epochs after the checkpoint again, so
//! its buffer holds the rows the uninterrupted job's would (cut into segments at other
//! places when the checkpoints fell elsewhere, so retention may retire them at other times).

use crate::error::SampleError;
use crate::format::{SampleFields, SampleRows};
use crate::segment::{open_name, read_segment, SegmentWriter, OPEN_SUFFIX, SEGMENT_SUFFIX};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The suffix of a retired segment waiting for a checkpoint that no longer lists it.
const RETIRED_SUFFIX: &str = ".retired";

/// How much the buffer keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Segments whose newest event is this much older (event time) than the newest event the
    /// buffer has seen are retired.
    pub max_age_ms: u64,
    /// The most bytes of segments, the open one included, before the oldest are retired.
    pub max_bytes: u64,
    /// A segment is closed once it holds this many bytes.
    pub segment_bytes: u64,
    /// A segment is also closed once it has been open this many milliseconds (processing
    /// time, looked at when rows are appended), so that a reader sees a slow stream's rows; 0
    /// for no limit.
    pub segment_ms: u64,
}

/// A whole segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Its file name in the buffer's directory.
    pub name: String,
    /// The epoch of its first rows.
    pub first_epoch: u64,
    /// The epoch of its last rows.
    pub last_epoch: u64,
    /// Its newest event time, milliseconds since the Unix epoch (0 when no row had one).
    pub newest_event_ms: u64,
    /// Its rows.
    pub rows: u64,
    /// Its bytes.
    pub bytes: u64,
}

/// A segment retired in an epoch, deleted once every checkpoint the store keeps is of that
/// epoch or a later one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    /// The epoch that retired it.
    pub epoch: u64,
    /// The segment.
    pub segment: Segment,
}

/// What a checkpoint holds of a buffer: its whole segments and where it stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferState {
    /// The live segments, oldest first.
    pub live: Vec<Segment>,
    /// Retired segments whose files wait for a newer checkpoint.
    pub retired: Vec<Retired>,
    /// The number in the next segment's name.
    pub next: u64,
    /// The newest event time seen, milliseconds since the Unix epoch.
    pub newest_event_ms: u64,
}

/// One worker's sample buffer (see the [module](self)).
pub struct SampleBuffer {
    dir: PathBuf,
    fields: SampleFields,
    retention: Retention,
    state: BufferState,
    open: Option<(SegmentWriter, Segment, Instant)>,
    /// Whether retired files wait until no kept checkpoint lists them (a checkpointed job)
    /// or go at once.
    checkpointed: bool,
    /// Segments retired since the buffer was made.
    retired: u64,
}

impl std::fmt::Debug for SampleBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleBuffer")
            .field("dir", &self.dir)
            .field("retention", &self.retention)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl SampleBuffer {
    /// An empty buffer in `dir` (made if missing), deleting the buffer files a former run left
    /// there. `checkpointed`: whether the job checkpoints (see the [module](self)).
    ///
    /// # Errors
    ///
    /// [`SampleError::Io`] when the directory cannot be made or cleared.
    pub fn create(
        dir: &Path,
        fields: SampleFields,
        retention: Retention,
        checkpointed: bool,
    ) -> Result<Self, SampleError> {
        let buffer = SampleBuffer {
            dir: dir.to_owned(),
            fields,
            retention,
            state: BufferState::default(),
            open: None,
            checkpointed,
            retired: 0,
        };
        buffer.keep_only(&[])?;
        Ok(buffer)
    }

    /// The buffer as `state` left it in `dir`: its live segments whole, every other buffer file
    /// deleted. Returns it and the live segments whose files were missing (dropped, and logged:
    /// the buffer is a window of recent rows, not the job's truth).
    ///
    /// # Errors
    ///
    /// [`SampleError::Io`] when the directory cannot be read or changed.
    pub fn restore(
        dir: &Path,
        fields: SampleFields,
        retention: Retention,
        checkpointed: bool,
        state: BufferState,
    ) -> Result<(Self, Vec<Segment>), SampleError> {
        let mut buffer = SampleBuffer {
            dir: dir.to_owned(),
            fields,
            retention,
            state,
            open: None,
            checkpointed,
            retired: 0,
        };
        buffer.state.retired.clear();
        let mut missing = Vec::new();
        let live = std::mem::take(&mut buffer.state.live);
        for segment in live {
            let path = buffer.path(&segment.name);
            let retired = retired_name(&path);
            if !path.exists() && retired.exists() {
                std::fs::rename(&retired, &path).map_err(SampleError::io(&path))?;
            }
            if path.exists() {
                buffer.state.live.push(segment);
            } else {
                tracing::warn!(segment = %path.display(), "a checkpointed sample segment is missing");
                missing.push(segment);
            }
        }
        let keep: Vec<String> = buffer.state.live.iter().map(|s| s.name.clone()).collect();
        buffer.keep_only(&keep)?;
        Ok((buffer, missing))
    }

    /// Deletes every buffer file of the directory but the segments named `keep`.
    fn keep_only(&self, keep: &[String]) -> Result<(), SampleError> {
        std::fs::create_dir_all(&self.dir).map_err(SampleError::io(&self.dir))?;
        let entries = std::fs::read_dir(&self.dir).map_err(SampleError::io(&self.dir))?;
        for entry in entries {
            let entry = entry.map_err(SampleError::io(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = [SEGMENT_SUFFIX, OPEN_SUFFIX, RETIRED_SUFFIX]
                .iter()
                .any(|suffix| name.ends_with(suffix));
            if ours && !keep.contains(&name) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(SampleError::io(&path))?;
            }
        }
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The state a checkpoint would hold now, but for the open segment's rows.
    pub fn state(&self) -> &BufferState {
        &self.state
    }

    /// Segments retired since the buffer was made or restored.
    pub fn retired(&self) -> u64 {
        self.retired
    }

    /// The whole, live segments, oldest first.
    pub fn live(&self) -> &[Segment] {
        &self.state.live
    }

    /// Rows in the buffer, the open segment's included.
    pub fn rows(&self) -> u64 {
        self.state.live.iter().map(|s| s.rows).sum::<u64>()
            + self.open.as_ref().map_or(0, |(_, s, _)| s.rows)
    }

    /// Bytes of the buffer's segments, the open one's written so far included.
    pub fn bytes(&self) -> u64 {
        self.state.live.iter().map(|s| s.bytes).sum::<u64>()
            + self.open.as_ref().map_or(0, |(w, _, _)| w.bytes())
    }

    /// Appends the rows of `epoch` (epochs in order), closing the open segment once it holds
    /// `segment_bytes`.
    ///
    /// # Errors
    ///
    /// When the rows cannot be written; the open segment is then abandoned (its file deleted)
    /// and the next rows start a new one.
    pub fn append(&mut self, epoch: u64, rows: &SampleRows) -> Result<(), SampleError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (mut writer, mut segment, opened) = match self.open.take() {
            Some(open) => open,
            None => {
                let (writer, segment) = self.start(epoch)?;
                (writer, segment, Instant::now())
            }
        };
        if let Err(error) = writer.write(rows) {
            let open = open_name(&self.path(&segment.name));
            drop(writer);
            let _ = std::fs::remove_file(open);
            return Err(error);
        }
        let newest = rows
            .event_times
            .iter()
            .flatten()
            .filter_map(|&t| u64::try_from(t).ok())
            .max()
            .unwrap_or(0);
        segment.last_epoch = epoch;
        segment.rows += rows.len() as u64;
        segment.newest_event_ms = segment.newest_event_ms.max(newest);
        self.state.newest_event_ms = self.state.newest_event_ms.max(newest);
        let old = self.retention.segment_ms > 0
            && opened.elapsed() >= Duration::from_millis(self.retention.segment_ms);
        let full = writer.bytes() >= self.retention.segment_bytes || old;
        self.open = Some((writer, segment, opened));
        if full {
            self.close()?;
        }
        Ok(())
    }

    /// Starts a segment whose first rows are of `epoch`.
    fn start(&mut self, epoch: u64) -> Result<(SegmentWriter, Segment), SampleError> {
        let name = format!("{epoch:020}-{:06}{SEGMENT_SUFFIX}", self.state.next);
        self.state.next += 1;
        let writer = SegmentWriter::create(&self.path(&name), &self.fields)?;
        Ok((
            writer,
            Segment {
                name,
                first_epoch: epoch,
                last_epoch: epoch,
                newest_event_ms: 0,
                rows: 0,
                bytes: 0,
            },
        ))
    }

    /// Closes the open segment, if any: it becomes a whole, live one.
    ///
    /// # Errors
    ///
    /// When its footer cannot be written or it cannot be synced or renamed; its rows are then
    /// lost from the buffer.
    pub fn close(&mut self) -> Result<(), SampleError> {
        let Some((writer, mut segment, _)) = self.open.take() else {
            return Ok(());
        };
        match writer.finish() {
            Ok(bytes) => {
                segment.bytes = bytes;
                self.state.live.push(segment);
                Ok(())
            }
            Err(error) => {
                let _ = std::fs::remove_file(open_name(&self.path(&segment.name)));
                Err(error)
            }
        }
    }

    /// Applies the retention at the end of `epoch` (see the [module](self)).
    ///
    /// # Errors
    ///
    /// When a retired segment cannot be renamed or deleted.
    pub fn retain(&mut self, epoch: u64) -> Result<(), SampleError> {
        let newest = self.state.newest_event_ms;
        let max_age = self.retention.max_age_ms;
        let too_old = |s: &Segment| {
            s.newest_event_ms > 0 && s.newest_event_ms.saturating_add(max_age) < newest
        };
        while let Some(at) = self.state.live.iter().position(too_old) {
            self.retire_live(epoch, at)?;
        }
        while !self.state.live.is_empty() && self.bytes() > self.retention.max_bytes {
            self.retire_live(epoch, 0)?;
        }
        Ok(())
    }

    /// Retires the live segment `at`; it stays live when that fails.
    fn retire_live(&mut self, epoch: u64, at: usize) -> Result<(), SampleError> {
        let segment = self.state.live.remove(at);
        let kept = segment.clone();
        self.retire(epoch, segment).inspect_err(|_| {
            self.state.live.insert(at, kept);
        })
    }

    fn retire(&mut self, epoch: u64, segment: Segment) -> Result<(), SampleError> {
        self.retired += 1;
        let path = self.path(&segment.name);
        if self.checkpointed {
            let retired = retired_name(&path);
            std::fs::rename(&path, &retired).map_err(SampleError::io(&path))?;
            self.state.retired.push(Retired { epoch, segment });
        } else {
            std::fs::remove_file(&path).map_err(SampleError::io(&path))?;
        }
        Ok(())
    }

    /// The state for a checkpoint: closes the open segment first, so that every row appended
    /// so far is in a segment the state lists.
    ///
    /// # Errors
    ///
    /// When the open segment cannot be closed.
    pub fn checkpoint(&mut self) -> Result<BufferState, SampleError> {
        self.close()?;
        Ok(self.state.clone())
    }

    /// Says that the oldest checkpoint the store keeps is of `epoch`; deletes the segments
    /// retired in that epoch or before it (no kept checkpoint lists them: a checkpoint of
    /// epoch `c` lists the segments retired after `c`).
    ///
    /// # Errors
    ///
    /// When a file cannot be deleted (it is tried again next time).
    pub fn kept_from(&mut self, epoch: u64) -> Result<(), SampleError> {
        let (gone, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.state.retired)
            .into_iter()
            .partition(|r| r.epoch <= epoch);
        self.state.retired = waiting;
        for (i, retired) in gone.iter().enumerate() {
            let path = retired_name(&self.path(&retired.segment.name));
            if let Err(error) = std::fs::remove_file(&path) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    self.state.retired.extend(gone[i..].iter().cloned());
                    return Err(SampleError::io(&path)(error));
                }
            }
        }
        Ok(())
    }
}

/// The name of a retired segment.
fn retired_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(RETIRED_SUFFIX);
    PathBuf::from(name)
}

/// The whole segments of a buffer directory, oldest first (by name: first epoch, then number).
///
/// # Errors
///
/// [`SampleError::Io`] when the directory cannot be read.
pub fn segments(dir: &Path) -> Result<Vec<PathBuf>, SampleError> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(SampleError::io(dir))? {
        let entry = entry.map_err(SampleError::io(dir))?;
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(SEGMENT_SUFFIX)
        {
            paths.push(entry.path());
        }
    }
    paths.sort();
    Ok(paths)
}

/// Every row of the whole segments of a buffer directory, oldest first, with the features
/// the newest segment names.
///
/// # Errors
///
/// When the directory cannot be read, or segments name different features. A segment that
/// is gone by the time it is read (retired meanwhile) is passed over; one that is not a whole
/// sample file is logged and passed over.
pub fn read_buffer(dir: &Path) -> Result<(Option<SampleFields>, SampleRows), SampleError> {
    let mut rows = SampleRows::new();
    let mut named: Option<SampleFields> = None;
    for path in segments(dir)? {
        let (fields, batches) = match read_segment(&path) {
            Ok(read) => read,
            // Retired between the listing and the reading.
            Err(SampleError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                continue;
            }
            Err(error @ (SampleError::Format(_) | SampleError::Arrow(_))) => {
                tracing::warn!(segment = %path.display(), %error, "an unreadable sample segment is skipped");
                continue;
            }
            Err(error) => return Err(error),
        };
        if named.as_ref().is_some_and(|n| *n != fields) {
            return Err(SampleError::Format(format!(
                "{} names other features than the segments before it",
                path.display()
            )));
        }
        named = Some(fields);
        for batch in &batches {
            rows.extend(batch);
        }
    }
    Ok((named, rows))
}
