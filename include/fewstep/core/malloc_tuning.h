/// @file core/malloc_tuning.h
/// @brief glibc allocator thresholds for processes that run networks (the `fewstep` command and the
/// benchmark binaries call `tune_malloc_for_tensors()` once at startup).
///
/// A network's activations are large blocks freed at the end of every call. Under glibc's defaults
/// they are served by mmap (or trimmed from the top of the heap once freed), so every evaluation
/// faults its pages in again: on the Fashion-MNIST teacher at batch 64 that is most of the system
/// time of a sample. Raising M_MMAP_THRESHOLD to its maximum (32 MiB on 64-bit glibc, larger blocks
/// still use mmap) and M_TRIM_THRESHOLD to 1 GiB keeps those pages in the process between calls
/// (mallopt(3); the same as the environment variables MALLOC_MMAP_THRESHOLD_=33554432 and
/// MALLOC_TRIM_THRESHOLD_=1073741824). The cost is resident memory that is not returned to the OS
/// while the process lives.
///
/// Nothing is changed when the environment sets MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_
/// (the user's choice wins), when FEWSTEP_MALLOC_TUNING=0 (glibc's defaults, for side-by-side
/// benchmarks), or on a C library other than glibc. The library itself never calls this: a Python
/// process or a program linking fewstep keeps its own allocator settings.
#pragma once

#include <string>

namespace fewstep {

/// Applies the thresholds above once per process (later calls do nothing) and returns what it did,
/// in words, for the machine line of benchmarks ("glibc mmap_threshold=... trim_threshold=...",
/// "glibc defaults (FEWSTEP_MALLOC_TUNING=0)", ...).
std::string tune_malloc_for_tensors();

}  // namespace fewstep
