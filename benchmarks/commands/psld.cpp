// `fewstep-bench psld`: PSLD samplers (Euler–Maruyama, naive and reduced splitting integrators, the
// probability-flow ODE) at equal score evaluations, judged on distribution (docs/design.md §4): mode
// weights, per-mode means and covariances, exact log-likelihood and MMD against exact data samples.
// Two tables: the exact PSLD mixture (psld/mixture.h) of the 16-D, 8-component mixture that
// models/gmm16d-* were trained on, and the learned PSLD MLP models/gmm16d-psld-mlp.pt.
// `--train` first trains that MLP (psld/training.h) and writes it with its sidecar and card.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "../command.h"
#include "../machine.h"
#include "../report.h"
#include "fewstep/core/check.h"
#include "fewstep/core/progress_bar.h"
#include "fewstep/data/mixture_data.h"
#include "fewstep/metrics/mmd.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/nets/mlp.h"
#include "fewstep/psld/mixture.h"
#include "fewstep/psld/model.h"
#include "fewstep/psld/reference.h"
#include "fewstep/psld/sampler.h"
#include "fewstep/psld/training.h"

namespace fewstep::bench {
namespace {

namespace fsys = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Config {
  std::string out = "out/psld";
  std::string model = "models/gmm16d-psld-mlp.pt";
  std::vector<int64_t> nfe = {20, 50, 100, 200};
  // The splitting schemes with the default split (docs/psld.md), reduced OBAB with the earlier
  // split (momentum score in B) for comparison, and the unsplit baselines.
  std::vector<std::string> samplers = {"psld_em",     "psld_noba",  "psld_roba",
                                       "psld_rbao",   "psld_nobab", "psld_robab",
                                       "psld_nbaoab", "psld_robab:score_m=B", "psld_ode_euler",
                                       "psld_ode_heun"};
  std::vector<std::string> tables = {"exact", "learned"};
  std::string spacing = "time";  // psld_grid spacing: time | quadratic
  int64_t n = 4000;
  int64_t repeats = 1;  // independent (x_T, noise) draws per cell, averaged
  uint64_t seed = 0;
  bool local_error = false;  // --local-error: the one-step analysis instead of the tables
  // --train
  bool train = false;
  int64_t train_steps = 20000, batch = 512, hidden = 128, blocks = 3;  // the shipped model's settings
  double lr = 1e-3;
};

// "name" or "name:key=value,key=value" (values: true/false, numbers, or words such as score_m=B).
std::pair<std::string, Options> parse_spec(const std::string& spec) {
  const auto colon = spec.find(':');
  Options options;
  if (colon == std::string::npos) return {spec, options};
  std::stringstream rest(spec.substr(colon + 1));
  std::string item;
  while (std::getline(rest, item, ',')) {
    const auto eq = item.find('=');
    FEWSTEP_CHECK_VALUE(eq != std::string::npos, "--samplers: option '", item, "' of '", spec, "' is not key=value");
    options.set(item.substr(0, eq), parse_option_value(item.substr(eq + 1)));
  }
  return {spec.substr(0, colon), options};
}

// Distribution error of samples x [n, D] against the data mixture.
struct Metrics {
  double mode_tv = 0, mean_err = 0, cov_err = 0, loglik = 0, mmd = 0;
  double mmd_se = 0;   ///< standard error of the MMD² mean over repeats (0 for one run)
  bool finite = true;  ///< false: diverged (see Evaluator), the other fields are unset
};

// The mean of repeated measurements (diverged if any run diverged), with the MMD² standard error.
Metrics average(const std::vector<Metrics>& runs) {
  Metrics out;
  for (const auto& m : runs) out.finite = out.finite && m.finite;
  if (!out.finite || runs.empty()) return out;
  const double k = static_cast<double>(runs.size());
  for (const auto& m : runs) {
    out.mode_tv += m.mode_tv / k, out.mean_err += m.mean_err / k, out.cov_err += m.cov_err / k;
    out.loglik += m.loglik / k, out.mmd += m.mmd / k;
  }
  if (runs.size() > 1) {
    double ss = 0;
    for (const auto& m : runs) ss += (m.mmd - out.mmd) * (m.mmd - out.mmd);
    out.mmd_se = std::sqrt(ss / (k - 1) / k);
  }
  return out;
}

class Evaluator {
 public:
  Evaluator(std::shared_ptr<const GaussianMixture> data, int64_t n, uint64_t seed) : data_(std::move(data)) {
    auto g = at::make_generator<at::CPUGeneratorImpl>(seed + 777);
    exact_ = data_->sample(n, g);
    bandwidth_ = median_pairwise_distance(exact_);
  }
  Metrics operator()(const at::Tensor& samples) const {
    Metrics m;
    auto x = samples.to(at::kDouble);
    // Diverged: non-finite, or far outside the data (whose coordinates stay within a few units).
    if (!at::isfinite(x).all().item<bool>() || x.abs().max().item<double>() > 100) {
      m.finite = false;
      return m;
    }
    const int64_t k = data_->components();
    auto label = data_->responsibilities(x, 1.0, 0.0).argmax(1);
    auto w = data_->weights();
    auto cov = data_->covariances();
    double tv = 0, wsum = 0;
    for (int64_t c = 0; c < k; ++c) {
      auto mask = label == c;
      const int64_t count = mask.sum().item<int64_t>();
      const double wk = w[c].item<double>();
      tv += std::abs(static_cast<double>(count) / x.size(0) - wk);
      if (count < 20) continue;  // too few samples for a covariance
      auto xs = x.index({mask});
      auto mu = xs.mean(0);
      auto d = xs - mu;
      auto ck = at::mm(d.t(), d) / static_cast<double>(count - 1);
      m.mean_err += wk * (mu - data_->means()[c]).norm().item<double>();
      m.cov_err += wk * ((ck - cov[c]).norm() / cov[c].norm()).item<double>();
      wsum += wk;
    }
    m.mode_tv = tv / 2;
    m.mean_err /= wsum;
    m.cov_err /= wsum;
    m.loglik = data_->log_prob(x, 1.0, 0.0).mean().item<double>();
    m.mmd = mmd2_rbf(x, exact_, bandwidth_);
    return m;
  }
  double bandwidth() const { return bandwidth_; }

 private:
  std::shared_ptr<const GaussianMixture> data_;
  at::Tensor exact_;
  double bandwidth_;
};

json to_json(const Metrics& m) {
  return {{"mode_tv", m.mode_tv}, {"mean_err", m.mean_err}, {"cov_err", m.cov_err},
          {"loglik", m.loglik},   {"mmd2", m.mmd},          {"mmd2_se", m.mmd_se},
          {"finite", m.finite}};
}

class PsldBench : public Command {
 public:
  void configure(CLI::App& app) override {
    app.add_option("--out", c_.out, "Output directory (table.md, psld.json)")->capture_default_str();
    app.add_option("--model", c_.model, "Learned PSLD model (TorchScript, forward(z, t) -> eps)")->capture_default_str();
    app.add_option("--nfe", c_.nfe, "Score-evaluation budgets (denoising included)")->delimiter(',')->capture_default_str();
    app.add_option("--samplers", c_.samplers, "PSLD samplers, name or name:key=value,... (e.g. psld_roba:lambda_s=0.5 or psld_noba:score_m=B)")
        ->delimiter(';')
        ->capture_default_str();
    app.add_option("--spacing", c_.spacing, "Time grid: time (uniform in t) or quadratic (uniform in sqrt t)")
        ->capture_default_str();
    app.add_option("--tables", c_.tables, "exact, learned (none: only --train)")->delimiter(',')->capture_default_str();
    app.add_option("--n", c_.n, "Samples per cell")->check(positive())->capture_default_str();
    app.add_option("--repeats", c_.repeats, "Independent (x_T, noise) draws per cell, averaged (MMD² with its standard error)")
        ->check(positive())
        ->capture_default_str();
    app.add_option("--seed", c_.seed, "Seed of x_T, noise and the exact reference samples")->check(unsigned_integer())->capture_default_str();
    app.add_flag("--local-error", c_.local_error,
                 "Instead of the tables: the local weak error of one step of each stochastic sampler against the exact "
                 "step law (psld/reference.h) on 1-D Gaussian data, at b = 0.2, 0.1, 0.05");
    app.add_flag("--train", c_.train, "Train the learned model first and write it to --model (+ .json, .md)");
    app.add_option("--train-steps", c_.train_steps, "Training steps")->capture_default_str();
    app.add_option("--batch", c_.batch, "Training batch")->capture_default_str();
    app.add_option("--hidden", c_.hidden, "MLP width")->capture_default_str();
    app.add_option("--blocks", c_.blocks, "MLP residual blocks")->capture_default_str();
    app.add_option("--lr", c_.lr, "Peak learning rate")->capture_default_str();
  }

  int run(const GlobalOptions& global) override {
    const auto machine = machine_info();
    print_machine(std::cout, machine);
    data_ = GaussianMixture::random(16, 8, 0);  // the gmm16d mixture of models/gmm16d-*
    if (c_.train) train(global);
    if (c_.local_error) return local_errors(machine);
    json doc = {{"machine", fewstep::bench::to_json(machine)},
                {"process", process_.config().repr()},
                {"data", "GaussianMixture::random(dim=16, components=8, seed=0)"},
                {"n", c_.n},
                {"repeats", c_.repeats},
                {"spacing", c_.spacing},
                {"seed", c_.seed}};
    Evaluator evaluate(data_, c_.n, c_.seed);
    doc["mmd_bandwidth"] = evaluate.bandwidth();
    std::ostringstream md;
    md << "Machine: " << machine.cpu_model << ", " << machine.torch_threads << " threads, LibTorch "
       << machine.torch_version << ". " << process_.config().repr() << ". Grid spacing: " << c_.spacing
       << ". n = " << c_.n << " samples per cell, " << c_.repeats
       << " independent draw(s) of x_T and noise per cell (metrics averaged); MMD² (unbiased, Gaussian kernel, h = " << fixed(evaluate.bandwidth(), 3)
       << " = median distance) against " << c_.n << " exact data samples.\n\n";
    // Monte-Carlo floor: independent exact sample sets scored the same way.
    std::vector<Metrics> floors;
    for (int64_t r = 0; r < c_.repeats; ++r) {
      floors.push_back(evaluate(data_->sample(c_.n, at::make_generator<at::CPUGeneratorImpl>(c_.seed + 999 + 1000 * static_cast<uint64_t>(r)))));
    }
    const Metrics floor = average(floors);
    doc["floor"] = to_json(floor);
    md << "Floor (independent exact samples): mode TV " << fixed(floor.mode_tv, 4) << ", mean err "
       << fixed(floor.mean_err, 4) << ", cov err " << fixed(floor.cov_err, 3) << ", log-lik "
       << fixed(floor.loglik, 3) << ", MMD² " << sci(floor.mmd, 2);
    if (c_.repeats > 1) md << " ± " << sci(floor.mmd_se, 1);
    md << ".\n\n";
    for (const auto& table : c_.tables) {
      if (table == "none") continue;
      if (table == "exact") {
        auto mixture = std::make_shared<PsldMixture>(data_, process_);
        doc["exact"] = run_table(PsldModel::exact(mixture), evaluate, "exact PSLD mixture", md);
      } else if (table == "learned") {
        if (!fsys::exists(c_.model)) {
          std::cout << "note: no learned model at " << c_.model << " (run with --train); table skipped\n";
          continue;
        }
        doc["learned"] = run_table(PsldModel::torchscript(c_.model, process_), evaluate,
                                   "learned PSLD MLP (" + c_.model + ")", md);
      } else {
        FEWSTEP_CHECK_VALUE(false, "--tables: unknown table '", table, "' (expected exact, learned)");
      }
    }
    fsys::create_directories(c_.out);
    write_json(c_.out + "/psld.json", doc);
    std::ofstream(c_.out + "/table.md") << md.str();
    std::cout << "wrote " << c_.out << "/table.md and " << c_.out << "/psld.json\n";
    return 0;
  }

 private:
  json run_table(const PsldModel& model, const Evaluator& evaluate, const std::string& title, std::ostringstream& md) {
    json rows = json::array();
    Table table({"sampler", "NFE", "steps", "mode TV", "mean err", "cov err", "log-lik", "MMD²", "± se", "s"});
    const Spacing spacing = parse_spacing(c_.spacing);
    // Repeat r draws x_T (prior N(0, diag(1, M))) and the noise from its own seeds, the same for
    // every sampler, so cells differ only by the sampler.
    std::vector<at::Tensor> z_T;
    for (int64_t r = 0; r < c_.repeats; ++r) {
      z_T.push_back(process_.prior_sample(c_.n, {data_->dim()},
                                          at::make_generator<at::CPUGeneratorImpl>(c_.seed + 1000 * static_cast<uint64_t>(r)), at::kFloat));
    }
    for (const auto& spec : c_.samplers) {
      auto [name, options] = parse_spec(spec);
      auto sampler = psld_sampler(name, options);
      for (int64_t budget : c_.nfe) {
        int64_t steps = 0;
        while (sampler->nfe_for_steps(steps + 1) + 1 <= budget) ++steps;
        if (steps == 0) continue;
        const auto grid = psld_grid(process_, steps, spacing);
        std::vector<Metrics> runs;
        int64_t nfe = 0;
        const auto start = Clock::now();
        for (int64_t r = 0; r < c_.repeats; ++r) {
          NoiseSampler noise(at::make_generator<at::CPUGeneratorImpl>(c_.seed + 1 + static_cast<uint64_t>(budget) +
                                                                      1000 * static_cast<uint64_t>(r)));
          PsldSolution sol;
          {
            c10::InferenceMode guard;
            sol = psld_sample(model, z_T[static_cast<size_t>(r)], *sampler, grid, noise);
          }
          nfe = sol.nfe;
          runs.push_back(evaluate(sol.x));
        }
        const double secs = std::chrono::duration<double>(Clock::now() - start).count() / c_.repeats;
        const Metrics m = average(runs);
        if (m.finite) {
          table.add_row({spec, std::to_string(nfe), std::to_string(steps), fixed(m.mode_tv, 4), fixed(m.mean_err, 4),
                         fixed(m.cov_err, 3), fixed(m.loglik, 3), sci(m.mmd, 2),
                         c_.repeats > 1 ? sci(m.mmd_se, 1) : "", fixed(secs, 2)});
        } else {
          table.add_row({spec, std::to_string(nfe), std::to_string(steps), "diverged", "", "", "", "", "",
                         fixed(secs, 2)});
        }
        json row = {{"sampler", spec}, {"budget", budget}, {"nfe", nfe}, {"steps", steps}, {"seconds", secs}};
        if (m.finite) {
          row.update(to_json(m));
        } else {
          row["diverged"] = true;
        }
        rows.push_back(row);
      }
    }
    table.print(std::cout, title);
    md << "### " << title << "\n\n";
    table.print_markdown(md);
    md << "\n";
    return rows;
  }

  // docs/psld.md "Local error": one step from one standard deviation off the mean at s = 0.5 for
  // data N(1, 0.05), n = 400000 samples per cell, against the exact Gaussian step law.
  int local_errors(const MachineInfo& machine) {
    const double mu = 1.0, var = 0.05, s = 0.5;
    const int64_t n = 400000;
    const std::vector<double> bs = {0.2, 0.1, 0.05};
    auto data = std::make_shared<GaussianMixture>(at::ones({1}, at::kDouble), at::full({1, 1}, mu, at::kDouble),
                                                  at::full({1, 1, 1}, var, at::kDouble));
    const auto model = PsldModel::exact(std::make_shared<PsldMixture>(data, process_));
    const Mat2 phi = process_.transition(process_.beta_integral(s));
    const Cov2 k = process_.kernel_covariance(s);
    const double x0 = phi.a11 * mu + std::sqrt(var * phi.a11 * phi.a11 + k.xx);
    const double m0 = phi.a21 * mu + std::sqrt(var * phi.a21 * phi.a21 + k.mm);
    std::vector<PsldStepLaw> laws;
    for (double b : bs) laws.push_back(psld_affine_step_law(model, x0, m0, s, s - b / process_.beta(s)));
    Table table({"sampler", "mean b=0.2", "b=0.1", "b=0.05", "slope", "cov b=0.2", "b=0.1", "b=0.05", "slope"});
    json rows = json::array();
    for (const auto& spec : c_.samplers) {
      auto [name, options] = parse_spec(spec);
      auto sampler = psld_sampler(name, options);
      if (!sampler->traits().stochastic) continue;
      std::vector<double> mean, cov;
      for (size_t i = 0; i < bs.size(); ++i) {
        NoiseSampler noise(at::make_generator<at::CPUGeneratorImpl>(c_.seed + 7));
        c10::InferenceMode guard;
        const auto e = psld_local_error(model, *sampler, laws[i], x0, m0, s, s - bs[i] / process_.beta(s), n, noise);
        mean.push_back(e.mean);
        cov.push_back(e.cov);
      }
      // log2 of the error ratio per halving of b, over the two halvings (2 for a local order 2).
      const double mean_slope = std::log2(mean[0] / mean[2]) / 2, cov_slope = std::log2(cov[0] / cov[2]) / 2;
      table.add_row({spec, sci(mean[0], 2), sci(mean[1], 2), sci(mean[2], 2), fixed(mean_slope, 2), sci(cov[0], 2),
                     sci(cov[1], 2), sci(cov[2], 2), fixed(cov_slope, 2)});
      rows.push_back({{"sampler", spec}, {"b", bs}, {"mean_error", mean}, {"cov_error", cov}});
    }
    std::ostringstream md;
    md << "Local weak error of one step (max |Δ| of the mean and of the covariance entries) against the exact "
          "step law, data N("
       << mu << ", " << var << "), from (" << fixed(x0, 4) << ", " << fixed(m0, 4) << ") at s = " << s << ", n = " << n
       << " samples. " << process_.config().repr() << ". Monte-Carlo standard errors at b = 0.05: mean ≈ "
       << sci(std::sqrt(std::max(laws[2].cov.xx, laws[2].cov.mm) / n), 1) << ", cov ≈ "
       << sci(std::max(laws[2].cov.xx, laws[2].cov.mm) * std::sqrt(2.0 / n), 1) << ".\n\n";
    table.print(std::cout, "local weak error of one step");
    table.print_markdown(md);
    fsys::create_directories(c_.out);
    write_json(c_.out + "/local_error.json", {{"machine", fewstep::bench::to_json(machine)}, {"rows", rows}});
    std::ofstream(c_.out + "/local_error.md") << md.str();
    std::cout << "wrote " << c_.out << "/local_error.md and " << c_.out << "/local_error.json\n";
    return 0;
  }

  void train(const GlobalOptions& global) {
    MlpConfig cfg;
    cfg.dim = 2 * data_->dim();
    cfg.hidden = c_.hidden;
    cfg.blocks = c_.blocks;
    auto net = make_mlp(cfg, c_.seed);
    MixtureData source(data_, c_.batch, c_.seed);
    PsldTrainOptions opts;
    opts.steps = c_.train_steps;
    opts.lr = c_.lr;
    opts.seed = c_.seed + 1;
    std::cout << "training the PSLD MLP: " << c_.train_steps << " steps, batch " << c_.batch << ", "
              << mlp_parameter_count(cfg) << " parameters\n";
    auto result = train_psld(net, source, process_, opts, [&](int64_t step, double) {
      if ((step + 1) % 500 == 0) std::cout << "  step " << step + 1 << "/" << c_.train_steps << std::endl;
    });
    double final_loss = 0;
    const size_t window = std::min<size_t>(100, result.losses.size());
    for (size_t i = result.losses.size() - window; i < result.losses.size(); ++i) final_loss += result.losses[i] / window;
    std::cout << "  done in " << format_duration(result.seconds) << ", final loss (mean of last " << window
              << ") " << final_loss << "\n";
    fsys::create_directories(fsys::path(c_.model).parent_path().empty() ? "." : fsys::path(c_.model).parent_path());
    save_network(*result.ema, c_.model);
    std::ostringstream command;
    command << "fewstep-bench --threads " << global.threads << " psld --train --train-steps " << c_.train_steps
            << " --batch " << c_.batch << " --hidden " << c_.hidden << " --blocks " << c_.blocks << " --lr " << c_.lr
            << " --seed " << c_.seed << " --model " << c_.model;
    const auto machine = machine_info();
    json meta = {{"format", "fewstep.psld_model.v1"},
                 {"name", fsys::path(c_.model).stem().string()},
                 {"model", fsys::path(c_.model).filename().string()},
                 {"prediction", "eps (of the PSLD HSM kernel; score = -L_t^-T eps)"},
                 {"state", "z = cat(x, m) [B, 32]"},
                 {"time_input", "t"},
                 {"process", process_.config().repr()},
                 {"data", {{"name", "gmm16d"}, {"description", "GaussianMixture::random(dim=16, components=8, seed=0), fresh samples every step"}}},
                 {"network", {{"kind", "MLP"}, {"dim", cfg.dim}, {"hidden", cfg.hidden}, {"blocks", cfg.blocks},
                              {"time_multiplier", cfg.time_multiplier}}},
                 {"parameters", mlp_parameter_count(cfg)},
                 {"training", {{"command", command.str()}, {"steps", c_.train_steps}, {"batch", c_.batch},
                               {"lr", c_.lr}, {"warmup", opts.warmup}, {"ema", opts.ema}, {"grad_clip", opts.grad_clip},
                               {"loss", "HSM eps-MSE, t ~ U(t_min, t_max)"}, {"final_loss", final_loss},
                               {"final_loss_window", window}, {"seconds", result.seconds},
                               {"threads", at::get_num_threads()}, {"machine", machine.cpu_model}, {"seed", c_.seed}}},
                 {"fewstep_version", machine.fewstep_version},
                 {"torch_version", machine.torch_version}};
    const std::string base = c_.model.substr(0, c_.model.size() - fsys::path(c_.model).extension().string().size());
    write_json(base + ".json", meta);
    std::ofstream card(base + ".md");
    card << "# " << meta["name"].get<std::string>() << "\n\n"
         << "A PSLD ε-network for the 16-D Gaussian mixture, trained by `fewstep-bench psld --train` with the hybrid "
            "score-matching loss of `fewstep/psld/hsm_loss.h` (trainer `fewstep/psld/training.h`), exported as TorchScript "
            "from the EMA weights. `forward(z, t)` takes the augmented state z = cat(x, m) [B, 32] and returns ε̂ of the "
            "HSM kernel; `fewstep::PsldModel::torchscript(path, fewstep::PsldProcess{})` turns it into the score "
            "−L_t⁻ᵀ ε̂ that the PSLD samplers use. The sidecar `"
         << fsys::path(base + ".json").filename().string() << "` holds the same metadata.\n\n"
         << "| | |\n| --- | --- |\n"
         << "| command | `" << command.str() << "` |\n"
         << "| trainer | a `fewstep-bench psld --train` option, not `fewstep train`: that command's trainer "
            "(train/denoiser_trainer.h) is built on the scalar α/σ `NoiseSchedule` and its DSM loss, which PSLD's "
            "2×2 kernel does not fit |\n"
         << "| seed | " << c_.seed << " |\n"
         << "| training time | " << fixed(result.seconds / 60, 1) << " min (" << at::get_num_threads() << " thread(s), "
         << machine.cpu_model << ") |\n"
         << "| final loss | " << final_loss << " (mean HSM ε-MSE of the last " << window << " steps) |\n"
         << "| parameters | " << mlp_parameter_count(cfg) << " |\n"
         << "| network | MLP(dim=32, hidden=" << cfg.hidden << ", blocks=" << cfg.blocks
         << ", time_multiplier=1000) from `fewstep/nets/mlp.h` |\n"
         << "| data | GaussianMixture::random(dim=16, components=8, seed=0), fresh samples every step, batch "
         << c_.batch << " |\n"
         << "| process | " << process_.config().repr() << " (PSLD's CIFAR-10 values) |\n"
         << "| optimiser | AdamW, lr " << c_.lr << " (warm-up " << opts.warmup << ", cosine to 0), clip "
         << opts.grad_clip << ", EMA " << opts.ema << " |\n"
         << "| versions | fewstep " << machine.fewstep_version << ", LibTorch " << machine.torch_version << " |\n\n"
         << "## Use\n\n```cpp\nauto model = fewstep::PsldModel::torchscript(\"models/gmm16d-psld-mlp.pt\", "
            "fewstep::PsldProcess{});\n"
            "auto z_T = model.process().prior_sample(n, {16}, generator);\n"
            "fewstep::NoiseSampler noise(generator);\n"
            "auto out = fewstep::psld_sample(model, z_T, *fewstep::psld_sampler(\"psld_robab\"),\n"
            "                                fewstep::psld_grid(model.process(), 98), noise);  // out.x: [n, 16], 100 NFE\n```\n\n"
            "## Measured\n\nSee `fewstep-bench psld` (docs/psld.md) for its distribution error per sampler and NFE.\n";
  }

  Config c_;
  PsldProcess process_;
  std::shared_ptr<GaussianMixture> data_;
};

const bool registered = register_command(
    {"psld", "PSLD samplers (Euler-Maruyama, naive/reduced splitting, PF-ODE) at equal NFE on the exact and learned 16-D mixture",
     [] { return std::make_unique<PsldBench>(); }});

}  // namespace
}  // namespace fewstep::bench
