#include "fewstep/version.h"

namespace fewstep {
std::string version() { return FEWSTEP_VERSION_STRING; }
std::string torch_version() { return FEWSTEP_TORCH_VERSION_STRING; }
}  // namespace fewstep
