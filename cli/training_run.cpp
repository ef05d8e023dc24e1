#include "training_run.h"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>

#include "command.h"
#include "model_card.h"
#include <c10/util/Exception.h>

#include "fewstep/core/atomic_file.h"
#include "fewstep/core/device.h"

namespace fewstep::cli {

namespace {

namespace fsys = std::filesystem;
using json = nlohmann::json;

constexpr size_t kLossWindow = 100;  // steps averaged for the reported loss

volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int sig) {
  g_stop_signal = sig;
  std::signal(sig, SIG_DFL);  // a second Ctrl-C kills at once
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

c10::Device training_device(const std::string& flag_value) {
  if (flag_value.empty()) return c10::Device(c10::kCPU);
  try {
    return parse_device(flag_value, "--device");
  } catch (const c10::Error& e) {
    throw UsageError(e.what_without_backtrace());
  }
}

std::string machine_text() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, cpu = "unknown CPU";
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  return cpu + ", " + std::to_string(sysconf(_SC_NPROCESSORS_ONLN)) + " cores";
}

std::string clock_text(double seconds) {
  if (!std::isfinite(seconds)) return "?";
  const auto s = static_cast<long long>(seconds);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s % 3600) / 60, s % 60);
  return buf;
}

json read_json_file(const std::string& path) {
  std::string text;
  try {
    text = read_file(path, "run file");  // names the path when it is missing or a directory
  } catch (const c10::Error& e) {
    throw UsageError(e.what_without_backtrace());
  }
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw UsageError("'" + path + "' is not valid JSON: " + e.what());
  }
}

RunFiles RunFiles::in(const std::string& dir) {
  const fsys::path d(dir);
  return {(d / "checkpoint.pt").string(), (d / "state.json").string(), (d / "run.json").string()};
}

RunFiles RunFiles::named(const std::string& dir, const std::string& stem) {
  const fsys::path d(dir);
  return {(d / (stem + ".checkpoint.pt")).string(), (d / (stem + ".run.json")).string(),
          (d / (stem + ".flags.json")).string()};
}

TrainingRun::TrainingRun(std::string command, std::string out, bool resume, json identity,
                         std::vector<std::string> resumable, std::optional<RunFiles> files)
    : command_(std::move(command)), out_(std::move(out)), identity_(std::move(identity)),
      resumable_(std::move(resumable)) {
  const RunFiles f = files ? *files : RunFiles::in(out_);
  checkpoint_ = f.checkpoint;
  run_file_ = f.flags;
  state_file_ = f.state;
  std::error_code ec;
  fsys::create_directories(out_, ec);
  if (ec || !fsys::is_directory(out_)) throw UsageError("--out '" + out_ + "' cannot be created: " + ec.message());
  has_checkpoint_ = fsys::exists(checkpoint_);
  if (has_checkpoint_ && !resume)
    throw UsageError("--out '" + out_ + "' already holds a run (" + fsys::path(checkpoint_).filename().string() +
                     "); pass --resume to continue it or choose another --out");
  if (!has_checkpoint_) {
    if (resume) std::cerr << "fewstep " << command_ << ": --resume: no checkpoint in '" << out_ << "' yet; starting "
                          << "at step 0\n";
    const json run = {{"format", "fewstep.train_run.v1"}, {"flags", identity_}, {"command", command_line()}};
    write_text_file(run_file_, run.dump(2) + "\n");
  }
  session_start_ = now_seconds();
}

void TrainingRun::restore(Trainer& trainer) {
  trainer.set_run_options(identity_.dump(), resumable_, added_later_.dump());
  if (!has_checkpoint_) return;
  try {
    trainer.load_checkpoint(checkpoint_);
  } catch (const c10::ValueError& e) {
    throw UsageError(std::string(e.what_without_backtrace()) + "; a resumed run must use the flags it started with");
  }
  if (fsys::exists(state_file_)) {
    // The state file holds only what the log shows (time so far, recent losses, threads); one that cannot
    // be read (a non-finite loss is written as null) must not stop a resume that the checkpoint allows.
    json st;
    try {
      st = read_json_file(state_file_);
      seconds_before_ = st.value("seconds", 0.0);
      recent_.clear();
      for (const json& l : st.value("recent_losses", json::array())) {
        if (l.is_number()) recent_.push_back(l.get<double>());
      }
    } catch (const std::exception& e) {
      std::cerr << "fewstep " << command_ << ": warning: ignoring the run state '" << state_file_ << "': " << e.what()
                << "\n";
      st = json::object();
    }
    const int before = st.value("threads", 0);
    if (before > 0 && before != at::get_num_threads()) {
      std::cerr << "fewstep " << command_ << ": warning: the run so far used " << before << " threads, this session "
                << at::get_num_threads() << " (--threads); the weights will not be bit-identical to an "
                << "uninterrupted run\n";
    }
  }
  std::cerr << "fewstep " << command_ << ": resumed '" << out_ << "' at step " << trainer.step_count() << "\n";
}

double TrainingRun::seconds() const { return seconds_before_ + (now_seconds() - session_start_); }

double TrainingRun::mean_recent_loss() const {
  if (recent_.empty()) return NAN;
  return std::accumulate(recent_.begin(), recent_.end(), 0.0) / static_cast<double>(recent_.size());
}

int TrainingRun::threads() const { return at::get_num_threads(); }

json TrainingRun::training_json() const {
  return {{"command", command_line()},        {"seconds", seconds()},
          {"threads", threads()},             {"machine", machine_text()},
          {"final_loss", mean_recent_loss()}, {"final_loss_window", recent_.size()}};
}

void TrainingRun::write_state(const Trainer& trainer) const {
  const json st = {{"step", trainer.step_count()},
                   {"seconds", seconds()},
                   {"threads", threads()},
                   {"recent_losses", std::vector<double>(recent_.begin(), recent_.end())}};
  write_text_file(state_file_, st.dump() + "\n");
}

void TrainingRun::remove_files() const {
  std::error_code ec;
  for (const std::string& f : {checkpoint_, state_file_, run_file_}) fsys::remove(f, ec);
}

int TrainingRun::run(Trainer& trainer, const Loop& loop) {
  g_stop_signal = 0;
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  TrainLoopOptions options;
  options.checkpoint_path = checkpoint_;
  options.checkpoint_every = loop.checkpoint_every;
  options.label = command_;
  options.log_every = loop.log_every;
  options.record_step = [&](const TrainStepStats& st) {
    recent_.push_back(st.loss);
    if (recent_.size() > kLossWindow) recent_.pop_front();
  };
  options.on_step = loop.on_step;
  options.on_checkpoint = [&] {
    write_state(trainer);
    if (loop.on_save) loop.on_save();
  };
  options.stop = [] { return g_stop_signal != 0; };
  const TrainSummary summary = trainer.train(std::max<int64_t>(0, loop.target - trainer.step_count()), options);
  if (summary.losses.empty()) {  // nothing trained (already at the target, or stopped at once): still export
    trainer.save_checkpoint(checkpoint_);
    options.on_checkpoint();
  }
  if (g_stop_signal != 0) {
    std::cerr << "fewstep " << command_ << ": interrupted at step " << trainer.step_count() << "; checkpoint in '"
              << checkpoint_ << "'; continue with the same command and --resume\n";
    return 128 + static_cast<int>(g_stop_signal);
  }
  return 0;
}

}  // namespace fewstep::cli
