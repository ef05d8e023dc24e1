#include "fewstep/train/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "fewstep/core/check.h"

namespace fewstep {

void LrSchedule::validate() const {
  FEWSTEP_CHECK_VALUE(std::isfinite(lr) && lr > 0.0, "LrSchedule.lr must be finite and positive, got ", lr);
  FEWSTEP_CHECK_VALUE(warmup_steps >= 0, "LrSchedule.warmup_steps must be >= 0, got ", warmup_steps);
  FEWSTEP_CHECK_VALUE(total_steps >= 0, "LrSchedule.total_steps must be >= 0, got ", total_steps);
  FEWSTEP_CHECK_VALUE(std::isfinite(min_lr) && min_lr >= 0.0 && min_lr <= lr,
                      "LrSchedule.min_lr must be in [0, lr = ", lr, "], got ", min_lr);
}

double LrSchedule::at(int64_t step) const {
  FEWSTEP_CHECK_VALUE(step >= 0, "LrSchedule.at: step must be >= 0, got ", step);
  if (step < warmup_steps) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  if (total_steps <= warmup_steps) return lr;
  const double progress =
      std::min(1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps));
  if (decay == LrDecay::Linear) return min_lr + (lr - min_lr) * (1.0 - progress);
  return min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

}  // namespace fewstep
