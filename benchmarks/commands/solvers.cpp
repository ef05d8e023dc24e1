// `fewstep-bench solvers`: accuracy per NFE of every registered ODE solver against a float64
// reference solve of the same probability-flow ODE, on an exact Gaussian mixture (docs/design.md §4).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cmath>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>

#include "../command.h"
#include "../machine.h"
#include "../report.h"
#include "fewstep/core/check.h"
#include "fewstep/core/device.h"
#include "fewstep/core/noise.h"
#include "fewstep/models/model_file.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/sample/reference.h"
#include "fewstep/sample/request.h"
#include "fewstep/sample/sample.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/solvers/registry.h"

namespace fewstep::bench {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

struct Config {
  int64_t dim = 16;
  int64_t components = 8;
  uint64_t seed = 0;
  int64_t samples = 1000;
  std::vector<int64_t> nfe = {5, 6, 8, 10, 15, 20, 50};
  std::vector<std::string> solvers = {"all"};
  std::string spacing = "logsnr";
  std::string dtype = "float64";
  std::string device;  // "" = cpu
  std::string model;   // a model file instead of the exact mixture
  std::string json = "out/bench/solvers.json";
  double beta_min = 0.1, beta_max = 20.0;
  double t_start = NAN, t_end = NAN;  // NaN = the schedule's t_max / t_min
  double ref_tol = 1e-10;        // rtol = atol of the checking solve
  double ref_tight_tol = 1e-12;  // rtol = atol of the reference itself
  double agreement = 1e-8;       // required max per-sample distance between the two
};

// One (solver, NFE) cell.
struct Cell {
  std::string status;  // "ok", "skipped", "failed", "nfe_mismatch"
  std::string reason;
  int64_t steps = 0;
  int64_t nfe = 0;
  ErrorStats stats;
  double wall_ms = 0;
};

struct Row {
  const StepperEntry* entry;
  std::map<int64_t, Cell> cells;
};

struct ReferenceRun {
  double tol;
  ReferenceResult result;
  double seconds;
};

ReferenceRun run_reference(const Denoiser& model, const at::Tensor& x_T, const Config& c, double tol) {
  ReferenceOptions opts;
  opts.rtol = opts.atol = tol;
  const auto start = Clock::now();
  auto result = reference_solve(model, x_T, c.t_start, c.t_end, opts);
  return {tol, std::move(result), seconds_since(start)};
}

nlohmann::json to_json(const ReferenceRun& r) {
  return {{"rtol", r.tol},          {"atol", r.tol},           {"nfe", r.result.nfe},
          {"accepted", r.result.accepted}, {"rejected", r.result.rejected}, {"seconds", r.seconds}};
}

std::vector<const StepperEntry*> select_solvers(const Config& c, std::vector<std::string>& notes) {
  std::vector<const StepperEntry*> selected;
  const auto& all = registered_steppers();
  const bool everything = c.solvers.size() == 1 && c.solvers[0] == "all";
  for (const auto& e : all) {
    if (!everything) continue;
    if (e.traits.stochastic) {
      notes.push_back(e.traits.name + ": skipped (stochastic; a per-sample distance to the ODE solution "
                                      "does not measure it)");
      continue;
    }
    selected.push_back(&e);
  }
  if (everything) return selected;
  for (const auto& name : c.solvers) {
    stepper_traits(name);  // ValueError listing the registered names if unknown
    for (const auto& e : all) {
      if (e.traits.name == name) selected.push_back(&e);
    }
  }
  return selected;
}

Cell run_cell(const StepperEntry& entry, const Denoiser& model, const at::Tensor& x_T, const at::Tensor& x_ref,
              int64_t target, Spacing spacing, const Config& c) {
  Cell cell;
  auto stepper = entry.make(Options{});
  // The step count whose cost is exactly the target (a stepper may read `steps` as its budget,
  // as dpm_solver_fast does; nfe_for_steps says what `sample(name, steps)` spends).
  cell.steps = steps_for_nfe(*stepper, target);
  if (cell.steps == 0) {
    cell.status = "skipped";
    cell.reason = "NFE " + std::to_string(target) + " is not reachable with " +
                  std::to_string(entry.traits.nfe_per_step) + " evaluations per step";
    return cell;
  }
  try {
    const auto start = Clock::now();
    Solution sol = sample(model, x_T, entry.traits.name, cell.steps, spacing, Options{}, SampleOptions{}, c.t_start,
                          c.t_end);
    cell.wall_ms = 1e3 * seconds_since(start);
    cell.nfe = sol.nfe;
    cell.stats = error_stats(per_sample_error(sol.x, x_ref));
    if (sol.nfe != target) {
      cell.status = "nfe_mismatch";
      cell.reason = "measured NFE " + std::to_string(sol.nfe) + " != target " + std::to_string(target);
    } else {
      cell.status = "ok";
    }
  } catch (const c10::Error& e) {
    cell.status = "failed";
    cell.reason = e.what_without_backtrace();
  } catch (const std::exception& e) {
    cell.status = "failed";
    cell.reason = e.what();
  }
  return cell;
}

std::string cell_text(const Cell& cell, double value, bool time) {
  if (cell.status == "skipped") return "-";
  if (cell.status == "failed") return "fail";
  const std::string text = time ? fixed(value, 1) : sci(value, 2);
  return cell.status == "nfe_mismatch" ? text + "!" : text;
}

class SolversCommand final : public Command {
 public:
  void configure(CLI::App& app) override {
    app.add_option("--dim", c_.dim, "data dimension of the Gaussian mixture")->capture_default_str()
        ->check(positive());
    app.add_option("--components", c_.components, "mixture components")->capture_default_str()
        ->check(positive());
    app.add_option("--seed", c_.seed, "mixture seed; x_T uses seed + 1")->capture_default_str()
        ->check(unsigned_integer());
    app.add_option("--samples", c_.samples, "number of x_T samples")->capture_default_str()
        ->check(positive());
    app.add_option("--nfe", c_.nfe, "target NFEs, comma-separated")->delimiter(',')->capture_default_str()
        ->check(positive());
    app.add_option("--solvers", c_.solvers, "'all' (deterministic solvers) or a comma-separated list")
        ->delimiter(',')->capture_default_str();
    app.add_option("--spacing", c_.spacing, "time grid: time, logsnr, quadratic, karras")->capture_default_str();
    app.add_option("--dtype", c_.dtype, "sampling dtype: float32 or float64 (the reference is always float64; a "
                                        "--model network is converted to it)")
        ->capture_default_str();
    app.add_option("--device", c_.device, "cpu, cuda or cuda:N: where the state (and a --model network) live "
                                          "(default cpu; docs/gpu.md)");
    app.add_option("--model", c_.model, "a model file (fewstep train/distill, fs.export) instead of the exact "
                                        "mixture: x_T are its samples' noise, the reference a float64 solve of it "
                                        "(loosen --ref-tol/--ref-tight-tol/--ref-agreement for float32 networks)");
    app.add_option("--json", c_.json, "where to write the JSON report")->capture_default_str();
    app.add_option("--t-start", c_.t_start, "start time (default: the schedule's t_max, 1 for the mixture)");
    app.add_option("--t-end", c_.t_end, "end time (default: the schedule's t_min, 1e-3 for the mixture)");
    app.add_option("--ref-tol", c_.ref_tol, "rtol = atol of the checking reference solve")->capture_default_str();
    app.add_option("--ref-tight-tol", c_.ref_tight_tol, "rtol = atol of the reference solve")
        ->capture_default_str();
    app.add_option("--ref-agreement", c_.agreement, "required max per-sample distance between the two")
        ->capture_default_str();
  }

  int run(const GlobalOptions& global) override;

 private:
  Config c_;
};

int SolversCommand::run(const GlobalOptions& global) {
  const auto wall_start = Clock::now();
  const Spacing spacing = parse_spacing(c_.spacing);
  FEWSTEP_CHECK_VALUE(c_.ref_tight_tol < c_.ref_tol, "--ref-tight-tol must be smaller than --ref-tol, got ",
                      c_.ref_tight_tol, " and ", c_.ref_tol);
  std::vector<std::string> notes;
  const auto selected = select_solvers(c_, notes);  // unknown names fail before the long reference solve
  const MachineInfo machine = machine_info();
  print_machine(std::cout, machine);

  // --device/--dtype are parsed by the library (core/device.h), like every other door's.
  const Placement placement = parse_placement(c_.device, c_.dtype, "--device", "--dtype");
  const at::TensorOptions state = at::TensorOptions().dtype(*placement.dtype).device(
      placement.device.value_or(at::Device(at::kCPU)));
  SchedulePtr schedule;
  std::optional<Denoiser> loaded;
  at::Tensor x_T;  // scaled to the prior at t_start below
  std::string problem;
  if (c_.model.empty()) {
    // Problem: exact denoiser of a random mixture; x_T ~ N(0, I) (α_T ≈ 0.0066, so ≈ p_T).
    schedule = std::make_shared<VPLinear>(c_.beta_min, c_.beta_max);
    auto mixture = GaussianMixture::random(c_.dim, c_.components, c_.seed);
    loaded = Denoiser::exact(mixture, schedule);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(c_.seed + 1);
    x_T = at::randn({c_.samples, c_.dim}, gen, at::kDouble).to(state);
    problem = std::to_string(c_.components) + "-component GaussianMixture::random(dim=" + std::to_string(c_.dim) +
              ", seed=" + std::to_string(c_.seed) + "), exact denoiser";
  } else {
    // A model file, e.g. an exported pretrained network (docs/interop.md): sample i starts from
    // randn_per_sample(seed + 1 + i), the x_T `fewstep sample --seed <seed + 1>` draws.
    const ModelFile file = load_model_file(c_.model, {}, placement);
    schedule = file.schedule;
    loaded = file.denoiser;
    std::vector<uint64_t> seeds(static_cast<size_t>(c_.samples));
    for (int64_t i = 0; i < c_.samples; ++i) seeds[static_cast<size_t>(i)] = c_.seed + 1 + static_cast<uint64_t>(i);
    x_T = randn_per_sample(file.sample_shape, seeds, state);
    problem = "model file " + c_.model;
  }
  const Denoiser& model = *loaded;
  if (std::isnan(c_.t_start)) c_.t_start = schedule->t_max();
  if (std::isnan(c_.t_end)) c_.t_end = schedule->t_min();
  if (!c_.model.empty()) x_T = x_T * prior_scale(*schedule, c_.t_start);  // the prior at t_start (VE: sigma_max)
  std::cout << "problem : " << problem << ", " << schedule->repr() << ", t = " << c_.t_start << " -> " << c_.t_end
            << ", " << c_.samples << " samples (" << c_.dtype << ", " << state.device() << "), spacing "
            << to_string(spacing) << "\n";

  // Reference: two tolerances; the looser one's distance to the tighter bounds the error of both.
  std::cerr << "[solvers] reference solves (Dormand-Prince 5(4) in lambda, float64) ..." << std::endl;
  const at::Tensor x_T64 = x_T.to(at::kDouble);
  // The reference state is float64; a network kept in float32 is evaluated in float32, whose round-off
  // then bounds the reference's accuracy (loosen --ref-tol/--ref-tight-tol/--ref-agreement for it).
  const Denoiser reference_model =
      c_.model.empty() || state.dtype() == at::kDouble
          ? model
          : Denoiser::direct(
                [model](const at::Tensor& x, double t) {
                  const DenoiserOutput o = model(x.to(at::kFloat), t);
                  return DenoiserOutput{o.x0.to(at::kDouble), o.eps.to(at::kDouble)};
                },
                schedule, "float32 evaluations of " + model.description());
  const ReferenceRun check = run_reference(reference_model, x_T64, c_, c_.ref_tol);
  const ReferenceRun ref = run_reference(reference_model, x_T64, c_, c_.ref_tight_tol);
  const ErrorStats agreement = error_stats(per_sample_error(check.result.x, ref.result.x));
  const bool reference_ok = agreement.max <= c_.agreement;
  for (const auto* r : {&check, &ref}) {
    std::cout << "reference: rtol = atol = " << sci(r->tol, 0) << ": " << r->result.accepted << " steps ("
              << r->result.rejected << " rejected), " << r->result.nfe << " NFE, " << fixed(r->seconds, 2) << " s\n";
  }
  std::cout << "reference agreement: max per-sample distance " << sci(agreement.max) << ", median "
            << sci(agreement.median) << " (required <= " << sci(c_.agreement, 0) << "): "
            << (reference_ok ? "OK" : "FAILED") << "\n";
  nlohmann::json doc;
  doc["benchmark"] = "solvers";
  doc["machine"] = to_json(machine);
  doc["config"] = {{"dim", c_.dim},
                   {"components", c_.components},
                   {"seed", c_.seed},
                   {"x_T_seed", c_.seed + 1},
                   {"samples", c_.samples},
                   {"nfe", c_.nfe},
                   {"solvers", c_.solvers},
                   {"spacing", to_string(spacing)},
                   {"dtype", c_.dtype},
                   {"device", state.device().str()},
                   {"model", c_.model},
                   {"schedule", schedule->repr()},
                   {"t_start", c_.t_start},
                   {"t_end", c_.t_end},
                   {"threads_option", global.threads}};
  doc["reference"] = {{"method", "Dormand-Prince 5(4), dy/dlambda = e^lambda x0_hat, y = x/sigma, float64"},
                      {"check", to_json(check)},
                      {"reference", to_json(ref)},
                      {"agreement", to_json(agreement)},
                      {"required", c_.agreement},
                      {"ok", reference_ok}};
  if (!reference_ok) {
    write_json(c_.json, doc);
    std::cerr << "fewstep-bench solvers: error: the reference solves at tolerances " << sci(c_.ref_tol, 0) << " and "
              << sci(c_.ref_tight_tol, 0) << " differ by up to " << sci(agreement.max) << " > " << sci(c_.agreement, 0)
              << "; the reference is not accurate enough to judge solvers (tighten --ref-tol/--ref-tight-tol)\n";
    return 1;
  }

  {  // warm-up outside the timings (lazy initialisation in LibTorch and the model)
    auto warm = selected.empty() ? nullptr : selected.front()->make(Options{});
    if (warm) sample(model, x_T, *warm, timesteps(*schedule, 1, spacing, c_.t_start, c_.t_end));
  }
  std::vector<Row> rows;
  for (size_t i = 0; i < selected.size(); ++i) {
    const auto start = Clock::now();
    Row row{selected[i], {}};
    for (int64_t target : c_.nfe) {
      row.cells[target] = run_cell(*selected[i], model, x_T, ref.result.x, target, spacing, c_);
    }
    std::cerr << "[solvers] " << (i + 1) << "/" << selected.size() << " " << selected[i]->traits.name << ": "
              << c_.nfe.size() << " NFE targets in " << fixed(seconds_since(start), 2) << " s" << std::endl;
    rows.push_back(std::move(row));
  }

  // Tables: median, RMSE, wall time; '-' = NFE not reachable, '!' = measured NFE != target.
  std::vector<std::string> header = {"solver", "order"};
  for (int64_t n : c_.nfe) header.push_back("NFE " + std::to_string(n));
  Table median(header), rmse(header), wall(header);
  int mismatches = 0, failures = 0;
  nlohmann::json results = nlohmann::json::array();
  for (const auto& row : rows) {
    const auto& tr = row.entry->traits;
    std::vector<std::string> m = {tr.name, std::to_string(tr.order)}, r = m, w = m;
    std::vector<int64_t> skipped;
    for (int64_t n : c_.nfe) {
      const Cell& cell = row.cells.at(n);
      m.push_back(cell_text(cell, cell.stats.median, false));
      r.push_back(cell_text(cell, cell.stats.rmse, false));
      w.push_back(cell_text(cell, cell.wall_ms, true));
      if (cell.status == "skipped") skipped.push_back(n);
      if (cell.status == "nfe_mismatch") ++mismatches, notes.push_back(tr.name + ": " + cell.reason);
      if (cell.status == "failed") ++failures, notes.push_back(tr.name + " at NFE " + std::to_string(n) +
                                                                ": failed: " + cell.reason);
      nlohmann::json j = {{"solver", tr.name},       {"order", tr.order},    {"nfe_per_step", tr.nfe_per_step},
                          {"multistep", tr.multistep}, {"nfe_target", n},      {"status", cell.status},
                          {"steps", cell.steps},      {"nfe", cell.nfe},      {"wall_ms", cell.wall_ms}};
      if (cell.status == "ok" || cell.status == "nfe_mismatch") j["error"] = to_json(cell.stats);
      if (!cell.reason.empty()) j["reason"] = cell.reason;
      results.push_back(std::move(j));
    }
    if (!skipped.empty()) {
      std::ostringstream s;
      s << tr.name << ": NFE";
      for (size_t k = 0; k < skipped.size(); ++k) s << (k ? ", " : " ") << skipped[k];
      s << " skipped (" << tr.nfe_per_step << " evaluations per step cannot hit them exactly)";
      notes.push_back(s.str());
    }
    median.add_row(m), rmse.add_row(r), wall.add_row(w);
  }
  std::cout << "\n";
  median.print(std::cout, "Median per-sample error ||x - x_ref||_2 (lower is better)");
  std::cout << "\n";
  rmse.print(std::cout, "RMSE of per-sample error (dominated by the few trajectories near mode boundaries)");
  std::cout << "\n";
  wall.print(std::cout, "Wall time per run [ms] (" + std::to_string(c_.samples) + " samples, " +
                            std::to_string(at::get_num_threads()) + " threads)");
  if (!notes.empty()) {
    std::cout << "\nnotes:\n";
    for (const auto& n : notes) std::cout << "  " << n << "\n";
  }
  doc["results"] = results;
  doc["notes"] = notes;
  doc["nfe_mismatches"] = mismatches;
  doc["failures"] = failures;
  doc["seconds_total"] = seconds_since(wall_start);
  write_json(c_.json, doc);
  std::cout << "\nJSON written to " << c_.json << " (" << fixed(seconds_since(wall_start), 1) << " s in total)\n";
  if (mismatches || failures) {
    std::cerr << "fewstep-bench solvers: error: " << mismatches << " runs used a different NFE than their target and "
              << failures << " runs failed (see notes above)\n";
    return 2;
  }
  return 0;
}

[[maybe_unused]] const bool kRegistered = register_command(
    {"solvers", "accuracy per NFE of every ODE solver against a float64 reference on an exact Gaussian mixture",
     [] { return std::make_unique<SolversCommand>(); }});

}  // namespace
}  // namespace fewstep::bench
