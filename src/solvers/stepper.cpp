#include "fewstep/solvers/stepper.h"

namespace fewstep {

SolverState Stepper::init(const at::Tensor& /*x*/) const { return SolverState{}; }

}  // namespace fewstep
