/// @file models/student_init.h
/// @brief A student that starts exactly at its teacher in function space: the teacher's network
///        wrapped in a fixed output conversion to the student's parametrisation.
///
/// Copying a teacher's weights into a student that predicts something else (an ε teacher read as
/// a v or x̂₀ student, or as the network F of a consistency function) gives a different function:
/// at iteration 0 such a student samples noise. `student_from_teacher` instead returns a TorchScript
/// module
///     forward(u, t[, y][, w]) = A(t) · teacher(k(t) · u, t[, y][, w]) + B(t) · k(t) · u
/// whose coefficients are the exact linear map from the teacher's output to the student's target
/// (models/denoiser.h's conversions: x̂₀ and ε̂ are linear in (x, output) at each t):
///  - a prediction target (ε, x̂₀, v or score; docs/design.md §1): k = 1, and the student's
///    output is `native_from_x0_eps(x̂₀, ε̂)` of the teacher's (x̂₀, ε̂), e.g. ε → v:
///    v = α ε̂ − σ x̂₀ = ((α² + σ²)/α) ε̂ − (σ/α) x;
///  - a consistency function f = c_skip x + c_out F(c_in x, c_noise) (arXiv 2303.01469, eq. (3);
///    models/consistency_function.h): k = 1/c_in recovers x from the network input, and
///    F = (x̂₀ − c_skip x)/c_out, so f(x, t) = x̂₀(x, t) of the teacher for t > t_min (at t_min,
///    c_out = 0 and F is set to 0: f(x, t_min) = x by the boundary condition).
/// The coefficients are computed inside the module in float64 from the network time input (t /
/// time_scale for time_input "t"; σ for "sigma" on VE and flow schedules) with the schedule's
/// closed-form α(t), σ(t) written as TorchScript (VP linear, VP cosine, VE, flow), and the result is
/// cast to x's dtype. The module is self-contained: it saves with `save_model_file` and loads
/// anywhere TorchScript does; its parameters are the teacher's, named `net.<name>`, and train as
/// any network's. The teacher module is not modified (a deep copy is wrapped).
///
/// When the student's target equals the teacher's prediction (and no consistency function), the
/// result is a plain deep copy of the teacher (nothing to convert).
#pragma once

#include <optional>

#include "fewstep/models/consistency_function.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/nets/network.h"
#include "fewstep/schedules/schedule.h"

namespace fewstep {

/// What the teacher network is: its prediction and time input.
struct TeacherParameterization {
  Prediction prediction = Prediction::Eps;
  TimeInput time_input = TimeInput::T;
  double time_scale = 1.0;
};

/// The student's target: a native prediction, or (when `consistency` is set) the network F of
/// that consistency function (whose time input must equal the teacher's).
struct StudentTarget {
  Prediction prediction = Prediction::V;
  std::optional<ConsistencyParameterization> consistency;
};

/// The teacher as a student of `target` (see the file comment); parameters require grad.
/// ValueError naming the argument for a schedule, time input or prediction without a TorchScript
/// conversion here (flow predictions; VP discrete schedules; time inputs "index" and "lambda").
ScriptNet student_from_teacher(const torch::jit::Module& teacher, const NoiseSchedule& schedule,
                               const TeacherParameterization& teacher_param, const StudentTarget& target);

/// A deep copy of `net` to train: its own weights and output, parameters requiring grad, train mode.
/// What `student_from_teacher` returns when there is nothing to convert, and the `weights` start of
/// a student whose target differs (the teacher's weights read in the student's parametrisation:
/// not the teacher's function, but well conditioned where the conversion is not, e.g. an ε teacher's
/// x̂₀ = (x − σ ε̂)/α at high noise).
ScriptNet trainable_copy(const torch::jit::Module& net);

/// Where a student starts (docs/distillation.md, "Where a student starts"). Exact is not always well
/// conditioned: through an ε teacher x̂₀ = (x − σ ε̂)/α, so a wrapped student's x̂₀ moves by σ/α (≈ 150 at
/// the top of a VP-linear schedule) per unit of its network's output, and few-step students trained
/// from that start stay far behind those started from the teacher's weights (measured: 1-step
/// progressive students on a 16-D mixture, log-likelihood −246 against −10.1).
enum class StudentStart {
  Auto,     ///< Teacher for x̂₀ and v teachers (slope ≤ 1), Weights for ε and score teachers
  Teacher,  ///< student_from_teacher: the teacher in function space, exact at iteration 0
  Weights,  ///< trainable_copy: the teacher's network and weights read in the student's parametrisation
};
/// "auto", "teacher" or "weights"; ValueError naming the value otherwise.
StudentStart parse_student_start(const std::string& name);
std::string to_string(StudentStart start);
/// `start` with Auto resolved for a teacher predicting `teacher_prediction`.
StudentStart resolve_student_start(StudentStart start, Prediction teacher_prediction);
/// The student that starts at `start` (Auto resolved): student_from_teacher or trainable_copy.
ScriptNet start_student(const torch::jit::Module& teacher, const NoiseSchedule& schedule,
                        const TeacherParameterization& teacher_param, const StudentTarget& target, StudentStart start);

/// A short JSON object describing the conversion (recorded in a student's sidecar network spec as
/// "output_map"), or "" when `student_from_teacher` returns a plain copy.
std::string student_output_map_json(const TeacherParameterization& teacher_param, const StudentTarget& target);

}  // namespace fewstep
