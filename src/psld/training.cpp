#include "fewstep/psld/training.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/script.h>

#include <chrono>

#include "fewstep/core/check.h"
#include "fewstep/psld/hsm_loss.h"
#include "fewstep/train/ema.h"
#include "fewstep/train/optimizer.h"

namespace fewstep {

void PsldTrainOptions::validate() const {
  FEWSTEP_CHECK_VALUE(steps > 0, "PsldTrainOptions.steps must be positive, got ", steps);
  FEWSTEP_CHECK_VALUE(lr > 0, "PsldTrainOptions.lr must be positive, got ", lr);
  FEWSTEP_CHECK_VALUE(warmup >= 0, "PsldTrainOptions.warmup must be >= 0, got ", warmup);
  FEWSTEP_CHECK_VALUE(ema >= 0 && ema <= 1, "PsldTrainOptions.ema must be in [0, 1], got ", ema);
}

PsldTrainResult train_psld(const ScriptNet& network, BatchSource& data, const PsldProcess& process,
                           const PsldTrainOptions& options, const std::function<void(int64_t, double)>& on_step) {
  options.validate();
  FEWSTEP_CHECK_VALUE(network != nullptr, "train_psld: network must not be null");
  const auto start = std::chrono::steady_clock::now();
  ScopedUnoptimizedExecutor unoptimized;
  network->train();
  OptimizerOptions oo;
  oo.schedule.lr = options.lr;
  oo.schedule.warmup_steps = options.warmup;
  oo.schedule.total_steps = options.steps;
  oo.schedule.min_lr = options.min_lr;
  oo.grad_clip = options.grad_clip;
  Optimizer optimizer(trainable_parameters(*network), oo);
  Ema ema(*network, options.ema);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  PsldTrainResult result;
  result.losses.reserve(static_cast<size_t>(options.steps));
  for (int64_t step = 0; step < options.steps; ++step) {
    auto x0 = data.next().x;
    auto in = hsm_inputs(process, x0, generator);
    auto pred = forward_network(*network, in.z_t, in.t, at::Tensor(), at::Tensor(), "train_psld");
    auto loss = hsm_loss(pred, in);
    loss.backward();
    optimizer.step(step);
    ema.update(*network);
    const double value = loss.item<double>();
    result.losses.push_back(value);
    if (on_step) on_step(step, value);
  }
  network->eval();
  ema.module()->eval();
  result.ema = ema.module();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace fewstep
