#include "fewstep/core/device.h"

#include <ATen/Context.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include "fewstep/core/check.h"

namespace fewstep {

bool cuda_available() { return at::hasCUDA() && at::getNumGPUs() > 0; }

c10::Device parse_device(const std::string& text, const std::string& arg) {
  std::optional<c10::Device> device;
  // c10::Device's own parser accepts every backend torch knows (mps, xpu, meta, ...); fewstep runs on two.
  const bool known = text == "cpu" || text == "cuda" || text.rfind("cuda:", 0) == 0;
  if (known) {
    try {
      device = c10::Device(text);
    } catch (const c10::Error&) {
    }
  }
  FEWSTEP_CHECK_VALUE(device.has_value(), arg, " must be 'cpu', 'cuda' or 'cuda:N', got '", text, "'");
  if (device->is_cuda()) {
    FEWSTEP_CHECK_VALUE(cuda_available(), arg, " '", text, "': CUDA is not available in this build or on this machine (",
                        at::detail::getCUDAHooks().hasCUDART() ? "LibTorch has CUDA but no GPU is visible"
                                                               : "this LibTorch has no CUDA",
                        "); use 'cpu', or build fewstep against a CUDA LibTorch (docs/gpu.md)");
    const int64_t count = static_cast<int64_t>(at::getNumGPUs());
    FEWSTEP_CHECK_VALUE(!device->has_index() || device->index() < count, arg, " '", text, "': this machine has ",
                        count, " CUDA device(s), cuda:0 to cuda:", count - 1);
  }
  return *device;
}

c10::ScalarType parse_dtype(const std::string& text, const std::string& arg) {
  std::string name = text.rfind("torch.", 0) == 0 ? text.substr(6) : text;
  if (name == "float32" || name == "float") return c10::kFloat;
  if (name == "float64" || name == "double") return c10::kDouble;
  const bool half = name == "float16" || name == "half" || name == "bfloat16";
  FEWSTEP_CHECK_VALUE(false, arg, " must be 'float32' or 'float64', got '", text, "'",
                      half ? " (half precision is not supported: the solvers' state and its updates need float32 at "
                             "least; docs/gpu.md)"
                           : "");
  return c10::kFloat;
}

std::string dtype_name(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kFloat: return "float32";
    case c10::kDouble: return "float64";
    case c10::kHalf: return "float16";
    case c10::kBFloat16: return "bfloat16";
    default: return c10::toString(dtype);
  }
}

Placement parse_placement(const std::string& device, const std::string& dtype, const std::string& device_arg,
                          const std::string& dtype_arg) {
  Placement p;
  if (!device.empty()) p.device = parse_device(device, device_arg);
  if (!dtype.empty()) p.dtype = parse_dtype(dtype, dtype_arg);
  return p;
}

}  // namespace fewstep
