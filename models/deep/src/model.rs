//! DeepFM and DCN-v2 over the fields of a FeatureMap layout.
//!
//! Every slot of the layout has an embedding of `embedding_dim` (and, for DeepFM, a linear
//! weight); an entry contributes its slot's embedding times its value to its field's
//! embedding, so that a one-hot field is its id's embedding, a multi-hot one the sum of its
//! tokens', and a scaled number its value times its slot's (as DeepFM treats numbers). The
//! fields' embeddings, concatenated, feed the MLP (and DCN-v2's cross layers first).

use crate::batch::Batch;
use crate::host::initial_rows;
use crate::spec::{DeepKind, DeepSpec};
use millrace_learners::embeddings::Placement;
use millrace_samples::SampleFields;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// A deep model's weights: the dense layers in one `VarStore`, and (with
/// [`Placement::Device`]) the embedding rows in another, so that each has its own optimizer.
#[derive(Debug)]
pub struct DeepModel {
    kind: DeepKind,
    dense: nn::VarStore,
    table: Option<DeviceTable>,
    fields: i64,
    dim: i64,
    /// DCN-v2's cross layers.
    cross: Vec<nn::Linear>,
    mlp: nn::Sequential,
    out: nn::Linear,
}

/// The embedding rows of every slot on the model's device.
#[derive(Debug)]
struct DeviceTable {
    vs: nn::VarStore,
    embedding: nn::Embedding,
    /// DeepFM's first-order weights.
    linear: Option<nn::Embedding>,
}

/// Each entry's embedding (`[entries, dim]`) and, for DeepFM, its first-order weight
/// (`[entries]`): what the forward pass reads of the embedding rows, wherever they live.
#[derive(Debug)]
pub struct EntryRows {
    /// Per entry, its slot's embedding.
    pub embedding: Tensor,
    /// Per entry, its slot's first-order weight (DeepFM).
    pub linear: Option<Tensor>,
}

/// A linear layer initialized as PyTorch's `nn.Linear` is: weights and biases uniform in
/// `±1/√in` (tch's default draws the weights for ReLU, √6 times wider).
fn torch_linear(path: nn::Path<'_>, input: i64, output: i64) -> nn::Linear {
    let bound = 1.0 / (input.max(1) as f64).sqrt();
    let config = nn::LinearConfig {
        ws_init: nn::Init::Uniform {
            lo: -bound,
            up: bound,
        },
        ..Default::default()
    };
    nn::linear(path, input, output, config)
}

/// PyTorch's name of the variable `name` (`mlp1.weight` → `mlp.2.weight`, `cross0.bias` →
/// `cross.0.bias`).
fn torch_name(name: &str) -> String {
    let (module, rest) = name.split_once('.').unwrap_or((name, ""));
    let layer = |prefix: &str, scale: usize| {
        module
            .strip_prefix(prefix)
            .and_then(|l| l.parse::<usize>().ok())
            .map(|l| format!("{prefix}.{}.{rest}", l * scale))
    };
    layer("mlp", 2)
        .or_else(|| layer("cross", 1))
        .unwrap_or_else(|| name.to_owned())
}

/// The number of slots of the layout `fields` names.
pub fn slots(fields: &SampleFields) -> i64 {
    fields
        .fields()
        .iter()
        .map(|f| i64::from(f.offset) + i64::from(f.width))
        .max()
        .unwrap_or(0)
}

/// Held while a model seeds libtorch's process-wide generator and draws its weights.
static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl DeepModel {
    /// A freshly initialized model of `spec` over `fields`' layout on `device`, its weights
    /// drawn from `spec.seed`.
    pub fn new(spec: &DeepSpec, fields: &SampleFields, device: Device) -> Self {
        // libtorch's generator is one per process: hold it from the seed to the last draw,
        // or models built at once on other threads take draws from between ours.
        let _generator = GENERATOR
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tch::manual_seed(spec.seed as i64);
        let dense = nn::VarStore::new(device);
        let root = dense.root();
        let (n, dim) = (fields.fields().len() as i64, spec.embedding_dim as i64);
        let table = (spec.embeddings.placement == Placement::Device)
            .then(|| DeviceTable::new(spec, slots(fields).max(1), device));
        let width = n * dim;
        let cross = match spec.model {
            DeepKind::DcnV2 => (0..spec.cross_layers)
                .map(|l| {
                    nn::linear(
                        &root / format!("cross{l}"),
                        width,
                        width,
                        Default::default(),
                    )
                })
                .collect(),
            DeepKind::DeepFm => Vec::new(),
        };
        let mut mlp = nn::seq();
        let mut input = width;
        for (l, &w) in spec.mlp.iter().enumerate() {
            let w = w as i64;
            mlp = mlp
                .add(nn::linear(
                    &root / format!("mlp{l}"),
                    input,
                    w,
                    Default::default(),
                ))
                .add_fn(|x| x.relu());
            input = w;
        }
        let out = torch_linear(&root / "out", input, 1);
        DeepModel {
            kind: spec.model,
            dense,
            table,
            fields: n,
            dim,
            cross,
            mlp,
            out,
        }
    }

    /// The dense weights (the MLP, the cross layers, the output).
    pub fn dense(&self) -> &nn::VarStore {
        &self.dense
    }

    /// The embedding rows, when they live in the model ([`Placement::Device`]).
    pub fn table(&self) -> Option<&nn::VarStore> {
        self.table.as_ref().map(|t| &t.vs)
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.dense.device()
    }

    /// The weights the model holds, by the names PyTorch's `state_dict` gives the same model
    /// (`perf/train_pytorch.py`'s): `embedding.weight`, `linear.weight` (DeepFM; both only
    /// with [`Placement::Device`]), `cross.<l>.weight` and `.bias` (DCN-v2), `mlp.<2l>.weight`
    /// and `.bias` (a ReLU follows each layer), `out.weight`, `out.bias`; sorted by name.
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        let table = self.table.iter().flat_map(|t| t.vs.variables());
        let mut named: Vec<(String, Tensor)> = self
            .dense
            .variables()
            .into_iter()
            .chain(table)
            .map(|(name, tensor)| (torch_name(&name), tensor))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }

    /// The rows of `batch`'s entries from the model's own table; `None` when the rows live on
    /// the host (the trainer gathers them instead).
    pub fn device_rows(&self, batch: &Batch) -> Option<EntryRows> {
        let table = self.table.as_ref()?;
        Some(EntryRows {
            embedding: table.embedding.forward(&batch.slots),
            linear: table
                .linear
                .as_ref()
                .map(|l| l.forward(&batch.slots).squeeze_dim(1)),
        })
    }

    /// The logit of each row of `batch`, its entries' rows being `rows`.
    pub fn forward(&self, batch: &Batch, rows: &EntryRows) -> Tensor {
        let n = batch.rows as i64;
        let device = self.device();
        let entries = &rows.embedding * batch.values.unsqueeze(1);
        let cells = Tensor::zeros([n * self.fields, self.dim], (Kind::Float, device)).index_add(
            0,
            &batch.cell,
            &entries,
        );
        let x0 = cells.view([n, self.fields * self.dim]);
        match self.kind {
            DeepKind::DeepFm => {
                let first = Tensor::zeros([n], (Kind::Float, device));
                let first = match &rows.linear {
                    Some(linear) => first.index_add(0, &batch.row, &(linear * &batch.values)),
                    None => first,
                };
                let per_field = cells.view([n, self.fields, self.dim]);
                let sum = per_field.sum_dim_intlist(1, false, Kind::Float);
                let squares = per_field.square().sum_dim_intlist(1, false, Kind::Float);
                let fm = (sum.square() - squares).sum_dim_intlist(1, false, Kind::Float) * 0.5;
                let deep = self.out.forward(&self.mlp.forward(&x0)).squeeze_dim(1);
                first + fm + deep
            }
            DeepKind::DcnV2 => {
                let mut x = x0.shallow_clone();
                for layer in &self.cross {
                    x = &x0 * layer.forward(&x) + &x;
                }
                self.out.forward(&self.mlp.forward(&x)).squeeze_dim(1)
            }
        }
    }
}

impl DeviceTable {
    /// Every slot's row as the host table would create it (the same numbers, so that the
    /// placement does not change the model), and zero first-order weights.
    fn new(spec: &DeepSpec, slots: i64, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let dim = spec.embedding_dim as i64;
        // Made as zeros then filled, so that the table draws nothing from libtorch's generator
        // and the dense layers start alike in either placement.
        let zero = nn::EmbeddingConfig {
            ws_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        let embedding = nn::embedding(&root / "embedding", slots, dim, zero);
        let init = Tensor::from_slice(&initial_rows(spec.seed, 0..slots, spec.embedding_dim))
            .view([slots, dim])
            .to(device);
        tch::no_grad(|| embedding.ws.shallow_clone().copy_(&init));
        let linear = (spec.model == DeepKind::DeepFm)
            .then(|| nn::embedding(&root / "linear", slots, 1, zero));
        DeviceTable {
            vs,
            embedding,
            linear,
        }
    }
}
