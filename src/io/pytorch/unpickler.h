// A restricted unpickler for torch.save's data.pkl: it reads pickle protocols 0-5 into a value
// tree and never executes anything. GLOBAL/STACK_GLOBAL resolve only an allowlist modelled on
// torch.load(weights_only=True) (containers, tensor rebuild functions, storage classes, dtypes,
// a few harmless builtins); any other global is refused as ErrorKind::kUnsafe before a single
// value is built from it. REDUCE/NEWOBJ/BUILD are interpreted for the allowlisted callables only.
//
// The machine is iterative (no recursion however deep the nesting), every length is checked
// against the input, and the number of values is capped, so a hostile pickle cannot make it
// allocate more than a small multiple of its own size.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "io/pytorch/pickle_value.h"

namespace modex::pickle {

struct UnpickleLimits {
  // Values created (each opcode creates at most one): ~100 bytes each, so ~400 MB at most.
  // A ResNet-50 state dict needs ~5,000; large optimizer states a few hundred thousand.
  size_t max_values = size_t{1} << 22;
  // Tensor rank accepted by the rebuild functions (torch's own limit is 64).
  size_t max_rank = 64;
};

struct Unpickled {
  std::unique_ptr<ValueArena> arena;
  const Value* root = nullptr;
};

// Unpickles `bytes`. `name` (e.g. "data.pkl") prefixes every error message together with the
// byte offset of the failing opcode. Throws modex::Error: kUnsafe for a forbidden global,
// kUnsupported for valid but unhandled content, kInvalidInput for malformed data.
Unpickled unpickle(std::span<const uint8_t> bytes, std::string_view name = "data.pkl",
                   const UnpickleLimits& limits = {});

}  // namespace modex::pickle
