//! libtorch's CUDA half. PyTorch splits its kernels into `libtorch_cpu.so` and
//! `libtorch_cuda.so`, and the second registers itself when loaded; a Rust binary calls no
//! symbol of it, so the linker drops it (`--as-needed`) and libtorch then sees no GPU. Loading
//! it at run time, where it is on the library path, gives libtorch its GPUs back without a
//! link-time dependency: the same binary runs on a machine whose libtorch has no CUDA half.
#![allow(unsafe_code)] // dlopen of libtorch's own library: the block below says why it holds.

use std::sync::OnceLock;

/// The CUDA half's file name.
const LIBRARY: &str = "libtorch_cuda.so";

/// Loads libtorch's CUDA half once per process; whether it is loaded (false where this
/// libtorch has none, as a CPU-only build).
pub fn init_cuda() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        // SAFETY: the library is libtorch's own, of the same build as the libtorch_cpu.so
        // this process already links (both come from one directory on the library path); its
        // initializers register CUDA's kernels with libtorch, which is what they are for. It
        // stays loaded for the rest of the process (`forget`), as a linked library would.
        let opened = unsafe {
            libloading::os::unix::Library::open(
                Some(LIBRARY),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
            )
        };
        match opened {
            Ok(library) => {
                std::mem::forget(library);
                true
            }
            Err(error) => {
                tracing::debug!(%error, "libtorch has no CUDA half here: CPU only");
                false
            }
        }
    })
}
