// The one TORCH_LIBRARY(srd, m) block; the schemas themselves are in common/schemas.h (shared with
// the CUDA emulator of cuda/selfcheck). Kernels register themselves next to their code
// (TORCH_LIBRARY_IMPL(srd, CPU, m) in cpu/*.cpp and TORCH_LIBRARY_IMPL(srd, CUDA, m) in cuda/*.cu),
// so a CPU-only build simply has no CUDA kernels. Fake (meta) kernels and autograd are registered in
// python/srd/ops.py.
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include "common/schemas.h"

TORCH_LIBRARY(srd, m) { srd::define_op_schemas(m); }

// An (otherwise empty) Python module so that `import srd._C` loads the library and runs the
// registrations above. No function here takes tensors: everything goes through torch.ops.srd.
PYBIND11_MODULE(_C, m) { m.doc() = "srd C++/CUDA kernels; the ops live in torch.ops.srd"; }
