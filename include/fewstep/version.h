/// @file version.h
/// @brief Library version and the build's LibTorch version.
#pragma once

#include <string>

namespace fewstep {
std::string version();
std::string torch_version();
}  // namespace fewstep
