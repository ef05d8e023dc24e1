#include "fewstep/nets/network.h"

#include <torch/script.h>

#include "fewstep/core/check.h"
#include "fewstep/train/atomic_file.h"
#include "script_builder.h"

namespace fewstep {

int64_t parameter_count(const torch::jit::Module& module) { return nets_detail::count_parameters(module); }

void save_network(const torch::jit::Module& module, const std::string& path) {
  atomic_write(path, [&module](const std::string& temp_path) { module.save(temp_path); });
}

}  // namespace fewstep
