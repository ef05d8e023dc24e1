#include "fewstep/core/malloc_tuning.h"

#include <cstdlib>
#include <mutex>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace fewstep {

namespace {

std::string apply() {
#if defined(__GLIBC__)
  const char* off = std::getenv("FEWSTEP_MALLOC_TUNING");
  if (off != nullptr && std::string(off) == "0") return "glibc defaults (FEWSTEP_MALLOC_TUNING=0)";
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr || std::getenv("MALLOC_TRIM_THRESHOLD_") != nullptr)
    return "glibc thresholds from the environment (MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_)";
  constexpr int kMmapThreshold = 32 << 20;  // glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2)
  constexpr int kTrimThreshold = 1 << 30;
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1;
  return std::string("glibc mmap_threshold=") + (mmap_ok ? "32MiB" : "unchanged (mallopt failed)") +
         " trim_threshold=" + (trim_ok ? "1GiB" : "unchanged (mallopt failed)");
#else
  return "not glibc: allocator defaults";
#endif
}

}  // namespace

std::string tune_malloc_for_tensors() {
  static std::once_flag once;
  static std::string what;
  std::call_once(once, [] { what = apply(); });
  return what;
}

}  // namespace fewstep
