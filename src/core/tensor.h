// A dense, C-ordered tensor: dtype, concrete shape and a byte range of a shared buffer. Copies
// share storage; mutate only through a tensor that owns its buffer alone (see unique()).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace modex {

// Heap bytes: 64-byte aligned (from 1 MiB on, whole 2 MiB-aligned pages that ask the kernel for
// transparent huge pages, see allocate()), or (allocate_movable) held in a std::string so that a writer
// can hand them to a protobuf `bytes` field without copying (16-byte aligned), or (allocate_lazy)
// a movable buffer filled on first access.
class Buffer {
 public:
  static std::shared_ptr<Buffer> allocate(size_t nbytes);
  static std::shared_ptr<Buffer> allocate_movable(size_t nbytes);
  // Allocated and filled (fill writes all nbytes) when data() is first called, from any thread;
  // an exception from fill propagates, and the next access tries again. A checkpoint's weights
  // are read this way, so that those an export passes through unchanged are read only when
  // written, and released then, instead of all being held at once.
  static std::shared_ptr<Buffer> allocate_lazy(size_t nbytes, std::function<void(uint8_t*)> fill);
  ~Buffer();
  // Moves the bytes out of a movable buffer (leaving it empty); nullopt for aligned buffers.
  std::optional<std::string> release_bytes();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  uint8_t* data() {
    if (unfilled_.load(std::memory_order_acquire)) fill();
    return data_;
  }
  const uint8_t* data() const { return const_cast<Buffer*>(this)->data(); }  // filling is not a change of value
  size_t size() const { return size_; }
  // False for a lazy buffer not filled yet.
  bool in_memory() const { return !unfilled_.load(std::memory_order_acquire); }

 private:
  Buffer(uint8_t* data, size_t size) : data_(data), size_(size) {}
  void fill();
  uint8_t* data_;
  size_t size_;
  size_t mapped_ = 0;                    // bytes mmap'ed at data_ (huge-page buffers), else 0
  std::unique_ptr<std::string> bytes_;  // set for movable buffers; data_ points into it
  std::function<void(uint8_t*)> fill_;  // lazy buffers, until filled
  std::once_flag fill_once_;
  std::atomic<bool> unfilled_{false};
};

using Dims = std::vector<int64_t>;

// Number of elements; throws Error on negative dims or overflow.
int64_t checked_numel(const Dims& shape);
std::string dims_to_string(const Dims& shape);

class Tensor {
 public:
  Tensor() = default;
  // Zero-initialised tensor.
  static Tensor zeros(DType dtype, Dims shape);
  // Uninitialised tensor, for kernels that write every element.
  static Tensor empty(DType dtype, Dims shape);
  // A view of existing storage: bytes [offset, offset + nbytes) of buffer.
  static Tensor view(std::shared_ptr<Buffer> buffer, size_t offset, DType dtype, Dims shape);
  static Tensor from_floats(Dims shape, std::span<const float> values);
  static Tensor from_int64s(Dims shape, std::span<const int64_t> values);
  static Tensor scalar_float(float v) { return from_floats({}, std::span<const float>(&v, 1)); }

  bool defined() const { return buffer_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Dims& shape() const { return shape_; }
  int64_t rank() const { return static_cast<int64_t>(shape_.size()); }
  int64_t dim(int64_t i) const { return shape_.at(static_cast<size_t>(i < 0 ? i + rank() : i)); }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }

  const uint8_t* raw() const { return buffer_->data() + offset_; }
  uint8_t* raw_mutable() { return buffer_->data() + offset_; }
  template <typename T>
  const T* data() const {
    return reinterpret_cast<const T*>(raw());
  }
  template <typename T>
  T* data_mutable() {
    return reinterpret_cast<T*>(raw_mutable());
  }
  template <typename T>
  std::span<const T> values() const {
    return {data<T>(), static_cast<size_t>(numel_)};
  }

  // False while the data is still to be read (Buffer::allocate_lazy).
  bool in_memory() const { return buffer_->in_memory(); }
  // True when no other tensor shares this storage, so in-place changes are invisible elsewhere.
  bool unique() const { return buffer_.use_count() == 1; }
  // The bytes, moved out without a copy when this tensor owns a whole movable buffer alone;
  // copied otherwise. The tensor is left undefined either way.
  std::string take_bytes();
  // Same data, new shape with equal numel.
  Tensor reshaped(Dims shape) const;
  // A private copy (deep).
  Tensor clone() const;
  // Converted to another dtype (float16/bfloat16/float64/ints <-> float32). Returns *this when
  // already of that dtype.
  Tensor to(DType dtype) const;
  // The tensor as float32 values (converting if needed).
  std::vector<float> to_float_vector() const;
  std::vector<int64_t> to_int64_vector() const;

 private:
  std::shared_ptr<Buffer> buffer_;
  size_t offset_ = 0;
  DType dtype_ = DType::kFloat32;
  Dims shape_;
  int64_t numel_ = 0;
};

}  // namespace modex
