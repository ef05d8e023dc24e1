// `fewstep train-classifier`: trains the Fashion-MNIST classifier whose features FD-FMNIST uses
// (nets/classifier.h, train/classifier_trainer.h), checkpoints and resumes it, measures its test
// accuracy and exports it as TorchScript with a JSON sidecar and a Markdown card.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "../command.h"
#include "../model_card.h"
#include "../training_run.h"
#include "fewstep/core/progress_bar.h"
#include "fewstep/data/fashion_mnist.h"
#include "fewstep/data/shuffled_batches.h"
#include "fewstep/models/model_file.h"
#include "fewstep/nets/classifier.h"
#include "fewstep/train/classifier_trainer.h"
#include "fewstep/version.h"

namespace fewstep::cli {
namespace {

namespace fsys = std::filesystem;
using json = nlohmann::json;

constexpr const char* kClassifierFormat = "fewstep.classifier.v1";

struct Config {
  std::string out, name = "fmnist-classifier", fmnist_dir;
  int64_t epochs = 4, batch = 128, warmup = 200, train_images = 0, checkpoint_every = 500, log_every = 100;
  double lr = 2e-3, min_lr = 1e-5, weight_decay = 0.05, grad_clip = 1.0;
  uint64_t seed = 0;
  bool no_flip = false, resume = false, keep_checkpoint = false;
  std::vector<int64_t> channels = {32, 64, 64};
  int64_t feature_dim = 128;
};

std::string grouped(int64_t n) {
  std::string d = std::to_string(n), out;
  for (size_t i = 0; i < d.size(); ++i) {
    if (i > 0 && (d.size() - i) % 3 == 0) out += ',';
    out += d[i];
  }
  return out;
}

class TrainClassifierCommand final : public Command {
 public:
  void configure(CLI::App& app) override {
    Config& c = config_;
    app.add_option("--out", c.out, "Directory that receives <name>.pt (TorchScript), <name>.json (sidecar) and "
                                   "<name>.md (card); created if missing")
        ->required();
    app.add_option("--name", c.name, "File name (without extension) of the exported classifier")
        ->capture_default_str();
    app.add_option("--epochs", c.epochs, "Passes over the training images")->check(positive())->capture_default_str();
    app.add_option("--seed", c.seed, "Seed of the initialisation, the data order and the flips")
        ->capture_default_str();
    app.add_option("--batch", c.batch, "Batch size")->check(positive())->capture_default_str();
    app.add_option("--lr", c.lr, "Peak learning rate of AdamW")->check(positive())->capture_default_str();
    app.add_option("--min-lr", c.min_lr, "Learning rate at the end of the cosine decay")
        ->check(non_negative())
        ->capture_default_str();
    app.add_option("--warmup", c.warmup, "Linear warmup steps")->check(non_negative())->capture_default_str();
    app.add_option("--weight-decay", c.weight_decay, "AdamW (decoupled) weight decay")
        ->check(non_negative())
        ->capture_default_str();
    app.add_option("--grad-clip", c.grad_clip, "Clip the global gradient norm to this (<= 0: no clipping)")
        ->capture_default_str();
    app.add_flag("--no-flip", c.no_flip, "No random horizontal flips (default: each image is mirrored with "
                                         "probability 1/2)");
    app.add_option("--channels", c.channels, "Channels per level (each level: two 3x3 convolutions, GroupNorm(8), "
                                             "ReLU, 2x2 max-pooling)")
        ->delimiter(',')
        ->capture_default_str();
    app.add_option("--feature-dim", c.feature_dim, "Width of the penultimate layer (the FD-FMNIST features)")
        ->check(positive())
        ->capture_default_str();
    app.add_option("--train-images", c.train_images, "Train on the first N training images only (0 = all 60000; "
                                                     "for quick trials)")
        ->check(non_negative())
        ->capture_default_str();
    app.add_option("--fmnist-dir", c.fmnist_dir, "Directory of the Fashion-MNIST IDX .gz files (default "
                                                 "$FEWSTEP_FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist)");
    app.add_flag("--resume", c.resume, "Continue from <out>/<name>.checkpoint.pt (same flags required)");
    app.add_option("--checkpoint-every", c.checkpoint_every, "Checkpoint every K steps (0 = only on Ctrl-C)")
        ->check(non_negative())
        ->capture_default_str();
    app.add_flag("--keep-checkpoint", c.keep_checkpoint, "Keep <name>.checkpoint.pt after a completed run "
                                                         "(default: removed)");
    app.add_option("--log-every", c.log_every, "Log line every K steps when stderr is not a terminal")
        ->check(positive())
        ->capture_default_str();
  }

  int run(const GlobalOptions&) override {
    const Config& c = config_;
    if (c.name.empty() || c.name.find('/') != std::string::npos)
      throw UsageError("--name '" + c.name + "' must be a plain file name without '/'");
    const std::string model = (fsys::path(c.out) / (c.name + ".pt")).string();
    FashionMnist train, test;
    try {
      train = load_fashion_mnist("train", c.fmnist_dir);
      test = load_fashion_mnist("test", c.fmnist_dir);
    } catch (const c10::Error& e) {
      throw UsageError((c.fmnist_dir.empty() ? std::string("Fashion-MNIST: ") : "--fmnist-dir '" + c.fmnist_dir + "': ") +
                       e.what_without_backtrace());
    }
    if (c.train_images > 0) {
      if (c.train_images > train.images.size(0))
        throw UsageError("--train-images " + std::to_string(c.train_images) + " exceeds the " +
                         std::to_string(train.images.size(0)) + " training images");
      train.images = train.images.narrow(0, 0, c.train_images);
      train.labels = train.labels.narrow(0, 0, c.train_images);
    }
    if (c.batch > train.images.size(0))
      throw UsageError("--batch " + std::to_string(c.batch) + " exceeds the number of training images (" +
                       std::to_string(train.images.size(0)) + ")");

    ClassifierConfig net_config;
    net_config.channels = c.channels;
    net_config.feature_dim = c.feature_dim;
    ScriptNet net;
    try {
      net = make_classifier(net_config, c.seed);
    } catch (const c10::Error& e) {
      throw UsageError("bad --channels/--feature-dim: " + std::string(e.what_without_backtrace()));
    }
    auto data = std::make_shared<ShuffledBatches>(train.images, train.labels, c.batch, derive_seed(c.seed, 1));
    const int64_t steps = c.epochs * data->batches_per_epoch();
    ClassifierTrainerOptions opt;
    opt.optimizer.schedule = {c.lr, std::min(c.warmup, steps / 2), steps, c.min_lr};
    opt.optimizer.weight_decay = c.weight_decay;
    opt.optimizer.grad_clip = c.grad_clip;
    opt.flip = !c.no_flip;
    opt.seed = c.seed;
    ClassifierTrainer trainer(net, data, opt);

    const json identity = {{"--epochs", c.epochs},   {"--seed", c.seed},         {"--batch", c.batch},
                           {"--lr", c.lr},           {"--min-lr", c.min_lr},     {"--warmup", c.warmup},
                           {"--weight-decay", c.weight_decay}, {"--grad-clip", c.grad_clip},
                           {"--no-flip", c.no_flip}, {"--channels", c.channels}, {"--feature-dim", c.feature_dim},
                           {"--train-images", c.train_images}};
    // The run's files sit beside the exported classifier (<name>.checkpoint.pt, ...) and go when it is done.
    TrainingRun run("train-classifier", c.out, c.resume, identity, {}, RunFiles::named(c.out, c.name));
    run.restore(trainer);
    std::cerr << "fewstep train-classifier: " << grouped(parameter_count(*net)) << " parameters, "
              << data->describe() << ", " << c.epochs << " epochs = " << steps << " steps, " << run.threads()
              << " threads\n";
    TrainingRun::Loop loop;
    loop.target = steps;
    loop.checkpoint_every = c.checkpoint_every;
    loop.log_every = c.log_every;
    if (const int rc = run.run(trainer, loop); rc != 0) return rc;
    const double seconds = run.seconds();

    // A copy made without autograd tracking: its parameters are leaves that need no grad.
    torch::jit::Module exported = [&] {
      at::NoGradGuard no_grad;
      return net->deepcopy();
    }();
    for (at::Tensor p : exported.parameters()) p.requires_grad_(false);
    exported.eval();
    const ClassifierScore score = score_classifier(exported, test.images, test.labels);
    const ClassifierScore train_score = score_classifier(exported, train.images, train.labels);
    save_network(exported, model);

    const double final_loss = run.mean_recent_loss();
    const json meta = {
        {"format", kClassifierFormat},
        {"name", c.name},
        {"model", c.name + ".pt"},
        {"input", "[N, 1, 28, 28], pixels in [-1, 1]"},
        {"feature_dim", c.feature_dim},
        {"parameters", parameter_count(exported)},
        {"network", {{"kind", "Classifier"},
                     {"config", {{"channels", c.channels}, {"convs_per_level", net_config.convs_per_level},
                                 {"groups", net_config.groups}, {"feature_dim", c.feature_dim}}}}},
        {"test", {{"accuracy", score.accuracy}, {"loss", score.loss}, {"images", score.n}}},
        {"train_eval", {{"accuracy", train_score.accuracy}, {"loss", train_score.loss}, {"images", train_score.n}}},
        {"training", {{"command", command_line()}, {"seed", c.seed}, {"epochs", c.epochs}, {"steps", steps},
                      {"seconds", seconds}, {"threads", run.threads()}, {"machine", machine_text()},
                      {"final_loss", final_loss}, {"final_loss_window", run.loss_window()}, {"batch", c.batch},
                      {"lr", c.lr}, {"min_lr", c.min_lr}, {"warmup", opt.optimizer.schedule.warmup_steps},
                      {"weight_decay", c.weight_decay}, {"grad_clip", c.grad_clip}, {"flip", !c.no_flip},
                      {"train_images", train.images.size(0)}}},
        {"fewstep_version", fewstep::version()},
        {"torch_version", fewstep::torch_version()}};
    write_text_file(model_sidecar_path(model), meta.dump(2) + "\n");
    write_text_file(card_path(model), render(meta));
    if (!c.keep_checkpoint) run.remove_files();
    std::printf("test accuracy %.4f (%lld images), test loss %.4f, final training loss %.4f, %s\n", score.accuracy,
                static_cast<long long>(score.n), score.loss, final_loss, format_duration(seconds).c_str());
    std::cerr << "fewstep train-classifier: wrote " << model << ", " << model_sidecar_path(model) << ", " << card_path(model)
              << "\n";
    return 0;
  }

 private:
  static std::string render(const json& m) {
    const json& tr = m.at("training");
    const json& cfg = m.at("network").at("config");
    char buf[256];
    std::ostringstream o;
    o << "# " << m.at("name").get<std::string>() << "\n\n"
      << "The Fashion-MNIST classifier of fewstep's image metrics (FD-FMNIST, class-histogram KL; see "
      << "docs/metrics.md), trained by `fewstep train-classifier` with fewstep's C++ ClassifierTrainer and exported "
      << "as TorchScript. `forward(x)` returns logits [N, 10] for images x [N, 1, 28, 28] with pixels in [-1, 1]; "
      << "`features(x)` returns the " << m.at("feature_dim").dump() << "-dimensional penultimate layer used for "
      << "Fréchet distances, and `head(features)` the logits.\n\n";
    o << "| | |\n| --- | --- |\n";
    std::snprintf(buf, sizeof buf, "%.2f %% (%lld test images; test loss %.4f)",
                  100.0 * m.at("test").at("accuracy").get<double>(),
                  static_cast<long long>(m.at("test").at("images").get<int64_t>()),
                  m.at("test").at("loss").get<double>());
    o << "| test accuracy | " << buf << " |\n";
    std::snprintf(buf, sizeof buf, "%.2f %%", 100.0 * m.at("train_eval").at("accuracy").get<double>());
    o << "| training-set accuracy | " << buf << " |\n";
    o << "| command | `" << tr.at("command").get<std::string>() << "` |\n";
    o << "| seed | " << tr.at("seed").dump() << " |\n";
    o << "| training time | " << training_time_cell(tr) << " |\n";
    std::snprintf(buf, sizeof buf, "%.4f", tr.at("final_loss").get<double>());
    o << "| final loss | " << buf << " (mean cross-entropy of the last " << tr.at("final_loss_window").dump()
      << " training batches) |\n";
    o << "| parameters | " << grouped(m.at("parameters").get<int64_t>()) << " |\n";
    o << "| network | conv 3x3 + GroupNorm(" << cfg.at("groups").dump() << ") + ReLU, "
      << cfg.at("convs_per_level").dump() << " per level, channels " << cfg.at("channels").dump()
      << ", 2x2 max-pooling after each level; Linear -> " << cfg.at("feature_dim").dump()
      << " features (ReLU); Linear -> 10 |\n";
    o << "| data | Fashion-MNIST train split (" << tr.at("train_images").dump() << " images), "
      << (tr.at("flip").get<bool>() ? "random horizontal flips" : "no augmentation") << " |\n";
    o << "| optimiser | AdamW, lr " << tr.at("lr").dump() << " (warmup " << tr.at("warmup").dump()
      << " steps, cosine to " << tr.at("min_lr").dump() << "), " << tr.at("epochs").dump() << " epochs = "
      << tr.at("steps").dump() << " steps of batch " << tr.at("batch").dump() << ", weight decay "
      << tr.at("weight_decay").dump() << ", clip " << tr.at("grad_clip").dump() << " |\n";
    o << "| versions | fewstep " << m.at("fewstep_version").get<std::string>() << ", LibTorch "
      << m.at("torch_version").get<std::string>() << " |\n\n";
    const std::string file = m.at("model").get<std::string>();
    o << "## Use\n\n```sh\nfewstep eval --model models/fmnist-unet-eps.pt --solver dpmpp_2m --steps 10 --n 1000 "
      << "--classifier " << file << "\n```\n\n"
      << "```python\nimport fewstep as fs\nev = fs.FmnistEvaluator(\"" << file << "\")\n"
      << "report = ev.evaluate(images)  # [N, 1, 28, 28] in [-1, 1]: report.fd, report.fd_floor, report.class_kl\n"
      << "```\n";
    return o.str();
  }

  Config config_;
};

const bool registered = register_command(
    {"train-classifier", "Train the Fashion-MNIST classifier of FD-FMNIST; export it as TorchScript with a card",
     "Example:\n"
     "  fewstep train-classifier --out models --name fmnist-classifier --epochs 4 --seed 0 --threads 2\n"
     "  (interrupted? rerun the same command with --resume)\n\n"
     "Writes <out>/<name>.pt (TorchScript: forward(x) -> logits, features(x) -> [N, 128]), <name>.json\n"
     "(sidecar: test accuracy, training metadata) and <name>.md (card). While training, <name>.checkpoint.pt,\n"
     "<name>.run.json and <name>.flags.json hold the run for --resume; they are removed when it completes.\n"
     "The test accuracy is measured on the 10000 Fashion-MNIST test images after training.",
     [] { return std::make_unique<TrainClassifierCommand>(); }});

}  // namespace
}  // namespace fewstep::cli
