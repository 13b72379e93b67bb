// The CUDA ops of srd run on the CPU through cuda_emulation.h, exposed as torch.ops.srd_emu.* with
// the schemas of torch.ops.srd.* (common/schemas.h; CPU tensors in and out). Nothing here is a copy:
// the host glue (cuda/ead_cuda.cuh, cuda/neighbors_cuda.cuh: argument checks, grids, launch shapes,
// shared-memory sizes, buffers, kernel order) and the device code (cuda/*_kernels.cuh) are the very
// sources nvcc compiles for the package, with the CUDA runtime replaced by the emulator. Built and
// used by selfcheck.py (and tests/test_cuda_emulation.py); not part of the package.
//
// Every torch header the CUDA sources use comes first: cuda_emulation.h defines CUDA keywords
// (__device__, __shared__, threadIdx, ...) as macros that torch's own headers must not see.
// clang-format off
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "common/ead_grid.h"
#include "common/schemas.h"

#include "cuda/selfcheck/cuda_emulation.h"  // after torch, before the CUDA sources
#include "cuda/ead_cuda.cuh"
#include "cuda/neighbors_cuda.cuh"
// clang-format on

namespace srd {
namespace gpu {
namespace {

unsigned char* dynamic_smem() { return emu::smem(); }

}  // namespace
}  // namespace gpu
}  // namespace srd

TORCH_LIBRARY(srd_emu, m) { srd::define_op_schemas(m); }

TORCH_LIBRARY_IMPL(srd_emu, CPU, m) {
  m.impl("ead_forward", &srd::gpu::ead_forward_cuda);
  m.impl("ead_backward", &srd::gpu::ead_backward_cuda);
  m.impl("nearest_pairs", &srd::gpu::nearest_pairs_cuda);
}
