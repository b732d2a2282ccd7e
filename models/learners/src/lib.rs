//! The online learners over a FeatureMap's sparse rows: FTRL-Proximal logistic regression and
//! the factorization machine, the architectures they are published as, progressive-validation
//! metrics, and the all-reduce bookkeeping that keeps the workers' replicas of a learner equal.
#![warn(missing_docs)]

pub mod allreduce;
pub mod architecture;
pub mod embeddings;
pub mod eval;
pub mod fm;
pub mod ftrl;
pub mod learner;
pub mod row_values;

pub use eval::{exact_auc, AucAccumulator, LogLoss, WindowedAuc};
pub use fm::{Fm, FmParams};
pub use ftrl::{Ftrl, FtrlParams};
pub use learner::{Learner, LearnerParams};
