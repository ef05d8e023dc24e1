/// @file train/lr_schedule.h
/// @brief Learning rate by step: linear warmup, then cosine (or linear) decay to a floor.
///
/// For the step with 0-based index s (s optimiser steps already taken), W = warmup_steps,
/// T = total_steps:
///   s < W:            lr · (s + 1)/W
///   W ≤ s, T > W:     min_lr + (lr − min_lr) · ½ (1 + cos(π p)),  p = min(1, (s − W)/(T − W))
///                     (decay = Linear: min_lr + (lr − min_lr) · (1 − p), Salimans & Ho's choice)
///   otherwise:        lr (constant after warmup when total_steps = 0)
/// A pure function of the step, so resuming needs nothing but the step counter.
#pragma once

#include <cstdint>

namespace fewstep {

enum class LrDecay { Cosine, Linear };

struct LrSchedule {
  double lr = 2e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;  // 0: no decay
  double min_lr = 0.0;
  LrDecay decay = LrDecay::Cosine;

  double at(int64_t step) const;
  /// ValueError naming the field for negative or non-finite values.
  void validate() const;
};

}  // namespace fewstep
