#include "io/pytorch/checkpoint.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <system_error>

#include "core/error.h"
#include "io/pytorch/checkpoint_layout.h"
#include "io/pytorch/safetensors.h"
#include "io/pytorch/torch_archive.h"
#include "io/pytorch/zip_archive.h"

namespace modex {

void StateDict::insert(std::string name, Tensor t) {
  auto [it, inserted] = index_.try_emplace(name, entries_.size());
  if (!inserted) throw Error("duplicate tensor name '" + name + "'");
  entries_.emplace_back(std::move(name), std::move(t));
}

const Tensor* StateDict::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second].second;
}

void StateDict::clear() {
  entries_.clear();
  entries_.shrink_to_fit();
  index_.clear();
}

namespace {

enum class Format { kEmpty, kTorchZip, kSafetensors, kLegacyTorch, kBarePickle, kUnknown };

// Enough bytes to tell the formats apart (the legacy magic number sits in the first 12).
constexpr size_t kSniffBytes = 64;

// torch.save's legacy format begins with the pickled magic number 0x1950a86a20f9469cfc6c
// (a LONG1 opcode with 10 bytes), right after PROTO 2.
constexpr uint8_t kLegacyMagic[] = {0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8};

Format detect(const uint8_t* head, size_t n, uint64_t total_size) {
  if (total_size == 0) return Format::kEmpty;
  // Local file header, or the end record of an empty archive.
  if (n >= 4 && head[0] == 'P' && head[1] == 'K' &&
      ((head[2] == 3 && head[3] == 4) || (head[2] == 5 && head[3] == 6)))
    return Format::kTorchZip;
  if (safetensors::looks_like_safetensors(head, n, total_size)) return Format::kSafetensors;
  if (n >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5) {
    const uint8_t* end = head + n;
    if (std::search(head, end, std::begin(kLegacyMagic), std::end(kLegacyMagic)) != end)
      return Format::kLegacyTorch;
    return Format::kBarePickle;
  }
  return Format::kUnknown;
}

[[noreturn]] void refuse(Format format) {
  switch (format) {
    case Format::kEmpty:
      throw Error("the file is empty");
    case Format::kLegacyTorch:
      throw Error(
          "legacy (pre-1.6) torch.save format; re-save with torch >= 1.6 (torch.save(obj, path))",
          ErrorKind::kUnsupported);
    case Format::kBarePickle:
      throw Error("a bare pickle file, not a torch.save zip checkpoint or safetensors file",
                  ErrorKind::kUnsupported)
          .hint("save the weights with torch.save(model.state_dict(), path) using torch >= 1.6");
    default:
      throw Error(
          "unrecognised file format: expected a torch.save zip checkpoint (.pt/.pth) or a "
          "safetensors file");
  }
}

Checkpoint finish(Checkpoint ck) {
  pytorch::strip_wrapper_prefixes(ck.weights, ck.stripped_prefixes);
  return ck;
}

Checkpoint load_torch_zip(std::unique_ptr<pytorch::ZipArchive> zip) {
  pytorch::TorchArchive archive(std::move(zip));
  Checkpoint ck;
  ck.format = "pytorch-zip";
  pytorch::StateDictLocation where = pytorch::find_state_dict(archive.root());
  ck.state_dict_key = where.key;
  // Only the chosen dict's tensors are materialised; other values (optimizer state, epoch
  // counters, nested dicts) are skipped without reading their storages.
  std::vector<pytorch::TorchArchive::TensorRequest> requests;
  for (const auto& [key, value] : where.dict->items()) {
    if (key->is(pickle::ValueKind::kString) && value->is(pickle::ValueKind::kTensor))
      requests.push_back({key->text, value->tensor.get()});
  }
  std::vector<Tensor> tensors = archive.materialize(requests);
  for (size_t i = 0; i < requests.size(); ++i)
    ck.weights.insert(requests[i].name, std::move(tensors[i]));
  ck.config = pytorch::read_config(archive.root());
  return finish(std::move(ck));
}

Checkpoint load_safetensors(std::shared_ptr<Buffer> file) {
  safetensors::File parsed = safetensors::parse(std::move(file));
  Checkpoint ck;
  ck.format = "safetensors";
  ck.weights = std::move(parsed.weights);
  ck.config = pytorch::config_from_metadata(parsed.metadata);
  return finish(std::move(ck));
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// Reads `n` bytes from the start of the file into a fresh buffer (safetensors tensors view it,
// so the file's bytes are held exactly once).
std::shared_ptr<Buffer> read_into_buffer(std::FILE* f, uint64_t n) {
  std::shared_ptr<Buffer> buffer = Buffer::allocate(static_cast<size_t>(n));
  if (std::fseek(f, 0, SEEK_SET) != 0 ||
      std::fread(buffer->data(), 1, static_cast<size_t>(n), f) != n)
    throw Error("cannot read file: " + std::string(std::strerror(errno)), ErrorKind::kIo);
  return buffer;
}

Checkpoint load_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw Error("is a directory, not a checkpoint file", ErrorKind::kIo);
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  if (!f) throw Error("cannot open file: " + std::string(std::strerror(errno)), ErrorKind::kIo);
  uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) throw Error("cannot read file: " + ec.message(), ErrorKind::kIo);
  uint8_t head[kSniffBytes];
  size_t n = std::fread(head, 1, sizeof head, f.get());
  Format format = detect(head, n, size);
  switch (format) {
    case Format::kTorchZip:
      f.reset();
      // libzip reads the file itself: each storage goes straight into its tensor's buffer, so
      // peak memory is one copy of the weights.
      return load_torch_zip(pytorch::ZipArchive::open_file(path));
    case Format::kSafetensors:
      return load_safetensors(read_into_buffer(f.get(), size));
    default:
      refuse(format);
  }
}

Checkpoint load_memory(const uint8_t* data, size_t size) {
  Format format = detect(data, std::min(size, kSniffBytes), size);
  switch (format) {
    case Format::kTorchZip:
      return load_torch_zip(pytorch::ZipArchive::open_memory(data, size));
    case Format::kSafetensors: {
      std::shared_ptr<Buffer> copy = Buffer::allocate(size);
      std::memcpy(copy->data(), data, size);
      return load_safetensors(std::move(copy));
    }
    default:
      refuse(format);
  }
}

}  // namespace

Checkpoint load_checkpoint(const std::filesystem::path& path) {
  try {
    Checkpoint ck = load_file(path);
    ck.path = path;
    return ck;
  } catch (Error& e) {
    e.file(path.string());
    throw;
  } catch (const std::bad_alloc&) {
    throw Error("out of memory while loading the checkpoint").file(path.string());
  }
}

Checkpoint load_checkpoint_from_memory(const uint8_t* data, size_t size, const std::string& name) {
  try {
    Checkpoint ck = load_memory(data, size);
    ck.path = name;
    return ck;
  } catch (Error& e) {
    e.file(name);
    throw;
  } catch (const std::bad_alloc&) {
    throw Error("out of memory while loading the checkpoint").file(name);
  }
}

}  // namespace modex
