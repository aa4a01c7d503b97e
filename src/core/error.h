// One exception type for everything that can go wrong with user data: what failed, where
// (file, tensor, node, op) and a hint. The CLI and the server turn it into an exit code or an
// HTTP status; nothing in the library aborts or exits on bad input.
#pragma once

#include <stdexcept>
#include <string>

namespace modex {

struct ErrorLocation {
  std::string file;
  std::string tensor;
  std::string node;
  std::string op;
};

enum class ErrorKind {
  kInvalidInput,   // malformed or inconsistent user data
  kUnsupported,    // well-formed but outside what modex handles
  kUnsafe,         // refused for safety (e.g. a pickle naming a forbidden global)
  kIo,             // filesystem problems
  kInternal,       // a bug in modex
};

class Error : public std::runtime_error {
 public:
  explicit Error(std::string message, ErrorKind kind = ErrorKind::kInvalidInput);

  Error& file(std::string f);
  Error& tensor(std::string t);
  Error& node(std::string n);
  Error& op(std::string o);
  Error& hint(std::string h);

  ErrorKind kind() const { return kind_; }
  const std::string& message() const { return message_; }
  const ErrorLocation& location() const { return location_; }
  const std::string& hint_text() const { return hint_; }
  const char* what() const noexcept override { return formatted_.c_str(); }

 private:
  void reformat();

  std::string message_;
  ErrorKind kind_;
  ErrorLocation location_;
  std::string hint_;
  std::string formatted_;
};

// Throws Error(message) when cond is false. For checks of untrusted input.
inline void check(bool cond, const std::string& message,
                  ErrorKind kind = ErrorKind::kInvalidInput) {
  if (!cond) throw Error(message, kind);
}

}  // namespace modex
