// The in-memory value tree a restricted unpickler builds from `data.pkl`: plain Python data
// (None, bool, int, float, str, bytes, list, tuple, dict, set), the few allowlisted globals as
// inert markers, and references to storages and tensors that are only read from the archive
// once somebody asks for them (so optimizer state in a training checkpoint costs nothing).
//
// Every Value is owned by one ValueArena and refers to others by raw pointer. A pickle can build
// cycles (a list that contains itself) and arbitrarily deep nesting; with arena ownership neither
// leaks nor recurses on destruction. Code that walks the tree must bound its own depth.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace modex::pickle {

enum class ValueKind : uint8_t {
  kNone,
  kBool,
  kInt,     // fits in int64
  kBigInt,  // an integer outside int64; `text` holds its little-endian two's complement bytes
  kFloat,
  kString,  // UTF-8 in `text`
  kBytes,   // raw bytes in `text` (bytes, bytearray)
  kList,
  kTuple,
  kDict,     // dict and collections.OrderedDict
  kSet,      // set and frozenset
  kGlobal,   // an allowlisted global (a function or class), see Global
  kDType,    // torch.float32 etc.
  kStorage,  // a persistent storage reference ('storage', cls, key, location, numel)
  kTensor,   // a tensor over a storage (from the _rebuild_tensor* functions)
  kOpaque,   // an object of an allowlisted harmless type we never look into (slice, complex, ...)
};

std::string_view value_kind_name(ValueKind kind);

// The globals the unpickler accepts. Everything else is refused before any value is built.
enum class Global : uint8_t {
  kOrderedDict,
  kRebuildTensor,     // torch._utils._rebuild_tensor (v1, pre-1.x files)
  kRebuildTensorV2,   // torch._utils._rebuild_tensor_v2
  kRebuildTensorV3,   // torch._utils._rebuild_tensor_v3 (explicit dtype, untyped storage)
  kRebuildParameter,  // torch._utils._rebuild_parameter
  kRebuildParameterWithState,
  kRebuildFromTypeV2,  // torch._tensor._rebuild_from_type_v2 (tensor subclasses)
  kParameter,          // torch.nn.parameter.Parameter
  kTensorClass,        // torch.Tensor (only as an argument of _rebuild_from_type_v2)
  kStorageClass,       // torch.FloatStorage, torch.UntypedStorage, ... (see storage_dtype)
  kSize,               // torch.Size
  kDevice,             // torch.device
  kCodecsEncode,       // _codecs.encode: how protocol 2 spells bytes
  kSet,
  kFrozenSet,
  kSlice,
  kByteArray,
  kComplex,
  kOpaqueClass,  // argparse.Namespace, numpy scalars/dtypes: accepted, never looked into
};

// A storage class global: which element type its raw bytes hold.
struct StorageClass {
  bool untyped = false;  // torch.UntypedStorage: bytes, the tensor supplies the dtype
  DType dtype = DType::kUInt8;
};

class Value;

// Insertion-ordered dict. String and int keys are indexed so SETITEM stays O(1) on large state
// dicts; other hashable keys (tuples, None, floats) are kept in order without de-duplication,
// which only matters for data modex never reads.
class Dict {
 public:
  void set(Value* key, Value* value);
  const Value* find(std::string_view key) const;
  const std::vector<std::pair<Value*, Value*>>& items() const { return items_; }
  size_t size() const { return items_.size(); }

 private:
  std::vector<std::pair<Value*, Value*>> items_;
  std::unordered_map<std::string, size_t> string_index_;
  std::unordered_map<int64_t, size_t> int_index_;
};

struct StorageRef {
  std::string key;  // the archive entry is data/<key>
  StorageClass cls;
  std::string location;  // 'cpu', 'cuda:0', ...: ignored, everything loads to the CPU
  int64_t numel = 0;     // declared element count (bytes for untyped storages)
};

// A strided view over a storage, in elements of `dtype`, already checked to fit the storage's
// declared size. The archive entry itself is checked again when the tensor is materialised.
struct TensorRef {
  const Value* storage = nullptr;  // kind kStorage
  DType dtype = DType::kFloat32;
  int64_t offset = 0;
  Dims size;
  Dims stride;
};

class Value {
 public:
  ValueKind kind = ValueKind::kNone;
  bool boolean = false;
  Global global = Global::kOpaqueClass;  // kGlobal
  DType dtype = DType::kFloat32;         // kDType
  StorageClass storage_class;            // kGlobal with global == kStorageClass
  int64_t integer = 0;
  double real = 0.0;
  std::string text;            // kString, kBytes, kBigInt; the dotted name for kGlobal/kOpaque
  std::vector<Value*> items;   // kList, kTuple, kSet
  std::unique_ptr<Dict> dict;  // kDict
  std::unique_ptr<StorageRef> storage;
  std::unique_ptr<TensorRef> tensor;

  bool is(ValueKind k) const { return kind == k; }
  bool is_sequence() const { return kind == ValueKind::kList || kind == ValueKind::kTuple; }
};

// Owns every Value of one unpickling. Values never move (std::deque), so pointers stay valid.
class ValueArena {
 public:
  Value* make(ValueKind kind);
  size_t size() const { return values_.size(); }

 private:
  std::deque<Value> values_;
};

// A short, depth- and length-bounded Python-like rendering for error messages and tests.
std::string describe(const Value* v, int max_depth = 3);

}  // namespace modex::pickle
