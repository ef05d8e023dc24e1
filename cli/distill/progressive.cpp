// `fewstep distill progressive`: Salimans & Ho's progressive distillation (train/progressive_trainer.h)
// of a teacher model file; every round's student is exported with its own grid.
#include <ATen/ATen.h>
#include <torch/script.h>

#include <filesystem>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

#include "../training_run.h"
#include "method.h"
#include "teacher.h"
#include "fewstep/metrics/solver_choice.h"
#include "fewstep/models/student_init.h"
#include "fewstep/nets/network_spec.h"
#include "fewstep/train/progressive_trainer.h"

namespace fewstep::cli {
namespace {

using json = nlohmann::json;

class ProgressiveMethod final : public Command {
 public:
  void configure(CLI::App& app) override {
    flags_.add_to(app);
    app.add_option("--initial-steps", initial_steps_, "Student steps of the first round (its teacher runs twice as "
                                                      "many DDIM steps)")
        ->check(positive())
        ->capture_default_str();
    app.add_option("--final-steps", final_steps_, "Student steps of the last round")
        ->check(positive())
        ->capture_default_str();
    app.add_option("--iterations", iterations_, "Optimisation steps per round")->check(positive())->capture_default_str();
    app.add_option("--student-prediction", student_prediction_, "Student parameterisation: v or x0 (eps only above 2 "
                                                                "steps)")
        ->check(CLI::IsMember({"v", "x0", "eps"}))
        ->capture_default_str();
    app.add_option("--weighting", weighting_, "Loss weight: truncated_snr (max(SNR, 1)) or snr_plus_one")
        ->check(CLI::IsMember({"truncated_snr", "snr_plus_one"}))
        ->capture_default_str();
    app.add_option("--guidance-range", guidance_range_, "For a teacher with a guidance input (from `fewstep distill "
                                                        "guidance`): draw w ~ U[lo, hi] per example, e.g. 1,4")
        ->delimiter(',')
        ->expected(2);
    app.add_option("--first-round-substeps", first_round_substeps_,
                   "Teacher DDIM steps per student step in the first round (even; 2 = the paper). More give a "
                   "target closer to the teacher's ODE, for a chain that starts at few steps")
        ->check(CLI::Range(2, 1024))
        ->capture_default_str();
    auto* init = app.add_option("--init", init_,
                                "Where the student starts: teacher (the teacher in function space, exact at "
                                "iteration 0), weights (the teacher's weights read as --student-prediction: well "
                                "conditioned where an eps teacher's conversion is not) or auto (teacher for x0 and v "
                                "teachers, weights otherwise); docs/distillation.md, \"Where a student starts\"")
                     ->check(CLI::IsMember({"auto", "teacher", "weights"}))
                     ->capture_default_str();
    app.add_option("--student-init", student_init_,
                   "Start the student from this model file's network (e.g. an earlier student of the same "
                   "teacher, to refine it with --first-round-substeps) instead of the teacher; it must predict "
                   "--student-prediction and take the teacher's time input")
        ->check(CLI::ExistingFile)
        ->excludes(init);
    app.add_option("--student-solver", student_solver_,
                   "Solver each exported student samples its grid with (its sidecar's sampler): auto = measured "
                   "against the teacher, the candidate among ddim, dpmpp_2m, dpmpp_3m, unipc and deis whose samples "
                   "come closest to the teacher's reference solve (docs/distillation.md, \"Which solver samples a "
                   "student\"), or a solver name")
        ->capture_default_str();
    app.add_option("--solver-check-n", solver_check_.n, "Samples of the --student-solver auto check (the teacher's "
                                                        "reference solve of them is made once per run)")
        ->check(positive())
        ->capture_default_str();
    app.add_option("--export-from", export_from_, "Export the students of rounds with at most this many steps "
                                                  "(0 = every round)")
        ->check(non_negative())
        ->capture_default_str();
  }

  int run(const GlobalOptions&) override {
    json identity = flags_.identity();
    identity.update({{"--initial-steps", initial_steps_},
                     {"--final-steps", final_steps_},
                     {"--iterations", iterations_},
                     {"--student-prediction", student_prediction_},
                     {"--weighting", weighting_},
                     {"--guidance-range", guidance_range_}});
    // Only when set, so runs started before these flags existed still resume.
    if (first_round_substeps_ != 2) identity["--first-round-substeps"] = first_round_substeps_;
    if (!student_init_.empty()) identity["--student-init"] = student_init_;
    teacher_ = load_teacher(flags_.teacher, flags_.training_device());
    start_ = resolve_student_start(parse_student_start(init_), teacher_.prediction);
    if (student_init_.empty() && start_ != StudentStart::Teacher) identity["--init"] = to_string(start_);
    TrainingRun run("distill progressive", flags_.out, flags_.resume, identity);
    const bool guided = !guidance_range_.empty();
    const bool teacher_guided = teacher_.sidecar.value("network", json::object())
                                    .value("config", json::object())
                                    .value("guidance_input", false);
    if (guided != teacher_guided)
      throw UsageError(guided ? "--guidance-range needs a teacher with a guidance input (from `fewstep distill "
                                "guidance`); '" + flags_.teacher + "' has none"
                              : "--teacher '" + flags_.teacher + "' takes a guidance weight; give --guidance-range");

    if (student_solver_ != "auto") {  // the rule the auto check applies to its candidates
      try {
        check_grid_solver(student_solver_, "--student-solver");
      } catch (const c10::ValueError& e) {
        throw UsageError(e.what_without_backtrace());
      }
    }
    solver_check_.device = flags_.training_device();
    if (first_round_substeps_ % 2 != 0)
      throw UsageError("--first-round-substeps must be even (the target's midpoint is a teacher state), got " +
                       std::to_string(first_round_substeps_));
    ScriptNet student;
    if (!student_init_.empty()) {
      const Teacher init = load_teacher(student_init_, flags_.training_device(), "--student-init");
      if (to_string(init.prediction) != student_prediction_ || init.time_input != teacher_.time_input ||
          init.time_scale != teacher_.time_scale || init.sample_shape != teacher_.sample_shape ||
          init.num_classes != teacher_.num_classes)
        throw UsageError("--student-init '" + student_init_ + "' predicts " + to_string(init.prediction) +
                         " with time input " + to_string(init.time_input) +
                         "; it must predict --student-prediction (" + student_prediction_ +
                         ") and match the teacher's time input (" + to_string(teacher_.time_input) +
                         "), time scale, sample shape and classes");
      student = init.net;
      student_network_ = init.sidecar.at("network");
    } else if (start_ == StudentStart::Weights) {
      student = trainable_copy(*teacher_.net);  // round 0's teacher is then the teacher as it is
    }

    ProgressiveTrainerOptions o;
    o.initial_steps = initial_steps_;
    o.first_round_substeps = first_round_substeps_;
    o.final_steps = final_steps_;
    o.iterations_per_round = iterations_;
    o.teacher_prediction = teacher_.prediction;
    o.student_prediction = parse_prediction(student_prediction_);
    o.time_input = teacher_.time_input;
    o.time_scale = teacher_.time_scale;
    o.weighting = parse_progressive_weighting(weighting_);
    o.conditioning.num_classes = teacher_.num_classes;
    if (guided) o.guidance_range = std::make_pair(guidance_range_[0], guidance_range_[1]);
    o.optimizer = flags_.optimizer(iterations_, /*linear_decay=*/true);
    o.ema_decay = flags_.ema;
    o.seed = flags_.seed;
    std::unique_ptr<ProgressiveDistillationTrainer> trainer;
    try {
      trainer = std::make_unique<ProgressiveDistillationTrainer>(
          teacher_.net, teacher_.schedule, teacher_data(teacher_, flags_.batch, derive_seed(flags_.seed, 1),
                                                        flags_.fmnist_dir),
          o, student);
    } catch (const c10::Error& e) {
      throw UsageError(e.what_without_backtrace());
    }
    run.restore(*trainer);
    std::cerr << "fewstep distill progressive: " << flags_.teacher << " -> students of " << initial_steps_ << " ... "
              << final_steps_ << " steps, " << trainer->num_rounds() << " rounds of " << iterations_
              << " steps, now step " << trainer->step_count() << " (round " << trainer->round() << ", N = "
              << trainer->current_steps() << "), " << run.threads() << " threads\n";

    TrainingRun::Loop loop = flags_.loop(trainer->planned_steps());
    // A finished round's EMA student is the next round's teacher: export it from there.
    loop.on_step = [&](const TrainStepStats& st) {
      const int64_t n = static_cast<int64_t>(st.extra.front().second);
      if (trainer->current_steps() != n && wanted(n)) export_round(*trainer->teacher(), n, *trainer, run);
    };
    loop.on_save = [&] {
      if (trainer->finished()) export_round(*trainer->ema_student(), trainer->current_steps(), *trainer, run);
    };
    return run.run(*trainer, loop);
  }

 private:
  bool wanted(int64_t n) const { return export_from_ == 0 || n <= export_from_; }

  void export_round(const torch::jit::Module& net, int64_t n, const ProgressiveDistillationTrainer& trainer,
                    const TrainingRun& run) {
    const auto& o = trainer.options();
    const double lo = teacher_.schedule->t_min(), hi = teacher_.schedule->t_max();
    StudentInfo info;
    info.name = flags_.name + "-" + std::to_string(n) + "step";
    info.method = "progressive";
    info.prediction = o.student_prediction;
    info.network = student_init_.empty() ? teacher_.sidecar.at("network") : student_network_;
    info.teacher_output_map = student_init_.empty() ? start_ == StudentStart::Teacher
                                                    : student_network_.contains("output_map");
    for (int64_t i = n; i >= 0; --i) info.timesteps.push_back(progressive_grid_time(static_cast<double>(i), n, lo, hi));
    info.distillation = {{"steps", n},
                         {"initial_steps", o.initial_steps},
                         {"first_round_substeps", o.first_round_substeps},
                         {"iterations_per_round", o.iterations_per_round},
                         {"weighting", to_string(o.weighting)},
                         {"student_prediction", to_string(o.student_prediction)},
                         {"batch", flags_.batch},
                         {"lr", flags_.lr},
                         {"ema", flags_.ema}};
    if (!student_init_.empty()) info.distillation["student_init"] = student_init_;
    else info.distillation["init"] = to_string(start_);
    if (o.guidance_range) {
      info.distillation["guidance_range"] = {o.guidance_range->first, o.guidance_range->second};
      info.default_guidance = teacher_.sidecar.value("default_guidance", 0.0);
    }
    info.training = run.training_json();
    info.training["steps_done"] = trainer.step_count();
    if (student_solver_ == "auto")
      info.after_save = [&](const std::string& model) { choose_solver(model, info.timesteps); };
    else
      info.solver = student_solver_;
    const std::string path = export_student(net, teacher_, info, flags_.out);
    std::cerr << "fewstep distill progressive: wrote " << path << " (" << n << " steps)\n";
  }

  // --student-solver auto: measure the candidates on the student's grid against the teacher's
  // reference (computed once: every round's grid spans the same times) and record the winner.
  void choose_solver(const std::string& model, const std::vector<double>& grid) {
    if (!solver_reference_)
      solver_reference_ = student_check_reference(teacher_.file->denoiser, teacher_.sample_shape, grid.front(),
                                                  grid.back(), solver_check_);
    const SolverChoice choice = choose_student_solver(model, *solver_reference_, solver_check_);
    std::ostringstream line;
    line << "fewstep distill progressive: " << grid.size() - 1 << "-step student samples with " << choice.solver
         << " (median coupled error against the teacher, " << solver_check_.n << " samples:";
    for (const SolverTrial& t : choice.trials) line << " " << t.solver << " " << std::setprecision(3) << t.error.median;
    std::cerr << line.str() << ")\n";
  }

  DistillFlags flags_;
  int64_t initial_steps_ = 64, final_steps_ = 1, iterations_ = 1000, export_from_ = 8, first_round_substeps_ = 2;
  std::string student_solver_ = "auto";
  StudentSolverCheck solver_check_;
  std::optional<TeacherSolve> solver_reference_;
  std::string student_prediction_ = "v", weighting_ = "truncated_snr", student_init_,
      init_ = "auto";
  StudentStart start_ = StudentStart::Teacher;
  std::vector<double> guidance_range_;
  Teacher teacher_;
  json student_network_;  // the --student-init file's architecture
};

const bool registered = register_distill_method(
    {"progressive", "Progressive distillation (Salimans & Ho 2022): rounds halve the steps",
     "Example:\n"
     "  fewstep distill progressive --teacher models/fmnist-unet-eps.pt --initial-steps 64 --final-steps 1 \\\n"
     "      --iterations 800 --out runs/pd --threads 1\n"
     "Writes <name>-<N>step.pt (+ .json sidecar with its grid, + .md card) for each finished round with\n"
     "N <= --export-from; `fewstep sample --model runs/pd/student-4step.pt` samples it in 4 calls.",
     [] { return std::make_unique<ProgressiveMethod>(); }});

}  // namespace
}  // namespace fewstep::cli
