// `fewstep distill consistency`: consistency distillation (cd) from the teacher, consistency training
// (ct, ict) on the teacher's data, easy consistency tuning (ect) of the teacher, and sCM's continuous-time
// objective, distilled (scd) or trained on data (sct) (train/consistency_trainer.h). The student starts as the teacher in function space (--init teacher,
// the default for x0 and v teachers), from the teacher's weights read as the consistency function's
// network F (--init weights, the default for eps teachers) or, with --init random, as a freshly
// initialised network of the teacher's architecture (ct and ict then use the model file only for its
// architecture, schedule and data). Exports 1- and 2-step samplers of the `consistency` solver.
#include <ATen/ATen.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>

#include "../training_run.h"
#include "method.h"
#include "teacher.h"
#include "fewstep/models/student_init.h"
#include "fewstep/nets/network_spec.h"
#include "fewstep/solvers/consistency.h"
#include "fewstep/train/consistency_trainer.h"

namespace fewstep::cli {
namespace {

using json = nlohmann::json;

class ConsistencyMethodCommand final : public Command {
 public:
  void configure(CLI::App& app) override {
    flags_.add_to(app);
    app.add_option("--method", method_,
                   "cd (distil the teacher's ODE steps), ct or ict (consistency training on data), ect (easy "
                   "consistency tuning, arXiv 2406.14548: training on data with a shrinking continuous pair), scd or "
                   "sct (sCM's continuous-time objective, arXiv 2410.11081: one forward-mode JVP per step along the "
                   "teacher's ODE (scd) or the sample's own path (sct); docs/distillation.md); every method starts at "
                   "the teacher (see --init)")
        ->check(CLI::IsMember({"cd", "ct", "ict", "ect", "scd", "sct"}))
        ->capture_default_str();
    app.add_option("--init", init_,
                   "auto (teacher for an x0 or v teacher, weights otherwise), teacher (the student starts as the "
                   "teacher's x0 prediction: well conditioned only for x0 and v teachers), weights (the teacher's network "
                   "and weights read as the consistency function's F: not the teacher's function at the start, but "
                   "well conditioned where an eps teacher's x0 = (x - sigma eps)/alpha is not) or random (a fresh "
                   "network of the teacher's architecture, seeded by --seed: consistency training from scratch, the "
                   "teacher's weights unused by ct and ict; not for ect, which tunes the teacher)")
        ->check(CLI::IsMember({"auto", "teacher", "weights", "random"}))
        ->capture_default_str();
    app.add_option("--iterations", iterations_, "Optimisation steps K")->check(positive())->capture_default_str();
    app.add_option("--num-points", num_points_, "cd: N points of the Karras grid")->check(CLI::Range(2, 100000))
        ->capture_default_str();
    app.add_option("--target-ema", target_ema_, "cd: EMA rate mu of the target network")->check(CLI::Range(0.0, 0.999999))
        ->capture_default_str();
    app.add_option("--teacher-solver", teacher_solver_, "cd: deterministic solver of the teacher's ODE step")
        ->capture_default_str();
    app.add_option("--distance", distance_, "l2, l1 or pseudo_huber (default: l2 for cd/ct, pseudo_huber for ict/ect)")
        ->check(CLI::IsMember({"l2", "l1", "pseudo_huber"}));
    app.add_option("--sigma-data", sigma_data_, "sigma_d of the parameterisation")->check(positive())->capture_default_str();
    app.add_option("--ct-s0", ct_s0_, "ct: initial discretisation s0")->capture_default_str();
    app.add_option("--ect-q", ect_q_, "ect: the pair gap t - r shrinks by q per stage")->check(CLI::Range(1.000001, 1e6))
        ->capture_default_str();
    app.add_option("--ect-k", ect_k_, "ect: n(t) = 1 + k sigmoid(-b t) in the mapping function")->capture_default_str();
    app.add_option("--ect-b", ect_b_, "ect: b of n(t)")->capture_default_str();
    app.add_option("--ect-stages", ect_stages_, "ect: stages over the run (the gap shrinks at each)")
        ->check(positive())
        ->capture_default_str();
    app.add_option("--p-mean", p_mean_, "ict, ect, scd, sct: mean of the lognormal of the noise level sigma/alpha")
        ->capture_default_str();
    app.add_option("--p-std", p_std_, "ict, ect, scd, sct: its standard deviation")->check(positive())
        ->capture_default_str();
    app.add_option("--scm-warmup", scm_warmup_,
                   "scd, sct: tangent warm-up over this many iterations (-1: a tenth of --iterations, 0: none)")
        ->check(at_least(-1))
        ->capture_default_str();
    app.add_option("--scm-tangent-c", scm_tangent_c_, "scd, sct: c of the tangent normalisation g/(|g| + c)")
        ->check(positive())
        ->capture_default_str();
    app.add_flag("--scm-fixed-weight", scm_fixed_weight_,
                 "scd, sct: no learned adaptive weight w(sigma) (every noise level weighted 1)");
    app.add_option("--ct-s1", ct_s1_, "ct: final discretisation s1")->capture_default_str();
    app.add_option("--ct-mu0", ct_mu0_, "ct: initial target EMA rate mu0")->capture_default_str();
    app.add_option("--ict-s0", ict_s0_, "ict: initial discretisation s0")->capture_default_str();
    app.add_option("--ict-s1", ict_s1_, "ict: final discretisation s1")->capture_default_str();
    app.add_option("--start-sigma", start_sigma_,
                   "Noise level sigma/alpha where the students' grids start (EDM's sigma_max 80 by default; "
                   "clamped to the schedule's top; 0: the schedule's t_max). ECT's lognormal draws rarely reach "
                   "above 80, so its students start worse from a higher top such as VP linear's 152 "
                   "(docs/distillation.md)")
        ->check(non_negative() & finite_number())
        ->capture_default_str();
    app.add_option("--intermediate-sigma", mid_sigma_,
                   "Noise level sigma/alpha of the 2-step sampler's intermediate time (the paper's ~0.8; "
                   "docs/results.md measures others)")
        ->check(positive() & finite_number())
        ->capture_default_str();
  }

  int run(const GlobalOptions&) override {
    const ConsistencyMethod method = parse_consistency_method(method_);
    if (distance_.empty()) distance_ = to_string(default_consistency_distance(method));
    json identity = flags_.identity();
    identity.update({{"--method", method_}, {"--iterations", iterations_}, {"--num-points", num_points_},
                     {"--target-ema", target_ema_}, {"--teacher-solver", teacher_solver_}, {"--distance", distance_},
                     {"--sigma-data", sigma_data_}, {"--ct-s0", ct_s0_}, {"--ct-s1", ct_s1_}, {"--ct-mu0", ct_mu0_},
                     {"--ict-s0", ict_s0_}, {"--ict-s1", ict_s1_}});
    if (method == ConsistencyMethod::EasyTuning)  // only then: earlier runs' records stay comparable
      identity.update({{"--ect-q", ect_q_}, {"--ect-k", ect_k_}, {"--ect-b", ect_b_}, {"--ect-stages", ect_stages_}});
    const bool scm = method == ConsistencyMethod::ScmDistillation || method == ConsistencyMethod::ScmTraining;
    if (scm)
      identity.update({{"--scm-warmup", scm_warmup_}, {"--scm-tangent-c", scm_tangent_c_},
                       {"--scm-fixed-weight", scm_fixed_weight_}});
    if (scm || p_mean_ != kPMean || p_std_ != kPStd) identity.update({{"--p-mean", p_mean_}, {"--p-std", p_std_}});
    if (init_ == "random" && method == ConsistencyMethod::EasyTuning)
      throw UsageError("--init random with --method ect: easy consistency tuning starts from the diffusion model "
                       "(use --method ct or ict to train from scratch)");
    teacher_ = load_teacher(flags_.teacher, flags_.training_device());
    try {  // the students' grids, before any training: a bad --start-sigma / --intermediate-sigma fails now
      grid(2);
    } catch (const c10::ValueError& e) {
      std::ostringstream msg;
      msg << "--start-sigma " << start_sigma_ << " with --intermediate-sigma " << mid_sigma_ << " on "
          << teacher_.schedule->repr() << ": " << e.what_without_backtrace();
      throw UsageError(msg.str());
    }
    // auto: the teacher wrapped exactly for x0 and v teachers, its weights for eps ones (models/student_init.h).
    start_ = init_ == "random" ? init_
                               : to_string(resolve_student_start(parse_student_start(init_), teacher_.prediction));
    const bool fresh = start_ == "random";
    if (start_ != "teacher") identity["--init"] = start_;  // only then: earlier runs' records stay comparable
    TrainingRun run("distill consistency", flags_.out, flags_.resume, identity);
    if (teacher_.num_classes > 0)
      throw UsageError("--teacher '" + flags_.teacher + "' is class-conditional; consistency models here are "
                       "unconditional");
    const std::string spec = teacher_.sidecar.at("network").dump();
    ConsistencyTrainerOptions o;
    o.method = method;
    o.function.sigma_data = sigma_data_;
    o.function.time_input = teacher_.time_input;
    o.function.time_scale = teacher_.time_scale;
    o.teacher_prediction = teacher_.prediction;
    o.teacher_time_input = teacher_.time_input;
    o.teacher_time_scale = teacher_.time_scale;
    o.teacher_solver = teacher_solver_;
    o.num_points = num_points_;
    o.target_ema = target_ema_;
    o.ct = {ct_s0_, ct_s1_, ct_mu0_, iterations_};
    o.ict = {ict_s0_, ict_s1_, iterations_};
    o.ect = {ect_q_, ect_k_, ect_b_, ect_stages_, iterations_};
    o.scm = {scm_tangent_c_, scm_warmup_, !scm_fixed_weight_};
    o.p_mean = p_mean_;
    o.p_std = p_std_;
    o.distance = parse_consistency_distance(distance_);
    o.optimizer = flags_.optimizer(iterations_, /*linear_decay=*/false);
    o.ema_decay = flags_.ema;
    o.seed = flags_.seed;
    // --init teacher: the teacher's network wrapped so that f(x, t) = the teacher's x0 prediction for
    // t > t_min (models/student_init.h); weights: its network and weights as F of f = c_skip x + c_out F
    // (Song et al. 2023 start CD from the teacher's weights; ECT, arXiv 2406.14548, tunes the diffusion
    // model's); random: the teacher's architecture with fresh weights.
    const bool wrapped = start_ == "teacher";
    ScriptNet student = fresh ? network_from_spec(spec, flags_.seed, "--teacher sidecar")
                              : start_student(*teacher_.net, *teacher_.schedule,
                                              {teacher_.prediction, teacher_.time_input, teacher_.time_scale},
                                              {Prediction::X0, o.function}, parse_student_start(start_));
    if (fresh) student->to(flags_.training_device());
    ConsistencyTrainer trainer(student, teacher_.schedule,
                               teacher_data(teacher_, flags_.batch, derive_seed(flags_.seed, 1), flags_.fmnist_dir),
                               o, method == ConsistencyMethod::Distillation || method == ConsistencyMethod::ScmDistillation
                                      ? teacher_.net
                                      : nullptr);
    run.restore(trainer);

    TrainingRun::Loop loop = flags_.loop(iterations_);
    loop.on_save = [&] {
      for (int steps : {1, 2}) {
        StudentInfo info;
        info.name = flags_.name + "-" + std::to_string(steps) + "step";
        info.method = "consistency";
        info.prediction = Prediction::X0;
        info.network = json::parse(spec);
        info.solver = "consistency";
        info.timesteps = grid(steps);
        info.consistency = ModelConsistency{sigma_data_, teacher_.schedule->t_min()};
        info.teacher_output_map = wrapped;
        info.distillation = {{"consistency_method", method_}, {"init", start_}, {"steps", steps}, {"iterations", iterations_},
                             {"distance", distance_}, {"batch", flags_.batch}, {"lr", flags_.lr}, {"ema", flags_.ema}};
        info.distillation["start_sigma"] = start_sigma_;
        if (steps == 2) info.distillation["intermediate_sigma"] = mid_sigma_;
        if (method == ConsistencyMethod::EasyTuning)
          info.distillation.update({{"ect_q", ect_q_}, {"ect_k", ect_k_}, {"ect_b", ect_b_}, {"ect_stages", ect_stages_}});
        if (scm)
          info.distillation.update({{"scm_warmup", scm_warmup_}, {"scm_tangent_c", scm_tangent_c_},
                                    {"scm_adaptive_weight", !scm_fixed_weight_}, {"p_mean", p_mean_}, {"p_std", p_std_}});
        if (method == ConsistencyMethod::Distillation)
          info.distillation.update({{"num_points", num_points_}, {"target_ema", target_ema_},
                                    {"teacher_solver", teacher_solver_}});
        export_checkpoint_student(trainer, run, info, teacher_, flags_.out, iterations_, "distill consistency");
      }
    };
    return run.run(trainer, loop);
  }

 private:
  // The sampling grid (solvers/consistency.h): from --start-sigma to t_min, through --intermediate-sigma
  // for two steps.
  std::vector<double> grid(int steps) const {
    const std::optional<double> start = start_sigma_ > 0.0 ? std::optional<double>(start_sigma_) : std::nullopt;
    return consistency_timesteps(*teacher_.schedule, start, steps == 2 ? std::vector<double>{mid_sigma_}
                                                                        : std::vector<double>{});
  }

  DistillFlags flags_;
  std::string method_ = "cd", teacher_solver_ = "heun", distance_, init_ = "auto", start_;
  int64_t iterations_ = 2000, num_points_ = 18;
  double target_ema_ = 0.95, sigma_data_ = 0.5, ct_mu0_ = 0.9, mid_sigma_ = 0.8, start_sigma_ = kConsistencyStartSigma;
  int64_t ct_s0_ = 2, ct_s1_ = 150, ict_s0_ = 10, ict_s1_ = 1280, ect_stages_ = 8;
  double ect_q_ = 2.0, ect_k_ = 8.0, ect_b_ = 1.0;
  static constexpr double kPMean = -1.1, kPStd = 2.0;  // ConsistencyTrainerOptions' defaults
  double p_mean_ = kPMean, p_std_ = kPStd, scm_tangent_c_ = 0.1;
  int64_t scm_warmup_ = -1;
  bool scm_fixed_weight_ = false;
  Teacher teacher_;
};

const bool registered = register_distill_method(
    {"consistency",
     "Consistency distillation / training (Song et al. 2023; iCT, Song & Dhariwal 2023; ECT, Geng et al. 2024; sCM, "
    "Lu & Song 2024)",
     "Examples:\n"
     "  fewstep distill consistency --method cd --teacher models/fmnist-unet-eps.pt --iterations 2000 --out runs/cd\n"
     "  fewstep distill consistency --method ict --teacher models/gmm16d-mlp-eps.pt --iterations 4000 --out runs/ict\n"
     "  fewstep distill consistency --method ect --teacher models/fmnist-unet-eps.pt --iterations 4000 --out runs/ect\n"
     "  fewstep distill consistency --method scd --teacher models/fmnist-unet-eps.pt --iterations 4000 --out runs/scd\n"
     "  fewstep distill consistency --method ict --init random --teacher models/gmm2d-mlp-eps.pt --out runs/ict0\n"
     "    (consistency training from scratch: the model file gives the architecture, schedule and data)\n"
     "Writes <name>-1step.pt and <name>-2step.pt (solver `consistency`): fewstep sample --model runs/cd/student-1step.pt",
     [] { return std::make_unique<ConsistencyMethodCommand>(); }});

}  // namespace
}  // namespace fewstep::cli
