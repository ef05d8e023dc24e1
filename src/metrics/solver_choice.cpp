#include "fewstep/metrics/solver_choice.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "fewstep/core/check.h"
#include "fewstep/core/device.h"
#include "fewstep/models/model_file.h"
#include "fewstep/sample/sample.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/solvers/registry.h"

namespace fewstep {

std::vector<std::string> grid_solver_candidates() { return {"ddim", "dpmpp_2m", "dpmpp_3m", "unipc", "deis"}; }

void check_grid_solver(const std::string& name, const std::string& who) {
  const std::vector<std::string> names = stepper_names();
  FEWSTEP_CHECK_VALUE(std::find(names.begin(), names.end(), name) != names.end(), who, ": '", name,
                      "' is not a registered solver");
  const StepperTraits& traits = stepper_traits(name);
  FEWSTEP_CHECK_VALUE(!traits.stochastic, who, ": '", name,
                      "' is stochastic; a student's solver must be deterministic, as its teacher's reference is");
  FEWSTEP_CHECK_VALUE(traits.nfe_per_step == 1, who, ": '", name, "' makes ", traits.nfe_per_step,
                      " evaluations per step; a student's solver must make one per grid step");
}

namespace {

void check_candidates(const std::vector<std::string>& candidates, const std::string& who) {
  FEWSTEP_CHECK_VALUE(!candidates.empty(), who, ": candidates must not be empty");
  for (const std::string& name : candidates) check_grid_solver(name, who + ": candidate");
}

// The last non-empty line of an error: a TorchScript failure's own message ends its traceback.
std::string last_line(const std::string& text) {
  std::string last, line;
  std::istringstream in(text);
  while (std::getline(in, line))
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
  return last;
}

// A student whose sampler can be re-chosen: its own grid, sampled by a grid solver (not, say, a
// consistency model's re-noising sampler, whose steps are not a discretisation of the teacher's ODE).
void require_grid_student(const std::vector<double>& timesteps, const std::string& solver,
                          const std::string& model_path) {
  const std::string who = "choose_student_solver('" + model_path + "')";
  FEWSTEP_CHECK_VALUE(!timesteps.empty(), who,
                      ": the file has no grid of its own (sidecar \"sampler\"); only a distilled student's "
                      "sampler can be chosen");
  if (!solver.empty()) check_grid_solver(solver, who + ": the student's own solver");
}

}  // namespace

SolverChoice choose_grid_solver(const Denoiser& model, const at::Tensor& x_T, const std::vector<double>& grid,
                                const at::Tensor& reference, const std::vector<std::string>& candidates,
                                double tolerance) {
  const std::string who = "choose_grid_solver";
  check_candidates(candidates, who);
  FEWSTEP_CHECK_VALUE(std::isfinite(tolerance) && tolerance >= 0.0, who, ": tolerance must be finite and >= 0, got ",
                      tolerance);
  FEWSTEP_CHECK_VALUE(x_T.defined() && reference.defined() && x_T.sizes() == reference.sizes(), who,
                      ": reference must have x_T's shape ", x_T.sizes(), ", got ",
                      reference.defined() ? reference.sizes() : at::IntArrayRef{});
  const at::Tensor target = reference.to(x_T.options());  // once, not per candidate: samples keep x_T's options
  SolverChoice choice;
  double least = std::numeric_limits<double>::infinity();
  for (const std::string& name : candidates) {
    const Solution run = sample(model, x_T, *solver(name), grid);
    SolverTrial trial{name, coupled_error(run.x, target)};
    least = std::min(least, trial.error.median);
    choice.trials.push_back(std::move(trial));
  }
  for (const SolverTrial& trial : choice.trials)  // the first within the tolerance of the least
    if (trial.error.median <= least * (1.0 + tolerance)) {
      choice.solver = trial.solver;
      break;
    }
  FEWSTEP_CHECK(!choice.solver.empty(), who, ": no candidate gave a finite error (the model returns NaN or Inf)");
  return choice;
}

void StudentSolverCheck::validate() const {
  FEWSTEP_CHECK_VALUE(n > 0, "StudentSolverCheck: n must be > 0, got ", n);
  FEWSTEP_CHECK_VALUE(reference_steps > 0, "StudentSolverCheck: reference_steps must be > 0, got ", reference_steps);
  FEWSTEP_CHECK_VALUE(std::isfinite(tolerance) && tolerance >= 0.0,
                      "StudentSolverCheck: tolerance must be finite and >= 0, got ", tolerance);
  check_candidates(candidates, "StudentSolverCheck");
}

TeacherSolve student_check_reference(const Denoiser& teacher, const std::vector<int64_t>& sample_shape,
                                     double t_start, double t_end, const StudentSolverCheck& check) {
  check.validate();
  TeacherSolveSpec spec;
  spec.sample_shape = sample_shape;
  spec.n = check.n;
  spec.seed = check.seed;
  spec.solver = "unipc";
  spec.device = check.device;
  const bool to_zero = t_end == 0.0;
  spec.grid = timesteps(*teacher.schedule(), check.reference_steps, Spacing::LogSNR, t_start,
                        to_zero ? std::nullopt : std::optional<double>(t_end), 7.0, std::nullopt,
                        to_zero ? FinalSigma::Zero : FinalSigma::Min);
  spec.label = "teacher reference for the student's solver";
  return teacher_solve(teacher, spec);
}

SolverChoice choose_student_solver(const std::string& model_path, const TeacherSolve& reference,
                                   const StudentSolverCheck& check, bool write) {
  check.validate();
  Placement placement;
  placement.device = check.device;
  const ModelFile file = load_model_file(model_path, {}, placement);
  const std::string who = "choose_student_solver('" + model_path + "')";
  require_grid_student(file.timesteps, file.solver, model_path);
  std::vector<int64_t> shape{reference.x_T().size(0)};
  shape.insert(shape.end(), file.sample_shape.begin(), file.sample_shape.end());
  FEWSTEP_CHECK_VALUE(reference.x_T().sizes() == at::IntArrayRef(shape), who, ": the reference's samples have shape ",
                      reference.x_T().sizes(), ", the student's ", at::IntArrayRef(shape),
                      " (its sidecar's sample_shape); compute it with student_check_reference for this student");
  FEWSTEP_CHECK_VALUE(reference.times.size() >= 2 && reference.times.front() == file.timesteps.front() &&
                          reference.times.back() == file.timesteps.back(),
                      who, ": the reference spans t = ", reference.times.empty() ? 0.0 : reference.times.front(),
                      " … ", reference.times.empty() ? 0.0 : reference.times.back(), ", the student's grid t = ",
                      file.timesteps.front(), " … ", file.timesteps.back(),
                      "; compute it with student_check_reference over the student's span");
  SolverChoice choice = choose_grid_solver(file.denoiser, reference.x_T().to(check.device), file.timesteps,
                                           reference.x_end().to(check.device),
                                           check.candidates, check.tolerance);
  if (write && choice.solver != file.solver) save_model_sampler(model_path, choice.solver);
  return choice;
}

SolverChoice choose_student_solver(const std::string& model_path, const Denoiser& teacher,
                                   const StudentSolverCheck& check, bool write) {
  const ModelFileInfo info = read_model_file_info(model_path);
  require_grid_student(info.timesteps, info.solver, model_path);
  TeacherSolve reference;
  try {
    reference =
        student_check_reference(teacher, info.sample_shape, info.timesteps.front(), info.timesteps.back(), check);
  } catch (const c10::ValueError&) {
    throw;  // the check's own options, already named
  } catch (const std::exception& e) {
    // A network error here (most often a teacher of another data shape; TorchScript throws a
    // std::runtime_error with its traceback) would otherwise name neither the file nor the shape.
    const auto* error = dynamic_cast<const c10::Error*>(&e);
    FEWSTEP_CHECK_VALUE(false, "choose_student_solver('", model_path, "'): the teacher failed on the student's samples ",
                        "of shape ", at::IntArrayRef(info.sample_shape), " (is it the student's teacher?): ",
                        last_line(error ? error->what_without_backtrace() : e.what()));
  }
  return choose_student_solver(model_path, reference, check, write);
}

}  // namespace fewstep
