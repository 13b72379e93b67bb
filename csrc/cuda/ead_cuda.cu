// srd::ead_forward and srd::ead_backward for the CUDA dispatch key. The host glue (launch plan,
// buffers, argument checks) is ead_cuda.cuh and the device code ead_kernels.cuh; both are also
// compiled, unchanged, by the CPU emulation of the kernels (cuda/selfcheck).
#include <torch/library.h>

#include "cuda/ead_cuda.cuh"

namespace srd {

TORCH_LIBRARY_IMPL(srd, CUDA, m) {
  m.impl("ead_forward", &gpu::ead_forward_cuda);
  m.impl("ead_backward", &gpu::ead_backward_cuda);
}

}  // namespace srd
