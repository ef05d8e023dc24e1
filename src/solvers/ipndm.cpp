#include "fewstep/solvers/ipndm.h"

#include <algorithm>
#include <cmath>

#include "fewstep/core/check.h"
#include "fewstep/solvers/deis.h"

namespace fewstep {

const std::vector<double>& adams_bashforth_weights(int64_t order) {
  // Σ_j b_j (−j)^k = 1/(k + 1), k < p: the integral over one unit step of the interpolant through
  // equally spaced nodes (Hairer, Nørsett & Wanner, Solving ODEs I, §III.1).
  static const std::vector<std::vector<double>> weights{
      {1.0},
      {3.0 / 2.0, -1.0 / 2.0},
      {23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0},
      {55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0},
  };
  FEWSTEP_CHECK_VALUE(order >= 1 && order <= 4, "adams_bashforth_weights: order must be 1 to 4, got ", order);
  return weights[order - 1];
}

int64_t ipndm_max_order(const Options& options, const std::string& owner) {
  const int64_t max_order = options.get_int("max_order", 4);
  FEWSTEP_CHECK_VALUE(max_order >= 1 && max_order <= 4, owner, ": max_order must be 1, 2, 3 or 4, got ", max_order);
  return max_order;
}

namespace {

/// The weights of the authors' variable-step sampler (solvers/ipndm_v.h), in their variables:
/// h_n = ρ_t − ρ_s, h_{n−1} = ρ_s − ρ_{s_1}, h_{n−2} = ρ_{s_1} − ρ_{s_2}, h_{n−3} = ρ_{s_2} − ρ_{s_3}.
std::vector<double> official_variable_weights(const std::vector<double>& rho, double rho_t) {
  const size_t p = rho.size();
  const double hn = rho_t - rho[0];
  if (p == 1) return {1.0};
  const double hn1 = rho[0] - rho[1];
  const double a = hn / hn1;
  if (p == 2) return {(2.0 + a) / 2.0, -a / 2.0};
  const double hn2 = rho[1] - rho[2];
  const double temp1 = (1.0 - hn / (3.0 * (hn + hn1)) * (hn * (hn + hn1)) / (hn1 * (hn1 + hn2))) / 2.0;
  if (p == 3) {
    return {(2.0 + a) / 2.0 + temp1, -a / 2.0 - (1.0 + hn1 / hn2) * temp1, temp1 * hn1 / hn2};
  }
  const double hn3 = rho[2] - rho[3];
  const double temp2 = ((1.0 - hn / (3.0 * (hn + hn1))) / 2.0 + (1.0 - hn / (2.0 * (hn + hn1))) * hn /
                        (6.0 * (hn + hn1 + hn2))) * (hn * (hn + hn1) * (hn + hn1 + hn2)) /
                       (hn1 * (hn1 + hn2) * (hn1 + hn2 + hn3));
  const double q = hn1 * (hn1 + hn2) / (hn2 * (hn2 + hn3));
  return {(2.0 + a) / 2.0 + temp1 + temp2,
          -a / 2.0 - (1.0 + hn1 / hn2) * temp1 - (1.0 + hn1 / hn2 + q) * temp2,
          temp1 * hn1 / hn2 + (hn1 / hn2 + q * (1.0 + hn2 / hn3)) * temp2,
          -temp2 * q * hn1 / hn2};
}

}  // namespace

StepResult ipndm_step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                      int64_t max_order, IpndmWeights weights) {
  const auto& sc = model.schedule();
  auto out = model(x, s);
  auto& hist = state.history;
  const int64_t p = std::min<int64_t>(max_order, static_cast<int64_t>(hist.size()) + 1);
  std::vector<double> times{s};
  std::vector<at::Tensor> eps{out.eps};
  for (int64_t k = 1; k < p; ++k) {
    times.push_back(hist[hist.size() - k].t);
    eps.push_back(hist[hist.size() - k].eps);
  }
  std::vector<double> c;
  if (weights == IpndmWeights::Exact) {
    c = deis_coefficients(sc, times, t, DeisVariable::Rho);
  } else {
    // α_t (ρ_t − ρ_s) = α_t e^{−λ_s} expm1(−h).
    const double h = sc.lambda(t) - sc.lambda(s);
    const double scale = sc.alpha(t) * std::exp(sc.log_sigma(s) - sc.log_alpha(s)) * std::expm1(-h);
    if (weights == IpndmWeights::Fixed) {
      c = adams_bashforth_weights(p);
    } else {
      std::vector<double> rho;
      for (double time : times) rho.push_back(std::exp(-sc.lambda(time)));
      c = official_variable_weights(rho, std::exp(-sc.lambda(t)));
    }
    for (auto& w : c) w *= scale;
  }
  at::Tensor x_next = x * deis_linear_factor(sc, s, t);
  for (size_t j = 0; j < c.size(); ++j) x_next.add_(eps[j] * c[j]);
  hist.push_back(HistoryEntry{s, out.x0, out.eps});
  if (static_cast<int64_t>(hist.size()) > max_order - 1) hist.erase(hist.begin(), hist.end() - (max_order - 1));
  return StepResult{x_next, out.x0, std::nullopt, std::move(state)};
}

IpndmStepper::IpndmStepper(const Options& options) {
  options.check_known({"max_order"}, "solver 'ipndm'");
  max_order_ = ipndm_max_order(options, "solver 'ipndm'");
  traits_ = StepperTraits::named("ipndm",
      "iPNDM: Adams-Bashforth on eps in rho = sigma/alpha with fixed weights, orders up to 4 (Zhang & Chen 2022, "
      "arXiv 2204.13902)")
      .with_order(static_cast<int>(std::min<int64_t>(max_order_, 2)))
      .with_multistep()
      .with_needs(Needs::Eps)
      .with_options({"max_order"});
}

StepResult IpndmStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                              const StepContext& /*ctx*/) const {
  return ipndm_step(model, x, s, t, std::move(state), max_order_, IpndmWeights::Fixed);
}

}  // namespace fewstep
