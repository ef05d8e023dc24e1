/// @file solvers/lower_order_final.h
/// @brief The warm-up and final-step order rule shared by the multistep steppers (DPM-Solver(++) 2M/3M,
/// SDE-DPM-Solver++(2M), DEIS).
///
/// A multistep method of order p needs p − 1 earlier evaluations, so step k uses order
/// min(p, k + 1) (warm-up). On short grids the official DPM-Solver code also lowers the order of the
/// last steps to the steps left ("lower_order_final", grids of fewer than 10 steps), which makes few-step
/// sampling stable (Lu et al. 2022, arXiv 2211.01095, §4 and Appendix). Options, parsed once here:
///  - lower_order_final (default true),
///  - lower_order_final_steps (default 10; the rule applies on grids of fewer steps; diffusers uses 15).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "fewstep/core/options.h"
#include "fewstep/solvers/stepper.h"

namespace fewstep {

struct LowerOrderFinal {
  bool enabled = true;
  int64_t below_steps = 10;

  /// Reads lower_order_final and lower_order_final_steps; ValueError naming `owner` (e.g. "solver
  /// 'deis'") for a negative step count.
  static LowerOrderFinal from_options(const Options& options, const std::string& owner);

  /// The order of step `ctx.index`: min(max_order, history + 1), capped at the steps left (at least 1)
  /// when the rule applies (a known grid of fewer than below_steps steps).
  int64_t order(int64_t max_order, size_t history, const StepContext& ctx) const;
};

}  // namespace fewstep
