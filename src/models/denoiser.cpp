#include "fewstep/models/denoiser.h"

#include <torch/script.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <fstream>
#include <sstream>
#include <utility>

#include "fewstep/core/check.h"
#include "fewstep/core/sha256.h"
#include "fewstep/core/tensor_archive.h"
#include "fewstep/schedules/schedule_spec.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/nets/network.h"

namespace fewstep {

// ---- names ----

Prediction parse_prediction(const std::string& name) {
  if (name == "eps") return Prediction::Eps;
  if (name == "x0") return Prediction::X0;
  if (name == "v") return Prediction::V;
  if (name == "score") return Prediction::Score;
  if (name == "flow") return Prediction::Flow;
  FEWSTEP_CHECK_VALUE(false, "prediction must be one of 'eps', 'x0', 'v', 'score', 'flow', got '", name, "'");
  return Prediction::Eps;  // unreachable
}

std::string to_string(Prediction prediction) {
  switch (prediction) {
    case Prediction::Eps: return "eps";
    case Prediction::X0: return "x0";
    case Prediction::V: return "v";
    case Prediction::Score: return "score";
    case Prediction::Flow: return "flow";
  }
  FEWSTEP_CHECK_VALUE(false, "prediction: unknown enum value ", static_cast<int>(prediction));
  return "";
}

TimeInput parse_time_input(const std::string& name) {
  if (name == "t") return TimeInput::T;
  if (name == "index") return TimeInput::Index;
  if (name == "sigma") return TimeInput::Sigma;
  if (name == "lambda") return TimeInput::Lambda;
  FEWSTEP_CHECK_VALUE(false, "time_input must be one of 't', 'index', 'sigma', 'lambda', got '", name, "'");
  return TimeInput::T;  // unreachable
}

std::string to_string(TimeInput time_input) {
  switch (time_input) {
    case TimeInput::T: return "t";
    case TimeInput::Index: return "index";
    case TimeInput::Sigma: return "sigma";
    case TimeInput::Lambda: return "lambda";
  }
  FEWSTEP_CHECK_VALUE(false, "time_input: unknown enum value ", static_cast<int>(time_input));
  return "";
}

std::string to_string(Needs needs) {
  switch (needs) {
    case Needs::Both: return "both";
    case Needs::Eps: return "eps";
    case Needs::X0: return "x0";
  }
  return "";
}

// ---- conversions ----

namespace {

struct Coefficients {
  double alpha, sigma;
};

Coefficients coefficients(const NoiseSchedule& schedule, double t, bool allow_zero_alpha = false) {
  FEWSTEP_CHECK_VALUE(std::isfinite(t), "t must be finite, got ", t);
  const double alpha = schedule.alpha(t);
  const double sigma = schedule.sigma(t);
  // Every conversion divides by α or σ; σ = 0 (the final data point) is handled by solvers, not here.
  // α = 0 (pure noise, flow matching at t = 1) is fine for predictions that do not divide by α.
  FEWSTEP_CHECK_VALUE(std::isfinite(alpha) && (alpha > 0.0 || (allow_zero_alpha && alpha == 0.0)) &&
                          std::isfinite(sigma) && sigma > 0.0,
                      "t = ", t, " gives alpha = ", alpha, ", sigma = ", sigma, " under ", schedule.repr(),
                      "; expected both finite and positive (t inside (", schedule.t_min(), ", ", schedule.t_max(),
                      "))");
  return {alpha, sigma};
}

// Time derivatives of α and σ for the flow-matching velocity u = α̇ x_0 + σ̇ ε.
std::pair<double, double> rates(const NoiseSchedule& schedule, double t) {
  return {schedule.dalpha_dt(t), schedule.dsigma_dt(t)};
}

// a·x + b·y with host scalars: no device tensor is created, so this runs on any device.
at::Tensor combine(const at::Tensor& x, double a, const at::Tensor& y, double b) { return at::add(x * a, y, b); }

std::string format_double(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

}  // namespace

DenoiserOutput convert_prediction(const at::Tensor& x, const at::Tensor& out, Prediction prediction,
                                  const NoiseSchedule& schedule, double t, Needs needs) {
  FEWSTEP_CHECK_VALUE(x.defined() && out.defined(), "convert_prediction: x and out must be defined tensors");
  FEWSTEP_CHECK_VALUE(x.sizes() == out.sizes(), "convert_prediction: out has shape ", out.sizes(),
                      ", expected x's shape ", x.sizes());
  const bool no_alpha_division = prediction == Prediction::X0 || prediction == Prediction::V ||
                                 prediction == Prediction::Flow;
  const Coefficients c = coefficients(schedule, t, no_alpha_division);
  const double a = c.alpha, s = c.sigma;
  // Only what the caller reads (Needs); a field that is `out` itself costs nothing and is always set.
  const bool x0 = needs != Needs::Eps, eps = needs != Needs::X0;
  switch (prediction) {
    case Prediction::Eps:
      return {x0 ? combine(x, 1.0 / a, out, -s / a) : at::Tensor(), out};
    case Prediction::X0:
      return {out, eps ? combine(x, 1.0 / s, out, -a / s) : at::Tensor()};
    case Prediction::V: {
      // v = α ε − σ x_0 and x = α x_0 + σ ε: a rotation scaled by α² + σ² (= 1 for VP).
      const double n = a * a + s * s;
      return {x0 ? combine(x, a / n, out, -s / n) : at::Tensor(), eps ? combine(x, s / n, out, a / n) : at::Tensor()};
    }
    case Prediction::Score: {
      // x̂_0 = (x − σ ε̂)/α = (x + σ² s)/α
      return {x0 ? combine(x, 1.0 / a, out, s * s / a) : at::Tensor(), eps ? out * (-s) : at::Tensor()};
    }
    case Prediction::Flow: {
      const auto [da, ds] = rates(schedule, t);
      // [x; u] = [[α, σ], [α̇, σ̇]] [x_0; ε]; det = ασ̇ − σα̇ = −ασ dλ/dt > 0.
      const double det = a * ds - s * da;
      FEWSTEP_CHECK_VALUE(std::isfinite(det) && det != 0.0, "prediction 'flow' at t = ", t, " under ",
                          schedule.repr(), ": the system [x; u] = [[alpha, sigma], [alpha', sigma']] [x0; eps] is "
                          "singular (determinant ", det, "); expected a strictly decreasing log-SNR");
      return {x0 ? combine(x, ds / det, out, -s / det) : at::Tensor(),
              eps ? combine(x, -da / det, out, a / det) : at::Tensor()};
    }
  }
  FEWSTEP_CHECK_VALUE(false, "convert_prediction: unknown prediction ", static_cast<int>(prediction));
  return {};
}

at::Tensor native_from_x0_eps(const at::Tensor& x0, const at::Tensor& eps, Prediction prediction,
                              const NoiseSchedule& schedule, double t) {
  FEWSTEP_CHECK_VALUE(x0.defined() && eps.defined(), "native_from_x0_eps: x0 and eps must be defined tensors");
  FEWSTEP_CHECK_VALUE(x0.sizes() == eps.sizes(), "native_from_x0_eps: eps has shape ", eps.sizes(),
                      ", expected x0's shape ", x0.sizes());
  const Coefficients c = coefficients(schedule, t);
  switch (prediction) {
    case Prediction::Eps: return eps;
    case Prediction::X0: return x0;
    case Prediction::V: return combine(eps, c.alpha, x0, -c.sigma);
    case Prediction::Score: return eps * (-1.0 / c.sigma);
    case Prediction::Flow: {
      const auto [da, ds] = rates(schedule, t);
      return combine(x0, da, eps, ds);
    }
  }
  FEWSTEP_CHECK_VALUE(false, "native_from_x0_eps: unknown prediction ", static_cast<int>(prediction));
  return {};
}

double network_time(const NoiseSchedule& schedule, double t, TimeInput time_input, double time_scale) {
  double value = t;
  switch (time_input) {
    case TimeInput::T: value = t; break;
    case TimeInput::Index: {
      const auto n = schedule.num_train_steps();
      FEWSTEP_CHECK_VALUE(n.has_value(), "time_input 'index' needs a discrete schedule (with num_train_steps), got ",
                          schedule.repr(), "; use time_input 't', 'sigma' or 'lambda'");
      // Step n sits at t_n = (n + 1)/N; between knots the index is fractional (interpolated).
      value = t * static_cast<double>(*n) - 1.0;
      break;
    }
    case TimeInput::Sigma: value = schedule.sigma(t); break;
    case TimeInput::Lambda: value = schedule.lambda(t); break;
  }
  return value * time_scale;
}

// ---- Denoiser ----

namespace {

void check_schedule(const SchedulePtr& schedule, const char* where) {
  FEWSTEP_CHECK_VALUE(schedule != nullptr, where, ": schedule must not be null");
}

void check_time_options(const NoiseSchedule& schedule, TimeInput time_input, double time_scale) {
  FEWSTEP_CHECK_VALUE(std::isfinite(time_scale) && time_scale != 0.0,
                      "time_scale must be finite and non-zero, got ", time_scale);
  FEWSTEP_CHECK_VALUE(time_input != TimeInput::Index || schedule.num_train_steps().has_value(),
                      "time_input 'index' needs a discrete schedule (with num_train_steps), got ", schedule.repr(),
                      "; use time_input 't', 'sigma' or 'lambda'");
}

// The schedule exactly (its spec); a schedule family a spec cannot name falls back to its repr.
std::string schedule_identity(const NoiseSchedule& schedule) {
  try {
    return schedule_spec(schedule);
  } catch (const c10::Error&) {
    return "repr " + schedule.repr();
  }
}

// Every setting that decides how a network's output becomes (x̂_0, ε̂), exactly.
std::string network_settings(const NoiseSchedule& schedule, Prediction prediction, TimeInput time_input,
                             double time_scale) {
  char scale[32];
  std::snprintf(scale, sizeof scale, "%.17g", time_scale);
  return "schedule=" + schedule_identity(schedule) + " prediction=" + to_string(prediction) +
         " time_input=" + to_string(time_input) + " time_scale=" + scale;
}

std::string describe_network(const std::string& source, const NoiseSchedule& schedule, Prediction prediction,
                             TimeInput time_input, double time_scale) {
  std::ostringstream s;
  s << "Denoiser(" << source << ", prediction='" << to_string(prediction) << "', time_input='"
    << to_string(time_input) << "'";
  if (time_scale != 1.0) s << ", time_scale=" << format_double(time_scale);
  s << ", schedule=" << schedule.repr() << ")";
  return s.str();
}

std::function<DenoiserOutput(const at::Tensor&, double, Needs)> wrap_network(
    Denoiser::Network network, SchedulePtr schedule, Prediction prediction, TimeInput time_input, double time_scale) {
  return [network = std::move(network), schedule = std::move(schedule), prediction, time_input, time_scale](
             const at::Tensor& x, double t, Needs needs) -> DenoiserOutput {
    FEWSTEP_CHECK_VALUE(x.defined() && x.dim() >= 1, "Denoiser: x must be a tensor with a batch dimension, got ",
                        x.defined() ? std::to_string(x.dim()) + "-D" : std::string("an undefined tensor"));
    FEWSTEP_CHECK_TYPE(x.is_floating_point(), "Denoiser: x must be floating point, got ", x.scalar_type());
    const double value = network_time(*schedule, t, time_input, time_scale);
    // Created from x's options, never on the host: the same code runs on CPU, CUDA or meta.
    const at::Tensor t_in = at::full({x.size(0)}, value, x.options());
    at::Tensor out = network(x, t_in);
    FEWSTEP_CHECK_VALUE(out.defined(), "Denoiser: the network returned an undefined tensor at t = ", t);
    FEWSTEP_CHECK_VALUE(out.sizes() == x.sizes(), "Denoiser: the network output has shape ", out.sizes(),
                        ", expected x's shape ", x.sizes(), " (prediction '", to_string(prediction), "')");
    FEWSTEP_CHECK_VALUE(out.device() == x.device(), "Denoiser: the network output is on ", out.device(),
                        ", expected x's device ", x.device());
    FEWSTEP_CHECK_TYPE(out.is_floating_point(), "Denoiser: the network returned a ", out.scalar_type(),
                       " tensor at t = ", t, "; it must return real floating-point values (x is ", x.scalar_type(),
                       ")");
    // A network in another precision (e.g. half) must not change the state's dtype.
    if (out.scalar_type() != x.scalar_type()) out = out.to(x.scalar_type());
    return convert_prediction(x, out, prediction, *schedule, t, needs);
  };
}

}  // namespace

Denoiser::Denoiser(Network network, SchedulePtr schedule, Prediction prediction, TimeInput time_input,
                   double time_scale, Fingerprint network_fingerprint)
    : schedule_(std::move(schedule)) {
  FEWSTEP_CHECK_VALUE(static_cast<bool>(network), "Denoiser: network must be a callable, got an empty function");
  check_schedule(schedule_, "Denoiser");
  check_time_options(*schedule_, time_input, time_scale);
  description_ = describe_network("network", *schedule_, prediction, time_input, time_scale);
  fn_ = wrap_network(std::move(network), schedule_, prediction, time_input, time_scale);
  if (network_fingerprint) {
    const std::string settings = network_settings(*schedule_, prediction, time_input, time_scale);
    fingerprint_ = [network_fingerprint = std::move(network_fingerprint), settings] {
      const std::string net = network_fingerprint();
      FEWSTEP_CHECK_VALUE(!net.empty(), "Denoiser: the network's fingerprint function returned an empty text");
      return Sha256().field("fewstep.denoiser.network").field(net).field(settings).hex_digest();
    };
  }
}

std::optional<std::string> Denoiser::fingerprint() const {
  if (!fingerprint_) return std::nullopt;
  return fingerprint_();
}

Denoiser Denoiser::with_fingerprint(Fingerprint fingerprint) const {
  Denoiser copy = *this;
  copy.fingerprint_ = std::move(fingerprint);
  return copy;
}

Denoiser::Denoiser(Direct fn, SchedulePtr schedule, std::string description)
    : schedule_(std::move(schedule)), description_(std::move(description)) {
  FEWSTEP_CHECK_VALUE(static_cast<bool>(fn), "Denoiser.direct: fn must be a callable, got an empty function");
  check_schedule(schedule_, "Denoiser.direct");
  // A direct model gives both predictions whatever the caller needs.
  fn_ = [fn = std::move(fn)](const at::Tensor& x, double t, Needs /*needs*/) { return fn(x, t); };
}

Denoiser Denoiser::torchscript(const std::string& path, SchedulePtr schedule, Prediction prediction,
                               TimeInput time_input, double time_scale, const Placement& placement) {
  check_schedule(schedule, "Denoiser.torchscript");
  check_time_options(*schedule, time_input, time_scale);
  const LoadedNetwork loaded = load_network_checked(path, "Denoiser.torchscript", "", "", {}, true, placement);
  auto module = loaded.module;
  Network network = [module, path](const at::Tensor& x, const at::Tensor& t) -> at::Tensor {
    c10::IValue out = module->forward(std::vector<c10::IValue>{x, t});
    FEWSTEP_CHECK_TYPE(out.isTensor(), "Denoiser.torchscript: forward(x, t) of '", path, "' returned ",
                       out.tagKind(), ", expected a Tensor");
    return out.toTensor();
  };
  const std::string file_sha256 = loaded.sha256;
  Denoiser result(std::move(network), schedule, prediction, time_input, time_scale,
                  [file_sha256] { return "torchscript sha256 " + file_sha256; });
  result.description_ = describe_network("torchscript='" + path + "'", *schedule, prediction, time_input, time_scale);
  return result;
}

Denoiser Denoiser::exact(std::shared_ptr<const GaussianMixture> mixture, SchedulePtr schedule) {
  FEWSTEP_CHECK_VALUE(mixture != nullptr, "Denoiser.exact: mixture must not be null");
  check_schedule(schedule, "Denoiser.exact");
  std::ostringstream s;
  s << "Denoiser.exact(GaussianMixture(dim=" << mixture->dim() << ", components=" << mixture->components()
    << (mixture->diagonal() ? ", diagonal" : "") << "), schedule=" << schedule->repr() << ")";
  Direct fn = [mixture, schedule](const at::Tensor& x, double t) -> DenoiserOutput {
    const Coefficients c = coefficients(*schedule, t);
    return mixture->denoise(x, c.alpha, c.sigma);
  };
  // The mixture's parameters and the schedule decide every output.
  Sha256 h;
  h.field("fewstep.denoiser.exact_gaussian_mixture").field(schedule_identity(*schedule));
  h.field(mixture->diagonal() ? "diagonal" : "full");
  sha256_update(h, mixture->weights());
  sha256_update(h, mixture->means());
  sha256_update(h, mixture->covariances());
  const std::string fingerprint = h.hex_digest();
  Denoiser result(std::move(fn), std::move(schedule), s.str());
  result.fingerprint_ = [fingerprint] { return fingerprint; };
  return result;
}

Denoiser Denoiser::direct(Direct fn, SchedulePtr schedule, std::string description) {
  return Denoiser(std::move(fn), std::move(schedule), std::move(description));
}

DenoiserOutput Denoiser::operator()(const at::Tensor& x, double t, Needs needs) const {
  FEWSTEP_CHECK_VALUE(std::isfinite(t), description_, ": t must be finite, got ", t);
  DenoiserOutput out = fn_(x, t, needs);
  FEWSTEP_CHECK_VALUE((needs == Needs::Eps || out.x0.defined()) && (needs == Needs::X0 || out.eps.defined()),
                      description_, ": the model returned an undefined x0 or eps at t = ", t);
  return out;
}

}  // namespace fewstep
