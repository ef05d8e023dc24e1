/// @file data/image_files.h
/// @brief A user's own images as a training set: a folder of PNG files or a NumPy .npz archive.
///
/// Folder: every *.png directly inside it (unlabelled), or one subfolder per class holding that
/// class's *.png files (labels = the subfolders' indices in name order, as torchvision's
/// ImageFolder assigns them). Files are read in name order; greyscale images join RGB ones as
/// three equal channels; alpha is dropped (io/png.h). All images must share one size.
///
/// .npz (np.savez / np.savez_compressed): the image array is the one named "images", else "x",
/// else the only array of rank 3 or 4; laid out [N, H, W], [N, C, H, W] or [N, H, W, C] with
/// C = 1 or 3; uint8 (0..255) or floating point already in [−1, 1]. Labels: an integer array
/// "labels" or "y" of length N, if present.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace fewstep {

struct ImageDataset {
  at::Tensor images;                 ///< float32 [N, C, H, W] in [−1, 1]
  at::Tensor labels;                 ///< int64 [N] in 0..classes−1, or undefined (no labels)
  std::vector<std::string> classes;  ///< class names (folder: subfolder names; npz: "0", "1", ...)
  std::string description;           ///< one line: where from, how many, which size
};

/// Loads a folder of PNG files (see above). ValueError naming the folder or the offending file.
ImageDataset load_image_folder(const std::string& directory);

/// Loads images (and labels) from a .npz archive (see above). ValueError naming the file, the
/// array and the problem (layout, dtype, value range, label count).
ImageDataset load_npz_images(const std::string& path);

/// A directory: load_image_folder; a file ending in .npz: load_npz_images; anything else is a
/// ValueError naming `path`.
ImageDataset load_image_dataset(const std::string& path);

}  // namespace fewstep
