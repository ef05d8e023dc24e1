// Bindings of schedules/schedule.h, schedules/timesteps.h and the consistency sampler's grid
// (solvers/consistency.h).
//
// Schedule methods take a float (returning a float) or a tensor / NumPy array / sequence
// (returning a float64 tensor of the same shape, on the input tensor's device).
#include <torch/python.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/solvers/consistency.h"

namespace py = pybind11;
using fewstep::NoiseSchedule;

namespace {

at::Tensor to_tensor(const std::vector<double>& v) {
  return at::tensor(at::ArrayRef<double>(v), at::TensorOptions().dtype(at::kDouble));
}

/// A float64 CPU copy-free-where-possible view of a Python time argument.
at::Tensor as_double_tensor(const py::handle& obj, const char* arg) {
  at::Tensor t;
  if (THPVariable_Check(obj.ptr())) {
    t = THPVariable_Unpack(obj.ptr());
  } else {
    py::object torch = py::module_::import("torch");
    try {
      t = THPVariable_Unpack(torch.attr("as_tensor")(obj, py::arg("dtype") = torch.attr("float64")).ptr());
    } catch (py::error_already_set&) {
      FEWSTEP_CHECK_TYPE(false, arg, " should be a float, a tensor, a NumPy array or a sequence of floats, got ",
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    }
  }
  FEWSTEP_CHECK_TYPE(!t.is_complex(), arg, " should be real, got ", t.scalar_type());
  return t;
}

/// Applies a host float64 function element-wise to a float or array-like argument.
py::object apply(const py::object& arg, const std::function<double(double)>& fn, const char* name) {
  if (py::isinstance<py::float_>(arg) || (py::isinstance<py::int_>(arg) && !py::isinstance<py::bool_>(arg))) {
    return py::float_(fn(arg.cast<double>()));
  }
  at::Tensor input = as_double_tensor(arg, name);
  at::Tensor host = input.detach().to(at::kCPU, at::kDouble).contiguous();
  at::Tensor out = at::empty_like(host);
  const double* src = host.data_ptr<double>();
  double* dst = out.data_ptr<double>();
  const int64_t n = host.numel();
  {
    py::gil_scoped_release release;
    for (int64_t i = 0; i < n; ++i) dst[i] = fn(src[i]);
  }
  return py::cast(out.to(input.device()));
}

std::vector<double> to_double_vector(const py::object& obj, const char* arg) {
  at::Tensor t = as_double_tensor(obj, arg).detach().to(at::kCPU, at::kDouble).contiguous();
  FEWSTEP_CHECK_VALUE(t.dim() == 1, arg, " should be one-dimensional, got shape ", t.sizes());
  const double* p = t.data_ptr<double>();
  return std::vector<double>(p, p + t.numel());
}

template <class Method>
void def_vectorised(py::class_<NoiseSchedule, std::shared_ptr<NoiseSchedule>>& cls, const char* name,
                    Method method, const char* arg, const char* doc) {
  cls.def(
      name,
      [method, name](const NoiseSchedule& self, const py::object& value) {
        return apply(value, [&self, method](double v) { return (self.*method)(v); }, name);
      },
      py::arg(arg), doc);
}

}  // namespace

void bind_schedules(py::module_& m) {
  py::enum_<fewstep::ScheduleFamily>(m, "ScheduleFamily")
      .value("VP", fewstep::ScheduleFamily::VP)
      .value("VE", fewstep::ScheduleFamily::VE)
      .value("Flow", fewstep::ScheduleFamily::Flow);

  py::class_<NoiseSchedule, std::shared_ptr<NoiseSchedule>> base(
      m, "NoiseSchedule",
      "Base class of noise schedules: x_t = alpha_t x_0 + sigma_t eps, lambda_t = log(alpha_t / sigma_t).");
  def_vectorised(base, "alpha", &NoiseSchedule::alpha, "t", "alpha_t for a float or an array of times.");
  def_vectorised(base, "sigma", &NoiseSchedule::sigma, "t", "sigma_t for a float or an array of times.");
  def_vectorised(base, "lambda_", &NoiseSchedule::lambda, "t", "Half log-SNR lambda_t = log(alpha_t/sigma_t).");
  def_vectorised(base, "log_snr", &NoiseSchedule::lambda, "t", "Alias of lambda_: log(alpha_t/sigma_t).");
  def_vectorised(base, "log_alpha", &NoiseSchedule::log_alpha, "t", "log alpha_t.");
  def_vectorised(base, "log_sigma", &NoiseSchedule::log_sigma, "t", "log sigma_t.");
  def_vectorised(base, "dlog_alpha_dt", &NoiseSchedule::dlog_alpha_dt, "t", "d log alpha / dt.");
  def_vectorised(base, "dlog_sigma_dt", &NoiseSchedule::dlog_sigma_dt, "t", "d log sigma / dt.");
  def_vectorised(base, "sigma_tilde", &NoiseSchedule::sigma_tilde, "t", "sigma_t / alpha_t = exp(-lambda_t).");
  def_vectorised(base, "t_of_lambda", &NoiseSchedule::t_of_lambda, "lambda_", "Inverse of lambda_(t).");
  base.def_property_readonly("t_min", &NoiseSchedule::t_min)
      .def_property_readonly("t_max", &NoiseSchedule::t_max)
      .def_property_readonly("lambda_min", &NoiseSchedule::lambda_min)
      .def_property_readonly("lambda_max", &NoiseSchedule::lambda_max)
      .def_property_readonly("name", &NoiseSchedule::name)
      .def_property_readonly("family", [](const NoiseSchedule& s) { return fewstep::to_string(s.family()); })
      .def_property_readonly("num_train_steps", &NoiseSchedule::num_train_steps)
      .def("check_time", [](const NoiseSchedule& s, double t) { s.check_time(t, "t"); }, py::arg("t"),
           "Raises ValueError unless t is finite and within [t_min, t_max].")
      .def("__repr__", &NoiseSchedule::repr);

  py::class_<fewstep::VPLinear, NoiseSchedule, std::shared_ptr<fewstep::VPLinear>>(
      m, "VPLinear", "VP schedule with linear beta(t) = beta_min + t (beta_max - beta_min).")
      .def(py::init<double, double, double, double>(), py::arg("beta_min") = 0.1, py::arg("beta_max") = 20.0,
           py::arg("t_min") = 1e-3, py::arg("t_max") = 1.0)
      .def_property_readonly("beta_min", &fewstep::VPLinear::beta_min)
      .def_property_readonly("beta_max", &fewstep::VPLinear::beta_max)
      .def("beta", [](const fewstep::VPLinear& s, const py::object& t) {
        return apply(t, [&s](double v) { return s.beta(v); }, "t");
      }, py::arg("t"));

  py::class_<fewstep::VPCosine, NoiseSchedule, std::shared_ptr<fewstep::VPCosine>>(
      m, "VPCosine", "VP cosine schedule (Nichol & Dhariwal 2021).")
      .def(py::init<double, double, double>(), py::arg("s") = 0.008, py::arg("t_min") = 1e-3,
           py::arg("t_max") = 0.9946)
      .def_property_readonly("s", &fewstep::VPCosine::s);

  py::class_<fewstep::VPDiscrete, NoiseSchedule, std::shared_ptr<fewstep::VPDiscrete>>(
      m, "VPDiscrete", "VP schedule from a discrete DDPM schedule (betas or alphas_cumprod).")
      .def_static("from_betas", [](const py::object& betas, const std::string& interpolation) {
        return fewstep::VPDiscrete::from_betas(to_double_vector(betas, "betas"),
                                               fewstep::parse_discrete_interpolation(interpolation));
      }, py::arg("betas"), py::arg("interpolation") = "log_alpha")
      .def_static("from_alphas_cumprod", [](const py::object& ac, const std::string& interpolation) {
        return fewstep::VPDiscrete::from_alphas_cumprod(to_double_vector(ac, "alphas_cumprod"),
                                                        fewstep::parse_discrete_interpolation(interpolation));
      }, py::arg("alphas_cumprod"), py::arg("interpolation") = "log_alpha")
      .def_static("ddpm_linear", &fewstep::VPDiscrete::ddpm_linear, py::arg("num_train_steps") = 1000,
                  py::arg("beta_start") = 1e-4, py::arg("beta_end") = 0.02)
      .def_static("scaled_linear", &fewstep::VPDiscrete::scaled_linear, py::arg("num_train_steps") = 1000,
                  py::arg("beta_start") = 0.00085, py::arg("beta_end") = 0.012)
      .def_property_readonly("alphas_cumprod", [](const fewstep::VPDiscrete& s) {
        return to_tensor(s.alphas_cumprod());
      })
      .def_property_readonly("interpolation", [](const fewstep::VPDiscrete& s) {
        return fewstep::to_string(s.interpolation());
      });

  py::class_<fewstep::VE, NoiseSchedule, std::shared_ptr<fewstep::VE>>(
      m, "VE", "Variance-exploding / EDM schedule: alpha = 1, sigma = t.")
      .def(py::init<double, double>(), py::arg("sigma_min") = 0.002, py::arg("sigma_max") = 80.0);

  py::class_<fewstep::FlowMatching, NoiseSchedule, std::shared_ptr<fewstep::FlowMatching>>(
      m, "FlowMatching", "Flow matching / rectified flow: alpha = 1 - t, sigma = t.")
      .def(py::init<double, double>(), py::arg("t_min") = 1e-3, py::arg("t_max") = 0.999);

  m.def(
      "timesteps",
      [](const std::shared_ptr<NoiseSchedule>& schedule, int64_t steps, const std::string& spacing,
         std::optional<double> t_start, std::optional<double> t_end, double rho, std::optional<int64_t> steps_offset,
         const std::string& final_sigma) {
        FEWSTEP_CHECK_TYPE(schedule != nullptr, "schedule should be a fewstep schedule, got None");
        return to_tensor(fewstep::timesteps(*schedule, steps, spacing, t_start, t_end, rho, steps_offset,
                                            fewstep::parse_final_sigma(final_sigma)));
      },
      py::arg("schedule"), py::arg("steps"), py::arg("spacing") = "logsnr", py::arg("t_start") = py::none(),
      py::arg("t_end") = py::none(), py::arg("rho") = 7.0, py::arg("steps_offset") = py::none(),
      py::arg("final_sigma") = "min");
  m.def(
      "validate_grid",
      [](const std::shared_ptr<NoiseSchedule>& schedule, const py::object& grid, bool allow_final_zero) {
        FEWSTEP_CHECK_TYPE(schedule != nullptr, "schedule should be a fewstep schedule, got None");
        return to_tensor(fewstep::validate_grid(*schedule, to_double_vector(grid, "timesteps"), allow_final_zero));
      },
      py::arg("schedule"), py::arg("timesteps"), py::arg("allow_final_zero") = false);
  m.def("spacings", &fewstep::spacing_names, "Every spacing name timesteps() accepts.");
  m.def(
      "sigmas",
      [](const std::string& kind, int64_t steps, double sigma_min, double sigma_max, double rho,
         const std::string& final_sigma) {
        return to_tensor(
            fewstep::sigmas(kind, steps, sigma_min, sigma_max, rho, fewstep::parse_final_sigma(final_sigma)));
      },
      py::arg("kind"), py::arg("steps"), py::arg("sigma_min") = 0.002, py::arg("sigma_max") = 80.0,
      py::arg("rho") = 7.0, py::arg("final_sigma") = "min");
  m.def("sigma_kinds", &fewstep::sigma_kinds, "The kinds sigmas() accepts.");
  m.def(
      "timesteps_from_sigmas",
      [](const std::shared_ptr<NoiseSchedule>& schedule, const py::object& sigma_values, bool quantize) {
        FEWSTEP_CHECK_TYPE(schedule != nullptr, "schedule should be a fewstep schedule, got None");
        return to_tensor(
            fewstep::timesteps_from_sigmas(*schedule, to_double_vector(sigma_values, "sigmas"), quantize));
      },
      py::arg("schedule"), py::arg("sigmas"), py::arg("quantize") = false);
  m.attr("CONSISTENCY_START_SIGMA") = fewstep::kConsistencyStartSigma;
  m.def(
      "consistency_timesteps",
      [](const std::shared_ptr<NoiseSchedule>& schedule, std::optional<double> start_sigma,
         const py::object& intermediate_sigmas, std::optional<double> t_end) {
        FEWSTEP_CHECK_TYPE(schedule != nullptr, "schedule should be a fewstep schedule, got None");
        return to_tensor(fewstep::consistency_timesteps(
            *schedule, start_sigma, to_double_vector(intermediate_sigmas, "intermediate_sigmas"), t_end));
      },
      py::arg("schedule"), py::arg("start_sigma") = fewstep::kConsistencyStartSigma,
      py::arg("intermediate_sigmas") = py::tuple(), py::arg("t_end") = py::none(),
      "A consistency model's sampling grid (float64): the time of noise level start_sigma = sigma/alpha "
      "(default 80, EDM's sigma_max; clamped to the schedule's top; None: t_max), the times of the "
      "intermediate_sigmas (one per extra step, decreasing), then t_end (default t_min).");
}
