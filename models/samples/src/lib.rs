//! The sample buffer: each epoch's transformed rows, kept on disk as rolling Arrow IPC files
//! for the retraining stage (and for anyone who reads Arrow: PyArrow opens a segment with
//! `pyarrow.ipc.open_file`).
//!
//! - [`format`](mod@format): the rows' Arrow shape (per entry the feature it belongs to, its id within
//!   that feature and its value; per row the epoch, event time, FeatureMap version and label);
//! - [`SampleBuffer`]: one worker's directory of segments, with retention by event-time age and
//!   bytes, and a [`BufferState`] a checkpoint holds and a restore returns to;
//! - [`read_segment`] and [`read_buffer`]: reading them back; [`write_segment`]: one file of
//!   rows outside a buffer.
#![warn(missing_docs)]

pub mod buffer;
mod error;
pub mod format;
mod segment;

pub use buffer::{read_buffer, segments, BufferState, Retention, Retired, SampleBuffer, Segment};
pub use error::SampleError;
pub use format::{FieldInfo, SampleFields, SampleRows};
pub use segment::{decode_rows, encode_rows, read_segment, write_segment, SEGMENT_SUFFIX};

#[cfg(test)]
mod tests;
