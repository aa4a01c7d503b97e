// Builders for the io tests: pickle byte strings opcode by opcode, zip archives with stored
// entries (so damaged variants can be made byte by byte), and torch.save-shaped checkpoints.
#pragma once

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/dtype.h"

namespace modex::test {

inline std::span<const uint8_t> as_bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

inline void put_le(std::string& out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

// Emits pickle opcodes. Method names follow CPython's pickletools names.
class PickleWriter {
 public:
  PickleWriter& raw(std::string_view bytes) {
    out_.append(bytes);
    return *this;
  }
  PickleWriter& op(uint8_t code) {
    out_ += static_cast<char>(code);
    return *this;
  }
  PickleWriter& proto(int v) { return op(0x80).op(static_cast<uint8_t>(v)); }
  PickleWriter& stop() { return op('.'); }
  PickleWriter& mark() { return op('('); }
  PickleWriter& none() { return op('N'); }
  PickleWriter& boolean(bool b) { return op(b ? 0x88 : 0x89); }
  PickleWriter& tuple() { return op('t'); }
  PickleWriter& empty_tuple() { return op(')'); }
  PickleWriter& empty_list() { return op(']'); }
  PickleWriter& empty_dict() { return op('}'); }
  PickleWriter& append() { return op('a'); }
  PickleWriter& appends() { return op('e'); }
  PickleWriter& setitem() { return op('s'); }
  PickleWriter& setitems() { return op('u'); }
  PickleWriter& reduce() { return op('R'); }
  PickleWriter& build() { return op('b'); }
  PickleWriter& newobj() { return op(0x81); }
  PickleWriter& binpersid() { return op('Q'); }
  PickleWriter& binput(uint8_t i) { return op('q').op(i); }
  PickleWriter& binget(uint8_t i) { return op('h').op(i); }
  PickleWriter& long_binput(uint32_t i) {
    op('r');
    put_le(out_, i, 4);
    return *this;
  }
  PickleWriter& long_binget(uint32_t i) {
    op('j');
    put_le(out_, i, 4);
    return *this;
  }
  PickleWriter& memoize() { return op(0x94); }
  // The shortest integer opcode, as pickle picks it.
  PickleWriter& integer(int64_t v) {
    if (v >= 0 && v < 256) return op('K').op(static_cast<uint8_t>(v));
    if (v >= 0 && v < 65536) {
      op('M');
      put_le(out_, static_cast<uint64_t>(v), 2);
      return *this;
    }
    if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      put_le(out_, static_cast<uint64_t>(v), 4);
      return *this;
    }
    op(0x8a).op(8);
    put_le(out_, static_cast<uint64_t>(v), 8);
    return *this;
  }
  PickleWriter& binfloat(double d) {
    uint64_t bits;
    std::memcpy(&bits, &d, 8);
    op('G');
    for (int i = 7; i >= 0; --i) out_ += static_cast<char>((bits >> (8 * i)) & 0xff);
    return *this;
  }
  PickleWriter& str(std::string_view s) {  // BINUNICODE
    op('X');
    put_le(out_, s.size(), 4);
    out_.append(s);
    return *this;
  }
  PickleWriter& short_str(std::string_view s) {  // SHORT_BINUNICODE
    op(0x8c).op(static_cast<uint8_t>(s.size()));
    out_.append(s);
    return *this;
  }
  PickleWriter& short_bytes(std::string_view s) {  // SHORT_BINBYTES
    op('C').op(static_cast<uint8_t>(s.size()));
    out_.append(s);
    return *this;
  }
  PickleWriter& global(std::string_view module, std::string_view name) {
    op('c');
    out_.append(module).append("\n").append(name).append("\n");
    return *this;
  }
  PickleWriter& stack_global(std::string_view module, std::string_view name) {
    return short_str(module).short_str(name).op(0x93);
  }
  PickleWriter& int_tuple(std::initializer_list<int64_t> values) {
    mark();
    for (int64_t v : values) integer(v);
    return tuple();
  }
  PickleWriter& int_tuple(const std::vector<int64_t>& values) {
    mark();
    for (int64_t v : values) integer(v);
    return tuple();
  }
  // ('storage', torch.<cls>, key, 'cpu', numel) followed by BINPERSID.
  PickleWriter& storage(std::string_view cls, std::string_view key, int64_t numel,
                        std::string_view module = "torch") {
    return mark()
        .str("storage")
        .global(module, cls)
        .str(key)
        .str("cpu")
        .integer(numel)
        .tuple()
        .binpersid();
  }
  // torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())
  PickleWriter& tensor_v2(std::string_view cls, std::string_view key, int64_t numel, int64_t offset,
                          const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
    global("torch._utils", "_rebuild_tensor_v2").mark();
    storage(cls, key, numel).integer(offset).int_tuple(size).int_tuple(stride).boolean(false);
    return global("collections", "OrderedDict").empty_tuple().reduce().tuple().reduce();
  }

  const std::string& bytes() const { return out_; }
  std::span<const uint8_t> span() const { return as_bytes(out_); }

 private:
  std::string out_;
};

inline uint32_t crc32(std::string_view data) {
  static const auto table = [] {
    std::vector<uint32_t> t(256);
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xffffffffu;
  for (unsigned char b : data) c = table[(c ^ b) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

// A zip archive of stored entries, laid out like any plain zip writer does.
class ZipWriter {
 public:
  ZipWriter& add(std::string name, std::string data) {
    entries_.push_back({std::move(name), std::move(data), 0, std::nullopt});
    return *this;
  }
  // An entry whose headers claim a compression method and uncompressed size (the data is left
  // as given): for archives that lie about their sizes.
  ZipWriter& add_claiming(std::string name, std::string data, uint16_t method,
                          uint32_t claimed_size) {
    entries_.push_back({std::move(name), std::move(data), method, claimed_size});
    return *this;
  }
  std::string build() const {
    std::string out;
    std::string central;
    for (const auto& [name, data, method, claimed] : entries_) {
      const uint32_t crc = crc32(data);
      const uint64_t usize = claimed ? *claimed : data.size();
      const size_t local_offset = out.size();
      put_le(out, 0x04034b50, 4);
      put_le(out, 20, 2);  // version needed
      put_le(out, 0, 2);   // flags
      put_le(out, method, 2);
      put_le(out, 0, 2);     // time
      put_le(out, 0x21, 2);  // date: 1980-01-01
      put_le(out, crc, 4);
      put_le(out, data.size(), 4);
      put_le(out, usize, 4);
      put_le(out, name.size(), 2);
      put_le(out, 0, 2);
      out += name;
      out += data;

      put_le(central, 0x02014b50, 4);
      put_le(central, 20, 2);
      put_le(central, 20, 2);
      put_le(central, 0, 2);  // flags
      put_le(central, method, 2);
      put_le(central, 0, 2);
      put_le(central, 0x21, 2);
      put_le(central, crc, 4);
      put_le(central, data.size(), 4);
      put_le(central, usize, 4);
      put_le(central, name.size(), 2);
      put_le(central, 0, 2);  // extra
      put_le(central, 0, 2);  // comment
      put_le(central, 0, 2);  // disk
      put_le(central, 0, 2);  // internal attributes
      put_le(central, 0, 4);  // external attributes
      put_le(central, local_offset, 4);
      central += name;
    }
    const size_t central_offset = out.size();
    out += central;
    put_le(out, 0x06054b50, 4);
    put_le(out, 0, 2);
    put_le(out, 0, 2);
    put_le(out, entries_.size(), 2);
    put_le(out, entries_.size(), 2);
    put_le(out, central.size(), 4);
    put_le(out, central_offset, 4);
    put_le(out, 0, 2);
    return out;
  }

 private:
  struct Entry {
    std::string name;
    std::string data;
    uint16_t method;
    std::optional<uint32_t> claimed_size;
  };
  std::vector<Entry> entries_;
};

// Raw little-endian bytes of a vector of values.
template <typename T>
std::string bytes_of(const std::vector<T>& values) {
  std::string s(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(s.data(), values.data(), s.size());
  return s;
}

struct TensorSpec {
  std::string name;
  std::string storage_class;  // "FloatStorage", ...
  std::string key;
  int64_t numel;  // of the storage
  int64_t offset;
  std::vector<int64_t> size;
  std::vector<int64_t> stride;
};

// data.pkl of an OrderedDict state dict, as torch.save writes it (protocol 2).
inline std::string state_dict_pickle(const std::vector<TensorSpec>& tensors) {
  PickleWriter w;
  w.proto(2).global("collections", "OrderedDict").empty_tuple().reduce().mark();
  for (const TensorSpec& t : tensors)
    w.str(t.name).tensor_v2(t.storage_class, t.key, t.numel, t.offset, t.size, t.stride);
  return w.setitems().stop().bytes();
}

// A torch.save-shaped zip: <prefix>data.pkl, <prefix>data/<key> for each storage, <prefix>version.
inline std::string torch_zip(const std::string& prefix, const std::string& pickle,
                             const std::vector<std::pair<std::string, std::string>>& storages,
                             const std::string& byteorder = "") {
  ZipWriter z;
  z.add(prefix + "data.pkl", pickle);
  if (!byteorder.empty()) z.add(prefix + "byteorder", byteorder);
  for (const auto& [key, data] : storages) z.add(prefix + "data/" + key, data);
  z.add(prefix + "version", "3\n");
  return z.build();
}

}  // namespace modex::test
