/// @file control/grid.h
/// @brief A fixed grid as a step controller: the driver runs fixed grids and adaptive step control
///        through one loop (sample/request.h).
///
/// `GridController(grid)` proposes grid[1], grid[2], … in turn, accepts every attempt and needs no
/// error estimate; `fixed_grid()` tells the driver the whole grid, which it passes to the steppers
/// (StepContext::num_steps and ::grid: lower_order_final, DPM-Solver-fast's order plan, churn).
#pragma once

#include <string>
#include <vector>

#include "fewstep/control/controller.h"

namespace fewstep {

class GridController final : public StepController {
 public:
  /// `grid`: at least two strictly decreasing times (ValueError naming the first offending entry);
  /// the range check against a schedule is `validate_grid`'s (schedules/timesteps.h).
  explicit GridController(std::vector<double> grid);

  std::string describe() const override;
  bool requires_error_estimate() const override { return false; }
  int64_t max_steps() const override { return static_cast<int64_t>(grid_.size()) - 1; }
  ControlProposal start(const ControlStart& start) const override;
  ControlDecision decide(const ControlInput& input, ControllerState state) const override;
  const std::vector<double>* fixed_grid() const override { return &grid_; }

 private:
  std::vector<double> grid_;
};

}  // namespace fewstep
