//! Ranks on CUDA devices, summing tensors where they are through NCCL (cudarc, loaded at run
//! time). The ranks first meet over another backend (a [`super::Ring`] between processes, or
//! [`super::Local`]), which carries NCCL's unique id and then the host-side collectives (the
//! few numbers each step agrees on, and the sparse rows' exchanges); the dense gradients, the
//! bulk of a step's traffic, go through NCCL on the device.
//!
//! NCCL and CUDA's driver are looked for when a group is made: on a machine without them the
//! binary still runs, and asking for NCCL is an error that says which library is missing.
#![allow(unsafe_code)] // NCCL takes raw device pointers: every `unsafe` block below says why it holds.

use super::AllReduce;
use crate::error::DeepError;
use cudarc::driver::CudaContext;
use cudarc::nccl::{result, sys};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// A rank of an NCCL group.
pub struct Nccl {
    /// The backend the ranks met over, for the host-side collectives.
    host: Box<dyn AllReduce>,
    comm: Comm,
    /// The device's primary context (the one libtorch uses), made current before each call.
    context: Arc<CudaContext>,
    ordinal: usize,
}

impl std::fmt::Debug for Nccl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nccl")
            .field("rank", &self.host.rank())
            .field("ranks", &self.host.ranks())
            .field("device", &self.ordinal)
            .finish_non_exhaustive()
    }
}

/// An NCCL communicator, destroyed when dropped.
struct Comm(sys::ncclComm_t);

// SAFETY: an NCCL communicator may be used from any thread, one call at a time; `Nccl` takes
// `&mut self` for every call, so no two threads use it at once.
unsafe impl Send for Comm {}

impl Drop for Comm {
    fn drop(&mut self) {
        // SAFETY: the communicator was made by `comm_init_rank` and is destroyed once, here.
        if let Err(error) = unsafe { result::comm_destroy(self.0) } {
            tracing::warn!(?error, "destroying an NCCL communicator");
        }
    }
}

fn nccl_error(what: &str, error: result::NcclError) -> DeepError {
    DeepError::Collective(format!("NCCL {what}: {error:?}"))
}

impl Nccl {
    /// Whether NCCL can run here: CUDA's driver and NCCL's library load, and there is a CUDA
    /// device; otherwise an error that names what is missing.
    ///
    /// # Errors
    ///
    /// [`DeepError::Device`] naming the missing library or device.
    pub fn available() -> Result<(), DeepError> {
        // SAFETY: loading a shared library runs its initializers; CUDA's driver and NCCL are
        // made to be loaded this way (`dlopen` is how libtorch loads them too).
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(DeepError::Device(
                "NCCL needs CUDA, and CUDA's driver library (libcuda.so) is not on this machine"
                    .to_owned(),
            ));
        }
        // SAFETY: as above.
        if !unsafe { sys::is_culib_present() } {
            return Err(DeepError::Device(
                "NCCL's library (libnccl.so) is not on the library path; pip's nvidia-nccl ships libnccl.so.2: link it as libnccl.so in a directory on LD_LIBRARY_PATH".to_owned(),
            ));
        }
        let count = CudaContext::device_count()
            .map_err(|e| DeepError::Device(format!("CUDA's driver: {e:?}")))?;
        if count < 1 {
            return Err(DeepError::Device(
                "NCCL needs a CUDA device, and this machine has none".to_owned(),
            ));
        }
        Ok(())
    }

    /// NCCL's version as `ncclGetVersion` gives it (22805 for 2.28.5).
    ///
    /// # Errors
    ///
    /// As [`Nccl::available`] when NCCL cannot run here.
    pub fn version() -> Result<i32, DeepError> {
        Nccl::available()?;
        result::get_nccl_version().map_err(|e| nccl_error("version", e))
    }

    /// This rank's member of an NCCL group of `host`'s ranks, summing tensors on `device`
    /// (each rank its own GPU: NCCL refuses two ranks on one). Every rank calls it together.
    ///
    /// # Errors
    ///
    /// [`DeepError::Device`] when `device` is not a CUDA device, or NCCL cannot run here
    /// ([`Nccl::available`]); [`DeepError::Collective`] when the ranks cannot form the group.
    pub fn over(host: Box<dyn AllReduce>, device: Device) -> Result<Nccl, DeepError> {
        let Device::Cuda(ordinal) = device else {
            return Err(DeepError::Device(format!(
                "NCCL sums tensors on a CUDA device, and this rank trains on {}",
                crate::device_name(device)
            )));
        };
        Nccl::available()?;
        crate::init_cuda();
        let context = CudaContext::new(ordinal)
            .map_err(|e| DeepError::Device(format!("CUDA device {ordinal}: {e:?}")))?;
        bind(&context)?;
        let mut host = host;
        let id = shared_id(host.as_mut())?;
        let (rank, ranks) = (host.rank(), host.ranks());
        let mut comm: sys::ncclComm_t = std::ptr::null_mut();
        // SAFETY: `comm` is a valid place for the communicator, and every rank passes the same
        // id, its own rank and the same count.
        unsafe { result::comm_init_rank(&mut comm, count(ranks)?, id, count(rank)?) }
            .map_err(|e| nccl_error("forming the group", e))?;
        Ok(Nccl {
            host,
            comm: Comm(comm),
            context,
            ordinal,
        })
    }
}

/// Makes `context` current on this thread, as NCCL wants of the calls that use its device.
fn bind(context: &CudaContext) -> Result<(), DeepError> {
    context
        .bind_to_thread()
        .map_err(|e| DeepError::Device(format!("making the CUDA device current: {e:?}")))
}

fn count(n: usize) -> Result<i32, DeepError> {
    i32::try_from(n).map_err(|_| DeepError::Collective(format!("{n} ranks are too many")))
}

/// The group's unique id: rank 0 makes it and sends it to the others over `host`.
fn shared_id(host: &mut dyn AllReduce) -> Result<sys::ncclUniqueId, DeepError> {
    let mine = if host.rank() == 0 {
        let id = result::get_uniqueid().map_err(|e| nccl_error("making the group's id", e))?;
        id.internal.iter().map(|&c| c as u8).collect()
    } else {
        Vec::new()
    };
    let sent = host.exchange(vec![mine; host.ranks()])?;
    let bytes = sent.first().map_or(&[][..], Vec::as_slice);
    let mut id = sys::ncclUniqueId { internal: [0; 128] };
    if bytes.len() != id.internal.len() {
        return Err(DeepError::Collective(format!(
            "rank 0 sent an NCCL id of {} bytes",
            bytes.len()
        )));
    }
    for (c, &b) in id.internal.iter_mut().zip(bytes) {
        *c = b as std::ffi::c_char;
    }
    Ok(id)
}

impl AllReduce for Nccl {
    fn rank(&self) -> usize {
        self.host.rank()
    }

    fn ranks(&self) -> usize {
        self.host.ranks()
    }

    fn sum(&mut self, data: &mut [f32]) -> Result<(), DeepError> {
        self.host.sum(data)
    }

    fn exchange(&mut self, parts: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, DeepError> {
        self.host.exchange(parts)
    }

    /// Sums `tensor` in place on its device through NCCL; a tensor elsewhere goes through the
    /// host backend.
    fn sum_tensor(&mut self, tensor: &mut Tensor) -> Result<(), DeepError> {
        if tensor.device() != Device::Cuda(self.ordinal) {
            return super::sum_on_host(self.host.as_mut(), tensor);
        }
        if tensor.kind() != Kind::Float || !tensor.is_contiguous() {
            return Err(DeepError::Collective(format!(
                "NCCL sums contiguous f32 tensors (got {:?})",
                tensor.kind()
            )));
        }
        bind(&self.context)?;
        let count = tensor.numel();
        let data = tensor.data_ptr();
        // SAFETY: `data` points at `count` contiguous f32 on this communicator's device, and
        // `tensor` is borrowed mutably for the call. The null stream is CUDA's legacy default
        // stream, which libtorch's kernels run on unless told otherwise, so the sum runs after
        // the kernels that made the gradients and before those that read them.
        unsafe {
            result::all_reduce(
                data,
                data,
                count,
                sys::ncclDataType_t::ncclFloat32,
                sys::ncclRedOp_t::ncclSum,
                self.comm.0,
                std::ptr::null_mut(),
            )
        }
        .map_err(|e| nccl_error("all-reduce", e))?;
        Ok(())
    }
}
