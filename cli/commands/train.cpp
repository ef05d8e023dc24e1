// `fewstep train`: trains a denoiser (Fashion-MNIST UNet or Gaussian-mixture MLP) with the C++
// DenoiserTrainer, checkpoints it atomically, resumes it exactly, and exports the EMA network as
// TorchScript with a JSON sidecar and a Markdown card.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/script.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <tuple>

#include "../command.h"
#include "../model_card.h"
#include "../schedule_spec.h"
#include "../training_run.h"
#include "fewstep/data/fashion_mnist.h"
#include "fewstep/data/image_files.h"
#include "fewstep/data/mixture_data.h"
#include "fewstep/data/shuffled_batches.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/models/model_file.h"
#include "fewstep/nets/mlp.h"
#include "fewstep/nets/network_spec.h"
#include "fewstep/nets/unet.h"
#include "fewstep/train/denoiser_trainer.h"
#include "fewstep/train/dsm_loss.h"
#include "fewstep/core/progress_bar.h"
#include "fewstep/version.h"

namespace fewstep::cli {
namespace {

namespace fsys = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Config {
  std::string data, net = "auto", prediction = "eps", schedule = "vp_linear", weighting = "uniform";
  std::string time_input = "t", out, name = "model", fmnist_dir, init_from, device;
  double time_scale = 1.0, beta_min = 0.1, beta_max = 20.0;
  int64_t steps = 0, stop_at = 0, batch = 0, warmup = -1, checkpoint_every = 500, log_every = 100;
  double lr = 0.0, min_lr = 0.0, weight_decay = 0.0, grad_clip = 1.0, ema = 0.999, min_snr_gamma = 5.0;
  uint64_t seed = 0;
  bool resume = false;
  // UNet
  int64_t base_channels = 32, res_blocks = 1;
  std::vector<int64_t> channel_mult = {1, 2, 2};
  bool no_attention = false;
  // MLP
  int64_t hidden = 128, blocks = 3;
  // Class conditioning (classifier-free guidance)
  int64_t num_classes = 0;
  double label_dropout = 0.1;
  // Gaussian mixtures
  int64_t gmm_components = 8;
  uint64_t gmm_seed = 0;
};

class TrainCommand final : public Command {
 public:
  void configure(CLI::App& app) override {
    Config& c = config_;
    app.add_option("--data", c.data,
                   "Training data: 'fmnist' (Fashion-MNIST train split, 60000 28x28 images in [-1, 1]; Debian "
                   "package dataset-fashion-mnist), 'gmm2d' / 'gmm16d' (a fixed random 8-component Gaussian "
                   "mixture in 2 / 16 dimensions, as in fewstep-bench), or your own square images: a folder of "
                   ".png files (one subfolder per class gives labels) or a .npz file with an array 'images' "
                   "([N, H, W], [N, C, H, W] or [N, H, W, C]; uint8, or floats in [-1, 1]) and optionally 'labels'")
        ->required()
        ->check(data_validator());
    app.add_option("--net", c.net, "Network: 'unet' (images), 'mlp' (vectors), 'auto' = unet for images, mlp "
                                   "for the mixtures")
        ->check(CLI::IsMember({"auto", "unet", "mlp"}))
        ->capture_default_str();
    app.add_option("--prediction", c.prediction, "What the network predicts: eps (noise), x0 (clean data), v "
                                                 "(alpha*eps - sigma*x0), score or flow")
        ->check(CLI::IsMember({"eps", "x0", "v", "score", "flow"}))
        ->capture_default_str();
    app.add_option("--schedule", c.schedule, "Noise schedule: vp_linear (beta 0.1..20, t in [1e-3, 1]), vp_cosine, "
                                             "vp_discrete (DDPM's 1000 linear betas), ve (sigma 0.002..80), flow")
        ->check(CLI::IsMember(schedule_names()))
        ->capture_default_str();
    app.add_option("--beta-min", c.beta_min, "vp_linear: beta(0)")->capture_default_str();
    app.add_option("--beta-max", c.beta_max, "vp_linear: beta(1)")->capture_default_str();
    app.add_option("--time-input", c.time_input, "What the network receives as time: t (continuous time, suits the "
                                                 "nets' embedding for t in [0, 1]), index, sigma or lambda")
        ->check(CLI::IsMember({"t", "index", "sigma", "lambda"}))
        ->capture_default_str();
    app.add_option("--time-scale", c.time_scale, "Multiplier of the time input")->capture_default_str();
    app.add_option("--steps", c.steps, "Total optimisation steps of the run (also the length of the cosine "
                                       "learning-rate decay)")
        ->required()
        ->check(positive());
    app.add_option("--stop-at", c.stop_at, "Stop after this step (checkpoint + export) to split a run into "
                                           "sessions; continue later with --resume (default: --steps)")
        ->check(positive());
    app.add_option("--batch", c.batch, "Batch size (default 128 for fmnist, 512 for the mixtures)")
        ->check(positive());
    app.add_option("--lr", c.lr, "Peak learning rate of AdamW (default 5e-4 for unet, 1e-3 for mlp)")
        ->check(positive());
    app.add_option("--min-lr", c.min_lr, "Learning rate at the end of the cosine decay")->capture_default_str();
    app.add_option("--warmup", c.warmup, "Linear warmup steps (default min(500, steps/10))")
        ->check(non_negative());
    app.add_option("--weight-decay", c.weight_decay, "AdamW weight decay")->capture_default_str();
    app.add_option("--grad-clip", c.grad_clip, "Clip the global gradient norm to this (<= 0: no clipping)")
        ->capture_default_str();
    app.add_option("--ema", c.ema, "Decay of the exponential moving average of the weights; the EMA network is "
                                   "the one exported")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    app.add_option("--weighting", c.weighting, "Loss weighting: uniform (plain MSE of the prediction), trunc_snr "
                                               "(max(SNR, 1)), min_snr (min(SNR, gamma))")
        ->check(CLI::IsMember({"uniform", "trunc_snr", "truncated_snr", "min_snr"}))
        ->capture_default_str();
    app.add_option("--min-snr-gamma", c.min_snr_gamma, "gamma of --weighting min_snr")->capture_default_str();
    app.add_option("--seed", c.seed, "Seed of the network's initialisation, the data order and the training noise")
        ->capture_default_str();
    app.add_option("--out", c.out, "Run directory: checkpoint.pt, run.json and the exported <name>.pt, <name>.json "
                                   "(sidecar) and <name>.md (card); created if missing")
        ->required();
    app.add_option("--name", c.name, "File name (without extension) of the exported model, its sidecar and card")
        ->capture_default_str();
    app.add_flag("--resume", c.resume, "Continue the run in --out from its checkpoint (same flags required; the "
                                       "result is bit-identical to an uninterrupted run with the same --threads)");
    app.add_option("--checkpoint-every", c.checkpoint_every, "Write a checkpoint (and re-export the model) every K "
                                                             "steps; 0 = only at the end")
        ->check(non_negative())
        ->capture_default_str();
    app.add_option("--log-every", c.log_every, "Print a log line every K steps when stderr is not a terminal "
                                               "(no progress bar then)")
        ->check(positive())
        ->capture_default_str();
    app.add_option("--base-channels", c.base_channels, "unet: channels at full resolution")->capture_default_str();
    app.add_option("--channel-mult", c.channel_mult, "unet: channel multiplier per level, e.g. 1,2,2")
        ->delimiter(',')
        ->capture_default_str();
    app.add_option("--res-blocks", c.res_blocks, "unet: residual blocks per level")->capture_default_str();
    app.add_flag("--no-attention", c.no_attention, "unet: no self-attention at the lowest resolution");
    app.add_option("--num-classes", c.num_classes, "Class-conditional network: feed the data's labels (fmnist: 10 "
                                                   "classes) as forward(x, t, y); 0 = unconditional")
        ->check(non_negative())
        ->capture_default_str();
    app.add_option("--label-dropout", c.label_dropout, "With --num-classes: probability of replacing a label by the "
                                                       "null class, so the network also learns the unconditional "
                                                       "model (classifier-free guidance)")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    app.add_option("--init-from", c.init_from, "Start from the weights of this TorchScript model (same architecture; "
                                               "the new network may have more tensors, e.g. a label embedding, "
                                               "which keep their initialisation)")
        ->check(CLI::ExistingFile);
    app.add_option("--hidden", c.hidden, "mlp: hidden width")->capture_default_str();
    app.add_option("--blocks", c.blocks, "mlp: residual blocks")->capture_default_str();
    app.add_option("--gmm-components", c.gmm_components, "gmm2d/gmm16d: mixture components")->capture_default_str();
    app.add_option("--gmm-seed", c.gmm_seed, "gmm2d/gmm16d: seed of GaussianMixture::random")->capture_default_str();
    app.add_option("--device", c.device, "Where the network and the batches live: cpu, cuda or cuda:N (default cpu; "
                                         "the data and every training draw are made on the host, so a run's numbers "
                                         "do not depend on it beyond kernel rounding; docs/gpu.md)");
    app.add_option("--fmnist-dir", c.fmnist_dir, "fmnist: directory of the IDX .gz files (default "
                                                 "$FEWSTEP_FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist)");
  }

  int run(const GlobalOptions&) override {
    resolve_defaults();
    const c10::Device device = training_device(config_.device);
    TrainingRun run("train", config_.out, config_.resume, run_identity(), {"--steps"});

    // Everything below is a function of the flags, so a resumed process rebuilds the same objects.
    const SchedulePtr schedule = make_schedule(schedule_spec_, "--schedule");
    auto [data, data_json, sample_shape] = make_data();
    auto [net, net_json] = make_network(sample_shape);
    net->to(device);
    DenoiserTrainerOptions opt;
    opt.loss.prediction = parse_prediction(config_.prediction);
    opt.loss.time_input = parse_time_input(config_.time_input);
    opt.loss.time_scale = config_.time_scale;
    opt.loss.weighting = parse_loss_weighting(config_.weighting);
    opt.loss.min_snr_gamma = config_.min_snr_gamma;
    opt.optimizer.schedule = {config_.lr, config_.warmup, config_.steps, config_.min_lr};
    opt.optimizer.weight_decay = config_.weight_decay;
    opt.optimizer.grad_clip = config_.grad_clip;
    opt.ema_decay = config_.ema;
    opt.seed = config_.seed;
    opt.conditioning.num_classes = config_.num_classes;
    opt.conditioning.label_dropout = config_.num_classes > 0 ? config_.label_dropout : 0.0;
    DenoiserTrainer trainer(net, schedule, data, opt);
    run.restore(trainer);

    const int64_t start = trainer.step_count();
    const int64_t target = config_.stop_at > 0 ? std::min(config_.stop_at, config_.steps) : config_.steps;
    std::cerr << "fewstep train: " << net_json["kind"].get<std::string>() << " with "
              << parameter_count(*net) << " parameters, " << data->describe() << ", " << schedule->repr()
              << ", prediction " << config_.prediction << ", steps " << start << " -> " << target << " of "
              << config_.steps << ", " << (device.is_cpu() ? std::to_string(run.threads()) + " threads"
                                                            : "on " + device.str()) << "\n";

    // The model file's record (models/model_file.h); the library adds the format, checksum,
    // parameter count and versions when it writes the file.
    info_.schedule = schedule;
    info_.prediction = parse_prediction(config_.prediction);
    info_.time_input = parse_time_input(config_.time_input);
    info_.time_scale = config_.time_scale;
    info_.sample_shape = sample_shape;
    info_.name = config_.name;
    info_.network = net_json.dump();
    metadata_ = {{"num_classes", config_.num_classes}, {"data", data_json}};

    TrainingRun::Loop loop;
    loop.target = target;
    loop.checkpoint_every = config_.checkpoint_every;
    loop.log_every = config_.log_every;
    loop.on_save = [&] { export_model(trainer, run); };
    const int code = run.run(trainer, loop);
    if (code != 0) return code;

    const std::string model = (fsys::path(config_.out) / (config_.name + ".pt")).string();
    std::cerr << "fewstep train: step " << trainer.step_count() << "/" << config_.steps << " in "
              << clock_text(run.seconds()) << "; wrote " << model << ", " << model_sidecar_path(model) << ", "
              << card_path(model) << "\n";
    if (trainer.step_count() < config_.steps)
      std::cerr << "fewstep train: continue with the same command and --resume\n";
    return 0;
  }

 private:
  void resolve_defaults() {
    Config& c = config_;
    const bool images = !is_mixture(c.data);
    if (c.net == "auto") c.net = images ? "unet" : "mlp";
    if (images && c.net != "unet")
      throw UsageError("--net mlp cannot take --data " + c.data + " (images); use --net unet");
    if (!images && c.net != "mlp")
      throw UsageError("--net unet needs images (--data fmnist, a folder or a .npz file); use --net mlp");
    if (c.batch == 0) c.batch = images ? 128 : 512;
    if (c.lr == 0.0) c.lr = c.net == "unet" ? 5e-4 : 1e-3;
    if (c.warmup < 0) c.warmup = std::min<int64_t>(500, c.steps / 10);
    if (c.weighting == "trunc_snr") c.weighting = "truncated_snr";
    if (c.stop_at > c.steps)
      throw UsageError("--stop-at " + std::to_string(c.stop_at) + " is beyond --steps " + std::to_string(c.steps));
    if (c.name.empty() || c.name.find('/') != std::string::npos)
      throw UsageError("--name '" + c.name + "' must be a plain file name without '/'");
    schedule_spec_ = default_schedule_spec(c.schedule);
    if (c.schedule == "vp_linear") {
      schedule_spec_["beta_min"] = c.beta_min;
      schedule_spec_["beta_max"] = c.beta_max;
    }
  }

  // The flags that decide the numbers a run produces; --resume requires them unchanged.
  json run_identity() const {
    const Config& c = config_;
    json j = {{"--data", c.data},        {"--net", c.net},
              {"--prediction", c.prediction}, {"--schedule", schedule_spec_},
              {"--time-input", c.time_input}, {"--time-scale", c.time_scale},
              {"--steps", c.steps},      {"--batch", c.batch},
              {"--lr", c.lr},            {"--min-lr", c.min_lr},
              {"--warmup", c.warmup},    {"--weight-decay", c.weight_decay},
              {"--grad-clip", c.grad_clip}, {"--ema", c.ema},
              {"--weighting", c.weighting}, {"--seed", c.seed}};
    if (c.weighting == "min_snr") j["--min-snr-gamma"] = c.min_snr_gamma;
    if (!c.init_from.empty()) j["--init-from"] = c.init_from;
    if (c.num_classes > 0) {
      j["--num-classes"] = c.num_classes;
      j["--label-dropout"] = c.label_dropout;
    }
    if (c.net == "unet") {
      j["--base-channels"] = c.base_channels;
      j["--channel-mult"] = c.channel_mult;
      j["--res-blocks"] = c.res_blocks;
      j["--no-attention"] = c.no_attention;
    } else {
      j["--hidden"] = c.hidden;
      j["--blocks"] = c.blocks;
      j["--gmm-components"] = c.gmm_components;
      j["--gmm-seed"] = c.gmm_seed;
    }
    return j;
  }

  std::tuple<std::shared_ptr<BatchSource>, json, std::vector<int64_t>> make_data() const {
    const Config& c = config_;
    const uint64_t data_seed = derive_seed(c.seed, 1);
    if (c.data == "fmnist") {
      FashionMnist d;
      try {
        d = load_fashion_mnist("train", c.fmnist_dir);
      } catch (const c10::Error& e) {
        throw UsageError("--data fmnist: " + std::string(e.what_without_backtrace()));
      }
      auto source = std::make_shared<ShuffledBatches>(d.images, d.labels, c.batch, data_seed);
      const json j = {{"name", "fmnist"},
                      {"split", "train"},
                      {"images", d.images.size(0)},
                      {"description", "Fashion-MNIST train split (" + std::to_string(d.images.size(0)) +
                                          " images, pixels scaled to [-1, 1])"}};
      return {source, j, {1, 28, 28}};
    }
    if (!is_mixture(c.data)) return user_images();
    const int64_t dim = c.data == "gmm2d" ? 2 : 16;
    if (c.gmm_components < 1) throw UsageError("--gmm-components must be >= 1");
    std::shared_ptr<const GaussianMixture> mixture = GaussianMixture::random(dim, c.gmm_components, c.gmm_seed);
    auto source = std::make_shared<MixtureData>(mixture, c.batch, data_seed);
    const json j = {{"name", c.data},
                    {"dim", dim},
                    {"components", c.gmm_components},
                    {"gmm_seed", c.gmm_seed},
                    {"description", "GaussianMixture::random(dim=" + std::to_string(dim) +
                                        ", components=" + std::to_string(c.gmm_components) +
                                        ", seed=" + std::to_string(c.gmm_seed) + "), fresh samples every step"}};
    return {source, j, {dim}};
  }

  static bool is_mixture(const std::string& data) { return data == "gmm2d" || data == "gmm16d"; }

  static CLI::Validator data_validator() {
    return CLI::Validator(
        [](std::string& value) -> std::string {
          if (value == "fmnist" || is_mixture(value) || fsys::is_directory(value)) return "";
          if (fsys::path(value).extension() == ".npz") {
            return fsys::is_regular_file(value) ? "" : "'" + value + "' does not exist";
          }
          return "'" + value + "' is none of fmnist, gmm2d, gmm16d, a folder of .png files or a .npz file";
        },
        "fmnist|gmm2d|gmm16d|FOLDER|FILE.npz");
  }

  // --data <folder or .npz>: the user's images (data/image_files.h), square, labelled if the data are.
  std::tuple<std::shared_ptr<BatchSource>, json, std::vector<int64_t>> user_images() const {
    const Config& c = config_;
    ImageDataset d;
    try {
      d = load_image_dataset(c.data);
    } catch (const c10::Error& e) {
      throw UsageError("--data: " + std::string(e.what_without_backtrace()));
    }
    std::cerr << "fewstep train: --data " << d.description << "\n";
    const int64_t channels = d.images.size(1), h = d.images.size(2), w = d.images.size(3);
    if (h != w)
      throw UsageError("--data '" + c.data + "': the UNet takes square images, these are " + std::to_string(w) + "x" +
                       std::to_string(h));
    if (d.images.size(0) < c.batch)
      throw UsageError("--data '" + c.data + "' holds " + std::to_string(d.images.size(0)) +
                       " images, fewer than one --batch of " + std::to_string(c.batch));
    if (c.num_classes > 0) {
      if (!d.labels.defined())
        throw UsageError("--num-classes needs labelled --data: one subfolder per class, or a 'labels' array");
      if (static_cast<int64_t>(d.classes.size()) > c.num_classes)
        throw UsageError("--num-classes " + std::to_string(c.num_classes) + " but --data '" + c.data + "' has " +
                         std::to_string(d.classes.size()) + " classes");
    }
    const uint64_t data_seed = derive_seed(c.seed, 1);
    auto source = std::make_shared<ShuffledBatches>(d.images, c.num_classes > 0 ? d.labels : at::Tensor(), c.batch,
                                                    data_seed);
    json j = {{"name", "images"},
              {"path", fsys::absolute(c.data).lexically_normal().string()},
              {"images", d.images.size(0)},
              {"shape", {channels, h, w}},
              {"description", d.description}};
    if (!d.classes.empty()) j["classes"] = d.classes;
    return {source, j, {channels, h, w}};
  }

  std::pair<ScriptNet, json> make_network(const std::vector<int64_t>& shape) const {
    const Config& c = config_;
    try {
      if (c.net == "unet") {
        UNetConfig u;
        u.in_channels = shape[0];
        u.image_size = shape[1];
        u.base_channels = c.base_channels;
        u.channel_mult = c.channel_mult;
        u.res_blocks = c.res_blocks;
        u.attention = !c.no_attention;
        u.num_classes = c.num_classes;
        return {initialised(make_unet(u, c.seed)), json::parse(network_spec(u))};
      }
      MlpConfig m;
      m.dim = shape[0];
      m.hidden = c.hidden;
      m.blocks = c.blocks;
      m.num_classes = c.num_classes;
      return {initialised(make_mlp(m, c.seed)), json::parse(network_spec(m))};
    } catch (const c10::Error& e) {
      throw UsageError("bad --" + c.net + " settings: " + e.what_without_backtrace());
    }
  }

  // --init-from: the pretrained weights copied over the fresh initialisation.
  ScriptNet initialised(ScriptNet net) const {
    if (config_.init_from.empty()) return net;
    try {
      copy_weights(torch::jit::load(config_.init_from), *net);
    } catch (const c10::Error& e) {
      throw UsageError("--init-from '" + config_.init_from + "': " + e.what_without_backtrace());
    }
    return net;
  }

  void export_model(const DenoiserTrainer& trainer, const TrainingRun& run) {
    const std::string model = (fsys::path(config_.out) / (config_.name + ".pt")).string();
    torch::jit::Module ema = trainer.ema_net()->clone();
    ema.eval();
    json metadata = metadata_;
    metadata["training"] = run.training_json();
    metadata["training"].update({{"seed", config_.seed},
                                 {"steps", config_.steps},
                                 {"steps_done", trainer.step_count()},
                                 {"weighting", config_.weighting},
                                 {"batch", config_.batch},
                                 {"lr", config_.lr},
                                 {"min_lr", config_.min_lr},
                                 {"warmup", config_.warmup},
                                 {"weight_decay", config_.weight_decay},
                                 {"grad_clip", config_.grad_clip},
                                 {"ema", config_.ema}});
    ModelFileInfo info = info_;
    info.metadata = metadata.dump();
    const json side = json::parse(save_model_file(model, ema, info));
    write_text_file(card_path(model), render_card(side, model));
  }

  Config config_;
  json schedule_spec_;
  ModelFileInfo info_;
  json metadata_;
};

const bool registered = register_command(
    {"train", "Train a denoiser with denoising score matching; export it as TorchScript with a card",
     "Examples:\n"
     "  fewstep train --data gmm2d --steps 2000 --out runs/gmm2d\n"
     "  fewstep train --data fmnist --net unet --prediction eps --schedule vp_linear --steps 20000 \\\n"
     "      --batch 128 --lr 5e-4 --ema 0.999 --seed 0 --checkpoint-every 500 --out runs/fmnist --threads 2\n"
     "  fewstep train --data my_images/ --steps 20000 --out runs/mine     (a folder of .png files)\n"
     "  fewstep train --data faces.npz --steps 20000 --out runs/faces    (np.savez('faces.npz', images=x))\n"
     "  (interrupted? rerun the same command with --resume)\n\n"
     "--out receives checkpoint.pt (weights, EMA, AdamW state, RNG states, data position), run.json (the\n"
     "flags, checked on --resume), and the exported EMA network <name>.pt with its sidecar <name>.json\n"
     "(schedule, prediction, time input: what 'fewstep sample --model <name>.pt' reads) and card <name>.md.\n"
     "Ctrl-C saves a checkpoint before exiting.",
     [] { return std::make_unique<TrainCommand>(); }});

}  // namespace
}  // namespace fewstep::cli
