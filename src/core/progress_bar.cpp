#include "fewstep/core/progress_bar.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>

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

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

double default_progress_interval() {
  if (const char* text = std::getenv("FEWSTEP_PROGRESS_INTERVAL")) {
    char* end = nullptr;
    const double v = std::strtod(text, &end);
    if (end != text && *end == '\0' && std::isfinite(v) && v >= 0) return v;
  }
  return 30.0;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds)) return "?";
  if (seconds < 0) return "-" + format_duration(-seconds);
  char buf[48];
  if (seconds < 0.9995) {
    std::snprintf(buf, sizeof buf, "%.3g ms", seconds * 1e3);
  } else if (seconds < 59.95) {
    std::snprintf(buf, sizeof buf, "%.3g s", seconds);
  } else if (seconds < 3599.5) {
    const auto s = static_cast<long long>(std::llround(seconds));
    std::snprintf(buf, sizeof buf, "%lld min %02lld s", s / 60, s % 60);
  } else {
    const auto m = static_cast<long long>(std::llround(seconds / 60.0));
    std::snprintf(buf, sizeof buf, "%lld h %02lld min", m / 60, m % 60);
  }
  return buf;
}

ProgressBar::ProgressBar(int64_t total, std::string label, bool enabled)
    : ProgressBar(total, std::move(label), enabled ? ProgressOutput::kAuto : ProgressOutput::kOff) {}

ProgressBar::ProgressBar(int64_t total, std::string label, ProgressOutput output, double log_interval,
                         std::FILE* stream, Clock clock)
    : total_(total), label_(std::move(label)), interval_(log_interval), stream_(stream), clock_(std::move(clock)) {
  const bool tty = stream_ != nullptr && ::isatty(::fileno(stream_)) == 1;
  switch (output) {
    case ProgressOutput::kAuto: mode_ = tty ? Mode::kBar : Mode::kLines; break;
    case ProgressOutput::kTerminalOnly: mode_ = tty ? Mode::kBar : Mode::kOff; break;
    case ProgressOutput::kBar: mode_ = Mode::kBar; break;
    case ProgressOutput::kLines: mode_ = Mode::kLines; break;
    case ProgressOutput::kOff: mode_ = Mode::kOff; break;
  }
  if (!(interval_ >= 0)) interval_ = 30.0;  // NaN or negative: the default
  if (stream_ == nullptr) mode_ = Mode::kOff;
  start_ = last_draw_ = now();
}

ProgressBar::~ProgressBar() { close(); }

double ProgressBar::now() const { return clock_ ? clock_() : steady_seconds(); }

std::string ProgressBar::render(int64_t done, double seconds,
                                const std::vector<std::pair<std::string, double>>& values, bool bar) const {
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
  std::string line = label_;
  char buf[96];
  if (total_ > 0) {
    const double frac = std::clamp(static_cast<double>(done) / static_cast<double>(total_), 0.0, 1.0);
    std::snprintf(buf, sizeof buf, " %3d%%", static_cast<int>(frac * 100.0));
    line += buf;
    if (bar) {
      // Eighth-blocks, as tqdm draws them.
      static const char* const kEighths[] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"};
      constexpr int kWidth = 20;
      const int eighths = static_cast<int>(frac * kWidth * 8);
      line += "|";
      for (int i = 0; i < eighths / 8; ++i) line += "█";
      int cells = eighths / 8;
      if (cells < kWidth && eighths % 8 != 0) line += kEighths[eighths % 8], ++cells;
      line.append(static_cast<size_t>(kWidth - cells), ' ');
      line += "|";
    }
    const double remaining = rate > 0 ? static_cast<double>(total_ - done) / rate : NAN;
    std::snprintf(buf, sizeof buf, " %lld/%lld [", static_cast<long long>(done), static_cast<long long>(total_));
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
  if (mode_ == Mode::kOff || closed_) return;
  const double t = now();
  if (mode_ == Mode::kBar) {
    if (t - last_draw_ < 0.1 && done != total_) return;
    last_draw_ = t;
    // \r + clear-to-end-of-line: a shorter line leaves no stale characters.
    std::fprintf(stream_, "\r%s\033[K", render(done, t - start_, values).c_str());
  } else {
    if (t - last_draw_ < interval_) return;
    last_draw_ = t;
    ++lines_printed_;
    std::fprintf(stream_, "%s\n", render(done, t - start_, values, /*bar=*/false).c_str());
  }
  std::fflush(stream_);
}

void ProgressBar::close() {
  if (closed_) return;
  closed_ = true;
  if (mode_ == Mode::kOff || (mode_ == Mode::kLines && lines_printed_ == 0)) return;
  const double seconds = now() - start_;
  if (mode_ == Mode::kBar) {
    std::fprintf(stream_, "\r%s\033[K\n", render(last_done_, seconds, last_values_).c_str());
  } else {
    std::fprintf(stream_, "%s (done in %s)\n", render(last_done_, seconds, last_values_, false).c_str(),
                 format_duration(seconds).c_str());
  }
  std::fflush(stream_);
}

}  // namespace fewstep
