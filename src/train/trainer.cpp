#include "fewstep/train/trainer.h"

#include <chrono>
#include <cmath>
#include <fstream>

#include "fewstep/core/check.h"
#include "fewstep/data/batch_source.h"
#include "fewstep/train/ema.h"
#include "fewstep/train/optimizer.h"
#include "fewstep/train/rng_bundle.h"
#include "fewstep/core/progress_bar.h"

namespace fewstep {

std::string Trainer::checkpoint_format() const { return "fewstep." + kind() + "_trainer.v1"; }

void Trainer::save_checkpoint(const std::string& path) const {
  Checkpoint c = state();
  c.set_string("format", checkpoint_format());
  c.save(path);
}

void Trainer::load_checkpoint(const std::string& path) {
  const Checkpoint c = Checkpoint::load(path);
  const std::string expected = checkpoint_format();
  const std::string found = c.contains("format") ? c.string("format") : std::string("none");
  FEWSTEP_CHECK_VALUE(found == expected, "load_checkpoint: path '", path, "' is not a ", kind(),
                      "-trainer checkpoint (format '", found, "', expected '", expected, "')");
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
  TrainSummary summary;
  summary.first_step = step_count();
  summary.losses.reserve(static_cast<size_t>(steps));
  const auto start = std::chrono::steady_clock::now();
  ProgressBar bar(steps, kind(), loop.progress);
  double smoothed = NAN;
  bool saved_last = false;
  for (int64_t i = 0; i < steps; ++i) {
    const TrainStepStats st = step();
    summary.losses.push_back(st.loss);
    // Single-batch losses are noisy: the bar shows an exponential average.
    smoothed = std::isnan(smoothed) ? st.loss : 0.95 * smoothed + 0.05 * st.loss;
    std::vector<std::pair<std::string, double>> shown = {{"loss", smoothed}, {"lr", st.lr}};
    shown.insert(shown.end(), st.extra.begin(), st.extra.end());
    bar.update(i + 1, shown);
    saved_last = false;
    if (!loop.checkpoint_path.empty() && loop.checkpoint_every > 0 && st.step % loop.checkpoint_every == 0) {
      save_checkpoint(loop.checkpoint_path);
      saved_last = true;
    }
    if (loop.on_step) loop.on_step(st);
  }
  bar.close();
  if (!loop.checkpoint_path.empty() && !saved_last && steps > 0) save_checkpoint(loop.checkpoint_path);
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

void check_setting(const Checkpoint& c, const std::string& key, const std::string& mine, const char* who) {
  const std::string& theirs = c.string("config/" + key);
  FEWSTEP_CHECK_VALUE(theirs == mine, who, ": checkpoint '", c.source(), "' was trained with ", key, " '", theirs,
                      "', this trainer uses '", mine, "'");
}

void check_setting(const Checkpoint& c, const std::string& key, int64_t mine, const char* who) {
  const int64_t theirs = c.integer("config/" + key);
  FEWSTEP_CHECK_VALUE(theirs == mine, who, ": checkpoint '", c.source(), "' was trained with ", key, " = ", theirs,
                      ", this trainer uses ", mine);
}

}  // namespace fewstep
