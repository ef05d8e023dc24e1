// `fewstep distill kd`: knowledge distillation (train/kd_trainer.h) onto cached teacher rollouts
// (sample/teacher_cache.h).
#include <ATen/ATen.h>
#include <torch/script.h>

#include <filesystem>
#include <functional>
#include <iostream>

#include "../model_loader.h"
#include "../training_run.h"
#include "method.h"
#include "teacher.h"
#include "fewstep/models/student_init.h"
#include "fewstep/sample/teacher_cache.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/train/kd_trainer.h"

namespace fewstep::cli {
namespace {

using json = nlohmann::json;
namespace fsys = std::filesystem;

class KdMethod final : public Command {
 public:
  void configure(CLI::App& app) override {
    flags_.add_to(app);
    app.add_option("--steps", steps_, "Student steps (ddim on a fixed grid)")->check(positive())->capture_default_str();
    app.add_option("--spacing", spacing_, "Spacing of the student's grid (time, logsnr, ...)")->capture_default_str();
    app.add_option("--iterations", iterations_, "Optimisation steps")->check(positive())->capture_default_str();
    app.add_option("--student-prediction", student_prediction_, "Student parameterisation: x0 or v")
        ->check(CLI::IsMember({"x0", "v", "eps"}))
        ->capture_default_str();
    app.add_option("--pairs", pairs_, "Teacher rollouts (x_T, x_0) to regress onto")->check(positive())->capture_default_str();
    app.add_option("--teacher-solver", teacher_solver_, "Solver of the teacher rollouts")->capture_default_str();
    app.add_option("--teacher-steps", teacher_steps_, "Steps of the teacher rollouts")->check(positive())->capture_default_str();
    app.add_option("--pairs-seed", pairs_seed_, "x_T of pair i is drawn with seed pairs_seed + i")->capture_default_str();
    app.add_option("--cache-dir", cache_dir_, "Cache root of the teacher rollouts (default $FEWSTEP_CACHE_DIR, else "
                                              "$XDG_CACHE_HOME/fewstep or ~/.cache/fewstep); reused when the "
                                              "teacher's content and every setting match");
    app.add_flag("--no-cache", no_cache_, "Neither read nor write the rollout cache");
    app.add_option("--init", init_,
                   "Where the student starts: teacher (the teacher in function space), weights (the teacher's "
                   "weights read as --student-prediction) or auto (teacher for x0 and v teachers, weights "
                   "otherwise); docs/distillation.md, \"Where a student starts\"")
        ->check(CLI::IsMember({"auto", "teacher", "weights"}))
        ->capture_default_str();
  }

  int run(const GlobalOptions&) override {
    json identity = flags_.identity();
    identity.update({{"--steps", steps_}, {"--spacing", spacing_}, {"--iterations", iterations_},
                     {"--student-prediction", student_prediction_}, {"--pairs", pairs_},
                     {"--teacher-solver", teacher_solver_}, {"--teacher-steps", teacher_steps_},
                     {"--pairs-seed", pairs_seed_}});
    teacher_ = load_teacher(flags_.teacher, flags_.training_device());
    start_ = resolve_student_start(parse_student_start(init_), teacher_.prediction);
    if (start_ != StudentStart::Teacher) identity["--init"] = to_string(start_);  // earlier runs still resume
    TrainingRun run("distill kd", flags_.out, flags_.resume, identity);
    if (teacher_.sidecar.value("network", json::object()).value("config", json::object()).value("guidance_input", false))
      throw UsageError("--teacher '" + flags_.teacher + "' takes a guidance weight; kd distils plain teachers");

    // The rollouts: one cached teacher solve, keyed by the teacher's content and the settings.
    const auto stepper = make_stepper(teacher_solver_, {}, "--teacher-solver");
    if (stepper->traits().stochastic)
      throw UsageError("--teacher-solver '" + teacher_solver_ + "' is stochastic; the rollouts must be the teacher's "
                       "ODE solutions (e.g. unipc, deis, dpmpp_2m, heun)");
    TeacherSolveSpec spec;
    spec.sample_shape = teacher_.sample_shape;
    spec.n = pairs_;
    spec.seed = pairs_seed_;
    spec.solver = teacher_solver_;
    spec.grid = timesteps(*teacher_.schedule, teacher_steps_, "logsnr");
    spec.num_classes = teacher_.num_classes;
    spec.device = flags_.training_device();
    spec.label = "kd: teacher rollouts";
    const std::shared_ptr<const ModelFile> file = teacher_.file;
    const TeacherSolve solve = teacher_solve(file->denoiser, spec, cache_root(cache_dir_, no_cache_),
                                             [file](const at::Tensor& y) {
                                               ModelConditioning c;
                                               c.labels = y;
                                               return file->conditioned(c);
                                             });
    if (!solve.note.empty()) std::cerr << "fewstep distill kd: " << solve.note << "\n";
    std::cerr << "fewstep distill kd: "
              << (solve.from_cache ? "loaded " : solve.cache_file.empty() ? "made " : "made and cached ") << pairs_
              << " pairs (" << teacher_solver_ << "-" << teacher_steps_ << " teacher rollouts)"
              << (solve.cache_file.empty() ? "" : (solve.from_cache ? " from " : " in ") + solve.cache_file) << "\n";
    RolloutPairs pairs = rollout_pairs(solve);

    KdTrainerOptions o;
    o.timesteps = timesteps(*teacher_.schedule, steps_, spacing_);
    o.student_prediction = parse_prediction(student_prediction_);
    o.time_input = teacher_.time_input;
    o.time_scale = teacher_.time_scale;
    o.batch = flags_.batch;
    o.optimizer = flags_.optimizer(iterations_, /*linear_decay=*/false);
    o.ema_decay = flags_.ema;
    o.seed = flags_.seed;
    ScriptNet student = start_student(*teacher_.net, *teacher_.schedule,
                                      {teacher_.prediction, teacher_.time_input, teacher_.time_scale},
                                      {o.student_prediction, std::nullopt}, start_);
    KnowledgeDistillationTrainer trainer(student, teacher_.schedule, std::move(pairs), o);
    run.restore(trainer);

    TrainingRun::Loop loop = flags_.loop(iterations_);
    loop.on_save = [&] {
      StudentInfo info;
      info.name = flags_.name + "-" + std::to_string(steps_) + "step";
      info.method = "kd";
      info.prediction = o.student_prediction;
      info.network = teacher_.sidecar.at("network");
      info.teacher_output_map = start_ == StudentStart::Teacher;
      info.timesteps = o.timesteps;
      info.distillation = {{"steps", steps_},          {"pairs", pairs_},
                           {"teacher_solver", teacher_solver_}, {"teacher_steps", teacher_steps_},
                           {"batch", flags_.batch},    {"lr", flags_.lr},
                           {"ema", flags_.ema},        {"iterations", iterations_},
                           {"init", to_string(start_)}};
      export_checkpoint_student(trainer, run, info, teacher_, flags_.out, iterations_, "distill kd");
    };
    return run.run(trainer, loop);
  }

 private:
  DistillFlags flags_;
  int64_t steps_ = 1, iterations_ = 2000, pairs_ = 4000, teacher_steps_ = 25;
  uint64_t pairs_seed_ = 1000000;
  std::string spacing_ = "time", student_prediction_ = "x0", teacher_solver_ = "unipc", cache_dir_, init_ = "auto";
  bool no_cache_ = false;
  StudentStart start_ = StudentStart::Teacher;
  Teacher teacher_;
};

const bool registered = register_distill_method(
    {"kd", "Knowledge distillation (Luhman & Luhman 2021): regress a few-step student onto teacher rollouts",
     "Example:\n"
     "  fewstep distill kd --teacher models/fmnist-unet-eps.pt --steps 1 --pairs 4000 --iterations 2000 \\\n"
     "      --out runs/kd --threads 1\n"
     "The (x_T, x_0) pairs are cached under --cache-dir, keyed by the teacher's content (SHA-256 of its .pt and\n"
     "sidecar) and every setting, and reused by later runs.",
     [] { return std::make_unique<KdMethod>(); }});

}  // namespace
}  // namespace fewstep::cli
