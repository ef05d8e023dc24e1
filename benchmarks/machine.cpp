#include "machine.h"

#include <ATen/Parallel.h>
#include <sched.h>
#include <sys/utsname.h>

#include <ctime>
#include <fstream>
#include <thread>

#include "fewstep/core/malloc_tuning.h"
#include "fewstep/version.h"

#ifndef FEWSTEP_BENCH_BUILD_TYPE
#define FEWSTEP_BENCH_BUILD_TYPE "unknown"
#endif

namespace fewstep::bench {

namespace {

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  }
  return "unknown";
}

int available_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 0;
  return CPU_COUNT(&set);
}

std::string compiler() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#else
  return "unknown";
#endif
}

std::string os_name() {
  utsname u{};
  if (uname(&u) != 0) return "unknown";
  return std::string(u.sysname) + " " + u.release + " " + u.machine;
}

std::string now_utc() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

MachineInfo machine_info() {
  MachineInfo info;
  info.cpu_model = cpu_model();
  info.logical_cpus = static_cast<int>(std::thread::hardware_concurrency());
  info.available_cpus = available_cpus();
  info.torch_threads = at::get_num_threads();
  info.torch_interop_threads = at::get_num_interop_threads();
  info.fewstep_version = fewstep::version();
  info.torch_version = fewstep::torch_version();
  info.compiler = compiler();
  info.build_type = FEWSTEP_BENCH_BUILD_TYPE;
  info.os = os_name();
  info.timestamp_utc = now_utc();
  info.allocator = fewstep::tune_malloc_for_tensors();  // already applied at startup: reports it
  return info;
}

void print_machine(std::ostream& out, const MachineInfo& m) {
  out << "machine : " << m.cpu_model << ", " << m.available_cpus << " CPUs available (" << m.logical_cpus
      << " logical), " << m.os << "\n"
      << "threads : " << m.torch_threads << " intra-op, " << m.torch_interop_threads << " inter-op (LibTorch)\n"
      << "versions: fewstep " << m.fewstep_version << ", torch " << m.torch_version << ", " << m.compiler << ", "
      << m.build_type << " build\n"
      << "malloc  : " << m.allocator << "\n";
}

nlohmann::json to_json(const MachineInfo& m) {
  return {{"cpu_model", m.cpu_model},
          {"logical_cpus", m.logical_cpus},
          {"available_cpus", m.available_cpus},
          {"torch_threads", m.torch_threads},
          {"torch_interop_threads", m.torch_interop_threads},
          {"fewstep_version", m.fewstep_version},
          {"torch_version", m.torch_version},
          {"compiler", m.compiler},
          {"build_type", m.build_type},
          {"os", m.os},
          {"timestamp_utc", m.timestamp_utc},
          {"allocator", m.allocator}};
}

}  // namespace fewstep::bench
