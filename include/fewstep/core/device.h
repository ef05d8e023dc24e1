/// @file core/device.h
/// @brief Device and dtype names, parsed in one place: the CLI's --device/--dtype, the benchmarks'
///        and Python's device=/dtype= all forward their text here (docs/gpu.md).
///
/// Devices: "cpu", "cuda", "cuda:N" (also "torch.device('cuda:0')"-style text as str(torch.device)
/// prints it: "cuda:0"). A CUDA device is checked against the build and the machine: without CUDA the
/// error names the device and says CUDA is not available. Dtypes: "float32" and "float64" (also
/// "float", "double" and str(torch.dtype)'s "torch.float32"); half precision is refused, since the
/// solvers' state needs float32 at least (docs/gpu.md).
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <optional>
#include <string>

namespace fewstep {

/// Where and in which precision to put a loaded network (and the state sampled with it).
/// Unset fields keep what the file says (its saved device, its parameters' dtype).
struct Placement {
  std::optional<c10::Device> device;
  std::optional<c10::ScalarType> dtype;
  bool empty() const { return !device && !dtype; }
};

/// Parses a device name and checks that this build and machine have it. ValueError naming `arg` and
/// `text` for a malformed name; for a CUDA device without CUDA ("CUDA is not available in this build
/// or on this machine") or with an index past the device count.
c10::Device parse_device(const std::string& text, const std::string& arg = "device");
/// Parses a dtype name (see the file comment). ValueError naming `arg`, `text` and the accepted names.
c10::ScalarType parse_dtype(const std::string& text, const std::string& arg = "dtype");
/// "float32", "float64", ... (the names parse_dtype reads).
std::string dtype_name(c10::ScalarType dtype);
/// Both at once; "" leaves a field unset.
Placement parse_placement(const std::string& device, const std::string& dtype, const std::string& device_arg = "device",
                          const std::string& dtype_arg = "dtype");
/// Whether CUDA can be used here (a CUDA build of LibTorch on a machine with a GPU).
bool cuda_available();

}  // namespace fewstep
