#include "fewstep/core/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {

std::atomic<uint64_t> g_counter{0};

std::pair<std::string, std::string> split_path(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return {".", path};
  return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

std::string errno_text() { return std::strerror(errno); }

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  FEWSTEP_CHECK(fd >= 0, "atomic_write: cannot open '", path, "' to fsync it: ", errno_text());
  const int rc = ::fsync(fd);
  const std::string err = rc != 0 ? errno_text() : "";
  ::close(fd);
  FEWSTEP_CHECK(rc == 0, "atomic_write: fsync of '", path, "' failed: ", err);
}

}  // namespace

std::string atomic_temp_prefix(const std::string& path) {
  const auto [dir, name] = split_path(path);
  return (dir == "/" ? "" : dir) + "/." + name + ".tmp.";
}

void atomic_write(const std::string& path, const std::function<void(const std::string& temp_path)>& write) {
  FEWSTEP_CHECK_VALUE(!path.empty() && path.back() != '/', "atomic_write: path must name a file, got '", path, "'");
  const auto [dir, name] = split_path(path);
  const std::string temp =
      atomic_temp_prefix(path) + std::to_string(::getpid()) + "." + std::to_string(g_counter.fetch_add(1));
  try {
    write(temp);
    fsync_path(temp, /*directory=*/false);
    FEWSTEP_CHECK(std::rename(temp.c_str(), path.c_str()) == 0, "atomic_write: cannot rename '", temp, "' to '", path,
                  "': ", errno_text());
  } catch (...) {
    ::unlink(temp.c_str());
    throw;
  }
  // The rename itself is durable only once the directory entry is.
  fsync_path(dir, /*directory=*/true);
}

void atomic_write_bytes(const std::string& path, const void* data, size_t size) {
  atomic_write(path, [data, size](const std::string& temp) {
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    FEWSTEP_CHECK(fd >= 0, "atomic_write: cannot create '", temp, "': ", errno_text());
    const char* p = static_cast<const char*>(data);
    size_t left = size;
    while (left > 0) {
      const ssize_t n = ::write(fd, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const std::string err = errno_text();
        ::close(fd);
        FEWSTEP_CHECK(false, "atomic_write: writing '", temp, "' failed: ", err);
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    FEWSTEP_CHECK(::close(fd) == 0, "atomic_write: closing '", temp, "' failed: ", errno_text());
  });
}

}  // namespace fewstep
