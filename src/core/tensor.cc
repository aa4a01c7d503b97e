#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <limits>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "core/half.h"

namespace modex {

namespace {

#ifdef __linux__
constexpr size_t kHugePage = size_t{2} << 20, kSmallPage = 4096;
constexpr size_t kHugePageFrom = size_t{1} << 20;

// A 2 MiB-aligned mapping advised MADV_HUGEPAGE; nullptr when the mapping fails. Why: where
// transparent huge pages are opt-in (`madvise`, Debian's default), a network's activation arena,
// packed weights and scratch otherwise sit on 4 KiB pages, and the page walks of kernels that
// stream megabytes cost a lot: resnet18 at 1 thread 37.6 -> 31.2 ms (`modex bench`, median of 40).
// A buffer under 2 MiB takes one whole huge page (at most 1 MiB of slack); a larger one its whole
// huge pages and the tail on small pages (rounding those up too measured no faster, and cost
// resnet50 34 MB more peak RSS).
void* map_huge(size_t bytes, size_t& mapped) {
  mapped = bytes < kHugePage ? kHugePage : (bytes + kSmallPage - 1) / kSmallPage * kSmallPage;
  const size_t span = mapped + kHugePage;
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (begin + kHugePage - 1) & ~(kHugePage - 1);
  if (aligned > begin) munmap(raw, aligned - begin);
  const uintptr_t end = begin + span, used_end = aligned + mapped;
  if (end > used_end) munmap(reinterpret_cast<void*>(used_end), end - used_end);
  madvise(reinterpret_cast<void*>(aligned), mapped, MADV_HUGEPAGE);  // advice: failure keeps small pages
  return reinterpret_cast<void*>(aligned);
}
#endif

}  // namespace

std::shared_ptr<Buffer> Buffer::allocate(size_t nbytes) {
  size_t rounded = (nbytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
#ifdef __linux__
  if (rounded >= kHugePageFrom) {
    size_t mapped = 0;
    if (void* p = map_huge(rounded, mapped)) {
      auto buffer = std::shared_ptr<Buffer>(new Buffer(static_cast<uint8_t*>(p), nbytes));
      buffer->mapped_ = mapped;
      return buffer;
    }
  }
#endif
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw Error("out of memory allocating " + std::to_string(nbytes) + " bytes");
  return std::shared_ptr<Buffer>(new Buffer(static_cast<uint8_t*>(p), nbytes));
}

std::shared_ptr<Buffer> Buffer::allocate_movable(size_t nbytes) {
  auto bytes = std::make_unique<std::string>();
  bytes->resize(nbytes);
  auto* b = new Buffer(reinterpret_cast<uint8_t*>(bytes->data()), nbytes);
  b->bytes_ = std::move(bytes);
  return std::shared_ptr<Buffer>(b);
}

std::shared_ptr<Buffer> Buffer::allocate_lazy(size_t nbytes, std::function<void(uint8_t*)> fill) {
  auto* b = new Buffer(nullptr, nbytes);
  b->bytes_ = std::make_unique<std::string>();
  b->fill_ = std::move(fill);
  b->unfilled_.store(true, std::memory_order_release);
  return std::shared_ptr<Buffer>(b);
}

void Buffer::fill() {
  std::call_once(fill_once_, [this] {
    std::string bytes(size_, '\0');
    fill_(reinterpret_cast<uint8_t*>(bytes.data()));
    *bytes_ = std::move(bytes);
    data_ = reinterpret_cast<uint8_t*>(bytes_->data());
    fill_ = nullptr;  // lets go of whatever it read from
    unfilled_.store(false, std::memory_order_release);
  });
}

Buffer::~Buffer() {
  if (bytes_) return;
#ifdef __linux__
  if (mapped_) {
    munmap(data_, mapped_);
    return;
  }
#endif
  std::free(data_);
}

std::optional<std::string> Buffer::release_bytes() {
  if (!bytes_) return std::nullopt;
  data();  // a lazy buffer is filled first
  std::string out = std::move(*bytes_);
  bytes_->clear();
  data_ = reinterpret_cast<uint8_t*>(bytes_->data());
  size_ = 0;
  return out;
}

int64_t checked_numel(const Dims& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error("negative dimension in shape " + dims_to_string(shape));
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d)
      throw Error("shape " + dims_to_string(shape) + " has too many elements");
    n *= d;
  }
  return n;
}

std::string dims_to_string(const Dims& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

Tensor Tensor::zeros(DType dtype, Dims shape) {
  Tensor t;
  t.numel_ = checked_numel(shape);
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.buffer_ = Buffer::allocate(t.nbytes());
  std::memset(t.buffer_->data(), 0, t.nbytes());
  return t;
}

Tensor Tensor::empty(DType dtype, Dims shape) {
  Tensor t;
  t.numel_ = checked_numel(shape);
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.buffer_ = Buffer::allocate(t.nbytes());
  return t;
}

Tensor Tensor::view(std::shared_ptr<Buffer> buffer, size_t offset, DType dtype, Dims shape) {
  Tensor t;
  t.numel_ = checked_numel(shape);
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  if (!buffer || offset > buffer->size() || t.nbytes() > buffer->size() - offset)
    throw Error("tensor view of " + std::to_string(t.nbytes()) + " bytes at offset " +
                std::to_string(offset) + " exceeds its storage");
  t.buffer_ = std::move(buffer);
  t.offset_ = offset;
  return t;
}

Tensor Tensor::from_floats(Dims shape, std::span<const float> values) {
  Tensor t = zeros(DType::kFloat32, std::move(shape));
  if (static_cast<size_t>(t.numel()) != values.size())
    throw Error("from_floats: " + std::to_string(values.size()) + " values for shape " +
                    dims_to_string(t.shape()),
                ErrorKind::kInternal);
  if (!values.empty()) std::memcpy(t.raw_mutable(), values.data(), t.nbytes());
  return t;
}

Tensor Tensor::from_int64s(Dims shape, std::span<const int64_t> values) {
  Tensor t = zeros(DType::kInt64, std::move(shape));
  if (static_cast<size_t>(t.numel()) != values.size())
    throw Error("from_int64s: value count does not match shape", ErrorKind::kInternal);
  if (!values.empty()) std::memcpy(t.raw_mutable(), values.data(), t.nbytes());
  return t;
}

std::string Tensor::take_bytes() {
  std::string out;
  bool moved = false;
  if (buffer_ && unique() && offset_ == 0 && nbytes() == buffer_->size()) {
    if (auto bytes = buffer_->release_bytes()) {
      out = std::move(*bytes);
      moved = true;
    }
  }
  if (!moved && buffer_) out.assign(reinterpret_cast<const char*>(raw()), nbytes());
  *this = Tensor();
  return out;
}

Tensor Tensor::reshaped(Dims shape) const {
  Tensor t = *this;
  int64_t n = checked_numel(shape);
  if (n != numel_)
    throw Error("cannot reshape " + dims_to_string(shape_) + " to " + dims_to_string(shape));
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(dtype_, shape_);  // every byte is copied over
  if (nbytes()) std::memcpy(t.raw_mutable(), raw(), nbytes());
  return t;
}

namespace {
template <typename T>
double load_as_double(const uint8_t* p, int64_t i) {
  T v;
  std::memcpy(&v, p + i * sizeof(T), sizeof(T));
  return static_cast<double>(v);
}

double element_as_double(DType dt, const uint8_t* p, int64_t i) {
  switch (dt) {
    case DType::kFloat32: return load_as_double<float>(p, i);
    case DType::kFloat64: return load_as_double<double>(p, i);
    case DType::kFloat16: {
      uint16_t h;
      std::memcpy(&h, p + i * 2, 2);
      return f16_to_f32(h);
    }
    case DType::kBFloat16: {
      uint16_t h;
      std::memcpy(&h, p + i * 2, 2);
      return bf16_to_f32(h);
    }
    case DType::kInt8: return load_as_double<int8_t>(p, i);
    case DType::kUInt8: return load_as_double<uint8_t>(p, i);
    case DType::kInt16: return load_as_double<int16_t>(p, i);
    case DType::kUInt16: return load_as_double<uint16_t>(p, i);
    case DType::kInt32: return load_as_double<int32_t>(p, i);
    case DType::kUInt32: return load_as_double<uint32_t>(p, i);
    case DType::kInt64: return load_as_double<int64_t>(p, i);
    case DType::kUInt64: return load_as_double<uint64_t>(p, i);
    case DType::kBool: return p[i] ? 1.0 : 0.0;
  }
  return 0.0;
}

template <typename T>
void store_from_double(uint8_t* p, int64_t i, double v) {
  T x = static_cast<T>(v);
  std::memcpy(p + i * sizeof(T), &x, sizeof(T));
}

void store_element(DType dt, uint8_t* p, int64_t i, double v) {
  switch (dt) {
    case DType::kFloat32: store_from_double<float>(p, i, v); break;
    case DType::kFloat64: store_from_double<double>(p, i, v); break;
    case DType::kFloat16: {
      uint16_t h = f32_to_f16(static_cast<float>(v));
      std::memcpy(p + i * 2, &h, 2);
      break;
    }
    case DType::kBFloat16: {
      uint16_t h = f32_to_bf16(static_cast<float>(v));
      std::memcpy(p + i * 2, &h, 2);
      break;
    }
    case DType::kInt8: store_from_double<int8_t>(p, i, v); break;
    case DType::kUInt8: store_from_double<uint8_t>(p, i, v); break;
    case DType::kInt16: store_from_double<int16_t>(p, i, v); break;
    case DType::kUInt16: store_from_double<uint16_t>(p, i, v); break;
    case DType::kInt32: store_from_double<int32_t>(p, i, v); break;
    case DType::kUInt32: store_from_double<uint32_t>(p, i, v); break;
    case DType::kInt64: store_from_double<int64_t>(p, i, v); break;
    case DType::kUInt64: store_from_double<uint64_t>(p, i, v); break;
    case DType::kBool: p[i] = v != 0.0; break;
  }
}
}  // namespace

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor t = zeros(dtype, shape_);
  const uint8_t* src = raw();
  uint8_t* dst = t.raw_mutable();
  if (dtype_ == DType::kFloat16 && dtype == DType::kFloat32) {
    float* out = reinterpret_cast<float*>(dst);
    for (int64_t i = 0; i < numel_; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      out[i] = f16_to_f32(h);
    }
    return t;
  }
  for (int64_t i = 0; i < numel_; ++i) store_element(dtype, dst, i, element_as_double(dtype_, src, i));
  return t;
}

std::vector<float> Tensor::to_float_vector() const {
  Tensor f = to(DType::kFloat32);
  return std::vector<float>(f.data<float>(), f.data<float>() + f.numel());
}

std::vector<int64_t> Tensor::to_int64_vector() const {
  std::vector<int64_t> out(static_cast<size_t>(numel_));
  if (dtype_ == DType::kInt64) {
    if (numel_) std::memcpy(out.data(), raw(), nbytes());
    return out;
  }
  for (int64_t i = 0; i < numel_; ++i)
    out[static_cast<size_t>(i)] = static_cast<int64_t>(element_as_double(dtype_, raw(), i));
  return out;
}

}  // namespace modex
