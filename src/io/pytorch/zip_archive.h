// Read-only access to a zip archive through libzip, from memory or from a file, with every size
// taken from the central directory checked against the archive before anything is allocated.
// Entries are read whole into their own 64-byte aligned Buffer (so tensors can view them
// without another copy) and their CRC is verified. Reads may come from several threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

struct zip;
struct zip_source;

namespace modex::pytorch {

class ZipArchive {
 public:
  struct Entry {
    std::string name;
    uint64_t size = 0;  // uncompressed
    uint64_t compressed_size = 0;
    uint16_t method = 0;  // 0 = stored
    uint64_t index = 0;   // libzip's index
  };

  // `data` is borrowed and must outlive the archive.
  static std::unique_ptr<ZipArchive> open_memory(const uint8_t* data, size_t size);
  static std::unique_ptr<ZipArchive> open_file(const std::filesystem::path& path);
  ~ZipArchive();
  ZipArchive(const ZipArchive&) = delete;
  ZipArchive& operator=(const ZipArchive&) = delete;

  // In central-directory order.
  const std::vector<Entry>& entries() const { return entries_; }
  const Entry* find(const std::string& name) const;

  // The entry's bytes in a fresh buffer. Throws Error if the data is shorter or longer than the
  // central directory says, or fails its CRC.
  std::shared_ptr<Buffer> read(const Entry& entry) const;
  // The same into caller-provided memory of at least entry.size bytes.
  void read_into(const Entry& entry, uint8_t* out) const;
  // The file the archive is read from; empty for archives in memory (whose bytes the caller
  // owns, so nothing may read them after the caller is done).
  const std::filesystem::path& path() const { return path_; }
  // A small entry as a string; refuses entries larger than max_size.
  std::string read_text(const Entry& entry, uint64_t max_size) const;

 private:
  static std::unique_ptr<ZipArchive> open_source(struct zip_source* source, uint64_t archive_size);
  ZipArchive(struct zip* archive, uint64_t archive_size);
  void index_entries();

  struct zip* zip_;
  mutable std::mutex mutex_;  // libzip's archive handle is not thread-safe
  uint64_t archive_size_;
  std::filesystem::path path_;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> by_name_;
};

}  // namespace modex::pytorch
