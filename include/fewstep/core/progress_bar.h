/// @file core/progress_bar.h
/// @brief Progress of long loops on stderr: a tqdm-like bar on a terminal, one line every half
/// minute in a log; and durations written for people.
///
/// On a terminal (stderr is a TTY) the bar is redrawn in place at most ten times a second:
///   train  37%|███████▍            | 370/1000 [00:12<00:20, 30.1 it/s, loss=0.0123, lr=2.0e-04]
/// When stderr is a file or a pipe (CI, `tee`, `nohup`) it prints one plain line every
/// `log_interval` seconds (30 by default; the environment variable FEWSTEP_PROGRESS_INTERVAL
/// overrides it, 0 prints a line at every update) and a last one when it closes, so a run shorter than the
/// interval prints nothing and a long one shows that it is alive and when it will end:
///   train  37% 370/1000 [00:12<00:20, 30.1 it/s, loss=0.0123, lr=2.0e-04]
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace fewstep {

/// Where and how a ProgressBar reports.
enum class ProgressOutput {
  kAuto,          ///< a bar on a terminal, periodic lines otherwise
  kTerminalOnly,  ///< a bar on a terminal, nothing otherwise (for loops that log on their own)
  kBar,           ///< always the redrawn bar
  kLines,         ///< always periodic lines
  kOff,           ///< nothing
};

/// The interval of the periodic lines: FEWSTEP_PROGRESS_INTERVAL (seconds, >= 0) if set and valid,
/// else 30.
double default_progress_interval();

/// "850 ms", "18.5 s", "3 min 05 s", "2 h 07 min": a duration as a person reads it (seconds
/// below a minute keep three significant digits; longer ones are rounded to whole seconds or minutes).
std::string format_duration(double seconds);

class ProgressBar {
 public:
  using Clock = std::function<double()>;  ///< seconds on a monotonic clock

  /// `total` steps (0: unknown, no percentage). With `enabled` false nothing is printed;
  /// otherwise ProgressOutput::kAuto.
  ProgressBar(int64_t total, std::string label, bool enabled = true);
  /// Full control (tests, embedding): the output mode, the line interval in seconds, the stream
  /// and the clock (nullptr: the steady clock).
  ProgressBar(int64_t total, std::string label, ProgressOutput output, double log_interval = default_progress_interval(),
              std::FILE* stream = stderr, Clock clock = nullptr);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  /// Reports `done` steps and named values (printed with 4 significant digits).
  void update(int64_t done, const std::vector<std::pair<std::string, double>>& values = {});
  /// Draws the final state (a bar: always; lines: if any line was printed) and ends the line
  /// (idempotent).
  void close();

  /// True while a bar is drawn on the terminal (a loop may then skip its own log lines).
  bool active() const { return mode_ == Mode::kBar; }
  /// True when periodic lines are printed.
  bool logging() const { return mode_ == Mode::kLines; }
  /// The text update() would draw (for tests; needs no terminal). `bar` false: without the bar
  /// graphic, as in the periodic lines.
  std::string render(int64_t done, double seconds, const std::vector<std::pair<std::string, double>>& values,
                     bool bar = true) const;

 private:
  enum class Mode { kOff, kBar, kLines };
  double now() const;

  int64_t total_;
  std::string label_;
  Mode mode_;
  double interval_;
  std::FILE* stream_;
  Clock clock_;
  bool closed_ = false;
  int64_t lines_printed_ = 0;
  double start_, last_draw_;
  int64_t last_done_ = 0;
  std::vector<std::pair<std::string, double>> last_values_;
};

}  // namespace fewstep
