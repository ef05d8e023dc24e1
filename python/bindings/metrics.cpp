// Bindings of metrics/: Fréchet distance, class-histogram KL, coupled error, FmnistEvaluator.
//
// Long computations (the evaluator's classifier passes, its floor) run with the GIL released.
#include <torch/python.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "fewstep/metrics/class_histogram.h"
#include "fewstep/metrics/coupled_error.h"
#include "fewstep/metrics/fmnist_evaluator.h"
#include "fewstep/metrics/frechet.h"
#include "fewstep/metrics/solver_choice.h"
#include "trainer.h"  // path_arg

namespace py = pybind11;
using fewstep::CoupledError;
using fewstep::FmnistEvaluator;
using fewstep::FmnistReport;
using fewstep::GaussianStats;

namespace {

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

py::dict report_dict(const FmnistReport& r) {
  py::dict d;
  d["n"] = r.n;
  d["fd"] = r.fd;
  d["fd_floor"] = r.fd_floor;
  d["class_kl"] = r.class_kl;
  d["class_kl_floor"] = r.class_kl_floor;
  d["mean_confidence"] = r.mean_confidence;
  d["class_counts"] = r.class_counts;
  d["seconds"] = r.seconds;
  return d;
}

py::dict coupled_dict(const CoupledError& e) {
  py::dict d;
  d["n"] = e.n;
  d["median"] = e.median;
  d["mean"] = e.mean;
  d["rmse"] = e.rmse;
  d["max"] = e.max;
  d["per_sample"] = e.per_sample;
  return d;
}

}  // namespace

void bind_metrics(py::module_& m) {
  py::class_<GaussianStats>(m, "GaussianStats",
                            "Mean [D] and covariance [D, D] (float64, unbiased) of N feature vectors.")
      .def(py::init([](at::Tensor mean, at::Tensor cov, int64_t count) {
             return GaussianStats{std::move(mean), std::move(cov), count};
           }),
           py::arg("mean"), py::arg("cov"), py::arg("count"))
      .def_readonly("mean", &GaussianStats::mean, "Mean [D], float64.")
      .def_readonly("cov", &GaussianStats::cov, "Covariance [D, D], float64 (divides by N - 1).")
      .def_readonly("count", &GaussianStats::count, "Number of feature vectors N.")
      .def("__repr__", [](const GaussianStats& s) {
        return "GaussianStats(dim=" + std::to_string(s.mean.defined() ? s.mean.size(0) : 0) +
               ", count=" + std::to_string(s.count) + ")";
      });

  m.def("gaussian_stats", &fewstep::gaussian_stats, py::arg("features"),
        "Mean and covariance (float64, unbiased) of features [N, D].");
  m.def("frechet_distance", py::overload_cast<const GaussianStats&, const GaussianStats&>(&fewstep::frechet_distance),
        py::arg("a"), py::arg("b"),
        "Frechet distance |mu_a - mu_b|^2 + tr S_a + tr S_b - 2 tr (S_a^1/2 S_b S_a^1/2)^1/2 between two "
        "GaussianStats, in float64 via symmetric eigendecompositions (always >= 0).");
  m.def("frechet_distance",
        py::overload_cast<const at::Tensor&, const at::Tensor&>(&fewstep::frechet_distance),
        py::arg("features_a"), py::arg("features_b"),
        "Frechet distance between Gaussians fitted to features [N, D] and [M, D]. Biased upwards by small "
        "N and M: compare only at equal sizes and report a floor beside it.",
        py::call_guard<py::gil_scoped_release>());

  m.def("class_histogram", &fewstep::class_histogram, py::arg("labels"), py::arg("num_classes") = 10,
        "Counts per class (float64 [num_classes]) of class indices [N] or of the argmax of scores [N, K].");
  m.def("class_histogram_kl", &fewstep::class_histogram_kl, py::arg("reference_counts"), py::arg("sample_counts"),
        py::arg("pseudo_count") = 0.5,
        "KL(p_ref || p_sample) in nats of two class-count histograms, each smoothed as "
        "p_k = (c_k + pseudo_count) / (N + K pseudo_count).");

  py::class_<CoupledError>(m, "CoupledError",
                           "Per-sample RMS errors e_i = sqrt(mean_j (x_ij - ref_ij)^2) against a reference from the "
                           "same x_T, and their summaries.")
      .def_readonly("n", &CoupledError::n)
      .def_readonly("median", &CoupledError::median)
      .def_readonly("mean", &CoupledError::mean)
      .def_readonly("rmse", &CoupledError::rmse, "sqrt(mean of e_i^2).")
      .def_readonly("max", &CoupledError::max)
      .def_readonly("per_sample", &CoupledError::per_sample, "e_i, float64 [n].")
      .def("as_dict", &coupled_dict, "The fields as a dict.")
      .def("__getitem__", [](const CoupledError& e, const std::string& key) -> py::object {
        py::dict d = coupled_dict(e);
        if (!d.contains(key)) throw py::key_error(key);
        return d[py::str(key)];
      })
      .def("__repr__", [](const CoupledError& e) {
        return "CoupledError(n=" + std::to_string(e.n) + ", median=" + fmt(e.median) + ", mean=" + fmt(e.mean) +
               ", rmse=" + fmt(e.rmse) + ", max=" + fmt(e.max) + ")";
      });
  m.def("coupled_error", &fewstep::coupled_error, py::arg("x"), py::arg("reference"),
        "Per-sample RMS distance of samples x [N, ...] to a reference sample from the same x_T, with median, "
        "mean, rmse and max.");

  // metrics/solver_choice.h: which solver samples a model (a student) on its grid closest to a reference.
  const auto choice_dict = [](const fewstep::SolverChoice& c) {
    py::list trials;
    for (const fewstep::SolverTrial& t : c.trials) {
      py::dict d;
      d["solver"] = t.solver;
      d["error"] = t.error;
      trials.append(d);
    }
    py::dict out;
    out["solver"] = c.solver;
    out["trials"] = trials;
    return out;
  };
  m.def("grid_solver_candidates", &fewstep::grid_solver_candidates,
        "The solvers a student's sampler is chosen among (DDIM first): deterministic, one evaluation per step.");
  m.def(
      "_choose_grid_solver",
      [choice_dict](const fewstep::Denoiser& model, const at::Tensor& x_T, const std::vector<double>& timesteps,
                    const at::Tensor& reference, std::optional<std::vector<std::string>> candidates,
                    double tolerance) {
        fewstep::SolverChoice c;
        {
          py::gil_scoped_release release;
          c = fewstep::choose_grid_solver(model, x_T, timesteps, reference,
                                          candidates.value_or(fewstep::grid_solver_candidates()), tolerance);
        }
        return choice_dict(c);
      },
      py::arg("model"), py::arg("x_T"), py::arg("timesteps"), py::arg("reference"), py::arg("candidates"),
      py::arg("tolerance"));
  m.def(
      "_choose_student_solver",
      [choice_dict](const py::object& path_obj, const fewstep::Denoiser& teacher, int64_t n, uint64_t seed,
                    int64_t reference_steps, std::optional<std::vector<std::string>> candidates, double tolerance,
                    bool write) {
        const std::string path = path_arg(path_obj, "student", false);
        fewstep::StudentSolverCheck check;
        check.n = n;
        check.seed = seed;
        check.reference_steps = reference_steps;
        if (candidates) check.candidates = *candidates;
        check.tolerance = tolerance;
        fewstep::SolverChoice c;
        {
          py::gil_scoped_release release;
          c = fewstep::choose_student_solver(path, teacher, check, write);
        }
        return choice_dict(c);
      },
      py::arg("student"), py::arg("teacher"), py::arg("n"), py::arg("seed"), py::arg("reference_steps"),
      py::arg("candidates"), py::arg("tolerance"), py::arg("write"));

  py::class_<FmnistReport>(m, "FmnistReport", "Result of FmnistEvaluator.evaluate.")
      .def_readonly("n", &FmnistReport::n, "Number of evaluated images.")
      .def_readonly("fd", &FmnistReport::fd, "FD-FMNIST: Frechet distance of classifier features, samples vs test set.")
      .def_readonly("fd_floor", &FmnistReport::fd_floor,
                    "FD of n training images vs the test set (same n): what real data scores; NaN if not computed.")
      .def_readonly("class_kl", &FmnistReport::class_kl, "KL(p_test || p_samples) of predicted-class histograms.")
      .def_readonly("class_kl_floor", &FmnistReport::class_kl_floor, "class_kl of the n training images.")
      .def_readonly("mean_confidence", &FmnistReport::mean_confidence, "Mean max softmax probability of the samples.")
      .def_readonly("class_counts", &FmnistReport::class_counts, "Predicted classes of the samples, float64 [10].")
      .def_readonly("seconds", &FmnistReport::seconds, "Wall time of evaluate().")
      .def("as_dict", &report_dict, "The fields as a dict.")
      .def("__repr__", [](const FmnistReport& r) {
        return "FmnistReport(n=" + std::to_string(r.n) + ", fd=" + fmt(r.fd) + ", fd_floor=" + fmt(r.fd_floor) +
               ", class_kl=" + fmt(r.class_kl) + ", class_kl_floor=" + fmt(r.class_kl_floor) +
               ", mean_confidence=" + fmt(r.mean_confidence) + ")";
      });

  py::class_<FmnistEvaluator, std::shared_ptr<FmnistEvaluator>>(
      m, "FmnistEvaluator",
      "FD-FMNIST, its train-vs-test floor and class-histogram KL of images [N, 1, 28, 28] in [-1, 1], with "
      "fewstep's Fashion-MNIST classifier (e.g. models/fmnist-classifier.pt).")
      .def(py::init([](const std::string& classifier_path, std::optional<std::string> data_dir, int64_t batch,
                       uint64_t floor_seed, double pseudo_count, std::optional<std::string> cache_dir) {
             fewstep::FmnistEvaluatorOptions o;
             o.data_dir = data_dir.value_or("");
             o.cache_dir = cache_dir.value_or("");
             o.batch = batch;
             o.floor_seed = floor_seed;
             o.pseudo_count = pseudo_count;
             py::gil_scoped_release release;
             return std::make_shared<FmnistEvaluator>(classifier_path, o);
           }),
           py::arg("classifier_path"), py::arg("data_dir") = py::none(), py::arg("batch") = 500,
           py::arg("floor_seed") = 0, py::arg("pseudo_count") = 0.5, py::arg("cache_dir") = py::none(),
           "Loads the classifier and the Fashion-MNIST test split (data_dir None: $FEWSTEP_FASHION_MNIST_DIR or "
           "/usr/share/datasets/fashion-mnist) and computes the test statistics. With cache_dir, the test "
           "statistics and floor features are stored in (and later read from) a file there, keyed by the "
           "classifier file, the data directory and floor_seed.")
      .def("evaluate", &FmnistEvaluator::evaluate, py::arg("images"), py::arg("floor") = true,
           py::call_guard<py::gil_scoped_release>(),
           "All metrics of images [N, 1, 28, 28] (N >= 2; clamped to [-1, 1]). floor=True also computes the "
           "floors at the same n (cached per n).")
      .def("features", &FmnistEvaluator::features, py::arg("images"), py::call_guard<py::gil_scoped_release>(),
           "Classifier features [N, D] (float32, CPU).")
      .def("logits", &FmnistEvaluator::logits, py::arg("images"), py::call_guard<py::gil_scoped_release>(),
           "Classifier logits [N, 10] (float32, CPU).")
      .def("fd_floor", &FmnistEvaluator::fd_floor, py::arg("n"), py::call_guard<py::gil_scoped_release>(),
           "FD of n training images vs the test set (2 <= n <= 60000).")
      .def("class_kl_floor", &FmnistEvaluator::class_kl_floor, py::arg("n"), py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("test_accuracy", &FmnistEvaluator::test_accuracy,
                             "Accuracy of the classifier on the 10000 test images.")
      .def_property_readonly("test_stats", &FmnistEvaluator::test_stats, "GaussianStats of the test features.")
      .def_property_readonly("test_class_counts", &FmnistEvaluator::test_class_counts,
                             "Predicted-class counts on the test set, float64 [10].")
      .def_property_readonly("feature_dim", &FmnistEvaluator::feature_dim)
      .def_property_readonly("classifier_path", &FmnistEvaluator::classifier_path)
      .def_property_readonly("cache_file", &FmnistEvaluator::cache_file, "The statistics cache file ('' without cache_dir).")
      .def_property_readonly("loaded_from_cache", &FmnistEvaluator::loaded_from_cache)
      .def("__repr__", [](const FmnistEvaluator& e) {
        return "FmnistEvaluator('" + e.classifier_path() + "', feature_dim=" + std::to_string(e.feature_dim()) +
               ", test_accuracy=" + fmt(e.test_accuracy()) + ")";
      });
}
