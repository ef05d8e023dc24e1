#include "fewstep/data/image_files.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <sstream>

#include "fewstep/core/check.h"
#include "fewstep/io/npz.h"
#include "fewstep/io/png.h"

namespace fewstep {

namespace {

namespace fsys = std::filesystem;

bool has_extension(const fsys::path& p, const std::string& ext) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return std::tolower(c); });
  return e == ext;
}

std::vector<fsys::path> sorted_entries(const fsys::path& dir, bool directories) {
  std::vector<fsys::path> out;
  for (const auto& entry : fsys::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name[0] == '.') continue;  // hidden files and folders
    if (directories ? entry.is_directory() : (entry.is_regular_file() && has_extension(entry.path(), ".png")))
      out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string shape_text(const at::Tensor& images) {
  std::ostringstream o;
  o << images.size(0) << " images of " << images.size(1) << "x" << images.size(2) << "x" << images.size(3);
  return o.str();
}

}  // namespace

ImageDataset load_image_folder(const std::string& directory) {
  FEWSTEP_CHECK_VALUE(fsys::is_directory(directory), "load_image_folder: '", directory, "' is not a directory");
  std::vector<fsys::path> files = sorted_entries(directory, false);
  const std::vector<fsys::path> class_dirs = sorted_entries(directory, true);
  std::vector<int64_t> labels;
  std::vector<std::string> classes;
  if (files.empty()) {
    for (const fsys::path& sub : class_dirs) {
      const std::vector<fsys::path> members = sorted_entries(sub, false);
      if (members.empty()) continue;
      for (const fsys::path& f : members) {
        files.push_back(f);
        labels.push_back(static_cast<int64_t>(classes.size()));
      }
      classes.push_back(sub.filename().string());
    }
  }
  FEWSTEP_CHECK_VALUE(!files.empty(), "load_image_folder: '", directory,
                      "' holds no .png files (directly or in one subfolder per class)");

  std::vector<at::Tensor> images;
  images.reserve(files.size());
  int64_t channels = 1;
  for (const fsys::path& f : files) {
    at::Tensor image = read_png(f.string());  // [H, W, C] uint8
    if (!images.empty()) {
      FEWSTEP_CHECK_VALUE(image.size(0) == images.front().size(0) && image.size(1) == images.front().size(1),
                          "load_image_folder: '", f.string(), "' is ", image.size(1), "x", image.size(0),
                          " pixels but '", files.front().string(), "' is ", images.front().size(1), "x",
                          images.front().size(0), "; all images must share one size");
    }
    channels = std::max(channels, image.size(2));
    images.push_back(std::move(image));
  }
  for (at::Tensor& image : images) {
    if (image.size(2) != channels) image = image.expand({image.size(0), image.size(1), channels});
  }
  ImageDataset out;
  out.images = (at::stack(images).permute({0, 3, 1, 2}).to(at::kFloat) / 127.5 - 1.0).contiguous();
  if (!labels.empty()) {
    out.labels = at::tensor(labels, at::TensorOptions().dtype(at::kLong));
    out.classes = classes;
  }
  out.description = shape_text(out.images) + " from '" + directory + "'" +
                    (classes.empty() ? "" : " in " + std::to_string(classes.size()) + " classes");
  return out;
}

ImageDataset load_npz_images(const std::string& path) {
  const auto arrays = read_npz(path);
  auto find = [&](const std::string& name) -> const at::Tensor* {
    for (const auto& [key, value] : arrays) {
      if (key == name) return &value;
    }
    return nullptr;
  };
  std::string key;
  const at::Tensor* x = nullptr;
  for (const char* name : {"images", "x"}) {
    if ((x = find(name)) != nullptr) {
      key = name;
      break;
    }
  }
  if (x == nullptr) {
    std::string names;
    for (const auto& [name, value] : arrays) {
      names += (names.empty() ? "" : ", ") + name;
      if (value.dim() == 3 || value.dim() == 4) {
        FEWSTEP_CHECK_VALUE(x == nullptr, "load_npz_images: '", path, "' holds several arrays of rank 3 or 4 (",
                            key, ", ", name, "); name the images 'images'");
        x = &value;
        key = name;
      }
    }
    FEWSTEP_CHECK_VALUE(x != nullptr, "load_npz_images: '", path, "' has no image array (expected 'images', 'x' or ",
                        "one array of rank 3 or 4; it holds: ", names.empty() ? "nothing" : names, ")");
  }
  const std::string what = "'" + path + "' array '" + key + "'";
  at::Tensor images = *x;
  if (images.dim() == 3) images = images.unsqueeze(1);
  FEWSTEP_CHECK_VALUE(images.dim() == 4, "load_npz_images: ", what, " has shape ", x->sizes(),
                      "; expected [N, H, W], [N, C, H, W] or [N, H, W, C]");
  const bool channels_first = images.size(1) == 1 || images.size(1) == 3;
  const bool channels_last = images.size(3) == 1 || images.size(3) == 3;
  FEWSTEP_CHECK_VALUE(channels_first || channels_last, "load_npz_images: ", what, " has shape ", x->sizes(),
                      "; expected 1 or 3 channels, first ([N, C, H, W]) or last ([N, H, W, C])");
  if (!channels_first) images = images.permute({0, 3, 1, 2});
  FEWSTEP_CHECK_VALUE(images.size(0) > 0, "load_npz_images: ", what, " holds no images");
  if (images.scalar_type() == at::kByte) {
    images = images.to(at::kFloat) / 127.5 - 1.0;
  } else {
    FEWSTEP_CHECK_VALUE(at::isFloatingType(images.scalar_type()), "load_npz_images: ", what, " has dtype ",
                        images.scalar_type(), "; expected uint8 (0..255) or floating point in [-1, 1]");
    images = images.to(at::kFloat);
    FEWSTEP_CHECK_VALUE(at::isfinite(images).all().item<bool>(), "load_npz_images: ", what,
                        " holds non-finite values");
    const double lo = images.min().item<double>(), hi = images.max().item<double>();
    FEWSTEP_CHECK_VALUE(lo >= -1.0 - 1e-6 && hi <= 1.0 + 1e-6, "load_npz_images: ", what, " spans [", lo, ", ", hi,
                        "]; floating-point images must lie in [-1, 1] (store uint8, or scale: 2 * x - 1 for [0, 1])");
    images = images.clamp(-1.0, 1.0);
  }
  ImageDataset out;
  out.images = images.contiguous();
  for (const char* name : {"labels", "y"}) {
    const at::Tensor* y = find(name);
    if (y == nullptr) continue;
    const std::string ywhat = "'" + path + "' array '" + name + "'";
    FEWSTEP_CHECK_VALUE(y->dim() == 1 && y->size(0) == out.images.size(0), "load_npz_images: ", ywhat,
                        " has shape ", y->sizes(), "; expected [", out.images.size(0), "] (one label per image)");
    FEWSTEP_CHECK_VALUE(!at::isFloatingType(y->scalar_type()) && y->scalar_type() != at::kBool, "load_npz_images: ",
                        ywhat, " has dtype ", y->scalar_type(), "; expected integers");
    out.labels = y->to(at::kLong);
    const int64_t lo = out.labels.min().item<int64_t>(), hi = out.labels.max().item<int64_t>();
    FEWSTEP_CHECK_VALUE(lo >= 0, "load_npz_images: ", ywhat, " holds the negative label ", lo);
    for (int64_t k = 0; k <= hi; ++k) out.classes.push_back(std::to_string(k));
    break;
  }
  out.description = shape_text(out.images) + " from '" + path + "' (" + key + ")" +
                    (out.classes.empty() ? "" : " in " + std::to_string(out.classes.size()) + " classes");
  return out;
}

ImageDataset load_image_dataset(const std::string& path) {
  if (fsys::is_directory(path)) return load_image_folder(path);
  FEWSTEP_CHECK_VALUE(has_extension(path, ".npz"), "load_image_dataset: '", path,
                      "' is neither a folder of .png files nor a .npz file");
  FEWSTEP_CHECK_VALUE(fsys::is_regular_file(path), "load_image_dataset: '", path, "' does not exist");
  return load_npz_images(path);
}

}  // namespace fewstep
