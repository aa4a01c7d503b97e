// safetensors: u64 little-endian header length, a JSON header naming each tensor's dtype, shape
// and byte range, then the raw little-endian data. Validated like the reference implementation:
// ranges in bounds, contiguous, covering the data exactly, sizes matching shapes, no duplicate
// names, known dtypes only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "io/pytorch/checkpoint.h"

namespace modex::safetensors {

// A header larger than this is refused before it is parsed.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

struct File {
  StateDict weights;                                          // in header order
  std::vector<std::pair<std::string, std::string>> metadata;  // "__metadata__", in header order
};

// True when the first bytes could start a safetensors file of `total_size` bytes: a sane header
// length followed by '{'. `head` must hold at least min(total_size, 9) bytes.
bool looks_like_safetensors(const uint8_t* head, size_t head_size, uint64_t total_size);

// Parses a whole file held in `file`. Tensors view `file` where the data is aligned for their
// dtype and are copied otherwise. Throws Error (kUnsupported for unknown dtypes).
File parse(std::shared_ptr<Buffer> file);

}  // namespace modex::safetensors
