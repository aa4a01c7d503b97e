#include "io/pytorch/torch_archive.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <unordered_map>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "core/error.h"
#include "io/pytorch/untrusted_text.h"

namespace modex::pytorch {
namespace {

// data.pkl only describes the objects; even large optimizer states stay far below this.
constexpr uint64_t kMaxPickleBytes = uint64_t{256} << 20;
constexpr uint64_t kMaxSmallEntryBytes = 64;
// Far beyond any real checkpoint; keeps sums of entry sizes clear of overflow.
constexpr uint64_t kMaxTotalBytes = uint64_t{1} << 46;
// Room for strided copies beyond the size of the storages themselves (see materialize()).
constexpr uint64_t kCopyAllowance = uint64_t{64} << 20;

// Storages are converted to, and tensors handed out in, the host's order.
static_assert(std::endian::native == std::endian::little, "modex assumes a little-endian host");

size_t storage_itemsize(const pickle::StorageRef& s) {
  return s.cls.untyped ? 1 : dtype_size(s.cls.dtype);
}

// On Linux systems where transparent huge pages are opt-in, first-touch page faults cost more
// than reading the data (measured: ~1.2 ms per MB on 4 KiB pages, ~0.3 ms with 2 MiB pages), so
// large storage buffers ask for huge pages. Purely advice: failure just means small pages.
void advise_huge_pages(Buffer& buffer) {
#ifdef __linux__
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  if (buffer.size() < 2 * kHugePage) return;
  const uintptr_t addr = reinterpret_cast<uintptr_t>(buffer.data());
  const uintptr_t begin = (addr + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (addr + buffer.size()) & ~(kHugePage - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)buffer;
#endif
}

std::string trim(std::string s) {
  const char* ws = " \t\r\n";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

template <typename T>
void swap_elements(uint8_t* p, size_t count) {
  for (size_t i = 0; i < count; ++i, p += sizeof(T)) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    if constexpr (sizeof(T) == 2) v = __builtin_bswap16(v);
    if constexpr (sizeof(T) == 4) v = __builtin_bswap32(v);
    if constexpr (sizeof(T) == 8) v = __builtin_bswap64(v);
    std::memcpy(p, &v, sizeof(T));
  }
}

void swap_to_little_endian(uint8_t* p, size_t nbytes, size_t itemsize) {
  size_t count = nbytes / itemsize;
  switch (itemsize) {
    case 2:
      swap_elements<uint16_t>(p, count);
      break;
    case 4:
      swap_elements<uint32_t>(p, count);
      break;
    case 8:
      swap_elements<uint64_t>(p, count);
      break;
    default:
      break;  // single bytes have no order
  }
}

bool is_contiguous(const Dims& size, const Dims& stride) {
  int64_t expected = 1;
  for (size_t i = size.size(); i-- > 0;) {
    if (size[i] != 1 && stride[i] != expected) return false;
    expected *= size[i];
  }
  return true;
}

// Copies a strided view into C order. The innermost dimension is a tight loop of fixed-size
// copies; the outer ones advance an index counter, so there is no per-element dispatch.
template <size_t kItem>
void gather_strided(const uint8_t* src, uint8_t* dst, const Dims& size, const Dims& stride) {
  const size_t rank = size.size();
  if (rank == 0) {
    std::memcpy(dst, src, kItem);
    return;
  }
  const int64_t inner = size[rank - 1];
  const int64_t inner_step = stride[rank - 1] * static_cast<int64_t>(kItem);
  std::vector<int64_t> index(rank - 1, 0);
  int64_t base = 0;  // element offset of the current row
  while (true) {
    const uint8_t* row = src + base * static_cast<int64_t>(kItem);
    for (int64_t j = 0; j < inner; ++j) {
      std::memcpy(dst, row + j * inner_step, kItem);
      dst += kItem;
    }
    size_t d = rank - 1;
    while (d > 0) {
      --d;
      if (++index[d] < size[d]) {
        base += stride[d];
        break;
      }
      base -= (size[d] - 1) * stride[d];
      index[d] = 0;
      if (d == 0) return;
    }
    if (rank == 1) return;
  }
}

}  // namespace

TorchArchive::TorchArchive(std::unique_ptr<ZipArchive> zip) : zip_(std::move(zip)) {
  const auto& entries = zip_->entries();
  if (entries.empty()) throw Error("the zip archive has no entries");
  // torch.save puts everything under one folder named after the file ("archive" for buffers);
  // the name is whatever the first entry says, never assumed.
  const std::string& first = entries.front().name;
  size_t slash = first.find('/');
  if (slash == std::string::npos || slash == 0)
    throw Error("not a torch.save checkpoint: zip entry '" + printable(first) +
                "' is not inside a top-level folder");
  prefix_ = first.substr(0, slash + 1);

  // TorchScript archives share the layout but hold code (code/, constants.pkl) to be executed.
  if (zip_->find(prefix_ + "constants.pkl") != nullptr ||
      std::any_of(entries.begin(), entries.end(), [&](const ZipArchive::Entry& e) {
        return e.name.starts_with(prefix_ + "code/");
      })) {
    throw Error("this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint",
                ErrorKind::kUnsupported)
        .hint("load it in Python and save only the weights: torch.save(model.state_dict(), path)");
  }

  const ZipArchive::Entry* pkl = zip_->find(prefix_ + "data.pkl");
  if (pkl == nullptr)
    throw Error("not a torch.save checkpoint: the zip has no '" + printable(prefix_) + "data.pkl'");

  if (const ZipArchive::Entry* order = zip_->find(prefix_ + "byteorder")) {
    std::string value = trim(zip_->read_text(*order, kMaxSmallEntryBytes));
    if (value == "big") {
      big_endian_ = true;
    } else if (value != "little") {
      throw Error("'" + printable(order->name) + "' says '" + printable(value) +
                  "'; expected 'little' or 'big'");
    }
  }
  if (const ZipArchive::Entry* version = zip_->find(prefix_ + "version")) {
    // Only checked for readability: the pickle itself tells which rebuild functions it needs.
    zip_->read_text(*version, kMaxSmallEntryBytes);
  }

  std::string pickle_bytes = zip_->read_text(*pkl, kMaxPickleBytes);
  pickled_ = pickle::unpickle(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(pickle_bytes.data()),
                               pickle_bytes.size()),
      "data.pkl");
}

std::vector<Tensor> TorchArchive::materialize(const std::vector<TensorRequest>& requests) {
  // Plan first: every storage the requests use must exist and hold its declared bytes before
  // anything is allocated.
  std::unordered_map<std::string, StorageSlot> slots;
  std::vector<StorageSlot*> read_order;
  uint64_t total = 0;
  for (const TensorRequest& req : requests) {
    const pickle::StorageRef& storage = *req.ref->storage->storage;
    auto [it, inserted] = slots.try_emplace(storage.key);
    if (!inserted) continue;
    const std::string entry_name = prefix_ + "data/" + storage.key;
    const ZipArchive::Entry* entry = zip_->find(entry_name);
    if (entry == nullptr)
      throw Error("storage '" + printable(storage.key) + "' is missing: the zip has no entry '" +
                  printable(entry_name) + "'")
          .tensor(printable(req.name));
    // The unpickler checked that numel * itemsize cannot overflow.
    const uint64_t declared = static_cast<uint64_t>(storage.numel) * storage_itemsize(storage);
    if (entry->size < declared)
      throw Error("storage '" + printable(storage.key) + "': entry '" + printable(entry_name) +
                  "' holds " + std::to_string(entry->size) + " bytes but the pickle declares " +
                  std::to_string(storage.numel) + " " +
                  (storage.cls.untyped ? std::string("bytes")
                                       : std::string(dtype_name(storage.cls.dtype)) + " elements") +
                  " (" + std::to_string(declared) + " bytes)")
          .tensor(printable(req.name));
    if (total + entry->size < total || total + entry->size > kMaxTotalBytes)
      throw Error("the checkpoint's storages add up to an implausible size");
    total += entry->size;
    it->second.entry = entry;
    read_order.push_back(&it->second);
  }

  // Each storage gets its own buffer, read straight from the archive (one copy of the weights in
  // memory), so a tensor whose storage nobody else uses owns its memory alone and later passes
  // can modify it in place. Archive order keeps the file reads sequential.
  std::sort(read_order.begin(), read_order.end(), [](const StorageSlot* a, const StorageSlot* b) {
    return a->entry->index < b->entry->index;
  });
  // Big-endian storages are converted below, so they are read now. The others are read, and
  // their CRC checked, when first used: a weight an export writes unchanged is then in memory only
  // while it is written, and damage is still found before any output is committed.
  const bool lazy = !zip_->path().empty() && !big_endian_;
  for (StorageSlot* slot : read_order) {
    const size_t size = static_cast<size_t>(slot->entry->size);
    if (lazy) {
      slot->bytes = Buffer::allocate_lazy(size, [zip = zip_, entry = slot->entry](uint8_t* out) {
        try {
          zip->read_into(*entry, out);
        } catch (Error& e) {
          e.file(zip->path().string());
          throw;
        }
      });
      continue;
    }
    // Movable: a writer can hand the bytes to its output without a copy.
    slot->bytes = Buffer::allocate_movable(size);
    advise_huge_pages(*slot->bytes);
    zip_->read_into(*slot->entry, slot->bytes->data());
  }

  // Strided views are copied; between them they may not need more than the storages plus a
  // little (non-overlapping views never do).
  uint64_t copy_budget = total + kCopyAllowance;
  std::vector<Tensor> tensors;
  tensors.reserve(requests.size());
  for (const TensorRequest& req : requests) {
    try {
      const pickle::TensorRef& ref = *req.ref;
      const pickle::StorageRef& storage = *ref.storage->storage;
      StorageSlot& slot = slots.at(storage.key);
      const size_t itemsize = dtype_size(ref.dtype);
      if (big_endian_ && itemsize > 1) {
        if (slot.swapped_itemsize == 0) {
          // Only the declared part: an untyped storage's tail may not be a whole element.
          swap_to_little_endian(
              slot.bytes->data(), static_cast<size_t>(storage.numel) * storage_itemsize(storage), itemsize);
          slot.swapped_itemsize = itemsize;
        } else if (slot.swapped_itemsize != itemsize) {
          throw Error("storage '" + printable(storage.key) + "' is viewed with element sizes " +
                      std::to_string(slot.swapped_itemsize) + " and " + std::to_string(itemsize) +
                      " in a big-endian checkpoint; its byte order cannot be converted for both");
        }
      }
      // The unpickler proved offset + extent lies inside the declared storage, and the plan above
      // that the entry holds the declared bytes.
      const size_t byte_offset = static_cast<size_t>(ref.offset) * itemsize;
      if (checked_numel(ref.size) == 0) {
        tensors.push_back(Tensor::view(slot.bytes, 0, ref.dtype, ref.size));
      } else if (is_contiguous(ref.size, ref.stride)) {
        tensors.push_back(Tensor::view(slot.bytes, byte_offset, ref.dtype, ref.size));
      } else {
        // Views with zero or overlapping strides (expand()) can be far larger than their
        // storage once made contiguous; a few bytes of pickle must not demand gigabytes.
        uint64_t copy_bytes;
        if (__builtin_mul_overflow(static_cast<uint64_t>(checked_numel(ref.size)), itemsize,
                                   &copy_bytes) ||
            copy_bytes > copy_budget)
          throw Error("this strided view of size " + dims_to_string(ref.size) + " and stride " +
                          dims_to_string(ref.stride) +
                          " would need more memory as a contiguous tensor than the "
                          "checkpoint's storages hold",
                      ErrorKind::kUnsupported);
        copy_budget -= copy_bytes;
        std::shared_ptr<Buffer> out = Buffer::allocate(static_cast<size_t>(copy_bytes));
        const uint8_t* src = slot.bytes->data() + byte_offset;
        switch (itemsize) {
          case 1:
            gather_strided<1>(src, out->data(), ref.size, ref.stride);
            break;
          case 2:
            gather_strided<2>(src, out->data(), ref.size, ref.stride);
            break;
          case 4:
            gather_strided<4>(src, out->data(), ref.size, ref.stride);
            break;
          case 8:
            gather_strided<8>(src, out->data(), ref.size, ref.stride);
            break;
          default:
            throw Error("unexpected element size " + std::to_string(itemsize),
                        ErrorKind::kInternal);
        }
        tensors.push_back(Tensor::view(std::move(out), 0, ref.dtype, ref.size));
      }
    } catch (Error& e) {
      e.tensor(printable(req.name));
      throw;
    }
  }
  return tensors;
}

}  // namespace modex::pytorch
