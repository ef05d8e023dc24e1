// Shared pieces of accuracy reports: per-sample error statistics, fixed-width tables, JSON files.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <ostream>
#include <string>
#include <vector>

namespace fewstep::bench {

/// Statistics of per-sample errors e_i = ‖x_i − x_ref,i‖₂. RMSE = √(mean e²); the median
/// is robust to the few trajectories that cross a mode boundary (docs/design.md §4).
struct ErrorStats {
  double rmse = 0, median = 0, mean = 0, p90 = 0, max = 0;
};

/// Per-sample Euclidean distance over all non-batch dimensions, in float64 [batch].
at::Tensor per_sample_error(const at::Tensor& x, const at::Tensor& reference);
ErrorStats error_stats(const at::Tensor& per_sample);
nlohmann::json to_json(const ErrorStats& stats);

/// A table of strings: a header row, then one row per entry; the first column is left-aligned.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void add_row(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print(std::ostream& out, const std::string& title) const;
  /// The same rows as a Markdown table (for READMEs), without a title.
  void print_markdown(std::ostream& out) const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

/// printf-style "%.<digits>e".
std::string sci(double value, int digits = 2);
/// printf-style "%.<digits>f".
std::string fixed(double value, int digits = 1);

/// Writes `doc` (indented) to `path`, creating parent directories.
void write_json(const std::string& path, const nlohmann::json& doc);

}  // namespace fewstep::bench
