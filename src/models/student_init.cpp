#include "fewstep/models/student_init.h"

#include <ATen/core/grad_mode.h>
#include <torch/script.h>

#include <cmath>
#include <cstdio>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fewstep/core/check.h"

namespace fewstep {

namespace {

constexpr double kPi = 3.14159265358979323846;

std::string lit(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  std::string s = buf;
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return "(" + s + ")";
}

// TorchScript lines setting `la` = log α(tt) and `ls` = log σ(tt) for a float64 tensor tt, written
// as schedules/schedule.cpp computes them.
std::string schedule_source(const NoiseSchedule& schedule) {
  std::ostringstream s;
  if (const auto* vp = dynamic_cast<const VPLinear*>(&schedule)) {
    s << "    la = -0.25 * tt * tt * " << lit(vp->beta_max() - vp->beta_min()) << " - 0.5 * tt * " << lit(vp->beta_min())
      << "\n    ls = 0.5 * torch.log(-torch.expm1(2.0 * la))\n";
  } else if (const auto* cos = dynamic_cast<const VPCosine*>(&schedule)) {
    const double k = 0.5 * kPi / (1.0 + cos->s());
    const double la0 = std::log(std::cos(0.5 * kPi * cos->s() / (1.0 + cos->s())));
    s << "    d = " << lit(k) << " * tt\n"
      << "    half = torch.sin(0.5 * d)\n"
      << "    near = torch.log1p(-2.0 * half * half - " << lit(std::tan(k * cos->s())) << " * torch.sin(d))\n"
      << "    far = torch.log(torch.sin(" << lit(k) << " * (1.0 - tt))) - " << lit(la0) << "\n"
      << "    la = torch.where(tt <= 0.5, near, far)\n"
      << "    ls = 0.5 * torch.log(-torch.expm1(2.0 * la))\n";
  } else if (dynamic_cast<const VE*>(&schedule) != nullptr) {
    s << "    la = torch.zeros_like(tt)\n    ls = torch.log(tt)\n";
  } else if (dynamic_cast<const FlowMatching*>(&schedule) != nullptr) {
    s << "    la = torch.log1p(-tt)\n    ls = torch.log(tt)\n";
  } else {
    FEWSTEP_CHECK_VALUE(false, "student_from_teacher: schedule ", schedule.repr(),
                        " has no TorchScript form here (supported: vp_linear, vp_cosine, ve, flow)");
  }
  return s.str();
}

// The host time from the network time input `t` (float64 [B, 1, ...] tensor `tt`).
std::string time_source(const NoiseSchedule& schedule, TimeInput time_input, double time_scale) {
  const bool sigma_is_t = schedule.family() == ScheduleFamily::VE || schedule.family() == ScheduleFamily::Flow;
  FEWSTEP_CHECK_VALUE(time_input == TimeInput::T || (time_input == TimeInput::Sigma && sigma_is_t),
                      "student_from_teacher: time_input '", to_string(time_input), "' under ", schedule.repr(),
                      " cannot be inverted inside TorchScript here (supported: 't', and 'sigma' on ve/flow)");
  FEWSTEP_CHECK_VALUE(std::isfinite(time_scale) && time_scale != 0.0,
                      "student_from_teacher: time_scale must be finite and non-zero, got ", time_scale);
  return "    tt = tt / " + lit(time_scale) + "\n";
}

struct Pair {
  std::string x, o;  // coefficients of x and of the network output
};

// x̂₀ and ε̂ of the teacher as linear combinations of (x, o), in terms of a = α, s = σ (models/denoiser.cpp).
std::pair<Pair, Pair> teacher_x0_eps(Prediction p) {
  switch (p) {
    case Prediction::Eps: return {{"1.0 / a", "-s / a"}, {"0.0 * a", "1.0 + 0.0 * a"}};
    case Prediction::X0: return {{"0.0 * a", "1.0 + 0.0 * a"}, {"1.0 / s", "-a / s"}};
    case Prediction::V:
      return {{"a / (a * a + s * s)", "-s / (a * a + s * s)"}, {"s / (a * a + s * s)", "a / (a * a + s * s)"}};
    case Prediction::Score: return {{"1.0 / a", "s * s / a"}, {"0.0 * a", "-s"}};
    case Prediction::Flow: break;
  }
  FEWSTEP_CHECK_VALUE(false, "student_from_teacher: teacher prediction '", to_string(p),
                      "' has no conversion here (supported: eps, x0, v, score)");
  return {};
}

// The student's native target from (x̂₀ = px x + po o, ε̂ = qx x + qo o): lines setting A, B.
std::string student_source(Prediction p) {
  switch (p) {
    case Prediction::Eps: return "    A = qo\n    B = qx\n";
    case Prediction::X0: return "    A = po\n    B = px\n";
    case Prediction::V: return "    A = a * qo - s * po\n    B = a * qx - s * px\n";
    case Prediction::Score: return "    A = -qo / s\n    B = -qx / s\n";
    case Prediction::Flow: break;
  }
  FEWSTEP_CHECK_VALUE(false, "student_from_teacher: student prediction '", to_string(p),
                      "' has no conversion here (supported: eps, x0, v, score)");
  return "";
}

bool plain_copy(const TeacherParameterization& tp, const StudentTarget& target) {
  return !target.consistency && target.prediction == tp.prediction;
}

}  // namespace

StudentStart parse_student_start(const std::string& name) {
  if (name == "auto") return StudentStart::Auto;
  if (name == "teacher") return StudentStart::Teacher;
  if (name == "weights") return StudentStart::Weights;
  FEWSTEP_CHECK_VALUE(false, "student start must be one of auto, teacher, weights, got '", name, "'");
  return StudentStart::Auto;
}

std::string to_string(StudentStart start) {
  switch (start) {
    case StudentStart::Auto: return "auto";
    case StudentStart::Teacher: return "teacher";
    case StudentStart::Weights: return "weights";
  }
  return "auto";
}

StudentStart resolve_student_start(StudentStart start, Prediction teacher_prediction) {
  if (start != StudentStart::Auto) return start;
  return teacher_prediction == Prediction::X0 || teacher_prediction == Prediction::V ? StudentStart::Teacher
                                                                                     : StudentStart::Weights;
}

ScriptNet start_student(const torch::jit::Module& teacher, const NoiseSchedule& schedule,
                        const TeacherParameterization& teacher_param, const StudentTarget& target,
                        StudentStart start) {
  return resolve_student_start(start, teacher_param.prediction) == StudentStart::Teacher
             ? student_from_teacher(teacher, schedule, teacher_param, target)
             : trainable_copy(teacher);
}

std::string student_output_map_json(const TeacherParameterization& tp, const StudentTarget& target) {
  if (plain_copy(tp, target)) return "";
  nlohmann::json j{{"from", to_string(tp.prediction)}};
  if (target.consistency) {
    j["to"] = "consistency";
    j["sigma_data"] = target.consistency->sigma_data;
  } else {
    j["to"] = to_string(target.prediction);
  }
  return j.dump();
}

namespace {

ScriptNet make_trainable(ScriptNet net) {
  for (const at::Tensor& p : net->parameters(true)) at::Tensor(p).requires_grad_(true);
  net->train();
  return net;
}

}  // namespace

ScriptNet trainable_copy(const torch::jit::Module& net) {
  auto copy = std::make_shared<torch::jit::Module>();
  {
    at::NoGradGuard no_grad;
    *copy = net.clone();
  }
  return make_trainable(copy);
}

ScriptNet student_from_teacher(const torch::jit::Module& teacher, const NoiseSchedule& schedule,
                               const TeacherParameterization& tp, const StudentTarget& target) {
  const auto forward = teacher.find_method("forward");
  FEWSTEP_CHECK_VALUE(forward.has_value(), "student_from_teacher: teacher has no forward method");
  ScriptNet copy = trainable_copy(teacher);
  if (plain_copy(tp, target)) return copy;

  if (target.consistency) {
    target.consistency->validate();
    FEWSTEP_CHECK_VALUE(target.consistency->time_input == tp.time_input &&
                            target.consistency->time_scale == tp.time_scale,
                        "student_from_teacher: the consistency function's time input ('",
                        to_string(target.consistency->time_input), "' x ", target.consistency->time_scale,
                        ") must be the teacher's ('", to_string(tp.time_input), "' x ", tp.time_scale, ")");
  }
  const auto [x0, eps] = teacher_x0_eps(tp.prediction);

  // The signature of the teacher's forward (x, t and its optional label/guidance inputs).
  const auto& args = forward->function().getSchema().arguments();
  FEWSTEP_CHECK_VALUE(args.size() >= 3, "student_from_teacher: teacher forward must take (x, t, ...)");
  std::ostringstream sig, call;
  sig << "def forward(self, x: Tensor, t: Tensor";
  call << "self.net.forward(xin, t";
  for (size_t i = 3; i < args.size(); ++i) {
    const std::string name = args[i].name();
    sig << ", " << name << ": " << args[i].type()->annotation_str();
    if (args[i].default_value().has_value()) sig << " = None";
    call << ", " << name;
  }
  sig << ") -> Tensor:\n";
  call << ")";

  std::ostringstream src;
  src << sig.str() << "    n = x.size(0)\n"
      << "    shape: List[int] = [n]\n"
      << "    for _ in range(x.dim() - 1):\n"
      << "        shape.append(1)\n"
      << "    tt = t.double().reshape(-1)\n"
      << "    if tt.numel() == 1:\n"
      << "        tt = tt.expand(n)\n"
      << "    tt = tt.reshape(shape)\n"
      << time_source(schedule, tp.time_input, tp.time_scale) << schedule_source(schedule)
      << "    a = torch.exp(la)\n    s = torch.exp(ls)\n";
  if (target.consistency) {
    const ConsistencyParameterization& c = *target.consistency;
    const double t_min = c.t_min > 0.0 ? c.t_min : schedule.t_min();
    const double sd = c.sigma_data, sd2 = sd * sd;
    // x = u / c_in, c_in = 1/√(σ² + α² σ_d²) (models/consistency_function.h).
    src << "    xd = x.double() * torch.sqrt(s * s + a * a * " << lit(sd2) << ")\n"
        << "    xin = xd.to(x.dtype)\n";
    src << "    st = s / a\n"
        << "    dd = torch.clamp(st - " << lit(schedule.sigma_tilde(t_min)) << ", min=0.0)\n"
        << "    c_skip = " << lit(sd2) << " / (dd * dd + " << lit(sd2) << ")\n"
        << "    c_out = " << lit(sd) << " * dd / torch.sqrt(st * st + " << lit(sd2) << ")\n";
  } else {
    src << "    xd = x.double()\n    xin = x\n";
  }
  src << "    o = " << call.str() << ".double()\n"
      << "    px = " << x0.x << "\n    po = " << x0.o << "\n    qx = " << eps.x << "\n    qo = " << eps.o << "\n";
  if (target.consistency) {
    // F = (x̂₀ − c_skip x)/c_out; 0 where c_out = 0 (the boundary, f = x there).
    src << "    live = c_out > 0.0\n"
        << "    safe = torch.where(live, c_out, torch.ones_like(c_out))\n"
        << "    A = torch.where(live, po / safe, torch.zeros_like(c_out))\n"
        << "    B = torch.where(live, (px - c_skip) / safe, torch.zeros_like(c_out))\n";
  } else {
    src << student_source(target.prediction);
  }
  src << "    return (A * o + B * xd).to(x.dtype)\n";

  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  auto wrapper =
      std::make_shared<torch::jit::Module>(c10::QualifiedName("__torch__.fewstep.TeacherAsStudent"), cu, true);
  wrapper->register_module("net", *copy);
  std::string error;
  try {
    wrapper->define(src.str());
  } catch (const std::exception& e) {
    error = e.what();
  }
  FEWSTEP_CHECK(error.empty(), "student_from_teacher: cannot compile the output conversion: ", error);
  return make_trainable(wrapper);
}

}  // namespace fewstep
