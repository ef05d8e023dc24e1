#include "fewstep/core/progress_bar.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace fewstep {

namespace {

std::string clock_text(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%02lld:%02lld", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  }
  return buf;
}

}  // namespace

ProgressBar::ProgressBar(int64_t total, std::string label, bool enabled)
    : total_(total), label_(std::move(label)), active_(enabled && ::isatty(STDERR_FILENO) == 1) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

ProgressBar::~ProgressBar() { close(); }

std::string ProgressBar::render(int64_t done, double seconds,
                                const std::vector<std::pair<std::string, double>>& values) const {
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
  std::string line = label_;
  char buf[96];
  if (total_ > 0) {
    const double frac = std::clamp(static_cast<double>(done) / static_cast<double>(total_), 0.0, 1.0);
    std::snprintf(buf, sizeof buf, " %3d%%|", static_cast<int>(frac * 100.0));
    line += buf;
    // Eighth-blocks, as tqdm draws them.
    static const char* const kEighths[] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"};
    constexpr int kWidth = 20;
    const int eighths = static_cast<int>(frac * kWidth * 8);
    for (int i = 0; i < eighths / 8; ++i) line += "█";
    int cells = eighths / 8;
    if (cells < kWidth && eighths % 8 != 0) line += kEighths[eighths % 8], ++cells;
    line.append(static_cast<size_t>(kWidth - cells), ' ');
    const double remaining = rate > 0 ? static_cast<double>(total_ - done) / rate : NAN;
    std::snprintf(buf, sizeof buf, "| %lld/%lld [", static_cast<long long>(done), static_cast<long long>(total_));
    line += buf + clock_text(seconds) + "<" + clock_text(remaining);
  } else {
    std::snprintf(buf, sizeof buf, " %lld [", static_cast<long long>(done));
    line += buf + clock_text(seconds);
  }
  std::snprintf(buf, sizeof buf, ", %.3g it/s", rate);
  line += buf;
  for (const auto& [name, value] : values) {
    std::snprintf(buf, sizeof buf, ", %s=%.4g", name.c_str(), value);
    line += buf;
  }
  return line + "]";
}

void ProgressBar::update(int64_t done, const std::vector<std::pair<std::string, double>>& values) {
  last_done_ = done;
  last_values_ = values;
  if (!active_ || closed_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(100) && done != total_) return;
  last_draw_ = now;
  const double seconds = std::chrono::duration<double>(now - start_).count();
  // \r + clear-to-end-of-line: a shorter line leaves no stale characters.
  std::fprintf(stderr, "\r%s\033[K", render(done, seconds, values).c_str());
  std::fflush(stderr);
}

void ProgressBar::close() {
  if (closed_) return;
  closed_ = true;
  if (!active_) return;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::fprintf(stderr, "\r%s\033[K\n", render(last_done_, seconds, last_values_).c_str());
  std::fflush(stderr);
}

}  // namespace fewstep
