#include "fewstep/solvers/unipc.h"

#include <any>
#include <cmath>
#include <limits>
#include <optional>

#include "expint.h"
#include "fewstep/core/check.h"

namespace fewstep {

namespace {

/// What UniPC carries to the next step (SolverState::own): the start point x_{i−1} of the previous step,
/// from which the corrector re-integrates once ε̂ at x_i is known, and the order that step used.
struct UniPCMemory {
  at::Tensor start;
  int64_t order = 0;
};

const std::vector<std::string>& unipc_option_names() {
  static const std::vector<std::string> names{"order", "variant", "predict_x0", "use_corrector", "lower_order_final"};
  return names;
}

}  // namespace

UniPCStepper::UniPCStepper(const Options& options) {
  options.check_known(unipc_option_names(), "solver 'unipc'");
  order_ = options.get_int("order", 2);
  FEWSTEP_CHECK_VALUE(order_ >= 1 && order_ <= 3, "solver 'unipc': order must be 1, 2 or 3, got ", order_);
  const std::string variant = options.get_string("variant", "bh2");
  FEWSTEP_CHECK_VALUE(variant == "bh1" || variant == "bh2", "solver 'unipc': variant must be 'bh1' or 'bh2', got '",
                      variant, "'");
  bh2_ = variant == "bh2";
  predict_x0_ = options.get_bool("predict_x0", true);
  use_corrector_ = options.get_bool("use_corrector", true);
  lower_order_final_ = options.get_bool("lower_order_final", true);
  traits_ = StepperTraits::named("unipc",
      "UniPC: UniP-p predictor + UniC-p corrector, B(h) = h or e^h - 1, no extra evaluation (Zhao et al. 2023, "
      "arXiv 2302.04867)")
      .with_order(static_cast<int>(order_ + (use_corrector_ ? 1 : 0)))
      .with_multistep()
      .with_revised_start(use_corrector_)
      .with_options(unipc_option_names());
}

at::Tensor UniPCStepper::update(const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& m_s, double s,
                                double t, const std::vector<const HistoryEntry*>& older, int64_t p,
                                const at::Tensor* corrector_model) const {
  const double lambda_s = schedule.lambda(s);
  const double h = schedule.lambda(t) - lambda_s;
  // Data prediction integrates e^{λ} x̂_0 (exponent −h); noise prediction e^{−λ} ε̂ (exponent h).
  const double hh = predict_x0_ ? -h : h;
  const double h_phi_1 = std::expm1(hh);
  const double b_h = bh2_ ? h_phi_1 : hh;
  // x_t without the higher-order terms: the DDIM update in the chosen parameterisation.
  at::Tensor base;
  double scale;  // the factor multiplying B(h)·(...) in the update
  if (predict_x0_) {
    base = x * std::exp(schedule.log_sigma(t) - schedule.log_sigma(s)) - m_s * (schedule.alpha(t) * h_phi_1);
    scale = schedule.alpha(t) * b_h;
  } else {
    base = x * std::exp(schedule.log_alpha(t) - schedule.log_alpha(s)) - m_s * (schedule.sigma(t) * h_phi_1);
    scale = schedule.sigma(t) * b_h;
  }
  const bool correct = corrector_model != nullptr;
  const int64_t n_old = p - 1;  // history differences used
  const int64_t n = correct ? p : p - 1;  // unknowns of the coefficient system
  if (n == 0) return base;

  // r_k for the older points, then r = 1 for the corrector's new point (t itself).
  std::vector<double> r;
  for (int64_t k = 0; k < n_old; ++k) r.push_back((schedule.lambda(older[k]->t) - lambda_s) / h);
  if (correct) r.push_back(1.0);

  std::vector<double> a;
  if (n == 1) {
    a = {0.5};  // UniC-1 / UniP-2: the official code's fixed coefficient (the h → 0 limit)
  } else {
    // R a = g/B with R_{ik} = r_k^{i}, g_i = (i+1)!·hh·φ_{i+2}(hh), i = 0..n−1.
    std::vector<double> mat(n * n), rhs(n);
    double fact = 1.0;
    for (int64_t i = 0; i < n; ++i) {
      fact *= (i + 1);
      for (int64_t k = 0; k < n; ++k) mat[i * n + k] = std::pow(r[k], static_cast<double>(i));
      rhs[i] = fact * hh * detail::phi(static_cast<int>(i + 2), hh) / b_h;
    }
    a = detail::solve_small(mat, rhs);
  }

  at::Tensor residual;
  for (int64_t k = 0; k < n_old; ++k) {
    auto d = (model_output(*older[k]) - m_s) * (a[k] / r[k]);
    residual = residual.defined() ? residual + d : d;
  }
  if (correct) {
    auto d = (*corrector_model - m_s) * a[n - 1];
    residual = residual.defined() ? residual + d : d;
  }
  return base - residual * scale;
}

StepResult UniPCStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                              const StepContext& ctx) const {
  const auto& schedule = model.schedule();
  auto out = model(x, s);
  const at::Tensor& m_s = predict_x0_ ? out.x0 : out.eps;
  auto& hist = state.history;

  // UniC: correct x̃_s, the previous step's prediction, with the evaluation just made at it.
  at::Tensor x_s = x;
  std::optional<at::Tensor> corrected;
  const auto* memory = std::any_cast<UniPCMemory>(&state.own);
  if (use_corrector_ && !hist.empty() && memory != nullptr && memory->order >= 1) {
    const int64_t p = memory->order;
    const HistoryEntry& prev = hist.back();
    std::vector<const HistoryEntry*> older;
    for (int64_t k = 0; k + 1 < p; ++k) older.push_back(&hist[hist.size() - 2 - k]);
    x_s = update(schedule, memory->start, model_output(prev), prev.t, s, older, p, &m_s);
    corrected = x_s;
  }

  // UniP: order limited by the history (warm-up) and, with lower_order_final, by the steps left.
  int64_t p = std::min<int64_t>(order_, static_cast<int64_t>(hist.size()) + 1);
  if (lower_order_final_ && ctx.num_steps >= 0) p = std::min<int64_t>(p, ctx.num_steps - ctx.index);
  p = std::max<int64_t>(p, 1);
  std::vector<const HistoryEntry*> older;
  for (int64_t k = 0; k + 1 < p; ++k) older.push_back(&hist[hist.size() - 1 - k]);
  auto x_next = update(schedule, x_s, m_s, s, t, older, p, nullptr);

  hist.push_back(HistoryEntry{s, out.x0, out.eps});
  // Keep `order` entries: the next corrector needs this step's p − 1 older ones plus this one.
  if (static_cast<int64_t>(hist.size()) > order_) hist.erase(hist.begin(), hist.end() - order_);
  state.own = UniPCMemory{x_s, p};
  return StepResult{x_next, out.x0, std::nullopt, std::move(state), std::move(corrected)};
}

}  // namespace fewstep
