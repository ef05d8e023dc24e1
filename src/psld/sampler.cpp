#include "fewstep/psld/sampler.h"

#include <cmath>

#include "fewstep/core/check.h"
#include "fewstep/psld/sde_samplers.h"
#include "fewstep/psld/splitting.h"

namespace fewstep {

namespace {

template <typename S>
PsldSamplerEntry entry() {
  return PsldSamplerEntry{S().traits(), [](const Options& o) -> std::shared_ptr<const PsldSampler> {
                            return std::make_shared<S>(o);
                          }};
}

template <typename S>
PsldSamplerEntry entry(SplittingScheme scheme) {
  return PsldSamplerEntry{S(scheme).traits(), [scheme](const Options& o) -> std::shared_ptr<const PsldSampler> {
                            return std::make_shared<S>(scheme, o);
                          }};
}

const PsldSamplerRegistry& registry() {
  // One line per sampler.
  static const PsldSamplerRegistry instance("psld sampler", {
      entry<PsldEulerMaruyama>(),
      entry<PsldOdeEuler>(),
      entry<PsldOdeHeun>(),
      entry<PsldNaiveSplitting>(SplittingScheme::OBA),
      entry<PsldNaiveSplitting>(SplittingScheme::BAO),
      entry<PsldNaiveSplitting>(SplittingScheme::OBAB),
      entry<PsldNaiveSplitting>(SplittingScheme::BAOAB),
      entry<PsldReducedSplitting>(SplittingScheme::OBA),
      entry<PsldReducedSplitting>(SplittingScheme::BAO),
      entry<PsldReducedSplitting>(SplittingScheme::OBAB),
  });
  return instance;
}

}  // namespace

int64_t PsldSampler::nfe_for_steps(int64_t steps) const {
  const auto& tr = traits();
  return steps <= 0 ? 0 : steps * tr.nfe_per_step + tr.extra_first_step;
}

const std::vector<PsldSamplerEntry>& registered_psld_samplers() { return registry().entries(); }

std::vector<std::string> psld_sampler_names() { return registry().names(); }

std::shared_ptr<const PsldSampler> psld_sampler(const std::string& name, const Options& options) {
  return registry().make(name, options);
}

std::vector<double> psld_grid(const PsldProcess& process, int64_t steps, Spacing spacing, double t_start,
                              double t_end) {
  FEWSTEP_CHECK_VALUE(steps > 0, "psld_grid: steps must be positive, got ", steps);
  FEWSTEP_CHECK_VALUE(spacing == Spacing::Time || spacing == Spacing::Quadratic,
                      "psld_grid: spacing must be 'time' or 'quadratic' (PSLD has no scalar SNR), got '",
                      to_string(spacing), "'");
  const double a = t_start < 0 ? process.t_max() : t_start;
  const double e = t_end < 0 ? process.t_min() : t_end;
  FEWSTEP_CHECK_VALUE(e > 0 && e < a && a <= process.t_max() * (1 + 1e-12), "psld_grid: need 0 < t_end < t_start <= t_max=",
                      process.t_max(), ", got t_start=", a, ", t_end=", e);
  std::vector<double> grid(static_cast<size_t>(steps + 1));
  for (int64_t i = 0; i <= steps; ++i) {
    const double r = static_cast<double>(i) / static_cast<double>(steps);
    double t = a + (e - a) * r;
    if (spacing == Spacing::Quadratic) {
      const double u = std::sqrt(a) + r * (std::sqrt(e) - std::sqrt(a));
      t = u * u;
    }
    grid[static_cast<size_t>(i)] = t;
  }
  grid.front() = a;
  grid.back() = e;
  return grid;
}

PsldSolution psld_sample(const PsldModel& model, const at::Tensor& z_T, const PsldSampler& sampler,
                         const std::vector<double>& grid, NoiseSampler& noise, const PsldSampleOptions& options) {
  FEWSTEP_CHECK_VALUE(grid.size() >= 2, "psld_sample: grid needs at least two times, got ", grid.size());
  for (size_t i = 1; i < grid.size(); ++i) {
    FEWSTEP_CHECK_VALUE(grid[i] < grid[i - 1], "psld_sample: grid must be strictly decreasing, got grid[", i - 1,
                        "]=", grid[i - 1], ", grid[", i, "]=", grid[i]);
  }
  split_state(z_T, "psld_sample");
  PsldEvaluator eval(model);
  PsldState state;
  at::Tensor z = z_T;
  const int64_t n = static_cast<int64_t>(grid.size()) - 1;
  for (int64_t i = 0; i < n; ++i) {
    PsldStepContext ctx{i, n, &noise};
    auto r = sampler.step(eval, z, grid[static_cast<size_t>(i)], grid[static_cast<size_t>(i + 1)], std::move(state), ctx);
    z = std::move(r.z);
    state = std::move(r.state);
    if (options.check_finite) {
      FEWSTEP_CHECK(at::isfinite(z).all().item<bool>(), "psld_sample: sampler '", sampler.traits().name,
                    "' produced a non-finite state at step ", i, " (t=", grid[static_cast<size_t>(i + 1)], ")");
    }
  }
  PsldSolution out;
  out.z = z;
  out.steps = n;
  if (options.denoise) {
    out.x = model.process().denoise(z, eval(z, grid.back()), grid.back());
  } else {
    out.x = split_state(z, "psld_sample").first;
  }
  out.nfe = eval.nfe();
  return out;
}

}  // namespace fewstep
