#include "core/file_util.h"
#include "core/tensor.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <random>

#include "core/error.h"

namespace modex {
namespace fs = std::filesystem;

namespace {
Error io_error(const fs::path& path, const std::string& what) {
  Error e(what + ": " + std::strerror(errno), ErrorKind::kIo);
  e.file(path.string());
  return e;
}

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string to_hex(const unsigned char* d, size_t n) {
  static const char* kHex = "0123456789abcdef";
  std::string s(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = kHex[d[i] >> 4];
    s[2 * i + 1] = kHex[d[i] & 15];
  }
  return s;
}
}  // namespace

std::vector<uint8_t> read_file_bytes(const fs::path& path) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) throw io_error(path, "cannot open file");
  struct stat st;
  if (::fstat(f.fd, &st) != 0) throw io_error(path, "cannot stat file");
  if (S_ISDIR(st.st_mode)) throw Error("is a directory, expected a file", ErrorKind::kIo).file(path.string());
  std::vector<uint8_t> out(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < out.size()) {
    ssize_t r = ::read(f.fd, out.data() + done, out.size() - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw io_error(path, "cannot read file");
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  out.resize(done);
  return out;
}

std::shared_ptr<Buffer> read_file_buffer(const fs::path& path) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) throw io_error(path, "cannot open file");
  struct stat st;
  if (::fstat(f.fd, &st) != 0) throw io_error(path, "cannot stat file");
  if (S_ISDIR(st.st_mode)) throw Error("is a directory, expected a file", ErrorKind::kIo).file(path.string());
  auto out = Buffer::allocate(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < out->size()) {
    ssize_t r = ::read(f.fd, out->data() + done, out->size() - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw io_error(path, "cannot read file");
    }
    if (r == 0) throw Error("file shrank while being read", ErrorKind::kIo).file(path.string());
    done += static_cast<size_t>(r);
  }
  return out;
}

std::string read_file_text(const fs::path& path) {
  auto b = read_file_bytes(path);
  return std::string(b.begin(), b.end());
}

AtomicFile::AtomicFile(fs::path path) : path_(std::move(path)) {
  std::random_device rd;
  for (int attempt = 0; attempt < 16 && fd_ < 0; ++attempt) {
    temp_ = path_;
    temp_ += ".tmp-" + std::to_string(rd() % 1000000000u);
    fd_ = ::open(temp_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);  // readable: writers may copy back what they wrote
    if (fd_ < 0 && errno != EEXIST) break;
  }
  if (fd_ < 0) throw io_error(path_, "cannot create output file");
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw io_error(path_, "cannot write output file");
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void AtomicFile::commit() {
  if (::fsync(fd_) != 0) throw io_error(path_, "cannot flush output file");
  if (::close(fd_) != 0) {
    fd_ = -1;
    throw io_error(path_, "cannot close output file");
  }
  fd_ = -1;
  if (::rename(temp_.c_str(), path_.c_str()) != 0) throw io_error(path_, "cannot rename output file into place");
  committed_ = true;
}

void write_file_atomic(const fs::path& path, std::string_view content) {
  AtomicFile f(path);
  f.write(content);
  f.commit();
}

std::string sha256_file(const fs::path& path) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) throw io_error(path, "cannot open file");
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::vector<unsigned char> buf(256 << 10);
  for (;;) {
    ssize_t r = ::read(f.fd, buf.data(), buf.size());
    if (r < 0) {
      if (errno == EINTR) continue;
      throw io_error(path, "cannot read file");
    }
    if (r == 0) break;
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(r));
  }
  unsigned char md[32];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  return to_hex(md, len);
}

std::string sha256_bytes(const void* data, size_t n) {
  unsigned char md[32];
  unsigned int len = 0;
  EVP_Digest(data, n, md, &len, EVP_sha256(), nullptr);
  return to_hex(md, len);
}

}  // namespace modex
