#include "io/pytorch/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <unordered_set>

#include "core/error.h"
#include "io/pytorch/untrusted_text.h"

namespace modex::safetensors {
namespace {

using pytorch::printable;

using Json = nlohmann::ordered_json;  // keeps the header's tensor order

// Deeper than a tensor entry's shape array has no meaning in a header.
constexpr int kMaxHeaderDepth = 16;
constexpr size_t kMaxRank = 64;

std::optional<DType> dtype_from_code(std::string_view code) {
  static constexpr std::pair<std::string_view, DType> kCodes[] = {
      {"BOOL", DType::kBool},     {"U8", DType::kUInt8},    {"I8", DType::kInt8},
      {"I16", DType::kInt16},     {"U16", DType::kUInt16},  {"F16", DType::kFloat16},
      {"BF16", DType::kBFloat16}, {"I32", DType::kInt32},   {"U32", DType::kUInt32},
      {"F32", DType::kFloat32},   {"F64", DType::kFloat64}, {"I64", DType::kInt64},
      {"U64", DType::kUInt64},
  };
  for (const auto& [name, dtype] : kCodes) {
    if (name == code) return dtype;
  }
  return std::nullopt;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

uint64_t non_negative_int(const Json& j, const std::string& what) {
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  if (j.is_number_integer() && j.get<int64_t>() >= 0)
    return static_cast<uint64_t>(j.get<int64_t>());
  throw Error(what + " must be a non-negative integer, got " + j.dump());
}

struct Entry {
  std::string name;
  DType dtype;
  Dims shape;
  uint64_t begin;
  uint64_t end;
};

Entry parse_entry(const std::string& name, const Json& info) {
  if (!info.is_object()) throw Error("header entry '" + printable(name) + "' must be an object");
  auto dtype_it = info.find("dtype");
  auto shape_it = info.find("shape");
  auto offsets_it = info.find("data_offsets");
  if (dtype_it == info.end() || shape_it == info.end() || offsets_it == info.end())
    throw Error("header entry '" + printable(name) + "' needs dtype, shape and data_offsets");
  if (!dtype_it->is_string())
    throw Error("header entry '" + printable(name) + "': dtype must be a string");
  const std::string code = dtype_it->get<std::string>();
  std::optional<DType> dtype = dtype_from_code(code);
  if (!dtype)
    throw Error("tensor '" + printable(name) + "' has dtype '" + printable(code, 32) +
                    "', which modex does not support (BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, "
                    "F32, F64, "
                    "I64, U64)",
                ErrorKind::kUnsupported);
  if (!shape_it->is_array() || shape_it->size() > kMaxRank)
    throw Error("header entry '" + printable(name) + "': shape must be an array of at most " +
                std::to_string(kMaxRank) + " integers");
  Entry e{name, *dtype, {}, 0, 0};
  for (const Json& d : *shape_it) {
    uint64_t v = non_negative_int(d, "tensor '" + printable(name) + "' shape");
    if (v > static_cast<uint64_t>(INT64_MAX))
      throw Error("tensor '" + printable(name) + "' has a dimension too large");
    e.shape.push_back(static_cast<int64_t>(v));
  }
  if (!offsets_it->is_array() || offsets_it->size() != 2)
    throw Error("header entry '" + printable(name) + "': data_offsets must be [begin, end]");
  e.begin = non_negative_int((*offsets_it)[0], "tensor '" + printable(name) + "' data_offsets");
  e.end = non_negative_int((*offsets_it)[1], "tensor '" + printable(name) + "' data_offsets");
  return e;
}

}  // namespace

bool looks_like_safetensors(const uint8_t* head, size_t head_size, uint64_t total_size) {
  if (head_size < 9 || total_size < 10) return false;
  uint64_t n = read_u64_le(head);
  return n >= 2 && n <= kMaxHeaderBytes && n <= total_size - 8 && head[8] == '{';
}

File parse(std::shared_ptr<Buffer> file) {
  const uint8_t* bytes = file->data();
  const uint64_t size = file->size();
  if (size < 8) throw Error("safetensors file is truncated: " + std::to_string(size) + " bytes");
  const uint64_t header_len = read_u64_le(bytes);
  if (header_len > kMaxHeaderBytes)
    throw Error("safetensors header claims " + std::to_string(header_len) + " bytes (at most " +
                std::to_string(kMaxHeaderBytes) + " accepted)");
  if (header_len > size - 8)
    throw Error("safetensors header claims " + std::to_string(header_len) +
                " bytes but the file has only " + std::to_string(size - 8) + " after the length");
  const char* header = reinterpret_cast<const char*>(bytes + 8);
  if (header_len < 2 || header[0] != '{') throw Error("safetensors header is not a JSON object");

  // The callback sees every top-level key, which is where duplicates must be caught: the JSON
  // library itself would silently keep the last one.
  // Entry objects (depth 2) must not repeat a field either.
  std::unordered_set<std::string> seen;
  std::unordered_set<std::string> seen_in_entry;
  auto check = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (depth > kMaxHeaderDepth) throw Error("safetensors header is nested too deeply");
    if (event == Json::parse_event_t::object_start && depth == 1) seen_in_entry.clear();
    if (event == Json::parse_event_t::key && (depth == 1 || depth == 2)) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!(depth == 1 ? seen : seen_in_entry).insert(key).second)
        throw Error("safetensors header repeats the key '" + printable(key) + "'");
    }
    return true;
  };
  Json root;
  try {
    root = Json::parse(header, header + header_len, check);
  } catch (const Json::exception& e) {
    throw Error(std::string("safetensors header is not valid JSON: ") + e.what());
  }
  if (!root.is_object()) throw Error("safetensors header is not a JSON object");

  const uint64_t data_begin = 8 + header_len;
  const uint64_t data_size = size - data_begin;
  File out;
  std::vector<Entry> entries;
  for (const auto& [name, info] : root.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) throw Error("safetensors __metadata__ must be an object of strings");
      for (const auto& [k, v] : info.items()) {
        if (!v.is_string())
          throw Error("safetensors __metadata__ value for '" + printable(k) + "' is not a string");
        out.metadata.emplace_back(k, v.get<std::string>());
      }
      continue;
    }
    entries.push_back(parse_entry(name, info));
  }

  // Byte ranges: in bounds, sized for their shape, and tiling the data region exactly.
  for (const Entry& e : entries) {
    if (e.begin > e.end || e.end > data_size)
      throw Error("tensor '" + printable(e.name) + "' has data_offsets [" +
                  std::to_string(e.begin) + ", " + std::to_string(e.end) + "] outside the " +
                  std::to_string(data_size) + "-byte data");
    int64_t numel = checked_numel(e.shape);
    uint64_t nbytes;
    if (__builtin_mul_overflow(static_cast<uint64_t>(numel), dtype_size(e.dtype), &nbytes) ||
        nbytes != e.end - e.begin)
      throw Error("tensor '" + printable(e.name) + "' of shape " + dims_to_string(e.shape) +
                  " and dtype " + std::string(dtype_name(e.dtype)) + " needs " +
                  std::to_string(numel) + " elements but its range has " +
                  std::to_string(e.end - e.begin) + " bytes");
  }
  std::vector<const Entry*> by_offset;
  by_offset.reserve(entries.size());
  for (const Entry& e : entries) by_offset.push_back(&e);
  std::stable_sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  for (const Entry* e : by_offset) {
    if (e->begin != cursor)
      throw Error("tensor '" + printable(e->name) + "' starts at byte " + std::to_string(e->begin) +
                  " of the data but " +
                  (e->begin < cursor ? "overlaps the previous tensor"
                                     : "leaves a gap after byte " + std::to_string(cursor)));
    cursor = e->end;
  }
  if (cursor != data_size)
    throw Error("the tensors cover " + std::to_string(cursor) + " bytes but the data section has " +
                std::to_string(data_size));

  for (const Entry& e : entries) {
    const size_t offset = static_cast<size_t>(data_begin + e.begin);
    // Tensors are read through typed pointers, so data that is misaligned for its element type
    // (headers are not always padded) gets its own buffer.
    if (offset % dtype_size(e.dtype) == 0) {
      out.weights.insert(e.name, Tensor::view(file, offset, e.dtype, e.shape));
    } else {
      std::shared_ptr<Buffer> copy = Buffer::allocate(static_cast<size_t>(e.end - e.begin));
      if (e.end > e.begin)
        std::memcpy(copy->data(), bytes + offset, static_cast<size_t>(e.end - e.begin));
      out.weights.insert(e.name, Tensor::view(std::move(copy), 0, e.dtype, e.shape));
    }
  }
  return out;
}

}  // namespace modex::safetensors
