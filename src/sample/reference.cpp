#include "fewstep/sample/reference.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "fewstep/core/check.h"
#include "fewstep/core/interrupt.h"

namespace fewstep {

namespace {

// Dormand–Prince 5(4) (Dormand & Prince 1980; HNW I, Table II.5.2). Row 6 of A is the
// 5th-order weight vector b (first-same-as-last); kE = b − b̂ with b̂ the 4th-order weights.
constexpr int kStages = 7;
constexpr std::array<double, kStages> kC = {0.0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1.0, 1.0};
constexpr double kA[kStages][kStages - 1] = {
    {0, 0, 0, 0, 0, 0},
    {1.0 / 5, 0, 0, 0, 0, 0},
    {3.0 / 40, 9.0 / 40, 0, 0, 0, 0},
    {44.0 / 45, -56.0 / 15, 32.0 / 9, 0, 0, 0},
    {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729, 0, 0},
    {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656, 0},
    {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84},
};
constexpr std::array<double, kStages> kE = {71.0 / 57600,      0.0,          -71.0 / 16695, 71.0 / 1920,
                                            -17253.0 / 339200, 22.0 / 525, -1.0 / 40};
constexpr double kErrorExponent = 1.0 / 5;  // 1/(q+1) for the 4th-order estimator
constexpr double kSafety = 0.9;
constexpr double kMinFactor = 0.2;
constexpr double kMaxFactor = 5.0;

// [batch, features] view for per-sample norms; a 1-D x is one sample.
at::Tensor per_sample(const at::Tensor& t) { return t.dim() >= 2 ? t.reshape({t.size(0), -1}) : t.reshape({1, -1}); }

// Max over the batch of the RMS over coordinates of v / (atol + rtol·scale_ref).
double weighted_norm(const at::Tensor& v, const at::Tensor& scale_ref, double rtol, double atol) {
  auto w = per_sample(v) / (per_sample(scale_ref).abs() * rtol + atol);
  return w.square().mean(1).sqrt().max().item<double>();
}

class Problem {
 public:
  Problem(const Denoiser& model, double t_start, double t_end)
      : model_(model),
        schedule_(model.schedule_ref()),
        t_start_(t_start),
        t_end_(t_end),
        lam_start_(schedule_.lambda(t_start)),
        lam_end_(schedule_.lambda(t_end)) {}

  double lam_start() const { return lam_start_; }
  double lam_end() const { return lam_end_; }
  int64_t nfe() const { return nfe_; }

  // t(λ), pinned to the exact end points so the model never sees a time outside [t_end, t_start].
  double time_at(double lam) const {
    if (lam <= lam_start_) return t_start_;
    if (lam >= lam_end_) return t_end_;
    return std::clamp(schedule_.t_of_lambda(lam), t_end_, t_start_);
  }

  double sigma_at(double lam) const { return schedule_.sigma(time_at(lam)); }

  // dy/dλ = e^λ x̂_0(σ y, t(λ)).
  at::Tensor rhs(double lam, const at::Tensor& y) {
    check_interrupt();  // Ctrl-C between evaluations (core/interrupt.h)
    const double t = time_at(lam);
    auto out = model_(y * schedule_.sigma(t), t);
    ++nfe_;
    auto k = out.x0.to(at::kDouble) * std::exp(lam);
    FEWSTEP_CHECK(at::isfinite(k).all().item<bool>(), "reference_solve: the model returned non-finite x̂_0 at t = ",
                  t, " (λ = ", lam, ")");
    return k;
  }

 private:
  const Denoiser& model_;
  const NoiseSchedule& schedule_;
  double t_start_, t_end_, lam_start_, lam_end_;
  int64_t nfe_ = 0;
};

void check_arguments(const NoiseSchedule& schedule, const at::Tensor& x_T, double t_start, double t_end,
                     const ReferenceOptions& o) {
  FEWSTEP_CHECK_VALUE(x_T.defined(), "reference_solve: x_T is an undefined tensor");
  FEWSTEP_CHECK_TYPE(at::isFloatingType(x_T.scalar_type()), "reference_solve: x_T must be a floating-point tensor, got ",
                     x_T.scalar_type());
  FEWSTEP_CHECK_VALUE(x_T.dim() >= 1 && x_T.numel() > 0, "reference_solve: x_T must be a non-empty tensor, got shape ",
                      x_T.sizes());
  const double lo = schedule.t_min(), hi = schedule.t_max();
  const double slack = 1e-12 * std::max(1.0, std::abs(hi));
  for (auto [name, t] : {std::pair<const char*, double>{"t_start", t_start}, {"t_end", t_end}}) {
    FEWSTEP_CHECK_VALUE(std::isfinite(t) && t >= lo - slack && t <= hi + slack, "reference_solve: ", name,
                        " must lie in the schedule's range [", lo, ", ", hi, "] of ", schedule.repr(), ", got ", t);
  }
  FEWSTEP_CHECK_VALUE(t_start > t_end, "reference_solve: t_start must be greater than t_end (the solve runs from noise ",
                      "to data), got t_start = ", t_start, ", t_end = ", t_end);
  FEWSTEP_CHECK_VALUE(std::isfinite(o.rtol) && o.rtol > 0, "reference_solve: rtol must be positive, got ", o.rtol);
  FEWSTEP_CHECK_VALUE(std::isfinite(o.atol) && o.atol > 0, "reference_solve: atol must be positive, got ", o.atol);
  FEWSTEP_CHECK_VALUE(o.max_steps > 0, "reference_solve: max_steps must be positive, got ", o.max_steps);
  FEWSTEP_CHECK_VALUE(std::isfinite(o.first_step) && o.first_step >= 0,
                      "reference_solve: first_step must be >= 0 (0 = automatic), got ", o.first_step);
}

// Starting step size, HNW I §II.4 ("automatic step size control", starting step): one extra
// evaluation. Returns a step in λ no longer than `span`.
double initial_step(Problem& problem, const at::Tensor& y0, const at::Tensor& f0, double span, double rtol,
                    double atol) {
  const double d0 = weighted_norm(y0, y0, rtol, atol);
  const double d1 = weighted_norm(f0, y0, rtol, atol);
  double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
  h0 = std::min(h0, span);
  auto y1 = y0.add(f0, h0);
  auto f1 = problem.rhs(problem.lam_start() + h0, y1);
  const double d2 = weighted_norm(f1 - f0, y0, rtol, atol) / h0;
  const double dmax = std::max(d1, d2);
  const double h1 = dmax <= 1e-15 ? std::max(1e-6, h0 * 1e-3) : std::pow(0.01 / dmax, kErrorExponent);
  return std::min({100 * h0, h1, span});
}

ReferenceResult solve(const Denoiser& model, const at::Tensor& x_T, double t_start, double t_end,
                      const ReferenceOptions& o) {
  Problem problem(model, t_start, t_end);
  const double lam_end = problem.lam_end();
  const double span = lam_end - problem.lam_start();

  at::Tensor y = x_T.to(at::kDouble) / problem.sigma_at(problem.lam_start());
  double lam = problem.lam_start();
  at::Tensor k_first = problem.rhs(lam, y);
  double h = o.first_step > 0 ? std::min(o.first_step, span) : initial_step(problem, y, k_first, span, o.rtol, o.atol);

  ReferenceResult result;
  bool last_rejected = false;
  std::array<at::Tensor, kStages> k;
  while (lam < lam_end) {
    FEWSTEP_CHECK(result.accepted + result.rejected < o.max_steps, "reference_solve: reached max_steps = ",
                  o.max_steps, " (", result.accepted, " accepted, ", result.rejected, " rejected) at t = ",
                  problem.time_at(lam), " (λ = ", lam, " of [", problem.lam_start(), ", ", lam_end,
                  "]); raise ReferenceOptions::max_steps or loosen rtol/atol (rtol = ", o.rtol, ", atol = ", o.atol,
                  ")");
    // Land exactly on λ_end, and avoid leaving a sliver (HNW's 1.01 rule).
    const bool last = lam + 1.01 * h >= lam_end;
    if (last) h = lam_end - lam;
    FEWSTEP_CHECK(lam + h > lam, "reference_solve: step size underflow (h = ", h, ") at t = ", problem.time_at(lam),
                  " (λ = ", lam, "); the model's x̂_0 is probably not smooth in t there");

    // Stage s evaluates at y + h·Σ_j A[s][j] k_j; stage 7's argument is the 5th-order y_new
    // (row 6 of A is b), and its evaluation is the next step's first stage (FSAL).
    k[0] = k_first;
    at::Tensor y_new;
    for (int s = 1; s < kStages; ++s) {
      at::Tensor incr = k[0] * kA[s][0];
      for (int j = 1; j < s; ++j) {
        if (kA[s][j] != 0) incr.add_(k[j], kA[s][j]);
      }
      at::Tensor y_stage = y.add(incr, h);
      const double lam_stage = (last && kC[s] == 1.0) ? lam_end : lam + kC[s] * h;
      k[s] = problem.rhs(lam_stage, y_stage);
      if (s == kStages - 1) y_new = std::move(y_stage);
    }
    at::Tensor err = k[0] * kE[0];
    for (int j = 1; j < kStages; ++j) {
      if (kE[j] != 0) err.add_(k[j], kE[j]);
    }
    err.mul_(h);

    const at::Tensor scale_ref = at::maximum(y.abs(), y_new.abs());
    const double norm = weighted_norm(err, scale_ref, o.rtol, o.atol);
    const double raw = norm > 0 ? kSafety * std::pow(norm, -kErrorExponent) : kMaxFactor;
    if (norm <= 1.0) {
      ++result.accepted;
      lam = last ? lam_end : lam + h;
      y = std::move(y_new);
      k_first = k[kStages - 1];
      h *= std::clamp(raw, kMinFactor, last_rejected ? 1.0 : kMaxFactor);
      last_rejected = false;
    } else {
      ++result.rejected;
      h *= std::clamp(raw, kMinFactor, 1.0);
      last_rejected = true;
    }
  }
  result.x = y * problem.sigma_at(lam_end);
  result.nfe = problem.nfe();
  return result;
}

}  // namespace

ReferenceResult reference_solve(const Denoiser& model, const at::Tensor& x_T, double t_start, double t_end,
                                const ReferenceOptions& options) {
  check_arguments(model.schedule_ref(), x_T, t_start, t_end, options);
  c10::InferenceMode guard;
  return solve(model, x_T, t_start, t_end, options);
}

}  // namespace fewstep
