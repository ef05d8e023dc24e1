/// @file io/npz.h
/// @brief Reading NumPy arrays: .npy files and .npz archives (np.save, np.savez, np.savez_compressed).
///
/// A .npy file is a magic string, a version, a header (a Python dict literal with 'descr',
/// 'fortran_order' and 'shape') and the raw array data (NumPy's format description, NEP 1).
/// A .npz file is a ZIP archive of .npy files, stored or deflated, with ZIP64 records where NumPy
/// writes them (PKWARE APPNOTE 6.3, §4.3 and §4.5.3). Supported dtypes: bool, int8/16/32/64,
/// uint8 (uint16/uint32 widen to int32/int64), float16/32/64, in either byte order.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace fewstep {

/// Decodes .npy bytes into a CPU tensor of the array's dtype and shape (`name` appears in errors).
/// ValueError naming `name` and the problem (not .npy, unsupported dtype, truncated data).
at::Tensor decode_npy(const uint8_t* data, size_t size, const std::string& name = "npy data");

/// Reads a .npy file (decode_npy).
at::Tensor read_npy(const std::string& path);

/// Reads every array of a .npz archive, in archive order, named without the ".npy" suffix
/// (np.savez(f, images=x) gives "images"; positional arrays are "arr_0", "arr_1", ...).
/// ValueError naming `path` for a file that is not a ZIP archive, is damaged (CRC) or holds an
/// entry that is not a .npy array.
std::vector<std::pair<std::string, at::Tensor>> read_npz(const std::string& path);

}  // namespace fewstep
