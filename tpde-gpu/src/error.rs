//! The crate's one error type. Variants are grouped by cause: the machine
//! has no usable CUDA (driver, device, NVRTC), a CUDA call failed, the
//! archive is bad (the format crate's typed error, naming tensor and chunk),
//! or the caller passed something that does not fit.

use cudarc::driver::DriverError;

/// Result alias.
pub type Result<T, E = GpuError> = std::result::Result<T, E>;

/// Everything that can go wrong loading an archive onto a GPU.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// The CUDA driver library (`libcuda.so`) could not be loaded, or only
    /// the CUDA toolkit's stub of it was found: this process has no NVIDIA
    /// driver to talk to.
    #[error("no CUDA driver: libcuda could not be loaded (or only the CUDA toolkit's stub was found; put the driver's libcuda.so.1 first on the library path)")]
    NoDriver,
    /// The driver loaded but has no device with this ordinal.
    #[error("no CUDA device {ordinal} (the driver reports {count})")]
    NoDevice {
        /// Requested ordinal.
        ordinal: usize,
        /// Devices the driver reports.
        count: usize,
    },
    /// The driver library lacks an entry point tpde needs (a driver older
    /// than CUDA 12.0), or loading it failed in another way.
    #[error("the CUDA driver cannot be used: {detail}")]
    DriverUnusable {
        /// What failed.
        detail: String,
    },
    /// NVRTC (`libnvrtc.so`), which compiles the kernels at run time, could
    /// not be loaded. Install the CUDA runtime compiler library, or put the
    /// directory holding `libnvrtc.so` on `LD_LIBRARY_PATH`.
    #[error("NVRTC (libnvrtc) could not be loaded; put the directory holding libnvrtc.so on LD_LIBRARY_PATH")]
    NoNvrtc,
    /// NVRTC refused the kernels (a bug, or an NVRTC too old for the device).
    #[error("NVRTC could not compile the tpde kernels: {log}")]
    Compile {
        /// Compiler log.
        log: String,
    },
    /// A CUDA driver call failed.
    #[error("{call} failed: {source}")]
    Cuda {
        /// The driver call.
        call: &'static str,
        /// The driver's error.
        source: DriverError,
    },
    /// The archive is malformed, corrupt, or needs a base that was not
    /// given; the error names the tensor and chunk.
    #[error(transparent)]
    Format(#[from] tpde_format::Error),
    /// A base tensor handed in on the device does not fit the archive.
    #[error("device base for tensor {tensor:?}: {reason}")]
    DeviceBase {
        /// Tensor name.
        tensor: String,
        /// What does not fit.
        reason: String,
    },
    /// Invalid arguments or options.
    #[error("{0}")]
    Usage(String),
}

impl GpuError {
    /// True when the machine has no CUDA driver or no such device: the one
    /// case GPU tests treat as "skipped".
    pub fn is_no_device(&self) -> bool {
        matches!(self, GpuError::NoDriver | GpuError::NoDevice { .. })
    }
}

/// Wraps a driver result with the name of the call.
pub(crate) fn cuda<T>(call: &'static str, r: Result<T, DriverError>) -> Result<T> {
    r.map_err(|source| GpuError::Cuda { call, source })
}
