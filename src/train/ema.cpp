#include "fewstep/train/ema.h"

#include <torch/script.h>

#include <cmath>

#include "fewstep/core/check.h"
#include "fewstep/train/checkpoint.h"

namespace fewstep {

namespace {

std::vector<at::Tensor> tensors_of(const torch::jit::Module& m, bool parameters) {
  std::vector<at::Tensor> out;
  if (parameters) {
    for (const at::Tensor& p : m.parameters(/*recurse=*/true)) out.push_back(p);
  } else {
    for (const at::Tensor& b : m.buffers(/*recurse=*/true)) out.push_back(b);
  }
  return out;
}

void check_same(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, const char* what) {
  FEWSTEP_CHECK_VALUE(a.size() == b.size(), "ema_update: the network has ", b.size(), " ", what, ", the average has ",
                      a.size(), "; expected the network the average was made from");
  for (size_t i = 0; i < a.size(); ++i) {
    FEWSTEP_CHECK_VALUE(a[i].sizes() == b[i].sizes(), "ema_update: the network's ", what, " #", i, " has shape ",
                        b[i].sizes(), ", the average has ", a[i].sizes());
  }
}

}  // namespace

void ema_update(const std::vector<at::Tensor>& avg, const std::vector<at::Tensor>& cur,
                const std::vector<at::Tensor>& avg_b, const std::vector<at::Tensor>& cur_b, double decay) {
  FEWSTEP_CHECK_VALUE(std::isfinite(decay) && decay >= 0.0 && decay <= 1.0, "ema_update: decay must be in [0, 1], got ",
                      decay);
  check_same(avg, cur, "parameters");
  check_same(avg_b, cur_b, "buffers");
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < avg.size(); ++i) {
    at::Tensor e = avg[i];
    e.mul_(decay).add_(cur[i].detach(), 1.0 - decay);
  }
  for (size_t i = 0; i < avg_b.size(); ++i) at::Tensor(avg_b[i]).copy_(cur_b[i]);
}

Ema::Ema(const torch::jit::Module& source, double decay) : decay_(decay) {
  FEWSTEP_CHECK_VALUE(std::isfinite(decay) && decay >= 0.0 && decay <= 1.0, "Ema: decay must be in [0, 1], got ",
                      decay);
  // Copied without autograd tracking: the copies are leaves that never require grad.
  at::NoGradGuard no_grad;
  module_ = std::make_shared<torch::jit::Module>(source.deepcopy());
  for (const at::Tensor& p : tensors_of(*module_, true)) at::Tensor(p).requires_grad_(false);
}

void Ema::update(const torch::jit::Module& source) {
  ema_update(tensors_of(*module_, true), tensors_of(source, true), tensors_of(*module_, false),
             tensors_of(source, false), decay_);
}

void Ema::reset(const torch::jit::Module& source) {
  const auto avg = tensors_of(*module_, true), cur = tensors_of(source, true);
  check_same(avg, cur, "parameters");
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < avg.size(); ++i) at::Tensor(avg[i]).copy_(cur[i]);
}

void Ema::save(Checkpoint& checkpoint, const std::string& prefix) const {
  save_module_state(checkpoint, prefix, *module_);
}

void Ema::load(const Checkpoint& checkpoint, const std::string& prefix) {
  load_module_state(checkpoint, prefix, *module_);
}

}  // namespace fewstep
