// `fewstep distill guidance`: stage one of guidance distillation (train/guidance_trainer.h); stage
// two is `fewstep distill progressive --guidance-range lo,hi` on its output.
#include <ATen/ATen.h>
#include <torch/script.h>

#include <iostream>

#include "../training_run.h"
#include "method.h"
#include "teacher.h"
#include "fewstep/nets/network_spec.h"
#include "fewstep/train/guidance_trainer.h"

namespace fewstep::cli {
namespace {

using json = nlohmann::json;

class GuidanceMethod final : public Command {
 public:
  void configure(CLI::App& app) override {
    flags_.add_to(app);
    app.add_option("--iterations", iterations_, "Optimisation steps")->check(positive())->capture_default_str();
    app.add_option("--guidance-min", guidance_min_, "Smallest guidance scale s trained (1 = conditional model)")
        ->capture_default_str();
    app.add_option("--guidance-max", guidance_max_, "Largest guidance scale s trained")->capture_default_str();
    app.add_option("--default-guidance", default_guidance_, "Guidance used when sampling without --guidance")
        ->capture_default_str();
  }

  int run(const GlobalOptions&) override {
    json identity = flags_.identity();
    identity.update({{"--iterations", iterations_},
                     {"--guidance-min", guidance_min_},
                     {"--guidance-max", guidance_max_}});
    TrainingRun run("distill guidance", flags_.out, flags_.resume, identity);
    teacher_ = load_teacher(flags_.teacher, flags_.training_device());
    if (teacher_.num_classes < 1)
      throw UsageError("--teacher '" + flags_.teacher + "' is not class-conditional (train one with `fewstep train "
                       "--num-classes 10 --label-dropout 0.1`)");
    if (!(guidance_min_ <= default_guidance_ && default_guidance_ <= guidance_max_))
      throw UsageError("--default-guidance " + std::to_string(default_guidance_) + " must lie in [--guidance-min, "
                       "--guidance-max]");
    // The student: the teacher's architecture plus a guidance input, the teacher's weights copied in.
    const std::string spec = teacher_.sidecar.at("network").dump();
    ScriptNet student = network_from_spec(spec, flags_.seed, "--teacher sidecar", /*guidance_input=*/1);
    student->to(flags_.training_device());
    copy_weights(*teacher_.net, *student);

    GuidanceTrainerOptions o;
    o.num_classes = teacher_.num_classes;
    o.guidance_min = guidance_min_;
    o.guidance_max = guidance_max_;
    o.prediction = teacher_.prediction;
    o.time_input = teacher_.time_input;
    o.time_scale = teacher_.time_scale;
    o.optimizer = flags_.optimizer(iterations_, /*linear_decay=*/false);
    o.ema_decay = flags_.ema;
    o.seed = flags_.seed;
    GuidanceDistillationTrainer trainer(teacher_.net, student, teacher_.schedule,
                                        teacher_data(teacher_, flags_.batch, derive_seed(flags_.seed, 1),
                                                     flags_.fmnist_dir),
                                        o);
    run.restore(trainer);

    TrainingRun::Loop loop = flags_.loop(iterations_);
    loop.on_save = [&] {
      StudentInfo info;
      info.name = flags_.name;
      info.method = "guidance";
      info.prediction = teacher_.prediction;
      info.network = json::parse(spec);
      info.network["config"]["guidance_input"] = true;
      info.default_guidance = default_guidance_;
      info.distillation = {{"guidance_range", {guidance_min_, guidance_max_}},
                           {"batch", flags_.batch},
                           {"lr", flags_.lr},
                           {"ema", flags_.ema},
                           {"iterations", iterations_}};
      export_checkpoint_student(trainer, run, info, teacher_, flags_.out, iterations_, "distill guidance");
    };
    return run.run(trainer, loop);
  }

 private:
  DistillFlags flags_;
  int64_t iterations_ = 2000;
  double guidance_min_ = 1.0, guidance_max_ = 4.0, default_guidance_ = 2.0;
  Teacher teacher_;
};

const bool registered = register_distill_method(
    {"guidance", "Guidance distillation, stage 1 (Meng et al. 2023): one network taking the guidance scale",
     "Example (stage 1, then stage 2 = progressive distillation keeping the guidance input):\n"
     "  fewstep distill guidance --teacher models/fmnist-unet-cond.pt --iterations 2000 --out runs/gd --name guided\n"
     "  fewstep distill progressive --teacher runs/gd/guided.pt --guidance-range 1,4 --initial-steps 8 \\\n"
     "      --final-steps 1 --out runs/gd-pd\n"
     "Sample: fewstep sample --model runs/gd/guided.pt --class 3 --guidance 2",
     [] { return std::make_unique<GuidanceMethod>(); }});

}  // namespace
}  // namespace fewstep::cli
