#include "fewstep/core/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>
#include <cstdlib>

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

int remove_stale_temp_files(const std::string& path) {
  namespace fsys = std::filesystem;
  const auto [dir, name] = split_path(path);
  const std::string prefix = "." + name + ".tmp.";
  std::error_code ec;
  fsys::directory_iterator it(dir, ec), end;
  if (ec) return 0;
  std::vector<fsys::path> stale;
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    const std::string file = it->path().filename().string();
    if (file.compare(0, prefix.size(), prefix) != 0) continue;
    // "<pid>.<n>" after the prefix; anything else is not ours.
    const std::string rest = file.substr(prefix.size());
    const size_t dot = rest.find('.');
    if (dot == 0 || dot == std::string::npos || dot + 1 == rest.size()) continue;
    if (rest.find_first_not_of("0123456789") != dot ||
        rest.find_first_not_of("0123456789", dot + 1) != std::string::npos)
      continue;
    const long long pid = std::strtoll(rest.substr(0, dot).c_str(), nullptr, 10);
    if (pid <= 0 || pid == static_cast<long long>(::getpid())) continue;
    // kill(pid, 0): 0 or EPERM means a process with that pid exists; only ESRCH means it is gone.
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    stale.push_back(it->path());
  }
  int removed = 0;
  for (const auto& p : stale) removed += ::unlink(p.c_str()) == 0 ? 1 : 0;
  return removed;
}

std::string read_file(const std::string& path, const std::string& what) {
  namespace fsys = std::filesystem;
  std::error_code ec;
  FEWSTEP_CHECK_VALUE(fsys::exists(path, ec), what, " '", path, "' does not exist");
  FEWSTEP_CHECK_VALUE(!fsys::is_directory(path, ec), what, " '", path, "' is a directory, not a file");
  std::ifstream in(path, std::ios::binary);
  FEWSTEP_CHECK_VALUE(in.good(), what, " '", path, "' cannot be opened: ", errno_text());
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  FEWSTEP_CHECK_VALUE(!in.bad(), what, " '", path, "' cannot be read: ", errno_text());
  return bytes;
}

void atomic_write(const std::string& path, const std::function<void(const std::string& temp_path)>& write) {
  FEWSTEP_CHECK_VALUE(!path.empty() && path.back() != '/', "atomic_write: path must name a file, got '", path, "'");
  const auto [dir, name] = split_path(path);
  remove_stale_temp_files(path);
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
  atomic_write(path, [&path, data, size](const std::string& temp) {
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    FEWSTEP_CHECK(fd >= 0, "cannot write '", path, "': creating its temporary file '", temp, "' failed: ",
                  errno_text());
    const char* p = static_cast<const char*>(data);
    size_t left = size;
    while (left > 0) {
      const ssize_t n = ::write(fd, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const std::string err = n == 0 ? "no progress" : errno_text();
        ::close(fd);
        FEWSTEP_CHECK(false, "cannot write '", path, "' (", size, " bytes, ", size - left,
                      " written to its temporary file): ", err);
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    FEWSTEP_CHECK(::close(fd) == 0, "cannot write '", path, "': closing its temporary file failed: ", errno_text());
  });
}

}  // namespace fewstep
