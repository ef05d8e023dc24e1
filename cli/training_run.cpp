#include "training_run.h"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>

#include "command.h"
#include "model_card.h"
#include "fewstep/core/progress_bar.h"

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
  std::ifstream in(path);
  if (!in.good()) throw UsageError("'" + path + "' cannot be read");
  try {
    json j;
    in >> j;
    return j;
  } catch (const json::exception& e) {
    throw UsageError("'" + path + "' is not valid JSON: " + e.what());
  }
}

TrainingRun::TrainingRun(std::string command, std::string out, bool resume, json identity)
    : command_(std::move(command)), out_(std::move(out)) {
  const fsys::path dir(out_);
  checkpoint_ = (dir / "checkpoint.pt").string();
  run_file_ = (dir / "run.json").string();
  state_file_ = (dir / "state.json").string();
  std::error_code ec;
  fsys::create_directories(dir, ec);
  if (ec || !fsys::is_directory(dir)) throw UsageError("--out '" + out_ + "' cannot be created: " + ec.message());
  has_checkpoint_ = fsys::exists(checkpoint_);
  if (has_checkpoint_ && !resume)
    throw UsageError("--out '" + out_ + "' already holds a run (checkpoint.pt); pass --resume to continue it or "
                     "choose another --out");
  if (has_checkpoint_) {
    if (!fsys::exists(run_file_))
      throw UsageError("--resume: '" + run_file_ + "' is missing, so the run's flags cannot be checked");
    const json flags = read_json_file(run_file_).at("flags");
    for (const auto& [flag, value] : identity.items()) {
      const json theirs = flags.contains(flag) ? flags.at(flag) : json();
      if (theirs != value) {
        const auto shown = [](const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); };
        throw UsageError(flag + " " + shown(value) + " differs from the run in --out '" + out_ + "' (" +
                         shown(theirs) + "); a resumed run must use the flags it started with (see " + run_file_ +
                         ")");
      }
    }
  } else {
    if (resume) std::cerr << "fewstep " << command_ << ": --resume: no checkpoint in '" << out_ << "' yet; starting "
                          << "at step 0\n";
    const json run = {{"format", "fewstep.train_run.v1"}, {"flags", identity}, {"command", command_line()}};
    write_text_file(run_file_, run.dump(2) + "\n");
  }
  session_start_ = now_seconds();
}

void TrainingRun::restore(Trainer& trainer) {
  if (!has_checkpoint_) return;
  trainer.load_checkpoint(checkpoint_);
  if (fsys::exists(state_file_)) {
    const json st = read_json_file(state_file_);
    seconds_before_ = st.value("seconds", 0.0);
    recent_.clear();
    for (double l : st.value("recent_losses", std::vector<double>{})) recent_.push_back(l);
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

void TrainingRun::save(Trainer& trainer) {
  trainer.save_checkpoint(checkpoint_);
  const json st = {{"step", trainer.step_count()},
                   {"seconds", seconds()},
                   {"threads", threads()},
                   {"recent_losses", std::vector<double>(recent_.begin(), recent_.end())}};
  write_text_file(state_file_, st.dump() + "\n");
}

int TrainingRun::run(Trainer& trainer, const Loop& loop) {
  const int64_t start = trainer.step_count();
  g_stop_signal = 0;
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  const double t0 = now_seconds();
  auto save_and_export = [&] {
    save(trainer);
    if (loop.on_save) loop.on_save();
  };

  ProgressBar bar(loop.target - start, command_, ProgressOutput::kTerminalOnly);  // logs its own lines otherwise
  bool saved = start >= loop.target;
  double smoothed = recent_.empty() ? NAN : recent_.back();
  for (int64_t step = start; step < loop.target && g_stop_signal == 0; ++step) {
    const TrainStepStats st = trainer.step();
    recent_.push_back(st.loss);
    if (recent_.size() > kLossWindow) recent_.pop_front();
    smoothed = std::isnan(smoothed) ? st.loss : 0.95 * smoothed + 0.05 * st.loss;
    std::vector<std::pair<std::string, double>> shown = {{"loss", smoothed}, {"lr", st.lr}};
    shown.insert(shown.end(), st.extra.begin(), st.extra.end());
    bar.update(st.step - start, shown);
    if (!bar.active() && (st.step % loop.log_every == 0 || st.step == loop.target)) {
      const double secs = now_seconds() - t0, rate = static_cast<double>(st.step - start) / secs;
      std::printf("step %lld/%lld  loss %.5g (mean of last %zu)  lr %.3g  grad %.3g", static_cast<long long>(st.step),
                  static_cast<long long>(loop.total), mean_recent_loss(), recent_.size(), st.lr, st.grad_norm);
      for (const auto& [k, v] : st.extra) std::printf("  %s %.4g", k.c_str(), v);
      std::printf("  %.2f it/s  elapsed %s  eta %s\n", rate, clock_text(seconds()).c_str(),
                  clock_text(static_cast<double>(loop.target - st.step) / rate).c_str());
      std::fflush(stdout);
    }
    if (loop.on_step) loop.on_step(st);
    saved = false;
    if (loop.checkpoint_every > 0 && st.step % loop.checkpoint_every == 0) {
      save_and_export();
      saved = true;
    }
  }
  bar.close();
  if (!saved || start >= loop.target) save_and_export();
  if (g_stop_signal != 0) {
    std::cerr << "fewstep " << command_ << ": interrupted at step " << trainer.step_count() << "; checkpoint in '"
              << checkpoint_ << "'; continue with the same command and --resume\n";
    return 128 + static_cast<int>(g_stop_signal);
  }
  return 0;
}

}  // namespace fewstep::cli
