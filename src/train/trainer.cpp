#include "fewstep/train/trainer.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <fstream>
#include <numeric>

#include "fewstep/core/check.h"
#include "fewstep/core/interrupt.h"
#include "fewstep/core/progress_bar.h"
#include "fewstep/data/batch_source.h"
#include "fewstep/train/ema.h"
#include "fewstep/train/rng_bundle.h"

namespace fewstep {

namespace {

using json = nlohmann::json;

json parse_object(const std::string& text, const std::string& what) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    FEWSTEP_CHECK_VALUE(false, what, " is not valid JSON: ", e.what());
  }
  FEWSTEP_CHECK_VALUE(j.is_object(), what, " must be a JSON object, got ", text);
  return j;
}

std::string shown(const json& value) { return value.is_null() ? "absent" : value.dump(); }

std::string clock_text(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<long long>(seconds);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s % 3600) / 60, s % 60);
  return buf;
}

}  // namespace

void check_resume_options(const std::string& who, const std::string& source, const std::string& saved,
                          const std::string& current, const std::vector<std::string>& resumable,
                          const std::string& added_later) {
  json theirs = parse_object(saved, who + ": the options of checkpoint '" + source + "'");
  const json mine = parse_object(current, who + ": the trainer's options");
  // A checkpoint older than an option ran with the value it had before the option existed.
  const json earlier_values = parse_object(added_later, who + ": options added later");
  for (const auto& [key, value] : earlier_values.items())
    if (!theirs.contains(key)) theirs[key] = value;
  std::vector<std::string> keys;
  for (const auto& [key, value] : mine.items()) keys.push_back(key);
  for (const auto& [key, value] : theirs.items())
    if (!mine.contains(key)) keys.push_back(key);
  std::string differences;
  for (const std::string& key : keys) {
    if (std::find(resumable.begin(), resumable.end(), key) != resumable.end()) continue;
    const json a = mine.contains(key) ? mine.at(key) : json(), b = theirs.contains(key) ? theirs.at(key) : json();
    if (a == b) continue;
    differences += (differences.empty() ? "" : "; ") + key + " is " + shown(a) + " here, " + shown(b) +
                   " in the checkpoint";
  }
  if (differences.empty()) return;
  std::string allowed;
  for (const std::string& r : resumable) allowed += (allowed.empty() ? "" : ", ") + r;
  FEWSTEP_CHECK_VALUE(false, who, ": checkpoint '", source, "' was written with other options: ", differences,
                      allowed.empty() ? std::string(" (no option may change when resuming; start a new run to change them)")
                                      : " (only " + allowed + " may change when resuming; start a new run to change "
                                                              "the others)");
}

std::string Trainer::checkpoint_format() const { return "fewstep." + kind() + "_trainer.v1"; }

void Trainer::set_run_options(const std::string& json_object, std::vector<std::string> resumable,
                              const std::string& added_later) {
  parse_object(json_object, kind() + " trainer: run options");
  parse_object(added_later, kind() + " trainer: run options added later");
  run_options_ = json_object;
  run_resumable_ = std::move(resumable);
  run_added_later_ = added_later;
}

void Trainer::set_data_parallel(DataParallel parallel) {
  FEWSTEP_CHECK_VALUE(parallel.world >= 1, "DataParallel.world must be >= 1, got ", parallel.world);
  FEWSTEP_CHECK_VALUE(parallel.rank >= 0 && parallel.rank < parallel.world, "DataParallel.rank must be in [0, world = ",
                      parallel.world, "), got ", parallel.rank);
  FEWSTEP_CHECK_VALUE(parallel.world == 1 || supports_data_parallel(), "the ", kind(),
                      " trainer does not support data parallelism (world = ", parallel.world, ")");
  FEWSTEP_CHECK_VALUE(parallel.world == 1 || parallel.average, "DataParallel.average is required for world = ",
                      parallel.world);
  parallel_ = std::move(parallel);
}

at::Tensor Trainer::shard(const at::Tensor& batch) const {
  if (parallel_.world == 1) return batch;
  const int64_t n = batch.size(0);
  FEWSTEP_CHECK_VALUE(n % parallel_.world == 0, kind(), " trainer: a batch of ", n, " rows does not split into ",
                      parallel_.world, " equal shards; choose a batch size divisible by the number of processes");
  const int64_t rows = n / parallel_.world;
  return batch.narrow(0, parallel_.rank * rows, rows);
}

Optimizer::Stats Trainer::update(Optimizer& optimizer, int64_t schedule_step) {
  if (parallel_.world > 1) {
    std::vector<at::Tensor> grads;
    for (const at::Tensor& p : optimizer.parameters()) {
      at::Tensor& g = const_cast<at::Tensor&>(p).mutable_grad();
      if (!g.defined()) g = at::zeros_like(p);  // a parameter unused on this shard still joins the average
      grads.push_back(g);
    }
    parallel_.average(grads);
  }
  return optimizer.step(schedule_step);
}

double Trainer::average_loss(double loss) {
  if (parallel_.world == 1) return loss;
  const at::Tensor value = at::full({1}, loss, at::kDouble);
  parallel_.average({value});
  return value.item<double>();
}

void Trainer::save_checkpoint(const std::string& path) const {
  Checkpoint c = state();
  c.set_string("format", checkpoint_format());
  c.set_string("options", options_json());
  c.set_string("run_options", run_options_);
  c.save(path);
}

void Trainer::load_checkpoint(const std::string& path) {
  const Checkpoint c = Checkpoint::load(path);
  const std::string expected = checkpoint_format();
  const std::string found = c.contains("format") ? c.string("format") : std::string("none");
  FEWSTEP_CHECK_VALUE(found == expected, "load_checkpoint: path '", path, "' is not a ", kind(),
                      "-trainer checkpoint (format '", found, "', expected '", expected, "')");
  const std::string who = kind() + " trainer";
  FEWSTEP_CHECK_VALUE(c.contains("options"), who, ": checkpoint '", path,
                      "' records no options (it was written by an older fewstep), so resuming it cannot be checked; "
                      "start a new run");
  // The front end's options first: their keys are what its user typed (e.g. command-line flags).
  check_resume_options(who, path, c.contains("run_options") ? c.string("run_options") : "{}", run_options_,
                       run_resumable_, run_added_later_);
  check_resume_options(who, path, c.string("options"), options_json(), resumable_options(), options_added_later());
  load_state(c);
}

bool Trainer::resume(const std::string& path) {
  if (!std::ifstream(path).good()) return false;
  load_checkpoint(path);
  return true;
}

TrainSummary Trainer::train(int64_t steps, const TrainLoopOptions& loop) {
  FEWSTEP_CHECK_VALUE(steps >= 0, "train: steps must be >= 0, got ", steps);
  FEWSTEP_CHECK_VALUE(loop.checkpoint_every >= 0, "TrainLoopOptions.checkpoint_every must be >= 0, got ",
                      loop.checkpoint_every);
  FEWSTEP_CHECK_VALUE(loop.log_every >= 0, "TrainLoopOptions.log_every must be >= 0, got ", loop.log_every);
  TrainSummary summary;
  summary.first_step = step_count();
  summary.losses.reserve(static_cast<size_t>(steps));
  const auto start = std::chrono::steady_clock::now();
  const std::string label = loop.label.empty() ? kind() : loop.label;
  const int64_t total = std::max(planned_steps(), summary.first_step + steps);
  // A bar on a terminal; in a log, the loop's own lines every log_every steps (or the bar's periodic ones).
  ProgressBar bar(steps, label, !loop.progress         ? ProgressOutput::kOff
                                : loop.log_every > 0 ? ProgressOutput::kTerminalOnly
                                                     : ProgressOutput::kAuto);
  const bool log = !bar.active() && loop.log_every > 0;
  // With data parallelism every process holds the same state: rank 0 writes the checkpoints.
  const bool writes = !loop.checkpoint_path.empty() && parallel_.rank == 0;
  double smoothed = NAN;
  std::deque<double> recent;  // the last 100 losses, for the log lines
  bool saved_last = false;
  auto checkpoint = [&] {
    save_checkpoint(loop.checkpoint_path);
    saved_last = true;
    if (loop.on_checkpoint) loop.on_checkpoint();
  };
  for (int64_t i = 0; i < steps; ++i) {
    if (loop.stop && loop.stop()) {
      summary.stopped = true;
      break;
    }
    check_interrupt();  // Ctrl-C between steps (core/interrupt.h); the last checkpoint stays as written
    const TrainStepStats st = step();
    summary.losses.push_back(st.loss);
    // Single-batch losses are noisy: the bar shows an exponential average.
    smoothed = std::isnan(smoothed) ? st.loss : 0.95 * smoothed + 0.05 * st.loss;
    std::vector<std::pair<std::string, double>> shown = {{"loss", smoothed}, {"lr", st.lr}};
    shown.insert(shown.end(), st.extra.begin(), st.extra.end());
    bar.update(i + 1, shown);
    recent.push_back(st.loss);
    if (recent.size() > 100) recent.pop_front();
    if (log && ((i + 1) % loop.log_every == 0 || i + 1 == steps)) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double rate = static_cast<double>(i + 1) / secs;
      std::printf("step %lld/%lld  loss %.5g (mean of last %zu)  lr %.3g  grad %.3g", static_cast<long long>(st.step),
                  static_cast<long long>(total),
                  std::accumulate(recent.begin(), recent.end(), 0.0) / static_cast<double>(recent.size()),
                  recent.size(), st.lr, st.grad_norm);
      for (const auto& [k, v] : st.extra) std::printf("  %s %.4g", k.c_str(), v);
      std::printf("  %.2f it/s  eta %s\n", rate, clock_text(static_cast<double>(total - st.step) / rate).c_str());
      std::fflush(stdout);
    }
    saved_last = false;
    // The record first (a checkpoint's callback, e.g. the CLI's run state and model card, sees this step's
    // loss), then the checkpoint, then the caller's callback: if it stops the run by throwing, the step's
    // checkpoint is already written.
    if (loop.record_step) loop.record_step(st);
    if (writes && loop.checkpoint_every > 0 && st.step % loop.checkpoint_every == 0) checkpoint();
    if (loop.on_step) loop.on_step(st);
  }
  bar.close();
  if (writes && !saved_last && !summary.losses.empty()) checkpoint();
  summary.last_step = step_count();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

void save_training_parts(Checkpoint& c, int64_t step, const TrainingParts& p) {
  c.set_int("step", step);
  if (p.net != nullptr) save_module_state(c, p.net_key, *p.net);
  if (p.ema != nullptr) p.ema->save(c, "ema");
  if (p.optimizer != nullptr) p.optimizer->save(c, "optimizer");
  if (p.rng != nullptr) p.rng->save(c, "rng");
  if (p.data != nullptr) save_data_position(c, *p.data);
}

int64_t load_training_parts(const Checkpoint& c, const TrainingParts& p, const char* who) {
  const int64_t step = c.integer("step");
  FEWSTEP_CHECK_VALUE(step >= 0, who, ": checkpoint '", c.source(), "' has step ", step);
  if (p.net != nullptr) load_module_state(c, p.net_key, *p.net);
  if (p.ema != nullptr) p.ema->load(c, "ema");
  if (p.optimizer != nullptr) p.optimizer->load(c, "optimizer");
  if (p.rng != nullptr) p.rng->load(c, "rng");
  if (p.data != nullptr) load_data_position(c, *p.data);
  return step;
}

void save_data_position(Checkpoint& checkpoint, const BatchSource& data) {
  for (const auto& [key, value] : data.state()) checkpoint.set_tensor("data/" + key, value);
}

void load_data_position(const Checkpoint& checkpoint, BatchSource& data) {
  BatchSource::State state;
  for (const std::string& key : checkpoint.tensor_keys("data/")) state[key.substr(5)] = checkpoint.tensor(key);
  data.load_state(state);
}

}  // namespace fewstep
