// Bindings of io/, data/image_files.h and data/fashion_mnist.h: image grids and PNG files
// (fs.image_grid, fs.save_image_grid), a user's images as a training set (fs.load_images), Fashion-MNIST
// (fs.load_fashion_mnist).
#include <torch/python.h>

#include <pybind11/stl/filesystem.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <utility>

#include "fewstep/core/progress_bar.h"
#include "fewstep/data/fashion_mnist.h"
#include "fewstep/data/image_files.h"
#include "fewstep/io/png.h"

namespace py = pybind11;

namespace {

fewstep::ImageGridOptions grid_options(int64_t nrow, int64_t padding, int64_t scale,
                                       std::pair<double, double> value_range, std::optional<double> pad_value) {
  fewstep::ImageGridOptions o;
  o.nrow = nrow;
  o.padding = padding;
  o.scale = scale;
  o.low = value_range.first;
  o.high = value_range.second;
  o.pad_value = pad_value.value_or(std::nan(""));
  return o;
}

}  // namespace

void bind_io(py::module_& m) {
  m.def("format_duration", &fewstep::format_duration, py::arg("seconds"),
        "A duration as people write it: '850 ms', '18.5 s', '3 min 05 s', '2 h 07 min'; the one formatter "
        "behind the command line, the benchmarks, the progress lines and the model cards.");
  m.def(
      "image_grid",
      [](const at::Tensor& images, int64_t nrow, int64_t padding, int64_t scale, std::pair<double, double> value_range,
         std::optional<double> pad_value) {
        return fewstep::image_grid(images, grid_options(nrow, padding, scale, value_range, pad_value));
      },
      py::arg("images"), py::kw_only(), py::arg("nrow") = 0, py::arg("padding") = 2, py::arg("scale") = 1,
      py::arg("value_range") = std::make_pair(-1.0, 1.0), py::arg("pad_value") = py::none(),
      R"doc(Tile images [N, C, H, W] (C = 1 or 3) into one uint8 image [H', W', C].

Values in ``value_range`` = (low, high) map to 0..255 (clamped); ``nrow`` images per row
(0: about square); ``padding`` pixels of ``pad_value`` (in image units; None: mid grey)
between and around them; ``scale`` enlarges every pixel to a scale x scale block (1-64).
ValueError naming the offending argument.)doc");
  m.def(
      "save_image_grid",
      [](const at::Tensor& images, const std::filesystem::path& path, int64_t nrow, int64_t padding, int64_t scale,
         std::pair<double, double> value_range, std::optional<double> pad_value) {
        return fewstep::save_image_grid(path.string(), images,
                                        grid_options(nrow, padding, scale, value_range, pad_value));
      },
      py::arg("images"), py::arg("path"), py::kw_only(), py::arg("nrow") = 0, py::arg("padding") = 2,
      py::arg("scale") = 1, py::arg("value_range") = std::make_pair(-1.0, 1.0), py::arg("pad_value") = py::none(),
      R"doc(Write images [N, C, H, W] as one PNG grid to ``path`` (str or os.PathLike); returns the grid.

The layout and value mapping are those of :func:`image_grid`. The file is written atomically;
``path`` must end in ``.png`` (fewstep writes PNG only), checked before any work, else ValueError.)doc");
  m.def(
      "load_images",
      [](const std::filesystem::path& path) {
        fewstep::ImageDataset d = [&] {
          py::gil_scoped_release release;
          return fewstep::load_image_dataset(path.string());
        }();
        py::dict out;
        out["images"] = d.images;
        out["labels"] = d.labels.defined() ? py::object(py::cast(d.labels)) : py::object(py::none());
        out["classes"] = d.classes;
        out["description"] = d.description;
        return out;
      },
      py::arg("path"),
      R"doc(Load a folder of PNG files or a .npz file as a training set, as `fewstep train --data PATH` does.

Returns a dict: images (float32 [N, C, H, W] in [-1, 1]), labels (int64 [N] or None), classes
(names: the class subfolders, or "0", "1", ... for a .npz 'labels' array) and description.
Folder: *.png files, or one subfolder of them per class. .npz: an array 'images' (else 'x', else
the only array of rank 3 or 4), [N, H, W], [N, C, H, W] or [N, H, W, C], uint8 or floats in
[-1, 1]; labels from 'labels' or 'y'. ValueError naming the file and the problem.)doc");
  m.def(
      "load_fashion_mnist",
      [](const std::string& split, const std::optional<std::filesystem::path>& directory) {
        fewstep::FashionMnist d = [&] {
          py::gil_scoped_release release;
          return fewstep::load_fashion_mnist(split, directory ? directory->string() : std::string());
        }();
        py::dict out;
        out["images"] = d.images;
        out["labels"] = d.labels;
        py::list classes;
        for (const char* name : fewstep::fashion_mnist_classes()) classes.append(name);
        out["classes"] = classes;
        return out;
      },
      py::arg("split") = "train", py::arg("directory") = py::none(),
      R"doc(Fashion-MNIST as `fewstep train --data fmnist` reads it: split "train" (60000) or "test" (10000).

Returns a dict: images (float32 [N, 1, 28, 28], pixel/127.5 - 1 in [-1, 1]), labels (int64 [N]) and the
ten class names. ``directory`` defaults to $FEWSTEP_FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist
(Debian's dataset-fashion-mnist); a missing file is a ValueError naming it.)doc");
}
