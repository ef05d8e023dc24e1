#include "fewstep/solvers/deis.h"

#include <cmath>

#include "expint.h"
#include "fewstep/core/check.h"

namespace fewstep {

namespace {

const std::vector<std::string>& deis_option_names() {
  static const std::vector<std::string> names{"order", "variable", "lower_order_final", "lower_order_final_steps"};
  return names;
}

/// M_k = ∫_0^h e^{−u} θ(u)^k du, k < n, with θ = (t(λ_s + u) − s)/(t − s), by composite Gauss–Legendre.
std::vector<double> t_moments(const NoiseSchedule& schedule, double s, double t, double lambda_s, double h, int n) {
  static const auto gl = detail::gauss_legendre01(10);
  const int panels = std::max(1, static_cast<int>(std::ceil(h / 0.5)));
  const double width = h / panels;
  std::vector<double> moments(n, 0.0);
  for (int q = 0; q < panels; ++q) {
    for (size_t g = 0; g < gl.first.size(); ++g) {
      const double u = width * (q + gl.first[g]);
      const double theta = (schedule.t_of_lambda(lambda_s + u) - s) / (t - s);
      double weight = width * gl.second[g] * std::exp(-u), power = 1.0;
      for (int k = 0; k < n; ++k) {
        moments[k] += weight * power;
        power *= theta;
      }
    }
  }
  return moments;
}

}  // namespace

DeisVariable parse_deis_variable(const std::string& name) {
  if (name == "t") return DeisVariable::T;
  // "logrho" is diffusers' DEISMultistepScheduler(solver_type="logrho"): log ρ = −λ, so a
  // polynomial in log ρ is one in λ.
  if (name == "lambda" || name == "logrho") return DeisVariable::Lambda;
  if (name == "rho") return DeisVariable::Rho;
  FEWSTEP_CHECK_VALUE(false, "solver 'deis': variable must be 't', 'lambda' (= 'logrho', diffusers' DEIS), or 'rho', got '", name, "'");
  throw;  // unreachable
}

double deis_linear_factor(const NoiseSchedule& schedule, double s, double t) {
  return std::exp(schedule.log_alpha(t) - schedule.log_alpha(s));
}

std::vector<double> deis_coefficients(const NoiseSchedule& schedule, const std::vector<double>& times, double t,
                                      DeisVariable variable) {
  const int n = static_cast<int>(times.size());
  FEWSTEP_CHECK_VALUE(n >= 1 && n <= 4, "deis_coefficients: expected 1 to 4 history times, got ", n);
  const double s = times[0];
  const double lambda_s = schedule.lambda(s);
  const double h = schedule.lambda(t) - lambda_s;
  // The interpolant is written in a normalised variable θ ∈ [0, 1] over the step (θ = 0 at s);
  // node m sits at z_m, and the weights w solve Σ_j w_j z_j^k = M_k = ∫_0^h e^{−u} θ(u)^k du.
  std::vector<double> z(n), moments(n);
  switch (variable) {
    case DeisVariable::Lambda: {  // θ = u/h: M_k = h k! e^{−h} φ_{k+1}(h)
      double fact = 1.0;
      for (int k = 0; k < n; ++k) {
        if (k > 0) fact *= k;
        z[k] = (schedule.lambda(times[k]) - lambda_s) / h;
        moments[k] = h * fact * std::exp(-h) * detail::phi(k + 1, h);
      }
      break;
    }
    case DeisVariable::Rho: {  // θ = (1 − ρ/ρ_s)/Y, Y = 1 − e^{−h}, e^{−u} du = Y dθ: M_k = Y/(k+1)
      const double y = -std::expm1(-h);
      for (int k = 0; k < n; ++k) {
        z[k] = -std::expm1(-(schedule.lambda(times[k]) - lambda_s)) / y;
        moments[k] = y / (k + 1);
      }
      break;
    }
    case DeisVariable::T: {
      for (int k = 0; k < n; ++k) z[k] = (times[k] - s) / (t - s);
      moments = t_moments(schedule, s, t, lambda_s, h, n);
      break;
    }
  }
  // Transposed Vandermonde system: row k is (z_0^k, ..., z_{n−1}^k).
  std::vector<double> vt(n * n);
  for (int k = 0; k < n; ++k)
    for (int j = 0; j < n; ++j) vt[k * n + j] = std::pow(z[j], static_cast<double>(k));
  auto w = detail::solve_small(vt, moments);
  // −α_t e^{−λ_s} = −α_t σ_s/α_s.
  const double scale = -schedule.alpha(t) * std::exp(schedule.log_sigma(s) - schedule.log_alpha(s));
  for (auto& c : w) c *= scale;
  return w;
}

at::Tensor deis_nonlinear_term(const NoiseSchedule& schedule, const std::vector<double>& times,
                               const std::vector<at::Tensor>& eps, double t, DeisVariable variable) {
  FEWSTEP_CHECK_VALUE(eps.size() == times.size(), "deis_nonlinear_term: ", eps.size(), " eps tensors for ",
                      times.size(), " times");
  const auto c = deis_coefficients(schedule, times, t, variable);
  at::Tensor out = eps[0] * c[0];
  for (size_t j = 1; j < c.size(); ++j) out.add_(eps[j] * c[j]);  // in place: the same bits
  return out;
}

DeisStepper::DeisStepper(const Options& options) {
  options.check_known(deis_option_names(), "solver 'deis'");
  order_ = options.get_int("order", 3);
  FEWSTEP_CHECK_VALUE(order_ >= 1 && order_ <= 3, "solver 'deis': order must be 1, 2 or 3, got ", order_);
  variable_ = parse_deis_variable(options.get_string("variable", "t"));
  lower_order_final_ = LowerOrderFinal::from_options(options, "solver 'deis'");
  traits_ = StepperTraits::named("deis",
      "DEIS: exact linear part + polynomial extrapolation of eps in t, lambda or rho (tAB/rhoAB-DEIS, Zhang & Chen "
      "2022, arXiv 2204.13902)")
      .with_order(static_cast<int>(order_))
      .with_multistep()
      .with_needs(Needs::Eps)
      .with_options(deis_option_names());
}

StepResult DeisStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                             const StepContext& ctx) const {
  const auto& schedule = model.schedule();
  auto out = model(x, s);
  auto& hist = state.history;
  const int64_t p = lower_order_final_.order(order_, hist.size(), ctx);
  std::vector<double> times{s};
  std::vector<at::Tensor> eps{out.eps};
  for (int64_t k = 1; k < p; ++k) {
    times.push_back(hist[hist.size() - k].t);
    eps.push_back(hist[hist.size() - k].eps);
  }
  at::Tensor x_next = x * deis_linear_factor(schedule, s, t);
  x_next.add_(deis_nonlinear_term(schedule, times, eps, t, variable_));
  hist.push_back(HistoryEntry{s, out.x0, out.eps});
  if (static_cast<int64_t>(hist.size()) > order_ - 1) hist.erase(hist.begin(), hist.end() - (order_ - 1));
  return StepResult{x_next, out.x0, std::nullopt, std::move(state)};
}

}  // namespace fewstep
