#include "io/pytorch/pickle_value.h"

#include <charconv>
#include <cstdio>

namespace modex::pickle {

std::string_view value_kind_name(ValueKind kind) {
  switch (kind) {
    case ValueKind::kNone:
      return "None";
    case ValueKind::kBool:
      return "bool";
    case ValueKind::kInt:
      return "int";
    case ValueKind::kBigInt:
      return "int";
    case ValueKind::kFloat:
      return "float";
    case ValueKind::kString:
      return "str";
    case ValueKind::kBytes:
      return "bytes";
    case ValueKind::kList:
      return "list";
    case ValueKind::kTuple:
      return "tuple";
    case ValueKind::kDict:
      return "dict";
    case ValueKind::kSet:
      return "set";
    case ValueKind::kGlobal:
      return "global";
    case ValueKind::kDType:
      return "torch.dtype";
    case ValueKind::kStorage:
      return "storage";
    case ValueKind::kTensor:
      return "tensor";
    case ValueKind::kOpaque:
      return "object";
  }
  return "?";
}

void Dict::set(Value* key, Value* value) {
  if (key->kind == ValueKind::kString) {
    auto [it, inserted] = string_index_.try_emplace(key->text, items_.size());
    if (!inserted) {
      items_[it->second].second = value;
      return;
    }
  } else if (key->kind == ValueKind::kInt || key->kind == ValueKind::kBool) {
    // Python hashes True like 1, so they are the same key.
    int64_t k = key->kind == ValueKind::kBool ? int64_t{key->boolean} : key->integer;
    auto [it, inserted] = int_index_.try_emplace(k, items_.size());
    if (!inserted) {
      items_[it->second].second = value;
      return;
    }
  }
  items_.emplace_back(key, value);
}

const Value* Dict::find(std::string_view key) const {
  auto it = string_index_.find(std::string(key));
  return it == string_index_.end() ? nullptr : items_[it->second].second;
}

Value* ValueArena::make(ValueKind kind) {
  Value& v = values_.emplace_back();
  v.kind = kind;
  return &v;
}

namespace {

constexpr size_t kMaxDescribedItems = 8;
constexpr size_t kMaxDescribedText = 60;

std::string quoted(std::string_view s) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < kMaxDescribedText; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > kMaxDescribedText) out += "...";
  return out + "'";
}

void describe_into(const Value* v, int depth, std::string& out) {
  if (v == nullptr) {
    out += "<null>";
    return;
  }
  switch (v->kind) {
    case ValueKind::kNone:
      out += "None";
      return;
    case ValueKind::kBool:
      out += v->boolean ? "True" : "False";
      return;
    case ValueKind::kInt:
      out += std::to_string(v->integer);
      return;
    case ValueKind::kBigInt:
      out += "<int of " + std::to_string(v->text.size()) + " bytes>";
      return;
    case ValueKind::kFloat: {
      char buf[32];
      auto [end, ec] =
          std::to_chars(buf, buf + sizeof buf, v->real);  // shortest round trip, like repr()
      out.append(buf, ec == std::errc() ? end : buf);
      return;
    }
    case ValueKind::kString:
      out += quoted(v->text);
      return;
    case ValueKind::kBytes:
      out += "b" + quoted(v->text);
      return;
    case ValueKind::kGlobal:
      out += v->text;
      return;
    case ValueKind::kOpaque:
      out += "<" + v->text + " object>";
      return;
    case ValueKind::kDType:
      out += "torch." + std::string(dtype_name(v->dtype));
      return;
    case ValueKind::kStorage:
      out += "<storage " + quoted(v->storage->key) + ">";
      return;
    case ValueKind::kTensor:
      out += "tensor(" + std::string(dtype_name(v->tensor->dtype)) + ", " +
             dims_to_string(v->tensor->size) + ")";
      return;
    case ValueKind::kList:
    case ValueKind::kTuple:
    case ValueKind::kSet: {
      const char* open = v->kind == ValueKind::kList    ? "["
                         : v->kind == ValueKind::kTuple ? "("
                                                        : "{";
      const char* close = v->kind == ValueKind::kList    ? "]"
                          : v->kind == ValueKind::kTuple ? ")"
                                                         : "}";
      out += open;
      if (depth <= 0 && !v->items.empty()) {
        out += "...";
      } else {
        for (size_t i = 0; i < v->items.size() && i < kMaxDescribedItems; ++i) {
          if (i) out += ", ";
          describe_into(v->items[i], depth - 1, out);
        }
        if (v->items.size() > kMaxDescribedItems) out += ", ...";
      }
      out += close;
      return;
    }
    case ValueKind::kDict: {
      out += "{";
      const auto& items = v->dict->items();
      if (depth <= 0 && !items.empty()) {
        out += "...";
      } else {
        for (size_t i = 0; i < items.size() && i < kMaxDescribedItems; ++i) {
          if (i) out += ", ";
          describe_into(items[i].first, depth - 1, out);
          out += ": ";
          describe_into(items[i].second, depth - 1, out);
        }
        if (items.size() > kMaxDescribedItems) out += ", ...";
      }
      out += "}";
      return;
    }
  }
}

}  // namespace

std::string describe(const Value* v, int max_depth) {
  std::string out;
  describe_into(v, max_depth, out);
  return out;
}

}  // namespace modex::pickle
