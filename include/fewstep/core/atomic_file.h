/// @file core/atomic_file.h
/// @brief Atomic file replacement: write a temporary file in the target's directory, fsync, rename.
///
/// rename(2) within one file system replaces the target in one step, so a reader (or a run
/// resumed after SIGKILL or a power cut) sees either the previous complete file or the new
/// complete one, never a prefix. The temporary file is a hidden sibling
/// ".<name>.tmp.<pid>.<n>"; it is removed when the writer fails with an exception, and a
/// process killed mid-write leaves at most that hidden file behind (the target is untouched).
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace fewstep {

/// Calls `write(temp_path)` to create the temporary file, fsyncs it, renames it onto `path` and
/// fsyncs the directory. Any exception from `write` or the file system removes the temporary
/// file and propagates (runtime errors name the path and the failing system call).
void atomic_write(const std::string& path, const std::function<void(const std::string& temp_path)>& write);

/// atomic_write of a byte buffer.
void atomic_write_bytes(const std::string& path, const void* data, size_t size);

/// The temporary-file name atomic_write uses next for `path` in this process (for tests).
std::string atomic_temp_prefix(const std::string& path);

}  // namespace fewstep
