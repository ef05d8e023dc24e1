/// @file psld/sampler.h
/// @brief PSLD samplers: their own small stepper interface, registry by name and fixed-grid driver.
///
/// Why not solvers/stepper.h: a `Stepper` sees the model as a `Denoiser` over a `NoiseSchedule`,
/// i.e. x_t = α_t x_0 + σ_t ε with scalar α, σ, and converts through (x̂_0, ε̂). PSLD's kernel
/// mixes x and m through a 2×2 matrix per coordinate (psld/process.h): there is no α or σ, m_0
/// is not a data prediction, and the update rules (exact OU flows on m, position/momentum splits)
/// need the score of the augmented state. So PSLD samplers take a `PsldEvaluator` (score of z,
/// counted) and keep the same design points as steppers: no hidden state (what a reduced
/// integrator re-uses travels in `PsldState`, a value the driver passes back), every random draw
/// from the driver's `NoiseSampler` (per-sample seeds make a sample independent of its batch), and
/// one registry line per sampler.
///
/// Conventions: forward time t runs from t_max (noise) down to t_min; a step goes from s to t < s.
/// All rules are written in the β-clock b = B(s) − B(t) = ∫_t^s β, in which the reverse SDE
/// (Anderson 1982; Song et al. 2021) of psld/process.h has constant coefficients:
///   dz/dr = −A z + D s(z) + √D dW_r         (reverse SDE, r = B(s) − B(·) increasing)
///   dz/dr = −A z + ½ D s(z)                 (probability-flow ODE)
/// i.e. per coordinate, with s = (s_x, s_m):
///   dx = ½ (Γ x − M⁻¹ m + 2Γ s_x) dr + √Γ dW_x,   dm = ½ (x + ν m + 2Mν s_m) dr + √(Mν) dW_m.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fewstep/core/options.h"
#include "fewstep/core/registry.h"
#include "fewstep/psld/model.h"
#include "fewstep/core/noise.h"
#include "fewstep/schedules/timesteps.h"

namespace fewstep {

struct PsldSamplerTraits {
  std::string name;
  int weak_order = 1;         ///< expected weak (distributional) order on smooth problems
  int nfe_per_step = 1;       ///< score evaluations per step after the first
  int extra_first_step = 0;   ///< extra evaluations of the first step (first-same-as-last re-use)
  bool stochastic = true;
  std::string summary;        ///< one line with the paper and equation it implements
  std::vector<std::string> options;
};

/// What a sampler carries between steps: the last score evaluation, for reuse. Plain value.
struct PsldState {
  at::Tensor score;        ///< undefined until a re-using sampler stores one
  int64_t steps_taken = 0;
};

struct PsldStepContext {
  int64_t index = 0;
  int64_t num_steps = 0;
  NoiseSampler* noise = nullptr;  ///< set by the driver; stochastic samplers draw from it
};

struct PsldStepResult {
  at::Tensor z;
  PsldState state;
};

class PsldSampler {
 public:
  virtual ~PsldSampler() = default;
  virtual const PsldSamplerTraits& traits() const = 0;
  /// Advances z [B, 2C, ...] from s to t < s.
  virtual PsldStepResult step(PsldEvaluator& model, const at::Tensor& z, double s, double t, PsldState state,
                              const PsldStepContext& ctx) const = 0;
  /// Evaluations of a run of `steps` steps (without the final denoising evaluation).
  int64_t nfe_for_steps(int64_t steps) const;
};

/// The registry is core/registry.h's template, shared with the solver registry.
using PsldSamplerRegistry = Registry<PsldSampler, PsldSamplerTraits>;
using PsldSamplerFactory = PsldSamplerRegistry::Factory;
using PsldSamplerEntry = PsldSamplerRegistry::Entry;

/// Registered samplers in registration order; names only; the named sampler with checked options
/// (ValueError listing the registered names for an unknown one).
const std::vector<PsldSamplerEntry>& registered_psld_samplers();
std::vector<std::string> psld_sampler_names();
std::shared_ptr<const PsldSampler> psld_sampler(const std::string& name, const Options& options = {});

/// `steps` + 1 decreasing times from t_start (default t_max) to t_end (default t_min), spaced as
/// schedules/timesteps.h defines it: `Spacing::Time` (uniform in t, the default) or
/// `Spacing::Quadratic` (uniform in √t, then squared: small steps near the data, like the PSLD
/// authors' "quadratic" striding); other spacings need a scalar SNR and are a ValueError.
std::vector<double> psld_grid(const PsldProcess& process, int64_t steps, Spacing spacing = Spacing::Time,
                              double t_start = -1, double t_end = -1);

struct PsldSampleOptions {
  /// Last-step denoising: after the last step, one more score evaluation at (z, t_end) and the
  /// kernel's Tweedie mean x̂_0 = (z_x + Σxx s_x + Σxm s_m)/Φ₁₁ (psld/process.h) instead of z_x.
  bool denoise = true;
  /// Stop with a ValueError naming the step and time at the first non-finite state.
  bool check_finite = false;
};

struct PsldSolution {
  at::Tensor x;    ///< samples in data space [B, C, ...]: the denoised mean, or z_x without denoising
  at::Tensor z;    ///< final augmented state at the grid's last time
  int64_t nfe = 0; ///< counted score evaluations, denoising included
  int64_t steps = 0;
};

/// Runs `sampler` over `grid` (decreasing times) from z_T with noise from `noise`.
PsldSolution psld_sample(const PsldModel& model, const at::Tensor& z_T, const PsldSampler& sampler,
                         const std::vector<double>& grid, NoiseSampler& noise, const PsldSampleOptions& options = {});

}  // namespace fewstep
