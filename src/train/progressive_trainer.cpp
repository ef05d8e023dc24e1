#include "fewstep/train/progressive_trainer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/script.h>

#include <cmath>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/models/student_init.h"
#include "fewstep/train/checkpoint.h"
#include "fewstep/train/ema.h"
#include "fewstep/train/progressive_target.h"
#include "fewstep/train/rng_bundle.h"
#include "options_json.h"

namespace fewstep {

namespace {

bool is_power_of_two(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

// The teacher as a Denoiser for this batch's labels y and guidance weights w (either may be undefined).
Denoiser wrap(const ScriptNet& net, const SchedulePtr& schedule, Prediction prediction, TimeInput time_input,
              double time_scale, const at::Tensor& y, const at::Tensor& w) {
  Denoiser::Network fn = [net, y, w](const at::Tensor& x, const at::Tensor& t) {
    ScopedUnoptimizedExecutor guard;
    at::NoGradGuard no_grad;
    return forward_network(*net, x, t, y, w, "ProgressiveDistillationTrainer teacher");
  };
  return Denoiser(std::move(fn), schedule, prediction, time_input, time_scale);
}

}  // namespace

ProgressiveWeighting parse_progressive_weighting(const std::string& name) {
  if (name == "truncated_snr") return ProgressiveWeighting::TruncatedSNR;
  if (name == "snr_plus_one") return ProgressiveWeighting::SNRPlusOne;
  FEWSTEP_CHECK_VALUE(false, "progressive weighting: unknown name '", name,
                      "'; expected 'truncated_snr' (max(SNR, 1)) or 'snr_plus_one' (SNR + 1)");
  return ProgressiveWeighting::TruncatedSNR;
}

std::string to_string(ProgressiveWeighting weighting) {
  return weighting == ProgressiveWeighting::TruncatedSNR ? "truncated_snr" : "snr_plus_one";
}

void ProgressiveTrainerOptions::validate() const {
  FEWSTEP_CHECK_VALUE(initial_steps >= 1, "ProgressiveTrainerOptions.initial_steps must be >= 1, got ",
                      initial_steps);
  FEWSTEP_CHECK_VALUE(final_steps >= 1 && final_steps <= initial_steps,
                      "ProgressiveTrainerOptions.final_steps must be in [1, initial_steps = ", initial_steps,
                      "], got ", final_steps);
  FEWSTEP_CHECK_VALUE(initial_steps % final_steps == 0 && is_power_of_two(initial_steps / final_steps),
                      "ProgressiveTrainerOptions: initial_steps / final_steps must be a power of 2 (each round "
                      "halves the steps), got initial_steps = ",
                      initial_steps, ", final_steps = ", final_steps);
  FEWSTEP_CHECK_VALUE(iterations_per_round >= 1, "ProgressiveTrainerOptions.iterations_per_round must be >= 1, got ",
                      iterations_per_round);
  FEWSTEP_CHECK_VALUE(first_round_substeps >= 2 && first_round_substeps % 2 == 0 && first_round_substeps <= 1024,
                      "ProgressiveTrainerOptions.first_round_substeps must be an even number in [2, 1024], got ",
                      first_round_substeps);
  for (const auto& [field, p] : {std::pair<const char*, Prediction>{"teacher_prediction", teacher_prediction},
                                 {"student_prediction", student_prediction}}) {
    FEWSTEP_CHECK_VALUE(p == Prediction::Eps || p == Prediction::X0 || p == Prediction::V,
                        "ProgressiveTrainerOptions.", field, " must be 'eps', 'x0' or 'v', got '", to_string(p), "'");
  }
  FEWSTEP_CHECK_VALUE(!(student_prediction == Prediction::Eps && final_steps <= 2),
                      "ProgressiveTrainerOptions.student_prediction 'eps' is refused for final_steps = ", final_steps,
                      " (<= 2): a 1-2 step student evaluates near t_max where alpha ~ 0, and x0 = (z - sigma eps)/alpha "
                      "amplifies its errors without bound (Salimans & Ho 2022); use 'v' or 'x0'");
  FEWSTEP_CHECK_VALUE(std::isfinite(time_scale) && time_scale > 0.0,
                      "ProgressiveTrainerOptions.time_scale must be positive, got ", time_scale);
  FEWSTEP_CHECK_VALUE(std::isfinite(ema_decay) && ema_decay >= 0.0 && ema_decay <= 1.0,
                      "ProgressiveTrainerOptions.ema_decay must be in [0, 1], got ", ema_decay);
  conditioning.validate();
  if (guidance_range) {
    const auto [lo, hi] = *guidance_range;
    FEWSTEP_CHECK_VALUE(std::isfinite(lo) && std::isfinite(hi) && lo <= hi,
                        "ProgressiveTrainerOptions.guidance_range must be a finite [lo, hi] with lo <= hi, got [", lo,
                        ", ", hi, "]");
  }
  optimizer.schedule.validate();
}

static void parse_enum(const std::string& name, ProgressiveWeighting& out) { out = parse_progressive_weighting(name); }

namespace {

template <class V, class O>
void fields(V& v, O& o) {
  v("initial_steps", o.initial_steps);
  v("final_steps", o.final_steps);
  v("iterations_per_round", o.iterations_per_round);
  v("first_round_substeps", o.first_round_substeps);
  v("teacher_prediction", o.teacher_prediction);
  v("student_prediction", o.student_prediction);
  v("time_input", o.time_input);
  v("time_scale", o.time_scale);
  v("weighting", o.weighting);
  v("t_min", o.t_min);
  v("t_max", o.t_max);
  json_options::conditioning_fields(v, o.conditioning);
  v("guidance_range", o.guidance_range);
  json_options::optimizer_fields(v, o.optimizer);
  v("ema_decay", o.ema_decay);
  v("seed", o.seed);
}

}  // namespace

std::string options_to_json(const ProgressiveTrainerOptions& o) {
  return json_options::write(o, [](auto& v, auto& x) { fields(v, x); });
}

void options_from_json(const std::string& json, ProgressiveTrainerOptions& o) {
  json_options::read(json, o, "ProgressiveTrainerOptions", [](auto& v, auto& x) { fields(v, x); });
}

struct ProgressiveDistillationTrainer::Impl {
  ScriptNet teacher_net;  // the trainer's own copy
  ScriptNet student;
  SchedulePtr schedule;
  std::shared_ptr<BatchSource> data;
  ProgressiveTrainerOptions options;
  double t_lo = 0.0, t_hi = 0.0;
  int64_t num_rounds = 1;
  int64_t round = 0;
  int64_t steps_n = 0;  // current student N
  int64_t step = 0;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<Ema> ema;
  Prediction teacher_prediction = Prediction::Eps;  // of teacher_net in the current round
  Prediction round0_prediction = Prediction::Eps;   // of teacher_net in round 0
  RngBundle rng;

  Impl(SchedulePtr s, std::shared_ptr<BatchSource> d, ProgressiveTrainerOptions o)
      : schedule(std::move(s)), data(std::move(d)), options(std::move(o)), rng(options.seed) {}

  OptimizerOptions round_optimizer_options() const {
    OptimizerOptions o = options.optimizer;
    o.schedule.total_steps = options.iterations_per_round;
    return o;
  }
  void fresh_optimizer() {
    optimizer = std::make_unique<Optimizer>(trainable_parameters(*student), round_optimizer_options());
  }
  void set_round(int64_t r) {
    round = r;
    steps_n = options.initial_steps >> r;
    teacher_prediction = r == 0 ? round0_prediction : options.student_prediction;
  }
  int64_t substeps() const { return round == 0 ? options.first_round_substeps : 2; }
  Denoiser teacher(const at::Tensor& y, const at::Tensor& w) const {
    return wrap(teacher_net, schedule, teacher_prediction, options.time_input, options.time_scale, y, w);
  }
  // From round 1 on the teacher is a student: a copy of the student's module, frozen. (A student
  // given to the constructor may differ from the round-0 teacher's architecture.)
  void teacher_from(const torch::jit::Module& source) {
    at::NoGradGuard no_grad;
    teacher_net = std::make_shared<torch::jit::Module>(source.clone());
    for (const at::Tensor& p : teacher_net->parameters(true)) at::Tensor(p).requires_grad_(false);
    teacher_net->eval();
  }
  // The round's EMA student becomes the next teacher and the next student's start.
  void end_round() {
    teacher_from(*ema->module());
    copy_weights(*ema->module(), *student);
    set_round(round + 1);
    fresh_optimizer();
    ema->reset(*student);
  }
};

ProgressiveDistillationTrainer::ProgressiveDistillationTrainer(ScriptNet teacher, SchedulePtr schedule,
                                                               std::shared_ptr<BatchSource> data,
                                                               ProgressiveTrainerOptions options, ScriptNet student) {
  FEWSTEP_CHECK_VALUE(teacher != nullptr, "ProgressiveDistillationTrainer: teacher must not be null");
  FEWSTEP_CHECK_VALUE(schedule != nullptr, "ProgressiveDistillationTrainer: schedule must not be null");
  FEWSTEP_CHECK_VALUE(data != nullptr, "ProgressiveDistillationTrainer: data must not be null");
  FEWSTEP_CHECK_VALUE(teacher->find_method("forward").has_value(),
                      "ProgressiveDistillationTrainer: teacher has no forward method; expected forward(x, t) -> Tensor");
  options.validate();

  impl_ = std::make_unique<Impl>(std::move(schedule), std::move(data), std::move(options));
  Impl& s = *impl_;
  s.t_lo = s.options.t_min.value_or(s.schedule->t_min());
  s.t_hi = s.options.t_max.value_or(s.schedule->t_max());
  s.schedule->check_time(s.t_lo, "ProgressiveTrainerOptions.t_min");
  s.schedule->check_time(s.t_hi, "ProgressiveTrainerOptions.t_max");
  FEWSTEP_CHECK_VALUE(s.t_lo < s.t_hi, "ProgressiveTrainerOptions: need t_min < t_max, got t_min = ", s.t_lo,
                      ", t_max = ", s.t_hi);
  int64_t rounds = 1;
  for (int64_t n = s.options.initial_steps; n > s.options.final_steps; n /= 2) ++rounds;
  s.num_rounds = rounds;
  {
    at::NoGradGuard no_grad;
    if (student != nullptr) {
      s.teacher_net = std::make_shared<torch::jit::Module>(teacher->clone());
      s.student = std::make_shared<torch::jit::Module>(student->clone());
      s.round0_prediction = s.options.teacher_prediction;
    } else {
      // The teacher in function space (models/student_init.h): at iteration 0 the student's
      // prediction is the teacher's, and round 0's teacher is that same function.
      s.student = student_from_teacher(
          *teacher, *s.schedule, {s.options.teacher_prediction, s.options.time_input, s.options.time_scale},
          {s.options.student_prediction, std::nullopt});
      s.teacher_net = std::make_shared<torch::jit::Module>(s.student->clone());
      s.round0_prediction = s.options.student_prediction;
    }
    for (const at::Tensor& p : s.teacher_net->parameters(true)) at::Tensor(p).requires_grad_(false);
    for (const at::Tensor& p : s.student->parameters(true)) at::Tensor(p).requires_grad_(true);
  }
  FEWSTEP_CHECK_VALUE(!trainable_parameters(*s.student).empty(),
                      "ProgressiveDistillationTrainer: the student has no parameters");
  s.teacher_net->eval();
  s.student->train();
  s.set_round(0);
  s.fresh_optimizer();
  s.ema = std::make_unique<Ema>(*s.student, s.options.ema_decay);
}

ProgressiveDistillationTrainer::~ProgressiveDistillationTrainer() = default;

TrainStepStats ProgressiveDistillationTrainer::step() {
  Impl& s = *impl_;
  FEWSTEP_CHECK_VALUE(!finished(), "ProgressiveDistillationTrainer.step: all ", s.num_rounds, " rounds (",
                      s.num_rounds * s.options.iterations_per_round,
                      " steps) are done; the student has final_steps = ", s.options.final_steps);
  const at::Tensor& first = s.optimizer->parameters().front();
  Batch batch = s.data->next();
  FEWSTEP_CHECK_VALUE(batch.x.defined() && batch.x.dim() >= 2, "ProgressiveDistillationTrainer: data source ",
                      s.data->describe(), " returned a batch that is not a [B, ...] tensor");
  const at::Tensor x_all = batch.x.to(first.device(), first.scalar_type());
  const int64_t n_all = x_all.size(0);

  // Drawn for the whole batch; with data parallelism this process trains on its rows.
  at::Generator& gen = s.rng.get("noise");
  const at::Tensor index = shard(at::randint(1, s.steps_n + 1, {n_all}, gen, at::kLong));
  const at::Tensor eps = shard(
      at::randn(x_all.sizes(), gen, at::TensorOptions().dtype(x_all.scalar_type())).to(x_all.device()));
  at::Tensor y = draw_labels(batch, s.options.conditioning, s.rng.get("labels"), x_all.device(),
                             "ProgressiveDistillationTrainer");
  if (y.defined()) y = shard(y);
  at::Tensor w;
  if (s.options.guidance_range) {
    const auto [lo, hi] = *s.options.guidance_range;
    w = shard((lo + (hi - lo) * at::rand({n_all}, s.rng.get("guidance"), at::kDouble)).to(x_all.options()));
  }
  const at::Tensor x0 = shard(x_all);
  const int64_t n = x0.size(0);

  // Per-sample schedule values on the host in float64, then cast.
  std::vector<double> alpha(n), sigma(n), weight(n), t_in(n);
  const int64_t* ip = index.data_ptr<int64_t>();
  for (int64_t b = 0; b < n; ++b) {
    const double t = progressive_grid_time(static_cast<double>(ip[b]), s.steps_n, s.t_lo, s.t_hi);
    alpha[b] = s.schedule->alpha(t);
    sigma[b] = s.schedule->sigma(t);
    const double snr = std::exp(2.0 * s.schedule->lambda(t));
    weight[b] = s.options.weighting == ProgressiveWeighting::TruncatedSNR ? std::max(snr, 1.0) : snr + 1.0;
    t_in[b] = network_time(*s.schedule, t, s.options.time_input, s.options.time_scale);
  }
  std::vector<int64_t> bshape(static_cast<size_t>(x0.dim()), 1);
  bshape[0] = n;
  const auto opts = x0.options();
  const at::Tensor a = at::tensor(alpha, at::kDouble).to(opts).view(bshape);
  const at::Tensor sg = at::tensor(sigma, at::kDouble).to(opts).view(bshape);
  const at::Tensor loss_weight = at::tensor(weight, at::kDouble).to(opts);
  const at::Tensor t_input = at::tensor(t_in, at::kDouble).to(opts);
  const at::Tensor z_t = x0 * a + eps * sg;

  // progressive_target calls the teacher once per distinct index on those rows; per-row labels and
  // guidance weights are bound to each group's teacher here.
  at::Tensor target;
  if (!y.defined() && !w.defined()) {
    target = progressive_target(s.teacher({}, {}), z_t, index, s.steps_n, s.t_lo, s.t_hi, s.substeps()).target;
  } else {
    target = at::empty_like(z_t);
    for (int64_t v = 1; v <= s.steps_n; ++v) {
      const at::Tensor rows = (index == v).nonzero().squeeze(1);
      if (rows.numel() == 0) continue;
      const at::Tensor rows_dev = rows.to(z_t.device());
      const Denoiser teacher = s.teacher(y.defined() ? y.index_select(0, rows_dev) : at::Tensor(),
                                         w.defined() ? w.index_select(0, rows_dev) : at::Tensor());
      target.index_copy_(0, rows_dev,
                         progressive_target(teacher, z_t.index_select(0, rows_dev), index.index_select(0, rows),
                                            s.steps_n, s.t_lo, s.t_hi, s.substeps())
                             .target);
    }
  }

  at::Tensor loss;
  {
    ScopedUnoptimizedExecutor guard;
    const at::Tensor o = forward_network(*s.student, z_t, t_input, y, w, "ProgressiveDistillationTrainer student");
    at::Tensor x0_hat;
    switch (s.options.student_prediction) {
      case Prediction::X0: x0_hat = o; break;
      case Prediction::Eps: x0_hat = (z_t - sg * o) / a; break;
      default: x0_hat = (a * z_t - sg * o) / (a * a + sg * sg); break;  // v
    }
    loss = (loss_weight * (x0_hat - target.detach()).pow(2).flatten(1).mean(1)).mean();
    loss.backward();
  }
  const double loss_value = average_loss(loss.item<double>());
  FEWSTEP_CHECK(std::isfinite(loss_value), "ProgressiveDistillationTrainer: loss is ", loss_value, " at step ", s.step,
                " (round ", s.round, ", N = ", s.steps_n, "); lower the learning rate (",
                s.options.optimizer.schedule.lr, ")");
  const int64_t in_round = s.step - s.round * s.options.iterations_per_round;
  const Optimizer::Stats os = update(*s.optimizer, in_round);
  s.ema->update(*s.student);
  ++s.step;
  const double round_steps = static_cast<double>(s.steps_n);
  if (s.step % s.options.iterations_per_round == 0 && s.round + 1 < s.num_rounds) s.end_round();
  return {s.step, loss_value, os.lr, os.grad_norm, {{"N", round_steps}}};
}

Checkpoint ProgressiveDistillationTrainer::state() const {
  const Impl& s = *impl_;
  Checkpoint c;
  c.set_int("round", s.round);
  c.set_int("steps", s.steps_n);
  save_training_parts(c, s.step, {"student", s.student.get(), s.ema.get(), s.optimizer.get(),
                                  const_cast<RngBundle*>(&s.rng), s.data.get()});
  save_module_state(c, "teacher", *s.teacher_net);
  return c;
}

void ProgressiveDistillationTrainer::load_state(const Checkpoint& c) {
  Impl& s = *impl_;
  constexpr const char* who = "ProgressiveDistillationTrainer.load_checkpoint";
  const int64_t step = c.integer("step"), round = c.integer("round");
  FEWSTEP_CHECK_VALUE(step >= 0 && round >= 0 && round < s.num_rounds &&
                          c.integer("steps") == (s.options.initial_steps >> round),
                      who, ": checkpoint '", c.source(), "' has inconsistent step ", step, ", round ", round,
                      ", steps ", c.integer("steps"));
  if (round > 0) s.teacher_from(*s.student);  // the student's architecture; its weights follow
  load_module_state(c, "teacher", *s.teacher_net);
  // The round's optimiser (fresh at each round) before its state is restored.
  s.set_round(round);
  s.fresh_optimizer();
  s.step = load_training_parts(c, {"student", s.student.get(), s.ema.get(), s.optimizer.get(), &s.rng, s.data.get()},
                               who);
}

std::string ProgressiveDistillationTrainer::options_json() const {
  const Impl& s = *impl_;
  auto j = json_options::json::parse(options_to_json(s.options));
  // Absent at its default, so checkpoints written before the option existed still resume.
  if (s.options.first_round_substeps == 2) j.erase("first_round_substeps");
  j["t_min"] = s.t_lo;
  j["t_max"] = s.t_hi;
  j["schedule"] = s.schedule->repr();
  j["data"] = s.data->describe();
  return j.dump();
}

int64_t ProgressiveDistillationTrainer::planned_steps() const {
  return impl_->num_rounds * impl_->options.iterations_per_round;
}
int64_t ProgressiveDistillationTrainer::step_count() const { return impl_->step; }
int64_t ProgressiveDistillationTrainer::round() const { return impl_->round; }
int64_t ProgressiveDistillationTrainer::current_steps() const { return impl_->steps_n; }
int64_t ProgressiveDistillationTrainer::num_rounds() const { return impl_->num_rounds; }
bool ProgressiveDistillationTrainer::finished() const {
  return impl_->step >= impl_->num_rounds * impl_->options.iterations_per_round;
}
const ScriptNet& ProgressiveDistillationTrainer::student() const { return impl_->student; }
const ScriptNet& ProgressiveDistillationTrainer::teacher() const { return impl_->teacher_net; }
const ScriptNet& ProgressiveDistillationTrainer::ema_student() const { return impl_->ema->module(); }
Denoiser ProgressiveDistillationTrainer::teacher_denoiser(const at::Tensor& y, const at::Tensor& w) const {
  return impl_->teacher(y, w);
}
const Optimizer& ProgressiveDistillationTrainer::optimizer() const { return *impl_->optimizer; }
const ProgressiveTrainerOptions& ProgressiveDistillationTrainer::options() const { return impl_->options; }

}  // namespace fewstep
