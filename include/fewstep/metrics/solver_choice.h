/// @file metrics/solver_choice.h
/// @brief Which solver samples a model on a fixed grid closest to a reference solve: how a distilled
///        student's own sampler is chosen.
///
/// A progressive-distillation student (arXiv 2202.00512, §3) is trained so that one DDIM step on its
/// grid lands where two steps of its teacher land. Its predictions along that grid are still those of
/// a diffusion model, so a multistep solver (DPM-Solver++(2M), UniPC, DEIS) can combine them on the
/// same grid at the same number of calls. Whether that brings the samples closer to the teacher's
/// ODE solution depends on how fine the student's training target was: a chain started at few steps
/// imitates a coarse DDIM, whose first-order error the multistep correction removes; a chain started
/// at many steps already follows the ODE, and the correction overshoots (docs/distillation.md,
/// "Which solver samples a student", has the measurements). So it is measured, not assumed: every
/// candidate samples the model from the same x_T on the same grid, and the one with the least median
/// coupled error (metrics/coupled_error.h) against the reference wins.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fewstep/metrics/coupled_error.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/sample/teacher_cache.h"

namespace fewstep {

/// The default candidates, DDIM first: deterministic solvers with one evaluation per step, so each
/// makes exactly as many network calls as the grid has steps.
std::vector<std::string> grid_solver_candidates();

/// ValueError naming `who` and `name` unless `name` is a registered solver a student can sample its grid
/// with: deterministic, one evaluation per step.
void check_grid_solver(const std::string& name, const std::string& who);

struct SolverTrial {
  std::string solver;
  CoupledError error;  ///< against the reference
};

struct SolverChoice {
  std::string solver;               ///< the winner
  std::vector<SolverTrial> trials;  ///< every candidate, in the order tried
};

/// Samples `model` from `x_T` on `grid` with each candidate (default options) and returns the one
/// whose samples have the least median coupled error against `reference` (same shape as x_T). A
/// candidate within a factor (1 + tolerance) of the least error loses only to an earlier one, so
/// measurement noise does not move a choice off the simpler solver (DDIM first). ValueError naming
/// the argument for an empty or unknown candidate, a stochastic one or one with more than one
/// evaluation per step, a negative tolerance, or mismatched shapes.
SolverChoice choose_grid_solver(const Denoiser& model, const at::Tensor& x_T, const std::vector<double>& grid,
                                const at::Tensor& reference,
                                const std::vector<std::string>& candidates = grid_solver_candidates(),
                                double tolerance = 0.01);

/// How a student file's sampler is checked against its teacher.
struct StudentSolverCheck {
  int64_t n = 128;                ///< samples
  uint64_t seed = 7000000;        ///< x_T of sample i from seed + i (away from the bench's and eval's seeds)
  int64_t reference_steps = 200;  ///< UniPC steps of the teacher's reference (log-SNR grid)
  std::vector<std::string> candidates = grid_solver_candidates();
  double tolerance = 0.01;
  at::Device device = at::kCPU;   ///< where the teacher's and the student's networks run
  /// ValueError naming the field.
  void validate() const;
};

/// The teacher's reference solves a student with grid [t_start … t_end] is checked against: `check.n`
/// samples from seeds check.seed + i, UniPC with check.reference_steps steps on a log-SNR grid over
/// the same span (teacher_solve, uncached). Compute it once for several students of one grid span.
TeacherSolve student_check_reference(const Denoiser& teacher, const std::vector<int64_t>& sample_shape,
                                     double t_start, double t_end, const StudentSolverCheck& check = {});

/// choose_grid_solver for the model file `model_path` (which must have its own grid, spanning the
/// reference's times) against `reference`; with `write`, records the winner as the file's sampler
/// (save_model_sampler; the .pt is not rewritten). ValueError naming the file or argument, and for a
/// student whose own sampler is not a grid solver (check_grid_solver: e.g. a consistency student's
/// re-noising `consistency`, never rewritten) or a reference of another sample shape.
SolverChoice choose_student_solver(const std::string& model_path, const TeacherSolve& reference,
                                   const StudentSolverCheck& check = {}, bool write = true);

/// The same with the reference made here: student_check_reference of `teacher` over the file's own grid
/// (for one student; a run exporting several students of one span makes the reference once instead).
/// A teacher that fails on the student's samples (another data shape) is a ValueError naming the file,
/// the shape and the network's own message.
SolverChoice choose_student_solver(const std::string& model_path, const Denoiser& teacher,
                                   const StudentSolverCheck& check = {}, bool write = true);

}  // namespace fewstep
