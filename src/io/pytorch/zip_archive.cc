#include "io/pytorch/zip_archive.h"

#include <zip.h>

#include <system_error>

#include "core/error.h"
#include "io/pytorch/untrusted_text.h"

namespace modex::pytorch {
namespace {

// Deflate cannot expand data by more than ~1032:1; an entry claiming more is a zip bomb or a
// corrupt directory, and is refused before its size is allocated. (torch.save stores entries
// uncompressed, so real checkpoints are never near this.)
constexpr uint64_t kMaxCompressionRatio = 1032;

std::string libzip_message(zip_error_t* err) {
  std::string s = zip_error_strerror(err);
  zip_error_fini(err);
  return s;
}

struct ZipFileCloser {
  void operator()(zip_file_t* f) const { zip_fclose(f); }
};

}  // namespace

std::unique_ptr<ZipArchive> ZipArchive::open_source(zip_source_t* src, uint64_t archive_size) {
  zip_error_t err;
  zip_error_init(&err);
  // ZIP_CHECKCONS compares every local header with the central directory, catching archives
  // whose two views of an entry disagree (a classic parser-confusion trick).
  zip_t* z = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &err);
  if (z == nullptr) {
    zip_source_free(src);
    throw Error("corrupt or truncated zip archive: " + libzip_message(&err));
  }
  zip_error_fini(&err);
  return std::unique_ptr<ZipArchive>(new ZipArchive(z, archive_size));
}

ZipArchive::ZipArchive(zip_t* archive, uint64_t archive_size)
    : zip_(archive), archive_size_(archive_size) {
  try {
    index_entries();
  } catch (...) {
    zip_discard(zip_);
    throw;
  }
}

ZipArchive::~ZipArchive() { zip_discard(zip_); }

std::unique_ptr<ZipArchive> ZipArchive::open_memory(const uint8_t* data, size_t size) {
  zip_error_t err;
  zip_error_init(&err);
  zip_source_t* src = zip_source_buffer_create(size ? data : nullptr, size, 0, &err);
  if (src == nullptr) throw Error("cannot read zip from memory: " + libzip_message(&err));
  zip_error_fini(&err);
  return open_source(src, size);
}

std::unique_ptr<ZipArchive> ZipArchive::open_file(const std::filesystem::path& path) {
  std::error_code ec;
  uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) throw Error("cannot read file: " + ec.message(), ErrorKind::kIo);
  zip_error_t err;
  zip_error_init(&err);
  zip_source_t* src = zip_source_file_create(path.c_str(), 0, -1 /* to the end */, &err);
  if (src == nullptr) throw Error("cannot open file: " + libzip_message(&err), ErrorKind::kIo);
  zip_error_fini(&err);
  std::unique_ptr<ZipArchive> archive = open_source(src, size);
  archive->path_ = path;
  return archive;
}

void ZipArchive::index_entries() {
  zip_int64_t n = zip_get_num_entries(zip_, 0);
  if (n < 0) throw Error("corrupt zip archive: cannot count its entries");
  entries_.reserve(static_cast<size_t>(n));
  for (zip_int64_t i = 0; i < n; ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(zip_, static_cast<zip_uint64_t>(i), ZIP_FL_ENC_RAW, &st) != 0)
      throw Error("corrupt zip archive: cannot read entry " + std::to_string(i) + ": " +
                  zip_strerror(zip_));
    constexpr zip_uint64_t kNeeded =
        ZIP_STAT_NAME | ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE | ZIP_STAT_COMP_METHOD;
    if ((st.valid & kNeeded) != kNeeded || st.name == nullptr)
      throw Error("corrupt zip archive: entry " + std::to_string(i) + " lacks a name or size");
    Entry e;
    e.name = st.name;
    e.size = st.size;
    e.compressed_size = st.comp_size;
    e.method = st.comp_method;
    e.index = static_cast<uint64_t>(i);
    if (e.compressed_size > archive_size_)
      throw Error("corrupt zip archive: entry '" + printable(e.name) + "' claims " +
                  std::to_string(e.compressed_size) + " bytes in a " +
                  std::to_string(archive_size_) + "-byte file");
    if (e.method == ZIP_CM_STORE && e.size != e.compressed_size)
      throw Error("corrupt zip archive: stored entry '" + printable(e.name) +
                  "' has different sizes (" + std::to_string(e.size) + " vs " +
                  std::to_string(e.compressed_size) + ")");
    if (e.method != ZIP_CM_STORE && e.size / kMaxCompressionRatio > e.compressed_size)
      throw Error("corrupt zip archive: entry '" + printable(e.name) + "' claims to expand " +
                  std::to_string(e.compressed_size) + " bytes to " + std::to_string(e.size));
    if (!by_name_.emplace(e.name, entries_.size()).second)
      throw Error("corrupt zip archive: entry '" + printable(e.name) + "' appears twice");
    entries_.push_back(std::move(e));
  }
}

const ZipArchive::Entry* ZipArchive::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

void ZipArchive::read_into(const Entry& entry, uint8_t* out) const {
  std::lock_guard<std::mutex> lock(mutex_);
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
  // Fuzz builds read stored entries raw, skipping the CRC, so that mutated pickles inside a zip
  // reach the unpickler instead of all failing the checksum.
  const zip_flags_t flags = entry.method == ZIP_CM_STORE ? ZIP_FL_COMPRESSED : 0;
#else
  const zip_flags_t flags = 0;
#endif
  std::unique_ptr<zip_file_t, ZipFileCloser> f(zip_fopen_index(zip_, entry.index, flags));
  if (!f)
    throw Error("cannot read zip entry '" + printable(entry.name) + "': " + zip_strerror(zip_));
  uint64_t got = 0;
  while (got < entry.size) {
    zip_int64_t n = zip_fread(f.get(), out + got, entry.size - got);
    if (n < 0)
      throw Error("corrupt zip entry '" + printable(entry.name) +
                  "': " + zip_file_strerror(f.get()));
    if (n == 0)
      throw Error("corrupt zip entry '" + printable(entry.name) + "': data ends after " +
                  std::to_string(got) + " of " + std::to_string(entry.size) + " bytes");
    got += static_cast<uint64_t>(n);
  }
  // libzip verifies the size and CRC when it reaches the end of the data: read once more to get
  // there (one byte of headroom shows an entry that is longer than declared).
  uint8_t extra;
  zip_int64_t n = zip_fread(f.get(), &extra, 1);
  if (n < 0)
    throw Error("corrupt zip entry '" + printable(entry.name) + "': " + zip_file_strerror(f.get()));
  if (n > 0)
    throw Error("corrupt zip entry '" + printable(entry.name) +
                "': data is longer than its declared size");
}

std::shared_ptr<Buffer> ZipArchive::read(const Entry& entry) const {
  if (entry.size > archive_size_ * kMaxCompressionRatio)  // also rules out size_t overflow
    throw Error("zip entry '" + printable(entry.name) + "' is implausibly large");
  std::shared_ptr<Buffer> buffer = Buffer::allocate(static_cast<size_t>(entry.size));
  read_into(entry, buffer->data());
  return buffer;
}

std::string ZipArchive::read_text(const Entry& entry, uint64_t max_size) const {
  if (entry.size > max_size)
    throw Error("zip entry '" + printable(entry.name) + "' has " + std::to_string(entry.size) +
                " bytes, more than the " + std::to_string(max_size) + " expected");
  std::string s(static_cast<size_t>(entry.size), '\0');
  read_into(entry, reinterpret_cast<uint8_t*>(s.data()));
  return s;
}

}  // namespace modex::pytorch
