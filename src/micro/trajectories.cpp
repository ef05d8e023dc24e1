#include "fewstep/micro/trajectories.h"

#include "fewstep/core/check.h"
#include "fewstep/sample/teacher_cache.h"
#include "fewstep/schedules/timesteps.h"

namespace fewstep {

void TrajectorySpec::validate() const {
  FEWSTEP_CHECK_VALUE(!sample_shape.empty(), "TrajectorySpec.sample_shape must not be empty");
  FEWSTEP_CHECK_VALUE(n >= 1, "TrajectorySpec.n must be >= 1, got ", n);
  FEWSTEP_CHECK_VALUE(segments >= 1, "TrajectorySpec.segments must be >= 1, got ", segments);
  FEWSTEP_CHECK_VALUE(substeps >= 1, "TrajectorySpec.substeps must be >= 1, got ", substeps);
  FEWSTEP_CHECK_VALUE(batch >= 1, "TrajectorySpec.batch must be >= 1, got ", batch);
  FEWSTEP_CHECK_VALUE(dtype == at::kFloat || dtype == at::kDouble, "TrajectorySpec.dtype must be float32 or float64, got ",
                      dtype);
}

DenseTrajectories dense_trajectories(const Denoiser& teacher, const TrajectorySpec& spec, const std::string& teacher_id,
                                     const std::string& cache_root) {
  spec.validate();
  const NoiseSchedule& schedule = teacher.schedule_ref();
  const double t_start = spec.t_start > 0 ? spec.t_start : schedule.t_max();
  const double t_end = spec.t_end > 0 ? spec.t_end : schedule.t_min();
  FEWSTEP_CHECK_VALUE(t_start > t_end, "dense_trajectories: t_start (", t_start, ") must exceed t_end (", t_end, ")");
  TeacherSolveSpec solve;
  solve.sample_shape = spec.sample_shape;
  solve.n = spec.n;
  solve.seed = spec.seed;
  solve.solver = "deis";
  solve.solver_options = {{"order", int64_t{3}}, {"variable", std::string("lambda")}};
  solve.grid = timesteps(schedule, spec.segments * spec.substeps, Spacing::LogSNR, t_start, t_end);
  solve.keep_every = spec.substeps;
  solve.keep_eps = true;
  solve.dtype = spec.dtype;
  solve.batch = spec.batch;
  solve.progress = spec.progress;
  solve.label = "micro: teacher trajectories";
  TeacherSolve s = teacher_solve(teacher, solve, cache_root);
  DenseTrajectories out;
  out.x = std::move(s.x);
  out.eps = std::move(s.eps);
  out.times = s.times;
  for (double t : out.times) out.lambdas.push_back(schedule.lambda(t));
  out.settings = std::move(s.key);
  out.teacher_id = teacher_id;
  out.from_cache = s.from_cache;
  out.cache_file = std::move(s.cache_file);
  return out;
}

}  // namespace fewstep
