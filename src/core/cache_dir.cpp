#include "fewstep/core/cache_dir.h"

#include <cstdlib>
#include <filesystem>

namespace fewstep {

namespace {
std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : std::string();
}
}  // namespace

std::string cache_directory(const std::string& sub) {
  namespace fsys = std::filesystem;
  fsys::path root;
  if (!env("FEWSTEP_CACHE_DIR").empty()) root = env("FEWSTEP_CACHE_DIR");
  else if (!env("XDG_CACHE_HOME").empty()) root = fsys::path(env("XDG_CACHE_HOME")) / "fewstep";
  else if (!env("HOME").empty()) root = fsys::path(env("HOME")) / ".cache" / "fewstep";
  else root = fsys::temp_directory_path() / "fewstep-cache";
  return (sub.empty() ? root : root / sub).string();
}

}  // namespace fewstep
