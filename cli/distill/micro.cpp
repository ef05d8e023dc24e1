// `fewstep distill micro`: partial micro-distillation with a learned step size (docs/micro.md;
// train/micro_trainer.h) from cached dense teacher trajectories (micro/trajectories.h).
#include <ATen/ATen.h>
#include <torch/script.h>

#include <filesystem>
#include <functional>
#include <iostream>

#include "../training_run.h"
#include "method.h"
#include "teacher.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/train/micro_trainer.h"

namespace fewstep::cli {
namespace {

using json = nlohmann::json;
namespace fsys = std::filesystem;

class MicroMethod final : public Command {
 public:
  void configure(CLI::App& app) override {
    flags_.add_to(app);
    app.add_option("--mode", mode_, "What to train: residual (g_psi alone, local regression), step_size (h_phi alone "
                                    "with the DEIS-2 step) or joint (both, on unrolled runs)")
        ->check(CLI::IsMember({"residual", "step_size", "joint"}))
        ->capture_default_str();
    app.add_option("--init", init_, "A micro sampler file whose heads start this run (e.g. a residual run before "
                                    "joint training, or a coefficients run before a hybrid one)");
    app.add_flag("--exact", exact_, "Distil the exact mixture the --teacher was trained on (gmm2d/gmm16d sidecars) "
                                    "instead of its network");
    app.add_option("--iterations", iterations_, "Optimisation steps")->check(positive())->capture_default_str();
    app.add_option("--budget-min", budget_min_, "Unrolled modes: smallest step budget (teacher evaluations)")
        ->check(positive())->capture_default_str();
    app.add_option("--budget-max", budget_max_, "Unrolled modes: largest step budget")->check(positive())
        ->capture_default_str();
    app.add_option("--spread", spread_, "h_phi's bound a: steps within (1 -+ a) x the uniform share of what is left")
        ->check(CLI::Range(0.0, 0.999))->capture_default_str();
    app.add_option("--segment-max", segment_max_, "Residual mode: longest step in knots (0 = segments/4)")
        ->capture_default_str();
    app.add_flag("--no-teacher-grad", no_teacher_grad_, "Unrolled modes: do not backpropagate through the teacher's x "
                                                        "input (cheaper for large teachers)");
    app.add_flag("--no-time-gradient", no_time_gradient_, "Unrolled modes: ignore that moving a step moves the "
                                                          "teacher's time input (biased h_phi gradient; saves one "
                                                          "teacher call per step)");
    app.add_flag("--history", history_, "The residual head also reuses the previous teacher evaluation (corrects "
                                        "the two-step DEIS term instead of DDIM's; an extension of partial micro-distillation)");
    app.add_option("--history-depth", history_depth_, "With --history: previous teacher evaluations the residual "
                                                      "head sees, 1 to 3 (each adds the difference of the two before; "
                                                      "untrained it is the same sampler; --init a shallower sampler "
                                                      "to deepen it)")
        ->check(CLI::Range(int64_t{1}, fewstep::MicroHeadConfig::max_history_depth))->capture_default_str();
    app.add_option("--residual-head", residual_kind_, "g_psi's residual head: network (a conv/MLP net of x and eps) "
                                                      "or coefficients (learned multistep weights of x, eps and, with "
                                                      "--history, the previous eps, as functions of the step alone; "
                                                      "train it with --mode joint, no warm start needed) or hybrid "
                                                      "(coefficients plus a network of width/blocks, whose part "
                                                      "starts at zero; --init a coefficients sampler to refine it "
                                                      "per sample)")
        ->check(CLI::IsMember({"network", "coefficients", "hybrid"}))->capture_default_str();
    app.add_option("--loss", loss_, "Unrolled modes: what the loss measures of the runs' end-point errors: mse, "
                                    "rms (mean of the samples' RMS errors) or log-rms (their geometric mean: "
                                    "each sample's relative error counts the same, so the few runs that diverge "
                                    "do not dominate)")
        ->check(CLI::IsMember({"mse", "rms", "log-rms"}))->capture_default_str();
    app.add_option("--width", width_, "Residual head width (0 = 64 for vectors, 32 for images; not used by "
                                      "--residual-head coefficients)")
        ->capture_default_str();
    app.add_option("--blocks", blocks_, "Residual head blocks (0 = 3 for vectors, 4 for images; not used by "
                                        "--residual-head coefficients)")
        ->capture_default_str();
    app.add_option("--trajectories", trajectories_, "Dense teacher trajectories to train on")->check(positive())
        ->capture_default_str();
    app.add_option("--segments", segments_, "Knots per trajectory - 1 (uniform in log-SNR)")->check(positive())
        ->capture_default_str();
    app.add_option("--substeps", substeps_, "DEIS-3 steps per segment of the teacher solve")->check(positive())
        ->capture_default_str();
    app.add_option("--trajectory-seed", trajectory_seed_, "x_T of trajectory i is drawn with seed + i")
        ->capture_default_str();
    app.add_option("--trajectory-dtype", trajectory_dtype_, "dtype of the teacher solves (float32 or float64)")
        ->check(CLI::IsMember({"float32", "float64"}))->capture_default_str();
    app.add_option("--cache-dir", cache_dir_, "Cache root of the teacher trajectories (default $FEWSTEP_CACHE_DIR, "
                                              "else $XDG_CACHE_HOME/fewstep or ~/.cache/fewstep); reused when the "
                                              "teacher's content and every setting match");
    app.add_flag("--no-cache", no_cache_, "Neither read nor write the trajectory cache");
  }

  int run(const GlobalOptions&) override {
    json identity = flags_.identity();
    identity.update({{"--mode", mode_},           {"--init", init_},          {"--exact", exact_},
                     {"--iterations", iterations_}, {"--budget-min", budget_min_}, {"--budget-max", budget_max_},
                     {"--spread", spread_},       {"--segment-max", segment_max_}, {"--no-teacher-grad", no_teacher_grad_},
                     {"--no-time-gradient", no_time_gradient_}, {"--history", history_},
                     {"--history-depth", history_depth_}, {"--residual-head", residual_kind_},
                     {"--loss", loss_},
                     {"--width", width_},         {"--blocks", blocks_},      {"--trajectories", trajectories_},
                     {"--segments", segments_},   {"--substeps", substeps_},  {"--trajectory-seed", trajectory_seed_},
                     {"--trajectory-dtype", trajectory_dtype_}});
    TrainingRun run("distill micro", flags_.out, flags_.resume, identity);
    run.set_flags_added_later({{"--residual-head", "network"}, {"--history-depth", 1}, {"--loss", "mse"}});
    if (flags_.training_device() != c10::Device(c10::kCPU))
      throw UsageError("--device '" + flags_.device + "': distill micro trains its small heads on the CPU (the "
                       "teacher's trajectories are made and cached there); leave --device out");
    teacher_ = load_teacher(flags_.teacher);
    if (teacher_.num_classes > 0)
      throw UsageError("--teacher '" + flags_.teacher + "' is class-conditional; micro distils unconditional teachers");
    const auto [denoiser, teacher_id] = make_teacher();

    TrajectorySpec spec;
    spec.sample_shape = teacher_.sample_shape;
    spec.n = trajectories_;
    spec.seed = trajectory_seed_;
    spec.segments = segments_;
    spec.substeps = substeps_;
    spec.dtype = trajectory_dtype_ == "float64" ? at::kDouble : at::kFloat;
    spec.progress = true;
    DenseTrajectories data = dense_trajectories(denoiser, spec, teacher_id, cache_root(cache_dir_, no_cache_));
    std::cerr << "fewstep distill micro: "
              << (data.from_cache ? "loaded " : data.cache_file.empty() ? "made " : "made and cached ") << trajectories_
              << " trajectories (" << segments_ * substeps_ << " DEIS-3 steps each)"
              << (data.cache_file.empty() ? "" : (data.from_cache ? " from " : " in ") + data.cache_file) << "\n";

    MicroTrainerOptions o;
    o.mode = parse_micro_mode(mode_);
    o.heads.sample_shape = teacher_.sample_shape;
    o.heads.width = width_;
    o.heads.blocks = blocks_;
    o.heads.history = history_;
    o.heads.history_depth = history_depth_;
    o.heads.residual_kind = residual_kind_;
    o.loss = loss_;
    o.batch = flags_.batch;
    o.budget_min = budget_min_;
    o.budget_max = budget_max_;
    o.spread = spread_;
    o.segment_max = segment_max_;
    o.teacher_grad = !no_teacher_grad_;
    o.time_gradient = !no_time_gradient_;
    o.optimizer = flags_.optimizer(iterations_, /*linear_decay=*/false);
    o.ema_decay = flags_.ema;
    o.seed = flags_.seed;
    std::shared_ptr<const MicroSampler> init;
    if (!init_.empty()) {
      try {
        init = MicroSampler::load(init_);
      } catch (const c10::Error& e) {
        throw UsageError("--init: " + std::string(e.what_without_backtrace()));
      }
    }
    MicroTrainer trainer(denoiser, teacher_id, std::move(data), o, init);
    if (init) init->check_teacher(denoiser);
    run.restore(trainer);

    TrainingRun::Loop loop = flags_.loop(iterations_);
    const std::string path = (fsys::path(flags_.out) / (flags_.name + ".pt")).string();
    loop.on_save = [&] {
      trainer.sampler().save(path);
      if (trainer.step_count() >= iterations_) {
        const MicroSampler s = trainer.sampler();
        std::cerr << "fewstep distill micro: wrote " << path << " (mode " << mode_ << ", residual head "
                  << s.residual_parameters() << " parameters, step-size head " << s.step_size_parameters()
                  << ")\n";
      }
    };
    return run.run(trainer, loop);
  }

 private:
  std::pair<Denoiser, std::string> make_teacher() const {
    if (exact_) {
      const json d = teacher_.sidecar.value("data", json::object());
      const std::string name = d.value("name", std::string());
      if (name != "gmm2d" && name != "gmm16d")
        throw UsageError("--exact needs a teacher trained on a Gaussian mixture (gmm2d, gmm16d); --teacher '" +
                         flags_.teacher + "' was trained on '" + name + "'");
      const int64_t dim = d.at("dim").get<int64_t>(), components = d.at("components").get<int64_t>();
      const uint64_t seed = d.at("gmm_seed").get<uint64_t>();
      return {Denoiser::exact(GaussianMixture::random(dim, components, seed), teacher_.schedule),
              "exact GaussianMixture::random(" + std::to_string(dim) + ", " + std::to_string(components) + ", " +
                  std::to_string(seed) + "), " + teacher_.schedule->repr()};
    }
    return {teacher_.file->denoiser, fsys::path(flags_.teacher).filename().string() + " (sha256 " +
                                         teacher_.file->sha256.substr(0, 16) + ")"};
  }

  DistillFlags flags_;
  std::string mode_ = "joint", init_, trajectory_dtype_ = "float32", cache_dir_, residual_kind_ = "network",
              loss_ = "mse";
  bool no_cache_ = false, exact_ = false, no_teacher_grad_ = false, no_time_gradient_ = false, history_ = false;
  int64_t iterations_ = 2000, budget_min_ = 5, budget_max_ = 20, segment_max_ = 0, width_ = 0, blocks_ = 0;
  int64_t history_depth_ = 1;
  int64_t trajectories_ = 1024, segments_ = 64, substeps_ = 8;
  uint64_t trajectory_seed_ = 2000000;
  double spread_ = 0.75;
  Teacher teacher_;
};

const bool registered = register_distill_method(
    {"micro", "Partial micro-distillation with a learned step size: g_psi and h_phi for a teacher",
     "Examples (16-D mixture, exact teacher; then Fashion-MNIST):\n"
     "  fewstep distill micro --teacher models/gmm16d-mlp-eps.pt --exact --mode residual --out runs/micro-res\n"
     "  fewstep distill micro --teacher models/gmm16d-mlp-eps.pt --exact --mode joint \\\n"
     "      --init runs/micro-res/student.pt --out runs/micro-joint\n"
     "  fewstep distill micro --teacher models/fmnist-unet-eps.pt --mode residual --out runs/fmnist-micro\n"
     "The dense teacher trajectories are cached under --cache-dir, keyed by the teacher's content and every\n"
     "setting, and reused by later runs. The output\n"
     "<out>/<name>.pt is a micro sampler (TorchScript with the teacher's identity): sample it with\n"
     "`fewstep sample --micro <file>` or fewstep.MicroSampler in Python.",
     [] { return std::make_unique<MicroMethod>(); }});

}  // namespace
}  // namespace fewstep::cli
