// Files: whole-file reads, atomic writes (temporary file + rename, so a failed export never
// leaves a half-written output), and content hashes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace modex {

std::vector<uint8_t> read_file_bytes(const std::filesystem::path& path);
std::string read_file_text(const std::filesystem::path& path);
class Buffer;
// The whole file in an aligned Buffer (for formats whose tensors are viewed in place).
std::shared_ptr<Buffer> read_file_buffer(const std::filesystem::path& path);

// Writes to "<path>.tmp-<random>" in the same directory; commit() fsyncs and renames over path.
// Destroying an uncommitted AtomicFile deletes the temporary file.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  // The open descriptor (read-write), for libraries that stream into a file descriptor.
  int fd() const { return fd_; }
  const std::filesystem::path& temp_path() const { return temp_; }
  void commit();

 private:
  std::filesystem::path path_;
  std::filesystem::path temp_;
  int fd_ = -1;
  bool committed_ = false;
};

// Writes the whole content atomically.
void write_file_atomic(const std::filesystem::path& path, std::string_view content);

// Lower-case hex SHA-256 of a file's bytes, streamed.
std::string sha256_file(const std::filesystem::path& path);
std::string sha256_bytes(const void* data, size_t n);

}  // namespace modex
