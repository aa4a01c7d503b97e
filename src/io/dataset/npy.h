// NumPy .npy files (format versions 1.0 for writing; 1.0, 2.0 and 3.0 for reading), so
// calibration tensors can be saved once and reused, and checked with numpy.load.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

#include "core/tensor.h"

namespace modex::npy {

// The complete file contents (header + C-ordered data). Little-endian dtypes only.
std::string encode(const Tensor& tensor);
// Atomically (temporary file + rename).
void write(const std::filesystem::path& path, const Tensor& tensor);

// Bounds-checked parse; throws modex::Error naming `name` on anything malformed, Fortran-ordered
// or of a dtype modex has no equivalent for.
Tensor decode(std::span<const uint8_t> bytes, const std::string& name);
Tensor read(const std::filesystem::path& path);

}  // namespace modex::npy
