// Bindings of include/fewstep/psld/: the PSLD process, its models (exact mixture, TorchScript
// ε-network) and the PSLD samplers by name. The sampling loop runs in C++ with the GIL released.
#include <torch/python.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/models/gaussian_mixture.h"
#include "fewstep/psld/mixture.h"
#include "fewstep/psld/model.h"
#include "fewstep/psld/process.h"
#include "fewstep/psld/sampler.h"
#include "fewstep/schedules/timesteps.h"
#include "fewstep/core/noise.h"
#include "options.h"

namespace py = pybind11;
using fewstep::PsldModel;
using fewstep::PsldProcess;

void bind_psld(py::module_& m) {
  py::class_<PsldProcess, std::shared_ptr<PsldProcess>>(
      m, "PsldProcess", "Phase-space Langevin diffusion (Pandey & Mandt 2023) over the augmented state (x, m).")
      .def(py::init([](double beta_min, double beta_max, double gamma, double nu, std::optional<double> mass_inverse,
                       double kappa, double t_min, double t_max) {
             fewstep::PsldConfig c;
             c.beta_min = beta_min, c.beta_max = beta_max, c.gamma = gamma, c.nu = nu;
             c.mass_inverse = mass_inverse;
             c.kappa = kappa, c.t_min = t_min, c.t_max = t_max;
             return std::make_shared<PsldProcess>(c);
           }),
           py::kw_only(), py::arg("beta_min") = 8.0, py::arg("beta_max") = 8.0, py::arg("gamma") = 0.01,
           py::arg("nu") = 4.01, py::arg("mass_inverse") = py::none(), py::arg("kappa") = 0.04,
           py::arg("t_min") = 1e-3, py::arg("t_max") = 1.0,
           "Defaults: the paper's CIFAR-10 values; mass_inverse None = critical damping (Gamma - nu)^2 / 4.")
      .def_property_readonly("t_min", &PsldProcess::t_min)
      .def_property_readonly("t_max", &PsldProcess::t_max)
      .def_property_readonly("mass_inverse", &PsldProcess::mass_inverse)
      .def(
          "prior_sample",
          [](const PsldProcess& p, int64_t n, const std::vector<int64_t>& data_shape,
             std::optional<at::Generator> generator) { return p.prior_sample(n, data_shape, generator); },
          py::arg("n"), py::arg("data_shape"), py::arg("generator") = py::none(),
          "n prior states [n, 2C, ...] for data of shape [C, ...].")
      .def("__repr__", [](const PsldProcess& p) { return p.config().repr(); });

  py::class_<PsldModel, std::shared_ptr<PsldModel>>(m, "PsldModel", "A PSLD score model for the PSLD samplers.")
      .def_static(
          "exact",
          [](const std::shared_ptr<fewstep::GaussianMixture>& data, const PsldProcess& process) {
            FEWSTEP_CHECK_TYPE(data != nullptr, "data should be a fewstep.GaussianMixture, got None");
            return PsldModel::exact(std::make_shared<fewstep::PsldMixture>(data, process));
          },
          py::arg("data"), py::arg("process"), "The exact score of a Gaussian mixture's augmented marginals.")
      .def_static("torchscript", &PsldModel::torchscript, py::arg("path"), py::arg("process"),
                  py::arg("time_scale") = 1.0, "A TorchScript epsilon-network forward(z, t) (e.g. models/gmm16d-psld-mlp.pt).")
      .def(
          "score",
          [](const PsldModel& model, const at::Tensor& z, double t) {
            py::gil_scoped_release release;
            return model.score(z, t);
          },
          py::arg("z"), py::arg("t"))
      .def_property_readonly("process", [](const PsldModel& model) { return std::make_shared<PsldProcess>(model.process()); })
      .def_property_readonly("description", &PsldModel::description);

  m.def("psld_sampler_names", &fewstep::psld_sampler_names, "Names of the registered PSLD samplers.");
  m.def(
      "psld_grid",
      [](const PsldProcess& p, int64_t steps, const std::string& spacing) {
        return double_tensor(fewstep::psld_grid(p, steps, fewstep::parse_spacing(spacing)));
      },
      py::arg("process"), py::arg("steps"), py::arg("spacing") = "time",
      "steps + 1 decreasing times from t_max to t_min: spacing 'time' (uniform in t) or 'quadratic' (uniform in sqrt t).");
  m.def(
      "psld_sample",
      [](const PsldModel& model, const at::Tensor& z_T, const std::string& sampler, const std::vector<double>& grid,
         std::optional<at::Generator> generator, const std::vector<uint64_t>& seeds, bool denoise,
         const py::dict& options) {
        const auto s = fewstep::psld_sampler(sampler, options_from_dict(options));
        fewstep::NoiseSampler noise = !seeds.empty() ? fewstep::NoiseSampler::per_sample(seeds)
                                      : generator   ? fewstep::NoiseSampler(*generator)
                                                    : fewstep::NoiseSampler();
        fewstep::PsldSampleOptions o;
        o.denoise = denoise;
        fewstep::PsldSolution sol;
        {
          py::gil_scoped_release release;
          sol = fewstep::psld_sample(model, z_T, *s, grid, noise, o);
        }
        py::dict out;
        out["x"] = sol.x;
        out["z"] = sol.z;
        out["nfe"] = sol.nfe;
        out["steps"] = sol.steps;
        return out;
      },
      py::arg("model"), py::arg("z_T"), py::arg("sampler"), py::arg("grid"), py::arg("generator") = py::none(),
      py::arg("seeds") = std::vector<uint64_t>{}, py::arg("denoise") = true, py::arg("options") = py::dict(),
      "Runs a PSLD sampler over a decreasing grid; returns {x, z, nfe, steps}.");
}
