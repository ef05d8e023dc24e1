/// @file core/cache_dir.h
/// @brief Where fewstep keeps its caches (teacher solves, reference samples, classifier statistics).
///
/// One policy for every cache: $FEWSTEP_CACHE_DIR if set, else the user cache directory
/// ($XDG_CACHE_HOME/fewstep, else $HOME/.cache/fewstep), else <system temp>/fewstep-cache.
/// Commands take `--cache-dir` to override it and `--no-cache` to bypass it; Python functions
/// take `cache=True` (this directory), a directory, or None. Cache files carry the key they were
/// made for and are verified on load (sample/teacher_cache.h), so a stale or foreign file is
/// recomputed, never returned.
#pragma once

#include <string>

namespace fewstep {

/// The cache root described above, with `sub` appended when it is not empty (e.g.
/// "teacher-solves"). The directory is not created.
std::string cache_directory(const std::string& sub = "");

}  // namespace fewstep
