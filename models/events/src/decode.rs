//! Why a record or a predict instance cannot be read as an event of its schema: the reason a
//! dead letter carries, and the 400 a predict request gets.

/// Why a record or an instance is not a well-formed event of its schema.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A JSON instance names a field the schema does not have.
    #[error("unknown field `{0}`")]
    UnknownField(String),
    /// A JSON record or instance is not an object.
    #[error("an instance must be a JSON object of the schema's fields")]
    NotAnObject,
    /// A record is not valid JSON.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// The label field holds neither a positive nor a negative value (or is absent).
    #[error("field `{0}` is neither a positive nor a negative label")]
    LabelValue(String),
    /// A delimited line has another number of columns than its schema declares.
    #[error("expected {expected} columns, got {got}")]
    ColumnCount {
        /// The schema's columns.
        expected: usize,
        /// The line's.
        got: usize,
    },
    /// A JSON instance gives a field a value of a type it cannot hold (an object, a boolean, an
    /// array where one value goes).
    #[error("field `{0}` cannot hold a JSON value of that type")]
    WrongType(String),
    /// A libFM line holds something other than `index:value` after its label.
    #[error("field `features`: {0:?} is not index:value")]
    LibfmPair(String),
    /// The schema's decoder refused the record (or the job has no decoder of that name).
    #[error("the decoder `{decoder}` cannot read the record: {reason}")]
    Decoder {
        /// The decoder's name.
        decoder: String,
        /// Why.
        reason: String,
    },
}

/// A record format of one's own (`[schema] decoder = "NAME"`): turns a record's bytes into the
/// JSON object the schema's fields are read from, as `format = "json"` reads them. Registered
/// under its name in the job's catalog.
pub trait Decoder: Send + Sync {
    /// The record as a JSON object of its fields.
    ///
    /// # Errors
    ///
    /// Why the bytes are not a record; the record goes to the dead letters with it.
    fn decode(&self, payload: &[u8]) -> Result<serde_json::Value, String>;
}

impl DecodeError {
    /// A short, fixed label for the kind of error, for metrics and dead-letter headers.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::UnknownField(_) => "unknown_field",
            DecodeError::NotAnObject => "not_an_object",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::LabelValue(_) => "label",
            DecodeError::ColumnCount { .. } => "field_count",
            DecodeError::LibfmPair(_) => "libfm_pair",
            DecodeError::WrongType(_) => "wrong_type",
            DecodeError::Decoder { .. } => "decoder",
        }
    }
}
