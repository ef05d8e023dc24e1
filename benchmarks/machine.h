// What a benchmark ran on: CPU, cores, threads, versions, compiler. Printed beside every
// table and stored in every JSON file (docs/design.md §5: figures come with their machine).
#pragma once

#include <nlohmann/json.hpp>

#include <ostream>
#include <string>

namespace fewstep::bench {

struct MachineInfo {
  std::string cpu_model;     ///< "model name" of /proc/cpuinfo
  int logical_cpus = 0;      ///< std::thread::hardware_concurrency()
  int available_cpus = 0;    ///< CPUs this process may run on (affinity mask)
  int torch_threads = 0;     ///< at::get_num_threads()
  int torch_interop_threads = 0;
  std::string fewstep_version;
  std::string torch_version;
  std::string compiler;
  std::string build_type;
  std::string os;
  std::string timestamp_utc;  ///< ISO 8601, when the info was taken
  std::string allocator;      ///< fewstep::tune_malloc_for_tensors()'s account of the allocator settings
};

MachineInfo machine_info();
void print_machine(std::ostream& out, const MachineInfo& info);
nlohmann::json to_json(const MachineInfo& info);

}  // namespace fewstep::bench
