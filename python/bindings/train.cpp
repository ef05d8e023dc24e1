// Bindings of train/dsm_loss.h: the denoising-score-matching inputs, weights and loss.
//
// Only the arithmetic is bound. The network call, the backward pass and the optimiser stay in
// Python (python/fewstep/train.py), so that autograd, DistributedDataParallel's hooks and any
// user training loop see an ordinary PyTorch forward. The tensors returned here are built with
// ATen ops, so they carry autograd history if x0 or eps require grad.
#include <torch/python.h>

#include <memory>
#include <string>

#include "fewstep/core/check.h"
#include "fewstep/models/denoiser.h"
#include "fewstep/schedules/schedule.h"
#include "fewstep/train/dsm_loss.h"

namespace py = pybind11;
using fewstep::NoiseSchedule;

namespace {

const NoiseSchedule& require(const std::shared_ptr<NoiseSchedule>& schedule) {
  FEWSTEP_CHECK_TYPE(schedule != nullptr, "schedule should be a fewstep schedule (e.g. fewstep.VPLinear()), got None");
  return *schedule;
}

fewstep::DsmOptions make_options(const std::string& prediction, const std::string& time_input, double time_scale,
                                 const std::string& weighting, double min_snr_gamma) {
  fewstep::DsmOptions o;
  o.prediction = fewstep::parse_prediction(prediction);
  o.time_input = fewstep::parse_time_input(time_input);
  o.time_scale = time_scale;
  o.weighting = fewstep::parse_loss_weighting(weighting);
  o.min_snr_gamma = min_snr_gamma;
  o.validate();
  return o;
}

}  // namespace

void bind_train(py::module_& m) {
  m.def(
      "_dsm_options",
      [](const std::string& prediction, const std::string& time_input, double time_scale,
         const std::string& weighting, double min_snr_gamma) {
        const fewstep::DsmOptions o = make_options(prediction, time_input, time_scale, weighting, min_snr_gamma);
        return py::make_tuple(fewstep::to_string(o.prediction), fewstep::to_string(o.time_input),
                              fewstep::to_string(o.weighting));
      },
      py::arg("prediction"), py::arg("time_input"), py::arg("time_scale"), py::arg("weighting"),
      py::arg("min_snr_gamma"),
      "Validates DSM options (ValueError naming the bad one); returns the canonical names.");
  m.def(
      "_dsm_inputs",
      [](const at::Tensor& x0, const at::Tensor& eps, const at::Tensor& t,
         const std::shared_ptr<NoiseSchedule>& schedule, const std::string& prediction, const std::string& time_input,
         double time_scale, const std::string& weighting, double min_snr_gamma) {
        const fewstep::DsmOptions o = make_options(prediction, time_input, time_scale, weighting, min_snr_gamma);
        const fewstep::DsmInputs in = fewstep::dsm_inputs(x0, eps, t, require(schedule), o);
        return py::make_tuple(in.x_t, in.t_input, in.target, in.weight);
      },
      py::arg("x0"), py::arg("eps"), py::arg("t"), py::arg("schedule"), py::arg("prediction"), py::arg("time_input"),
      py::arg("time_scale"), py::arg("weighting"), py::arg("min_snr_gamma"),
      "fewstep::dsm_inputs: (x_t, t_input, target, weight).");
  m.def(
      "_dsm_loss",
      [](const at::Tensor& output, const at::Tensor& target, const at::Tensor& weight) {
        fewstep::DsmInputs in;
        in.target = target;
        in.weight = weight;
        return fewstep::dsm_loss(output, in);
      },
      py::arg("output"), py::arg("target"), py::arg("weight"),
      "fewstep::dsm_loss: mean_b weight_b * mean_j (output - target)^2.");
  m.def(
      "native_error_scale",
      [](const std::string& prediction, const std::shared_ptr<NoiseSchedule>& schedule, double t) {
        return fewstep::native_error_scale(fewstep::parse_prediction(prediction), require(schedule), t);
      },
      py::arg("prediction"), py::arg("schedule"), py::arg("t"),
      "c_t = |native output error|^2 / |x0 error|^2 at time t for a network predicting `prediction`.");
  m.def(
      "x0_loss_weight",
      [](const std::string& weighting, const std::string& prediction, const std::shared_ptr<NoiseSchedule>& schedule,
         double t, double min_snr_gamma) {
        return fewstep::x0_loss_weight(fewstep::parse_loss_weighting(weighting), fewstep::parse_prediction(prediction),
                                       require(schedule), t, min_snr_gamma);
      },
      py::arg("weighting"), py::arg("prediction"), py::arg("schedule"), py::arg("t"), py::arg("min_snr_gamma") = 5.0,
      "w_t: the weight of the per-sample x0 mean squared error under `weighting` (uniform: c_t, truncated_snr: "
      "max(SNR, 1), min_snr: min(SNR, gamma)).");
}
