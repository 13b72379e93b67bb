// srd::nearest_pairs for the CUDA dispatch key. Host glue: neighbors_cuda.cuh; device code:
// neighbors_kernels.cuh (both also compiled, unchanged, by the CPU emulation in cuda/selfcheck).
#include <torch/library.h>

#include "cuda/neighbors_cuda.cuh"

namespace srd {

TORCH_LIBRARY_IMPL(srd, CUDA, m) { m.impl("nearest_pairs", &gpu::nearest_pairs_cuda); }

}  // namespace srd
