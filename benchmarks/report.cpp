#include "report.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace fewstep::bench {

at::Tensor per_sample_error(const at::Tensor& x, const at::Tensor& reference) {
  auto d = x.to(at::kDouble) - reference.to(at::kDouble);
  return d.dim() >= 2 ? d.flatten(1).norm(2, 1) : d.norm(2).unsqueeze(0);
}

ErrorStats error_stats(const at::Tensor& per_sample) {
  auto e = per_sample.to(at::kDouble).contiguous().cpu();
  std::vector<double> v(e.data_ptr<double>(), e.data_ptr<double>() + e.numel());
  ErrorStats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  double sum = 0, sum2 = 0;
  for (double x : v) sum += x, sum2 += x * x;
  s.mean = sum / n;
  s.rmse = std::sqrt(sum2 / n);
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  s.p90 = v[std::min(n - 1, static_cast<size_t>(std::ceil(0.9 * n)) - 1)];  // nearest-rank
  s.max = v.back();
  return s;
}

nlohmann::json to_json(const ErrorStats& s) {
  return {{"rmse", s.rmse}, {"median", s.median}, {"mean", s.mean}, {"p90", s.p90}, {"max", s.max}};
}

void Table::print(std::ostream& out, const std::string& title) const {
  std::vector<size_t> width(header_.size(), 0);
  auto widen = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) width[i] = std::max(width[i], row[i].size());
  };
  widen(header_);
  for (const auto& r : rows_) widen(r);
  auto line = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < width.size(); ++i) {
      const std::string cell = i < row.size() ? row[i] : "";
      const std::string pad(width[i] - cell.size(), ' ');
      out << (i == 0 ? cell + pad : "  " + pad + cell);
    }
    out << "\n";
  };
  out << title << "\n";
  line(header_);
  size_t total = 0;
  for (size_t i = 0; i < width.size(); ++i) total += width[i] + (i ? 2 : 0);
  out << std::string(total, '-') << "\n";
  for (const auto& r : rows_) line(r);
}

void Table::print_markdown(std::ostream& out) const {
  auto line = [&](const std::vector<std::string>& row) {
    out << "|";
    for (size_t i = 0; i < header_.size(); ++i) out << " " << (i < row.size() ? row[i] : "") << " |";
    out << "\n";
  };
  line(header_);
  out << "|";
  for (size_t i = 0; i < header_.size(); ++i) out << (i == 0 ? " --- |" : " ---: |");
  out << "\n";
  for (const auto& r : rows_) line(r);
}

std::string sci(double value, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*e", digits, value);
  return buf;
}

std::string fixed(double value, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, value);
  return buf;
}

void write_json(const std::string& path, const nlohmann::json& doc) {
  const std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  std::ofstream out(p);
  if (!out) throw std::runtime_error("cannot write JSON to '" + path + "'");
  out << doc.dump(2) << "\n";
  if (!out) throw std::runtime_error("error while writing '" + path + "'");
}

}  // namespace fewstep::bench
