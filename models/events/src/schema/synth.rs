//! Synthetic events of any declared schema with a planted signal (`millrace gen --job`).
//!
//! Every feature field draws from its own heavy-tailed (log-uniform, roughly Zipf) vocabulary,
//! whose size depends on the field (10 to 100,000 values); numbers are log-distributed, tokens
//! are one to three values of a vocabulary. Half the fields carry signal: each of their values
//! (each number's log bucket, each token) has a fixed pseudo-random weight, and the click
//! probability is `sigmoid(bias + Σ weights)`. The generator knows each event's probability, so
//! the best AUC any model can reach on its events (the Bayes AUC) is measured on them. The
//! label is written as the schema's label rule reads it, the time field in its format (events
//! 100 ms of event time apart), skipped columns as a row number. The same seed gives the same
//! events on every platform.
//!
//! With [`SchemaGenerator::with_interactions`], the first three category fields of at most
//! 5,000 values also carry preferences, as users and items do: each value has a latent vector
//! of `rank` numbers, and every pair of the three fields adds `strength · (u · v) / √rank` to
//! the log-odds. No weight per value explains such a term; a model of the fields' embeddings
//! (a factorization machine, DeepFM) can learn it. (Interactions drawn independently per pair
//! of values, with no low-rank structure, are learnable by no model in one pass.)

use super::{Encoding, FieldType, LabelRule, RecordLayout, Role, Schema, TimeFormat};
use crate::hash::splitmix64 as splitmix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Vocabulary sizes, taken by field in turn.
const VOCAB: [u32; 7] = [12, 100_000, 300, 5_000, 40, 30_000, 1_500];
/// Base log-odds: about a 20% click rate.
const BIAS: f32 = -1.5;
/// The first event's time: 2024-01-01T00:00:00Z, in milliseconds.
pub const START_MS: i64 = 1_704_067_200_000;
/// Event time between two events.
const STEP_MS: i64 = 100;

/// One generated record.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// The record's bytes, as the schema's format holds them (without a newline).
    pub record: String,
    /// The click probability it was drawn with.
    pub probability: f32,
    /// Whether it is a click.
    pub label: bool,
}

/// Low-rank preferences between a few category fields (see the [module](self)).
#[derive(Clone, Debug, PartialEq)]
struct Interactions {
    /// The fields that interact.
    fields: Vec<usize>,
    rank: usize,
    strength: f32,
    /// The seed of the latent vectors.
    seed: u64,
}

/// An endless, seeded stream of a schema's records.
#[derive(Clone, Debug)]
pub struct SchemaGenerator {
    schema: Schema,
    record: RecordLayout,
    rng: ChaCha8Rng,
    seed: u64,
    row: u64,
    interactions: Option<Interactions>,
}

impl SchemaGenerator {
    /// A generator of `schema`'s records for `seed`.
    pub fn new(schema: &Schema, seed: u64) -> Self {
        SchemaGenerator {
            schema: schema.clone(),
            record: schema.record(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            row: 0,
            interactions: None,
        }
    }

    /// The same stream with preferences of `rank` latent numbers per value between the first
    /// three category fields of at most 5,000 values, each pair adding
    /// `strength · (u · v) / √rank` to the log-odds (see the [module](self)), the latent
    /// vectors drawn from `seed` (the same for every stream of one dataset); none when the
    /// schema has fewer than two such fields or `rank` is 0.
    pub fn with_interactions(mut self, rank: usize, strength: f32, seed: u64) -> Self {
        let fields: Vec<usize> = (0..self.schema.fields.len())
            .filter(|&f| {
                matches!(self.schema.field_type(f), Some(FieldType::Category))
                    && VOCAB[f % VOCAB.len()] <= 5_000
            })
            .take(3)
            .collect();
        self.interactions = (rank > 0 && fields.len() >= 2).then_some(Interactions {
            fields,
            rank,
            strength,
            seed,
        });
        self
    }

    /// The fields that interact, by name (empty without interactions).
    pub fn interacting_fields(&self) -> Vec<&str> {
        self.interactions.as_ref().map_or_else(Vec::new, |i| {
            i.fields
                .iter()
                .map(|&f| self.schema.fields[f].as_str())
                .collect()
        })
    }

    /// The log-odds the interactions add for the fields' ranks (`None`: the value is missing).
    fn interaction_margin(&self, ranks: &[Option<u64>]) -> f32 {
        let Some(inter) = &self.interactions else {
            return 0.0;
        };
        let latent = |field: usize, rank: u64, d: usize| {
            unit(
                inter.seed ^ 0x1a7e_4700,
                (field as u64) << 8 | d as u64,
                rank,
            )
        };
        let mut margin = 0.0;
        for (i, &a) in inter.fields.iter().enumerate() {
            for &b in &inter.fields[i + 1..] {
                let (Some(ra), Some(rb)) = (ranks[a], ranks[b]) else {
                    continue;
                };
                let dot: f32 = (0..inter.rank)
                    .map(|d| latent(a, ra, d) * latent(b, rb, d))
                    .sum();
                margin += inter.strength * dot / (inter.rank as f32).sqrt();
            }
        }
        margin
    }

    /// The header line a file of these records starts with, when the schema declares one.
    pub fn header(&self) -> Option<String> {
        let record = &self.record;
        let Encoding::Delimited { delimiter } = record.encoding else {
            return None;
        };
        let names: Vec<&str> = record.columns.iter().map(|c| c.name.as_str()).collect();
        record
            .header
            .then(|| names.join(&char::from(delimiter).to_string()))
    }

    /// The next record.
    pub fn next_record(&mut self) -> Generated {
        let mut margin = BIAS;
        // The categories' ranks, for the interactions (none without them).
        let mut ranks = vec![
            None;
            if self.interactions.is_some() {
                self.schema.fields.len()
            } else {
                0
            }
        ];
        let values: Vec<FieldValue> = (0..self.schema.fields.len())
            .map(|field| {
                let (value, weight, rank) = self.field_value(field);
                margin += weight;
                if let Some(slot) = ranks.get_mut(field) {
                    *slot = rank;
                }
                value
            })
            .collect();
        margin += self.interaction_margin(&ranks);
        let probability = crate::logistic::sigmoid(margin);
        let label = self.rng.random::<f32>() < probability;
        let record = &self.record;
        let label_text = label_text(&record.label, label);
        let time = START_MS + self.row as i64 * STEP_MS;
        let time_text = time_text(&record.time_format, time);
        let row = self.row;
        self.row += 1;
        let text = match record.encoding {
            Encoding::Delimited { delimiter } => {
                let cells: Vec<String> = record
                    .columns
                    .iter()
                    .map(|c| match c.role {
                        Role::Skip => row.to_string(),
                        Role::Label => label_text.clone(),
                        Role::Time => time_text.clone(),
                        Role::Feature(f) => values[f as usize].text(),
                    })
                    .collect();
                cells.join(&char::from(delimiter).to_string())
            }
            Encoding::Json => {
                let mut object = serde_json::Value::Object(serde_json::Map::new());
                for column in &record.columns {
                    let value = match column.role {
                        Role::Skip => continue,
                        Role::Label => serde_json::Value::from(label_text.clone()),
                        Role::Time => serde_json::Value::from(time_text.clone()),
                        Role::Feature(f) => values[f as usize].json(),
                    };
                    insert_path(&mut object, &column.name, value);
                }
                object.to_string()
            }
            Encoding::Libfm => {
                let mut line = label_text;
                if let Some(FieldValue::Tokens(tokens, _)) = values.first() {
                    for token in tokens {
                        line.push_str(&format!(" {token}:1"));
                    }
                }
                line
            }
        };
        Generated {
            record: text,
            probability,
            label,
        }
    }

    /// A value of feature field `field`, its weight in the click's log-odds, and its rank in
    /// the field's vocabulary for a category.
    fn field_value(&mut self, field: usize) -> (FieldValue, f32, Option<u64>) {
        let informative = field % 2 == 0;
        let key = field as u64;
        let vocab = VOCAB[field % VOCAB.len()];
        let strength = if informative { 1.2 } else { 0.0 };
        let libfm = self.record.encoding == Encoding::Libfm;
        match self.schema.field_type(field) {
            _ if libfm => {
                // libFM: one token from each of ten slots of 100 indices, as a one-hot row.
                let mut weight = 0.0;
                let tokens = (0..10u64)
                    .map(|slot| {
                        let rank = self.rank(100);
                        if slot % 2 == 0 {
                            weight += 0.8 * unit(self.seed, slot, rank);
                        }
                        slot * 100 + rank
                    })
                    .map(|i| i.to_string())
                    .collect();
                (FieldValue::Tokens(tokens, b' '), weight, None)
            }
            _ if self.rng.random_bool(0.05) => (FieldValue::Missing, 0.0, None),
            Some(FieldType::Number) => {
                let x = (self.rng.random::<f32>() * 8.0).exp() - 1.0;
                let bucket = (x + 1.0).ln() as u64;
                let value = if field % 3 == 0 {
                    FieldValue::Number(format!("{:.2}", x))
                } else {
                    FieldValue::Number((x as i64).to_string())
                };
                (
                    value,
                    0.8 * f32::from(u8::from(informative)) * unit(self.seed, key, bucket),
                    None,
                )
            }
            Some(FieldType::Tokens { separator }) => {
                let n = self.rng.random_range(1..=3);
                let mut weight = 0.0;
                let tokens = (0..n)
                    .map(|_| {
                        let rank = self.rank(u64::from(vocab));
                        weight += strength * 0.6 * unit(self.seed, key, rank);
                        token(self.seed, key, rank)
                    })
                    .collect();
                (FieldValue::Tokens(tokens, separator), weight, None)
            }
            _ => {
                let rank = self.rank(u64::from(vocab));
                (
                    FieldValue::Category(token(self.seed, key, rank)),
                    strength * unit(self.seed, key, rank),
                    Some(rank),
                )
            }
        }
    }

    /// A log-uniform rank below `vocab`.
    fn rank(&mut self, vocab: u64) -> u64 {
        ((vocab as f64).powf(self.rng.random::<f64>()) as u64)
            .saturating_sub(1)
            .min(vocab - 1)
    }
}

impl Iterator for SchemaGenerator {
    type Item = Generated;

    fn next(&mut self) -> Option<Generated> {
        Some(self.next_record())
    }
}

/// A field's generated value.
#[derive(Clone, Debug)]
enum FieldValue {
    Missing,
    Category(String),
    Number(String),
    Tokens(Vec<String>, u8),
}

impl FieldValue {
    fn text(&self) -> String {
        match self {
            FieldValue::Missing => String::new(),
            FieldValue::Category(s) | FieldValue::Number(s) => s.clone(),
            FieldValue::Tokens(tokens, separator) => {
                tokens.join(&char::from(*separator).to_string())
            }
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            FieldValue::Missing => serde_json::Value::Null,
            FieldValue::Category(s) => s.clone().into(),
            FieldValue::Number(s) => s
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            FieldValue::Tokens(tokens, _) => tokens.clone().into(),
        }
    }
}

/// The label as the rule reads it: the first positive or negative value, or for a threshold
/// one above it or one below.
fn label_text(rule: &LabelRule, label: bool) -> String {
    match rule {
        LabelRule::Values { positive, negative } => {
            let list = if label { positive } else { negative };
            list.first().cloned().unwrap_or_default()
        }
        LabelRule::AtLeast(t) if label => format!("{}", t.ceil()),
        LabelRule::AtLeast(t) => format!("{}", (t.ceil() - 1.0)),
    }
}

fn time_text(format: &TimeFormat, ms: i64) -> String {
    match format {
        TimeFormat::Millis => ms.to_string(),
        TimeFormat::Seconds => (ms / 1000).to_string(),
        TimeFormat::Pattern(pattern) => chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format(pattern).to_string())
            .unwrap_or_default(),
    }
}

/// Sets `value` at a dotted `path` of a JSON object, making the objects on the way.
fn insert_path(object: &mut serde_json::Value, path: &str, value: serde_json::Value) {
    let mut at = object;
    let mut keys = path.split('.').peekable();
    while let Some(key) = keys.next() {
        let serde_json::Value::Object(map) = at else {
            return;
        };
        if keys.peek().is_none() {
            map.insert(key.to_owned(), value);
            return;
        }
        at = map
            .entry(key.to_owned())
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    }
}

/// A value's text: eight hex digits, stable for (seed, field, rank).
fn token(seed: u64, field: u64, rank: u64) -> String {
    format!("{:08x}", splitmix(seed ^ (field << 40) ^ rank) as u32)
}

/// A fixed pseudo-random number in `[-1, 1)` for a (field, value) pair.
fn unit(seed: u64, field: u64, value: u64) -> f32 {
    let h = splitmix(seed.wrapping_add(0x5151) ^ (field << 48) ^ value);
    (h >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}
