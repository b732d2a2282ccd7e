//! How an operator declares a checkpoint part (`PartSpec`: its name and the state it
//! holds), and how it is given it ([`Checkpoints`]). Each stateful operator declares its parts
//! beside its code; [`crate::parts`] lists a job's parts from those declarations.

use crate::checkpoint::{self, Collector, Part, PartError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;

/// A checkpoint part: its name, and the type `S` of the state it holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PartSpec<S> {
    name: &'static str,
    state: PhantomData<fn() -> S>,
}

impl<S> Clone for PartSpec<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for PartSpec<S> {}

impl<S> PartSpec<S> {
    /// The part `name`.
    pub(crate) const fn new(name: &'static str) -> Self {
        PartSpec {
            name,
            state: PhantomData,
        }
    }

    /// The part's name in a checkpoint.
    pub(crate) const fn name(&self) -> &'static str {
        self.name
    }

    /// The bytes of `state`: an `S`, or a borrowed view of one that serializes as it does (a
    /// tuple of references to its fields, say), so that a large state is not copied to be
    /// written.
    pub(crate) fn encode(&self, state: &(impl Serialize + ?Sized)) -> Vec<u8> {
        checkpoint::encode(state)
    }

    /// The bytes of `state`'s header and a block of floats (the trainer's weights): see
    /// [`checkpoint::encode_with_floats`].
    pub(crate) fn encode_with_floats(
        &self,
        state: &(impl Serialize + ?Sized),
        floats: &[f32],
    ) -> Vec<u8> {
        checkpoint::encode_with_floats(state, floats)
    }
}

impl<S: DeserializeOwned> PartSpec<S> {
    /// The state [`PartSpec::encode`] wrote.
    ///
    /// # Errors
    ///
    /// When the bytes are not such a state.
    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<S, PartError> {
        checkpoint::decode(bytes)
    }

    /// The state and floats [`PartSpec::encode_with_floats`] wrote.
    ///
    /// # Errors
    ///
    /// When the bytes are not such a state.
    pub(crate) fn decode_with_floats(&self, bytes: &[u8]) -> Result<(S, Vec<f32>), PartError> {
        checkpoint::decode_with_floats(bytes)
    }
}

/// Where a worker's stateful operators take their checkpoint parts from: the process's
/// [`Collector`], or none (a job without checkpoints, a test).
#[derive(Clone, Debug, Default)]
pub struct Checkpoints(Option<Collector>);

impl Checkpoints {
    /// No checkpoints: operators keep their state in memory only and restore nothing.
    pub fn none() -> Self {
        Checkpoints(None)
    }

    /// The parts of `collector`, which must have been made with every part of the operators
    /// built with this (see [`crate::dataflow_parts`]).
    pub fn from_collector(collector: Collector) -> Self {
        Checkpoints(Some(collector))
    }

    /// `spec`'s part on `worker`, when checkpointing.
    pub(crate) fn part<S>(&self, worker: usize, spec: &PartSpec<S>) -> Option<Part> {
        self.0.as_ref().map(|c| c.part(worker, spec.name()))
    }
}
