// Bindings of models/transforms.h: x0 clipping and thresholding, the VE view of a VP model.
#include <torch/python.h>

#include <memory>

#include "fewstep/models/transforms.h"

namespace py = pybind11;
using fewstep::Denoiser;

void bind_transforms(py::module_& m) {
  m.def(
      "clip_x0",
      [](const Denoiser& model, double range, bool update_eps) {
        return std::make_shared<Denoiser>(fewstep::clip_x0(model, range, update_eps));
      },
      py::arg("model"), py::arg("range") = 1.0, py::arg("update_eps") = true,
      "x0_hat clipped to [-range, range] (diffusers' clip_sample); eps_hat recomputed from it unless "
      "update_eps=False.");
  m.def(
      "threshold_x0",
      [](const Denoiser& model, double ratio, double max_value, bool update_eps) {
        return std::make_shared<Denoiser>(fewstep::threshold_x0(model, ratio, max_value, update_eps));
      },
      py::arg("model"), py::arg("ratio") = 0.995, py::arg("max_value") = 1.0, py::arg("update_eps") = true,
      "Dynamic thresholding of x0_hat (Saharia et al. 2022, arXiv 2205.11487; diffusers' thresholding=True).");
  m.def(
      "ve_view", [](const Denoiser& vp) { return std::make_shared<Denoiser>(fewstep::ve_view(vp)); }, py::arg("model"),
      "The VE view of a VP model: time sigma/alpha, state x/alpha (Euler and Heun then step in sigma, as "
      "k-diffusion and diffusers' EulerDiscrete/HeunDiscrete do).");
}
