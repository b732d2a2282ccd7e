//! One segment of the buffer: an Arrow IPC file written batch by batch under a name ending in
//! `.open`, and renamed to its final name once its footer is written and it is on disk, so
//! that a reader listing `*.arrow` files only ever sees whole ones.

use crate::error::SampleError;
use crate::format::{SampleFields, SampleRows};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use std::fs::File;
use std::io::{BufWriter, Cursor, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The suffix of a whole segment.
pub const SEGMENT_SUFFIX: &str = ".arrow";
/// The suffix of a segment being written.
pub(crate) const OPEN_SUFFIX: &str = ".open";

/// A file that counts the bytes written to it.
struct Counting {
    file: File,
    bytes: u64,
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A segment being written.
pub(crate) struct SegmentWriter {
    open: PathBuf,
    done: PathBuf,
    fields: SampleFields,
    writer: FileWriter<BufWriter<Counting>>,
}

impl SegmentWriter {
    /// Starts the segment whose final name is `path`, writing `fields`' schema.
    pub(crate) fn create(path: &Path, fields: &SampleFields) -> Result<Self, SampleError> {
        let open = open_name(path);
        let file = File::create(&open).map_err(SampleError::io(&open))?;
        let writer = FileWriter::try_new_buffered(Counting { file, bytes: 0 }, &fields.schema())?;
        Ok(SegmentWriter {
            open,
            done: path.to_owned(),
            fields: fields.clone(),
            writer,
        })
    }

    /// Appends `rows` as one record batch, handed to the file (not synced) so that
    /// [`SegmentWriter::bytes`] counts it.
    pub(crate) fn write(&mut self, rows: &SampleRows) -> Result<(), SampleError> {
        self.writer.write(&rows.to_record_batch(&self.fields)?)?;
        self.writer.flush()?;
        Ok(())
    }

    /// The bytes written so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.writer.get_ref().get_ref().bytes
    }

    /// Writes the footer, syncs the file and gives it its final name; returns its bytes.
    pub(crate) fn finish(self) -> Result<u64, SampleError> {
        let SegmentWriter {
            open, done, writer, ..
        } = self;
        let counting = writer
            .into_inner()?
            .into_inner()
            .map_err(|e| SampleError::io(&open)(e.into_error()))?;
        counting.file.sync_all().map_err(SampleError::io(&open))?;
        std::fs::rename(&open, &done).map_err(SampleError::io(&done))?;
        Ok(counting.bytes)
    }
}

/// The name of `path` while it is written.
pub(crate) fn open_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(OPEN_SUFFIX);
    PathBuf::from(name)
}

/// Writes `batches` as the whole segment file `path` (written under `path.open`, then synced
/// and renamed): a sample file outside a buffer, for a benchmark or an export.
///
/// # Errors
///
/// When the file cannot be written, or a batch does not fit Arrow's offsets.
pub fn write_segment(
    path: &Path,
    fields: &SampleFields,
    batches: &[SampleRows],
) -> Result<u64, SampleError> {
    let mut writer = SegmentWriter::create(path, fields)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()
}

/// The features and rows of the segment file `path`, batch by batch.
///
/// # Errors
///
/// [`SampleError::Io`] when it cannot be read; [`SampleError::Format`] or
/// [`SampleError::Arrow`] when it is not a whole sample file.
pub fn read_segment(path: &Path) -> Result<(SampleFields, Vec<SampleRows>), SampleError> {
    let file = File::open(path).map_err(SampleError::io(path))?;
    read_batches(FileReader::try_new_buffered(file, None)?)
}

/// The features and rows of a sample file's `reader`, batch by batch.
fn read_batches<R: Read + Seek>(
    reader: FileReader<R>,
) -> Result<(SampleFields, Vec<SampleRows>), SampleError> {
    let fields = SampleFields::of_schema(&reader.schema())?;
    let mut batches = Vec::with_capacity(reader.num_batches());
    for batch in reader {
        batches.push(SampleRows::of_record_batch(&batch?, &fields)?);
    }
    Ok((fields, batches))
}

/// `rows` as the bytes of a sample file (Arrow IPC, as a segment holds them), to send to
/// another process.
///
/// # Errors
///
/// When the rows do not fit `fields` or Arrow's offsets.
pub fn encode_rows(fields: &SampleFields, rows: &SampleRows) -> Result<Vec<u8>, SampleError> {
    let mut writer = FileWriter::try_new(Vec::new(), &fields.schema())?;
    writer.write(&rows.to_record_batch(fields)?)?;
    writer.finish()?;
    Ok(writer.into_inner()?)
}

/// The features and rows of bytes [`encode_rows`] made, checked as a segment file's are: bytes
/// from another process are input like any other.
///
/// # Errors
///
/// [`SampleError::Format`] or [`SampleError::Arrow`] when they are not a whole sample file.
pub fn decode_rows(bytes: &[u8]) -> Result<(SampleFields, SampleRows), SampleError> {
    let (fields, batches) = read_batches(FileReader::try_new(Cursor::new(bytes), None)?)?;
    let mut rows = SampleRows::new();
    for batch in &batches {
        rows.extend(batch);
    }
    Ok((fields, rows))
}
