#include "fewstep/control/grid.h"

#include "fewstep/core/check.h"

namespace fewstep {

GridController::GridController(std::vector<double> grid) : grid_(std::move(grid)) {
  FEWSTEP_CHECK_VALUE(grid_.size() >= 2, "GridController: a grid needs at least two times, got ", grid_.size());
  for (size_t i = 1; i < grid_.size(); ++i)
    FEWSTEP_CHECK_VALUE(grid_[i] < grid_[i - 1], "GridController: the grid must be strictly decreasing, got grid[",
                        i - 1, "] = ", grid_[i - 1], ", grid[", i, "] = ", grid_[i]);
}

std::string GridController::describe() const {
  return "a fixed grid of " + std::to_string(grid_.size() - 1) + " steps";
}

ControlProposal GridController::start(const ControlStart& start) const {
  FEWSTEP_CHECK_VALUE(start.t_start == grid_.front() && start.t_end == grid_.back(), "GridController: the run goes from ",
                      start.t_start, " to ", start.t_end, " but the grid from ", grid_.front(), " to ", grid_.back());
  return ControlProposal{grid_[1], {}};
}

ControlDecision GridController::decide(const ControlInput& input, ControllerState state) const {
  // This attempt was step `accepted`, ending at grid[accepted + 1]; the next one ends a point later.
  const size_t next = static_cast<size_t>(input.accepted) + 2;
  ControlDecision decision;
  decision.accept = true;
  decision.t_next = next < grid_.size() ? grid_[next] : grid_.back();
  decision.state = std::move(state);
  return decision;
}

}  // namespace fewstep
