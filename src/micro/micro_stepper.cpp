#include "fewstep/micro/micro_stepper.h"

#include "fewstep/solvers/registry.h"

#include <ATen/ATen.h>
#include <algorithm>
#include <torch/script.h>

#include "fewstep/core/check.h"
#include "fewstep/micro/exponential_step.h"
#include "fewstep/micro/micro_sampler.h"

namespace fewstep {

namespace {

const StepperTraits& micro_traits() {
  static const StepperTraits traits =
      StepperTraits::named("micro",
                           "micro-distilled exponential integrator: exact linear part + learned nonlinear term g_psi "
                           "(option path = a `fewstep distill micro` file; without it the step is DDIM)")
          .with_options({"path"});
  return traits;
}

// The number of evaluations a NonlinearTerm's history holds: enough for every residual head.
constexpr size_t kKeptEvaluations = MicroHeadConfig::max_history_depth;

// g_ψ of a residual head (null: DDIM's c ε̂) that sees `previous` earlier evaluations. `keep` owns
// whatever the head lives in.
NonlinearTerm head_term(const torch::jit::Module* head, int64_t previous, std::shared_ptr<const void> keep) {
  return [head, previous, keep](const NoiseSchedule& schedule, const at::Tensor& x, const at::Tensor& eps, double s,
                                double t, const std::vector<HistoryEntry>& history) {
    const auto opts = at::TensorOptions().dtype(at::kDouble).device(x.device());
    const at::Tensor lambda_s = at::scalar_tensor(schedule.lambda(s), opts);
    // Only the evaluations the head reads: no λ tensors per step for heads without history.
    const size_t read = std::min(static_cast<size_t>(previous), history.size());
    std::vector<PreviousEvaluation> before;
    before.reserve(read);
    for (auto e = history.end() - static_cast<std::ptrdiff_t>(read); e != history.end(); ++e) {
      before.push_back(PreviousEvaluation{e->eps, at::scalar_tensor(schedule.lambda(e->t), opts)});
    }
    return micro_nonlinear_term(head, previous, schedule.family(), x, eps, lambda_s,
                                at::scalar_tensor(schedule.lambda(t), opts), before);
  };
}

}  // namespace

NonlinearTerm learned_nonlinear_term(std::shared_ptr<const MicroSampler> sampler) {
  FEWSTEP_CHECK_VALUE(sampler != nullptr, "learned_nonlinear_term: sampler must not be null");
  return head_term(sampler->residual().get(), sampler->info().heads.previous_evaluations(), sampler);
}

MicroStepper::MicroStepper(std::shared_ptr<const MicroSampler> sampler) : sampler_(std::move(sampler)) {
  FEWSTEP_CHECK_VALUE(sampler_ != nullptr, "MicroStepper: the sampler must not be null");
  if (sampler_->residual() != nullptr) {
    term_ = learned_nonlinear_term(sampler_);
  } else {
    inner_ = solver("deis", {{"order", int64_t{2}}, {"variable", std::string("lambda")}});
  }
}

MicroStepper::MicroStepper(const Options& options) {
  options.check_known(micro_traits().options, "solver 'micro'");
  const std::string path = options.get_string("path", "");
  if (path.empty()) {
    term_ = head_term(nullptr, 0, nullptr);
  } else {
    *this = MicroStepper(MicroSampler::load(path));
  }
}

MicroStepper::MicroStepper(NonlinearTerm term, std::shared_ptr<const MicroSampler> sampler)
    : term_(std::move(term)), sampler_(std::move(sampler)) {
  FEWSTEP_CHECK_VALUE(term_ != nullptr, "MicroStepper: the nonlinear term must not be empty");
}

const StepperTraits& MicroStepper::traits() const { return micro_traits(); }

StepResult MicroStepper::step(ModelEvaluator& model, const at::Tensor& x, double s, double t, SolverState state,
                              const StepContext& ctx) const {
  if (sampler_ && ctx.index == 0) sampler_->check_teacher(model.model());
  if (inner_) return inner_->step(model, x, s, t, std::move(state), ctx);
  const DenoiserOutput out = model(x, s);
  const NoiseSchedule& schedule = model.schedule();
  const double linear = std::exp(schedule.log_alpha(t) - schedule.log_alpha(s));
  at::Tensor r = term_(schedule, x, out.eps, s, t, state.history);
  FEWSTEP_CHECK_VALUE(r.sizes() == x.sizes(), "solver 'micro': the nonlinear term returned shape ", r.sizes(),
                      " for x of shape ", x.sizes());
  StepResult result;
  result.x = linear * x + r.to(x.scalar_type());
  result.x0 = out.x0;
  result.state = std::move(state);
  auto& history = result.state.history;  // the latest kKeptEvaluations evaluations
  history.push_back(HistoryEntry{s, out.x0, out.eps});
  if (history.size() > kKeptEvaluations) history.erase(history.begin(), history.end() - kKeptEvaluations);
  return result;
}

std::optional<StepPlan> MicroStepper::plan(const NoiseSchedule& schedule, int64_t steps, Spacing spacing,
                                           std::optional<double> t_start, std::optional<double> t_end) const {
  if (!sampler_) return std::nullopt;
  return sampler_->plan(schedule, steps, spacing, t_start, t_end);
}

// `micro` joins the solver registry from here, so the solvers layer never includes micro/.
static const StepperRegistration kMicroRegistration(stepper_entry<MicroStepper>());

}  // namespace fewstep
