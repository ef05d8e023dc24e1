/// @file core/atomic_file.h
/// @brief Atomic file replacement: write a temporary file in the target's directory, fsync, rename.
///
/// rename(2) within one file system replaces the target in one step, so a reader (or a run
/// resumed after SIGKILL or a power cut) sees either the previous complete file or the new
/// complete one, never a prefix. The temporary file is a hidden sibling
/// ".<name>.tmp.<pid>.<n>"; it is removed when the writer fails with an exception. A process
/// killed mid-write (SIGKILL, power cut) leaves that hidden file behind, the target untouched;
/// the next atomic_write to the same path removes the temporary files of that path whose writer
/// process no longer exists (pids of this machine; a live writer's file is left alone).
///
/// Writers serialise to memory first where the serialiser can fail half-way (TorchScript,
/// pickles) and hand the bytes to atomic_write_bytes: a full disk is then an ENOSPC error from
/// write(2) naming the file, never an exception escaping a serialiser's destructor.
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

/// The common prefix of atomic_write's temporary files for `path`: "<dir>/.<name>.tmp." (the
/// writer's pid and a counter follow).
std::string atomic_temp_prefix(const std::string& path);

/// Removes the temporary files of `path` left by writers that no longer run (atomic_write calls
/// it first); returns how many were removed. Files of live processes are kept.
int remove_stale_temp_files(const std::string& path);

/// The whole content of a file. ValueError naming `what` and the path when it is missing, is a
/// directory, or cannot be read.
std::string read_file(const std::string& path, const std::string& what);

}  // namespace fewstep
