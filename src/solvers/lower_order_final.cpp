#include "fewstep/solvers/lower_order_final.h"

#include <algorithm>

#include "fewstep/core/check.h"

namespace fewstep {

LowerOrderFinal LowerOrderFinal::from_options(const Options& options, const std::string& owner) {
  LowerOrderFinal rule;
  rule.enabled = options.get_bool("lower_order_final", true);
  rule.below_steps = options.get_int("lower_order_final_steps", 10);
  FEWSTEP_CHECK_VALUE(rule.below_steps >= 0, owner, ": lower_order_final_steps must be >= 0, got ", rule.below_steps);
  return rule;
}

int64_t LowerOrderFinal::order(int64_t max_order, size_t history, const StepContext& ctx) const {
  int64_t order = std::min<int64_t>(max_order, static_cast<int64_t>(history) + 1);
  if (enabled && ctx.num_steps >= 0 && ctx.num_steps < below_steps)
    order = std::max<int64_t>(1, std::min<int64_t>(order, ctx.num_steps - ctx.index));
  return order;
}

}  // namespace fewstep
