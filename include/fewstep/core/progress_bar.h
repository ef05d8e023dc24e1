/// @file core/progress_bar.h
/// @brief A tqdm-like one-line progress bar on stderr for training loops.
///
///   train  37%|███████▍            | 370/1000 [00:12<00:20, 30.1 it/s, loss=0.0123, lr=2.0e-04]
/// Redrawn at most ten times a second; silent when disabled or when stderr is not a terminal
/// (logs and CI output stay clean).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace fewstep {

class ProgressBar {
 public:
  /// `total` steps (0: unknown, no percentage). Shown only if `enabled` and stderr is a TTY.
  ProgressBar(int64_t total, std::string label, bool enabled = true);
  ~ProgressBar();

  /// Reports `done` steps and named values (printed with 4 significant digits).
  void update(int64_t done, const std::vector<std::pair<std::string, double>>& values = {});
  /// Draws the final state and ends the line (idempotent).
  void close();

  bool active() const { return active_; }
  /// The text update() would draw (for tests; needs no terminal).
  std::string render(int64_t done, double seconds, const std::vector<std::pair<std::string, double>>& values) const;

 private:
  int64_t total_;
  std::string label_;
  bool active_;
  bool closed_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
  int64_t last_done_ = 0;
  std::vector<std::pair<std::string, double>> last_values_;
};

}  // namespace fewstep
