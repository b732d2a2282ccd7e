//! Where a model trains: `auto` (the first CUDA device when there is one, else the CPU),
//! `cpu`, `cuda` or `cuda:N`.

use crate::error::DeepError;
pub use tch::Device;

/// The device `name` means.
///
/// # Errors
///
/// [`DeepError::Device`] for a name that is none of the above, or a CUDA device this machine
/// does not have (a clear error where libtorch would fail later).
pub fn parse_device(name: &str) -> Result<Device, DeepError> {
    if name != "cpu" {
        crate::init_cuda();
    }
    let cuda = |n: usize| {
        let count = tch::Cuda::device_count().max(0) as usize;
        if n < count {
            Ok(Device::Cuda(n))
        } else {
            Err(DeepError::Device(format!(
                "`{name}` asked for, but this machine has {count} CUDA devices"
            )))
        }
    };
    match name {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => cuda(n),
            _ => Err(DeepError::Device(format!(
                "unknown device {other:?} (auto, cpu, cuda or cuda:N)"
            ))),
        },
    }
}

/// `cpu` or `cuda:N`, as [`parse_device`] reads it.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        Device::Mps => "mps".to_owned(),
        Device::Vulkan => "vulkan".to_owned(),
        Device::Cpu => "cpu".to_owned(),
    }
}

/// Sets the threads libtorch's CPU kernels use, in this whole process (at least 1).
pub fn set_threads(threads: usize) {
    tch::set_num_threads(i32::try_from(threads.max(1)).unwrap_or(i32::MAX));
}
