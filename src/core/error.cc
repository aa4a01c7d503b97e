#include "core/error.h"

namespace modex {

Error::Error(std::string message, ErrorKind kind)
    : std::runtime_error(message), message_(std::move(message)), kind_(kind) {
  reformat();
}

Error& Error::file(std::string f) {
  if (location_.file.empty()) location_.file = std::move(f);
  reformat();
  return *this;
}
Error& Error::tensor(std::string t) {
  if (location_.tensor.empty()) location_.tensor = std::move(t);
  reformat();
  return *this;
}
Error& Error::node(std::string n) {
  if (location_.node.empty()) location_.node = std::move(n);
  reformat();
  return *this;
}
Error& Error::op(std::string o) {
  if (location_.op.empty()) location_.op = std::move(o);
  reformat();
  return *this;
}
Error& Error::hint(std::string h) {
  hint_ = std::move(h);
  reformat();
  return *this;
}

void Error::reformat() {
  std::string s;
  if (!location_.file.empty()) s += location_.file + ": ";
  if (!location_.node.empty()) {
    s += "node '" + location_.node + "'";
    if (!location_.op.empty()) s += " (" + location_.op + ")";
    s += ": ";
  } else if (!location_.op.empty()) {
    s += location_.op + ": ";
  }
  if (!location_.tensor.empty()) s += "tensor '" + location_.tensor + "': ";
  s += message_;
  if (!hint_.empty()) s += "\n  hint: " + hint_;
  formatted_ = std::move(s);
}

}  // namespace modex
