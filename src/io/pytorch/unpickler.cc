#include "io/pytorch/unpickler.h"

#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "io/pytorch/untrusted_text.h"

namespace modex::pickle {
namespace {

using pytorch::printable;

// Opcode bytes, as named in CPython's pickletools.
namespace op {
constexpr uint8_t kMark = '(';
constexpr uint8_t kStop = '.';
constexpr uint8_t kPop = '0';
constexpr uint8_t kPopMark = '1';
constexpr uint8_t kDup = '2';
constexpr uint8_t kFloat = 'F';
constexpr uint8_t kInt = 'I';
constexpr uint8_t kBinInt = 'J';
constexpr uint8_t kBinInt1 = 'K';
constexpr uint8_t kLong = 'L';
constexpr uint8_t kBinInt2 = 'M';
constexpr uint8_t kNone = 'N';
constexpr uint8_t kPersId = 'P';
constexpr uint8_t kBinPersId = 'Q';
constexpr uint8_t kReduce = 'R';
constexpr uint8_t kString = 'S';
constexpr uint8_t kBinString = 'T';
constexpr uint8_t kShortBinString = 'U';
constexpr uint8_t kUnicode = 'V';
constexpr uint8_t kBinUnicode = 'X';
constexpr uint8_t kAppend = 'a';
constexpr uint8_t kBuild = 'b';
constexpr uint8_t kGlobal = 'c';
constexpr uint8_t kDict = 'd';
constexpr uint8_t kEmptyDict = '}';
constexpr uint8_t kAppends = 'e';
constexpr uint8_t kGet = 'g';
constexpr uint8_t kBinGet = 'h';
constexpr uint8_t kInst = 'i';
constexpr uint8_t kLongBinGet = 'j';
constexpr uint8_t kList = 'l';
constexpr uint8_t kEmptyList = ']';
constexpr uint8_t kObj = 'o';
constexpr uint8_t kPut = 'p';
constexpr uint8_t kBinPut = 'q';
constexpr uint8_t kLongBinPut = 'r';
constexpr uint8_t kSetItem = 's';
constexpr uint8_t kTuple = 't';
constexpr uint8_t kEmptyTuple = ')';
constexpr uint8_t kSetItems = 'u';
constexpr uint8_t kBinFloat = 'G';
constexpr uint8_t kProto = 0x80;
constexpr uint8_t kNewObj = 0x81;
constexpr uint8_t kExt1 = 0x82;
constexpr uint8_t kExt2 = 0x83;
constexpr uint8_t kExt4 = 0x84;
constexpr uint8_t kTuple1 = 0x85;
constexpr uint8_t kTuple2 = 0x86;
constexpr uint8_t kTuple3 = 0x87;
constexpr uint8_t kNewTrue = 0x88;
constexpr uint8_t kNewFalse = 0x89;
constexpr uint8_t kLong1 = 0x8a;
constexpr uint8_t kLong4 = 0x8b;
constexpr uint8_t kBinBytes = 'B';
constexpr uint8_t kShortBinBytes = 'C';
constexpr uint8_t kShortBinUnicode = 0x8c;
constexpr uint8_t kBinUnicode8 = 0x8d;
constexpr uint8_t kBinBytes8 = 0x8e;
constexpr uint8_t kEmptySet = 0x8f;
constexpr uint8_t kAddItems = 0x90;
constexpr uint8_t kFrozenSet = 0x91;
constexpr uint8_t kNewObjEx = 0x92;
constexpr uint8_t kStackGlobal = 0x93;
constexpr uint8_t kMemoize = 0x94;
constexpr uint8_t kFrame = 0x95;
constexpr uint8_t kByteArray8 = 0x96;
constexpr uint8_t kNextBuffer = 0x97;
constexpr uint8_t kReadOnlyBuffer = 0x98;
}  // namespace op

constexpr int kHighestProtocol = 5;

// ---------------------------------------------------------------------------------------------
// The allowlist.

struct AllowedGlobal {
  ValueKind kind = ValueKind::kGlobal;  // kGlobal or kDType
  Global global = Global::kOpaqueClass;
  DType dtype = DType::kFloat32;
  bool untyped_storage = false;
};

using GlobalTable = std::unordered_map<std::string, AllowedGlobal>;

const GlobalTable& allowed_globals() {
  static const GlobalTable table = [] {
    GlobalTable t;
    auto fn = [&](const char* name, Global g) { t[name] = AllowedGlobal{ValueKind::kGlobal, g}; };
    fn("collections.OrderedDict", Global::kOrderedDict);
    fn("torch._utils._rebuild_tensor", Global::kRebuildTensor);
    fn("torch._utils._rebuild_tensor_v2", Global::kRebuildTensorV2);
    fn("torch._utils._rebuild_tensor_v3", Global::kRebuildTensorV3);
    fn("torch._utils._rebuild_parameter", Global::kRebuildParameter);
    fn("torch._utils._rebuild_parameter_with_state", Global::kRebuildParameterWithState);
    fn("torch._tensor._rebuild_from_type_v2", Global::kRebuildFromTypeV2);
    fn("torch.nn.parameter.Parameter", Global::kParameter);
    fn("torch.nn.Parameter", Global::kParameter);
    fn("torch.Tensor", Global::kTensorClass);
    fn("torch._tensor.Tensor", Global::kTensorClass);
    fn("torch.Size", Global::kSize);
    fn("torch.device", Global::kDevice);
    fn("_codecs.encode", Global::kCodecsEncode);
    fn("builtins.set", Global::kSet);
    fn("builtins.frozenset", Global::kFrozenSet);
    fn("builtins.slice", Global::kSlice);
    fn("builtins.bytearray", Global::kByteArray);
    fn("builtins.complex", Global::kComplex);
    // Data-only objects that real training checkpoints carry next to the weights (argparse
    // arguments, numpy scalars such as a best accuracy). They become opaque placeholders: nothing
    // is constructed and their contents are never read.
    for (const char* name :
         {"argparse.Namespace", "numpy.dtype", "numpy.ndarray", "numpy.core.multiarray.scalar",
          "numpy._core.multiarray.scalar", "numpy.core.multiarray._reconstruct",
          "numpy._core.multiarray._reconstruct"}) {
      fn(name, Global::kOpaqueClass);
    }

    const std::pair<const char*, DType> storages[] = {
        {"FloatStorage", DType::kFloat32}, {"DoubleStorage", DType::kFloat64},
        {"HalfStorage", DType::kFloat16},  {"BFloat16Storage", DType::kBFloat16},
        {"LongStorage", DType::kInt64},    {"IntStorage", DType::kInt32},
        {"ShortStorage", DType::kInt16},   {"CharStorage", DType::kInt8},
        {"ByteStorage", DType::kUInt8},    {"BoolStorage", DType::kBool},
    };
    // torch < 1.13 pickled CUDA tensors with torch.cuda.*Storage; the location string says where
    // they lived, and modex loads everything to the CPU anyway.
    for (const char* module : {"torch.", "torch.cuda."}) {
      for (const auto& [name, dtype] : storages)
        t[std::string(module) + name] =
            AllowedGlobal{ValueKind::kGlobal, Global::kStorageClass, dtype};
    }
    for (const char* name :
         {"torch.UntypedStorage", "torch.storage.UntypedStorage", "torch.cuda.UntypedStorage"}) {
      t[name] = AllowedGlobal{ValueKind::kGlobal, Global::kStorageClass, DType::kUInt8, true};
    }

    const std::pair<const char*, DType> dtypes[] = {
        {"float32", DType::kFloat32},   {"float64", DType::kFloat64}, {"float16", DType::kFloat16},
        {"bfloat16", DType::kBFloat16}, {"int64", DType::kInt64},     {"int32", DType::kInt32},
        {"int16", DType::kInt16},       {"int8", DType::kInt8},       {"uint8", DType::kUInt8},
        {"bool", DType::kBool},         {"uint16", DType::kUInt16},   {"uint32", DType::kUInt32},
        {"uint64", DType::kUInt64},
    };
    for (const auto& [name, dtype] : dtypes)
      t[std::string("torch.") + name] =
          AllowedGlobal{ValueKind::kDType, Global::kOpaqueClass, dtype};
    return t;
  }();
  return table;
}

// Globals torch itself considers safe but that produce tensors modex cannot represent: refusing
// them as unsafe would mislead, so they are reported as unsupported.
std::optional<std::string_view> unsupported_torch_global(const std::string& name) {
  static const std::unordered_map<std::string, std::string_view> table = {
      {"torch._utils._rebuild_qtensor", "quantized tensors"},
      {"torch._utils._rebuild_sparse_tensor", "sparse tensors"},
      {"torch._utils._rebuild_sparse_csr_tensor", "sparse tensors"},
      {"torch._utils._rebuild_nested_tensor", "nested tensors"},
      {"torch._utils._rebuild_meta_tensor_no_storage", "meta tensors"},
      {"torch._utils._rebuild_wrapper_subclass", "tensor subclasses"},
      {"torch._utils._rebuild_device_tensor_from_numpy", "device tensors"},
      {"torch._utils._rebuild_xla_tensor", "XLA tensors"},
      {"torch._utils._rebuild_mps_tensor", "MPS tensors"},
      {"torch.ComplexFloatStorage", "complex tensors"},
      {"torch.ComplexDoubleStorage", "complex tensors"},
      {"torch.QInt8Storage", "quantized tensors"},
      {"torch.QUInt8Storage", "quantized tensors"},
      {"torch.QInt32Storage", "quantized tensors"},
      {"torch.QUInt4x2Storage", "quantized tensors"},
      {"torch.QUInt2x4Storage", "quantized tensors"},
      {"torch.complex32", "complex tensors"},
      {"torch.complex64", "complex tensors"},
      {"torch.complex128", "complex tensors"},
      {"torch.qint8", "quantized tensors"},
      {"torch.quint8", "quantized tensors"},
      {"torch.qint32", "quantized tensors"},
      {"torch.float8_e4m3fn", "float8 tensors"},
      {"torch.float8_e5m2", "float8 tensors"},
      {"torch.float8_e4m3fnuz", "float8 tensors"},
      {"torch.float8_e5m2fnuz", "float8 tensors"},
  };
  auto it = table.find(name);
  if (it == table.end()) return std::nullopt;
  return it->second;
}

// A refused global that looks like a class (rather than a function such as os.system) is most
// likely a whole pickled model, the one unsafe thing people save by accident.
bool looks_like_a_class(std::string_view module, std::string_view name) {
  if (module == "__main__" || module.starts_with("torch.nn.modules") ||
      module.starts_with("torchvision.models") || module.starts_with("timm.models"))
    return true;
  size_t dot = name.rfind('.');
  std::string_view last = dot == std::string_view::npos ? name : name.substr(dot + 1);
  return !last.empty() && last[0] >= 'A' && last[0] <= 'Z';
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMinForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// ---------------------------------------------------------------------------------------------

class Machine {
 public:
  Machine(std::span<const uint8_t> in, std::string_view name, const UnpickleLimits& limits)
      : in_(in), name_(name), limits_(limits), arena_(std::make_unique<ValueArena>()) {}

  Unpickled run();

 private:
  // --- errors ---
  [[noreturn]] void fail(const std::string& message,
                         ErrorKind kind = ErrorKind::kInvalidInput) const {
    throw Error(name_ + " at byte " + std::to_string(op_start_) + ": " + message, kind);
  }

  // --- input ---
  size_t remaining() const { return in_.size() - pos_; }
  void need(uint64_t n, const char* what) const {
    if (n > remaining())
      fail(std::string("truncated: ") + what + " needs " + std::to_string(n) + " bytes but only " +
           std::to_string(remaining()) + " remain");
  }
  uint64_t read_le(size_t n, const char* what) {
    need(n, what);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t{in_[pos_ + i]} << (8 * i);
    pos_ += n;
    return v;
  }
  std::string_view read_bytes(uint64_t n, const char* what) {
    need(n, what);
    std::string_view s(reinterpret_cast<const char*>(in_.data()) + pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }
  // A text-protocol argument: everything up to the next newline (which is consumed).
  std::string_view read_line(const char* what) {
    const uint8_t* begin = in_.data() + pos_;
    const void* nl = std::memchr(begin, '\n', remaining());
    if (nl == nullptr) fail(std::string("truncated: ") + what + " has no terminating newline");
    size_t len = static_cast<size_t>(static_cast<const uint8_t*>(nl) - begin);
    pos_ += len + 1;
    return {reinterpret_cast<const char*>(begin), len};
  }
  int64_t read_signed_length(const char* what) {
    int32_t n = static_cast<int32_t>(static_cast<uint32_t>(read_le(4, what)));
    if (n < 0) fail(std::string(what) + " has a negative length " + std::to_string(n));
    return n;
  }

  // --- values ---
  Value* make(ValueKind kind) {
    if (arena_->size() >= limits_.max_values)
      fail("the pickle creates more than " + std::to_string(limits_.max_values) +
           " values, far more than any checkpoint needs");
    return arena_->make(kind);
  }
  Value* make_int(int64_t v) {
    Value* x = make(ValueKind::kInt);
    x->integer = v;
    return x;
  }
  Value* make_bool(bool b) {
    Value* x = make(ValueKind::kBool);
    x->boolean = b;
    return x;
  }
  Value* make_text(ValueKind kind, std::string_view s) {
    if (kind == ValueKind::kString && !valid_utf8(s)) fail("string is not valid UTF-8");
    Value* x = make(kind);
    x->text.assign(s);
    return x;
  }
  Value* make_sequence(ValueKind kind, std::vector<Value*> items) {
    Value* x = make(kind);
    x->items = std::move(items);
    return x;
  }
  Value* make_dict() {
    Value* x = make(ValueKind::kDict);
    x->dict = std::make_unique<Dict>();
    return x;
  }
  Value* make_opaque(std::string_view type_name) {
    Value* x = make(ValueKind::kOpaque);
    x->text.assign(type_name);
    return x;
  }

  // --- stack ---
  // Items below the innermost MARK belong to an enclosing frame, as in CPython's metastack.
  size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(Value* v) {
    if (stack_.size() >= limits_.max_values)
      fail("stack grows beyond " + std::to_string(limits_.max_values));
    stack_.push_back(v);
  }
  Value* pop() {
    if (stack_.size() <= base()) fail("stack underflow");
    Value* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Value* top() const {
    if (stack_.size() <= base()) fail("stack underflow");
    return stack_.back();
  }
  std::vector<Value*> pop_mark() {
    if (marks_.empty()) fail("no MARK on the stack");
    size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<Value*> items(stack_.begin() + static_cast<ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }

  // --- memo ---
  void memo_put(uint64_t index) {
    Value* v = top();
    if (memo_.size() >= limits_.max_values && !memo_.contains(index))
      fail("memo grows beyond " + std::to_string(limits_.max_values) + " entries");
    memo_[index] = v;
  }
  void memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) fail("memo index " + std::to_string(index) + " is not defined");
    push(it->second);
  }
  uint64_t parse_decimal_index(std::string_view line, const char* what) {
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), v);
    if (ec != std::errc() || end != line.data() + line.size() || line.empty())
      fail(std::string(what) + " argument '" + printable(line) + "' is not a memo index");
    return v;
  }

  // --- opcode groups ---
  void step(uint8_t code);
  Value* decode_long(std::string_view bytes);
  Value* parse_text_int(std::string_view line, bool long_form);
  Value* parse_text_float(std::string_view line);
  std::string decode_escaped_string(std::string_view body);
  std::string decode_raw_unicode_escape(std::string_view body);
  Value* resolve_global(std::string_view module, std::string_view name);
  Value* call(Value* callable, Value* args, bool newobj);
  Value* persistent_load(Value* pid);
  Value* rebuild_tensor(Global which, const std::vector<Value*>& args);
  Dims int_tuple(const Value* v, const char* what);
  std::string encode_text(const Value* s, const Value* encoding, const char* what);

  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  size_t op_start_ = 0;
  std::string name_;
  UnpickleLimits limits_;
  std::unique_ptr<ValueArena> arena_;
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value*> memo_;
  std::unordered_map<std::string, Value*> storages_;  // tied weights share one storage value
  bool stopped_ = false;
  Value* result_ = nullptr;
};

Unpickled Machine::run() {
  while (!stopped_) {
    op_start_ = pos_;
    if (remaining() == 0) fail("truncated: the pickle ends without a STOP opcode");
    step(in_[pos_++]);
  }
  Unpickled out;
  out.root = result_;
  out.arena = std::move(arena_);
  return out;
}

void Machine::step(uint8_t code) {
  switch (code) {
    // --- framing and protocol ---
    case op::kProto: {
      uint64_t proto = read_le(1, "PROTO");
      if (proto > kHighestProtocol)
        fail("pickle protocol " + std::to_string(proto) + " is newer than the highest known (" +
                 std::to_string(kHighestProtocol) + ")",
             ErrorKind::kUnsupported);
      return;
    }
    case op::kFrame: {
      // Frames only tell a streaming reader how much to prefetch; the whole pickle is in memory.
      uint64_t len = read_le(8, "FRAME");
      need(len, "FRAME");
      return;
    }
    case op::kStop:
      result_ = pop();
      stopped_ = true;
      return;

    // --- stack manipulation ---
    case op::kMark:
      if (marks_.size() >= limits_.max_values) fail("too many nested MARKs");
      marks_.push_back(stack_.size());
      return;
    case op::kPop:
      // CPython pops a whole mark frame when the current frame is empty.
      if (stack_.size() > base()) {
        stack_.pop_back();
      } else {
        pop_mark();
      }
      return;
    case op::kPopMark:
      pop_mark();
      return;
    case op::kDup:
      push(top());
      return;

    // --- scalars ---
    case op::kNone:
      push(make(ValueKind::kNone));
      return;
    case op::kNewTrue:
      push(make_bool(true));
      return;
    case op::kNewFalse:
      push(make_bool(false));
      return;
    case op::kBinInt:
      push(make_int(static_cast<int32_t>(static_cast<uint32_t>(read_le(4, "BININT")))));
      return;
    case op::kBinInt1:
      push(make_int(static_cast<int64_t>(read_le(1, "BININT1"))));
      return;
    case op::kBinInt2:
      push(make_int(static_cast<int64_t>(read_le(2, "BININT2"))));
      return;
    case op::kLong1: {
      uint64_t n = read_le(1, "LONG1");
      push(decode_long(read_bytes(n, "LONG1")));
      return;
    }
    case op::kLong4: {
      int64_t n = read_signed_length("LONG4");
      push(decode_long(read_bytes(static_cast<uint64_t>(n), "LONG4")));
      return;
    }
    case op::kInt:
      push(parse_text_int(read_line("INT"), false));
      return;
    case op::kLong:
      push(parse_text_int(read_line("LONG"), true));
      return;
    case op::kBinFloat: {
      uint64_t be = 0;
      for (uint8_t b : read_bytes(8, "BINFLOAT")) be = (be << 8) | static_cast<uint8_t>(b);
      Value* v = make(ValueKind::kFloat);
      std::memcpy(&v->real, &be, 8);
      push(v);
      return;
    }
    case op::kFloat:
      push(parse_text_float(read_line("FLOAT")));
      return;

    // --- strings and bytes ---
    case op::kBinUnicode:
      push(make_text(ValueKind::kString, read_bytes(read_le(4, "BINUNICODE"), "BINUNICODE")));
      return;
    case op::kShortBinUnicode:
      push(make_text(ValueKind::kString,
                     read_bytes(read_le(1, "SHORT_BINUNICODE"), "SHORT_BINUNICODE")));
      return;
    case op::kBinUnicode8:
      push(make_text(ValueKind::kString, read_bytes(read_le(8, "BINUNICODE8"), "BINUNICODE8")));
      return;
    // Python 2 byte strings: torch.load decodes them as UTF-8 text.
    case op::kBinString: {
      int64_t n = read_signed_length("BINSTRING");
      push(make_text(ValueKind::kString, read_bytes(static_cast<uint64_t>(n), "BINSTRING")));
      return;
    }
    case op::kShortBinString:
      push(make_text(ValueKind::kString,
                     read_bytes(read_le(1, "SHORT_BINSTRING"), "SHORT_BINSTRING")));
      return;
    case op::kString: {
      std::string_view line = read_line("STRING");
      if (line.size() < 2 || line.front() != line.back() ||
          (line.front() != '\'' && line.front() != '"'))
        fail("the STRING opcode argument must be quoted");
      push(make_text(ValueKind::kString, decode_escaped_string(line.substr(1, line.size() - 2))));
      return;
    }
    case op::kUnicode:
      push(make_text(ValueKind::kString, decode_raw_unicode_escape(read_line("UNICODE"))));
      return;
    case op::kBinBytes:
      push(make_text(ValueKind::kBytes, read_bytes(read_le(4, "BINBYTES"), "BINBYTES")));
      return;
    case op::kShortBinBytes:
      push(
          make_text(ValueKind::kBytes, read_bytes(read_le(1, "SHORT_BINBYTES"), "SHORT_BINBYTES")));
      return;
    case op::kBinBytes8:
      push(make_text(ValueKind::kBytes, read_bytes(read_le(8, "BINBYTES8"), "BINBYTES8")));
      return;
    case op::kByteArray8:
      push(make_text(ValueKind::kBytes, read_bytes(read_le(8, "BYTEARRAY8"), "BYTEARRAY8")));
      return;
    case op::kNextBuffer:
      fail("out-of-band buffers (pickle protocol 5 NEXT_BUFFER) are not used by torch.save",
           ErrorKind::kUnsupported);
    case op::kReadOnlyBuffer:
      top();
      return;

    // --- containers ---
    case op::kEmptyTuple:
      push(make_sequence(ValueKind::kTuple, {}));
      return;
    case op::kTuple1:
    case op::kTuple2:
    case op::kTuple3: {
      size_t n = static_cast<size_t>(code - op::kTuple1 + 1);
      std::vector<Value*> items(n);
      for (size_t i = n; i-- > 0;) items[i] = pop();
      push(make_sequence(ValueKind::kTuple, std::move(items)));
      return;
    }
    case op::kTuple:
      push(make_sequence(ValueKind::kTuple, pop_mark()));
      return;
    case op::kEmptyList:
      push(make_sequence(ValueKind::kList, {}));
      return;
    case op::kList:
      push(make_sequence(ValueKind::kList, pop_mark()));
      return;
    case op::kAppend: {
      Value* item = pop();
      Value* list = top();
      if (!list->is(ValueKind::kList))
        fail("APPEND to a " + std::string(value_kind_name(list->kind)));
      list->items.push_back(item);
      return;
    }
    case op::kAppends: {
      std::vector<Value*> items = pop_mark();
      Value* list = top();
      if (!list->is(ValueKind::kList))
        fail("APPENDS to a " + std::string(value_kind_name(list->kind)));
      list->items.insert(list->items.end(), items.begin(), items.end());
      return;
    }
    case op::kEmptyDict:
      push(make_dict());
      return;
    case op::kDict: {
      std::vector<Value*> items = pop_mark();
      if (items.size() % 2) fail("DICT with an odd number of items");
      Value* d = make_dict();
      for (size_t i = 0; i < items.size(); i += 2) {
        if (items[i]->is(ValueKind::kList) || items[i]->is(ValueKind::kDict))
          fail("unhashable dict key of type " + std::string(value_kind_name(items[i]->kind)));
        d->dict->set(items[i], items[i + 1]);
      }
      push(d);
      return;
    }
    case op::kSetItem: {
      Value* value = pop();
      Value* key = pop();
      Value* d = top();
      if (!d->is(ValueKind::kDict)) fail("SETITEM on a " + std::string(value_kind_name(d->kind)));
      if (key->is(ValueKind::kList) || key->is(ValueKind::kDict))
        fail("unhashable dict key of type " + std::string(value_kind_name(key->kind)));
      d->dict->set(key, value);
      return;
    }
    case op::kSetItems: {
      std::vector<Value*> items = pop_mark();
      Value* d = top();
      if (!d->is(ValueKind::kDict)) fail("SETITEMS on a " + std::string(value_kind_name(d->kind)));
      if (items.size() % 2) fail("SETITEMS with an odd number of items");
      for (size_t i = 0; i < items.size(); i += 2) {
        if (items[i]->is(ValueKind::kList) || items[i]->is(ValueKind::kDict))
          fail("unhashable dict key of type " + std::string(value_kind_name(items[i]->kind)));
        d->dict->set(items[i], items[i + 1]);
      }
      return;
    }
    case op::kEmptySet:
      push(make_sequence(ValueKind::kSet, {}));
      return;
    case op::kAddItems: {
      std::vector<Value*> items = pop_mark();
      Value* s = top();
      if (!s->is(ValueKind::kSet)) fail("ADDITEMS on a " + std::string(value_kind_name(s->kind)));
      s->items.insert(s->items.end(), items.begin(), items.end());
      return;
    }
    case op::kFrozenSet:
      push(make_sequence(ValueKind::kSet, pop_mark()));
      return;

    // --- memo ---
    case op::kPut:
      memo_put(parse_decimal_index(read_line("PUT"), "PUT"));
      return;
    case op::kBinPut:
      memo_put(read_le(1, "BINPUT"));
      return;
    case op::kLongBinPut:
      memo_put(read_le(4, "LONG_BINPUT"));
      return;
    case op::kMemoize:
      memo_put(memo_.size());
      return;
    case op::kGet:
      memo_get(parse_decimal_index(read_line("GET"), "GET"));
      return;
    case op::kBinGet:
      memo_get(read_le(1, "BINGET"));
      return;
    case op::kLongBinGet:
      memo_get(read_le(4, "LONG_BINGET"));
      return;

    // --- globals and calls: the only place code could run, so the allowlist lives here ---
    case op::kGlobal: {
      std::string_view module = read_line("GLOBAL");
      std::string_view name = read_line("GLOBAL");
      push(resolve_global(module, name));
      return;
    }
    case op::kStackGlobal: {
      Value* name = pop();
      Value* module = pop();
      if (!module->is(ValueKind::kString) || !name->is(ValueKind::kString))
        fail("STACK_GLOBAL needs two strings, got " + describe(module, 1) + " and " +
             describe(name, 1));
      push(resolve_global(module->text, name->text));
      return;
    }
    case op::kInst: {
      std::string_view module = read_line("INST");
      std::string_view name = read_line("INST");
      Value* cls = resolve_global(module, name);
      Value* args = make_sequence(ValueKind::kTuple, pop_mark());
      push(call(cls, args, false));
      return;
    }
    case op::kObj: {
      std::vector<Value*> items = pop_mark();
      if (items.empty()) fail("OBJ without a class");
      Value* cls = items.front();
      Value* args =
          make_sequence(ValueKind::kTuple, std::vector<Value*>(items.begin() + 1, items.end()));
      push(call(cls, args, false));
      return;
    }
    case op::kReduce: {
      Value* args = pop();
      Value* callable = pop();
      push(call(callable, args, false));
      return;
    }
    case op::kNewObj: {
      Value* args = pop();
      Value* cls = pop();
      push(call(cls, args, true));
      return;
    }
    case op::kNewObjEx: {
      Value* kwargs = pop();
      Value* args = pop();
      Value* cls = pop();
      if (!kwargs->is(ValueKind::kDict) || kwargs->dict->size() != 0)
        fail("NEWOBJ_EX with keyword arguments is not supported", ErrorKind::kUnsupported);
      push(call(cls, args, true));
      return;
    }
    case op::kBuild: {
      Value* state = pop();
      Value* inst = top();
      // BUILD sets attributes: an OrderedDict's `_metadata`, a Parameter's extra state, an
      // argparse.Namespace's fields. None of it matters to modex, so the state is dropped.
      (void)state;
      if (!inst->is(ValueKind::kDict) && !inst->is(ValueKind::kTensor) &&
          !inst->is(ValueKind::kOpaque))
        fail("BUILD on a " + std::string(value_kind_name(inst->kind)) + " is not supported");
      return;
    }
    case op::kBinPersId:
      push(persistent_load(pop()));
      return;
    case op::kPersId:
      fail("text persistent ids (PERSID) are not used by torch.save", ErrorKind::kUnsupported);
    case op::kExt1:
    case op::kExt2:
    case op::kExt4:
      fail(
          "refusing to load: the pickle names a global through the copyreg extension registry "
          "(EXT opcodes), which torch.save never does",
          ErrorKind::kUnsafe);
    default: {
      char buf[8];
      std::snprintf(buf, sizeof buf, "0x%02x", code);
      fail(std::string("unknown pickle opcode ") + buf);
    }
  }
}

Value* Machine::decode_long(std::string_view bytes) {
  if (bytes.empty()) return make_int(0);
  const size_t n = bytes.size();
  const bool negative = static_cast<uint8_t>(bytes[n - 1]) & 0x80;
  // Bytes beyond the eighth must be pure sign extension for the value to fit in int64.
  bool fits = true;
  for (size_t i = 8; i < n; ++i) {
    if (static_cast<uint8_t>(bytes[i]) != (negative ? 0xff : 0x00)) fits = false;
  }
  if (n > 8 && fits && ((static_cast<uint8_t>(bytes[7]) & 0x80) != 0) != negative) fits = false;
  if (!fits) return make_text(ValueKind::kBigInt, bytes);
  uint64_t v = negative ? ~uint64_t{0} : 0;
  for (size_t i = 0; i < n && i < 8; ++i) {
    v &= ~(uint64_t{0xff} << (8 * i));
    v |= uint64_t{static_cast<uint8_t>(bytes[i])} << (8 * i);
  }
  return make_int(static_cast<int64_t>(v));
}

Value* Machine::parse_text_int(std::string_view line, bool long_form) {
  if (!long_form && line == "00") return make_bool(false);
  if (!long_form && line == "01") return make_bool(true);
  if (long_form && !line.empty() && line.back() == 'L') line.remove_suffix(1);
  if (!line.empty() && line.front() == '+') line.remove_prefix(1);
  int64_t v = 0;
  auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), v);
  if (ec == std::errc::result_out_of_range)
    fail("integer literal '" + printable(line) + "' does not fit in 64 bits",
         ErrorKind::kUnsupported);
  if (ec != std::errc() || end != line.data() + line.size() || line.empty())
    fail("'" + printable(line) + "' is not an integer");
  return make_int(v);
}

Value* Machine::parse_text_float(std::string_view line) {
  double v = 0;
  auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), v);
  if (ec != std::errc() || end != line.data() + line.size() || line.empty())
    fail("'" + printable(line) + "' is not a float");
  Value* x = make(ValueKind::kFloat);
  x->real = v;
  return x;
}

// Python's codecs.escape_decode, as applied to the protocol-0 STRING opcode.
std::string Machine::decode_escaped_string(std::string_view body) {
  std::string out;
  out.reserve(body.size());
  for (size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (c != '\\') {
      out += c;
      continue;
    }
    if (++i == body.size()) fail("STRING ends with a lone backslash");
    char e = body[i];
    switch (e) {
      case '\n':
        break;
      case '\\':
        out += '\\';
        break;
      case '\'':
        out += '\'';
        break;
      case '"':
        out += '"';
        break;
      case 'a':
        out += '\a';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'v':
        out += '\v';
        break;
      case 'x': {
        int hi = i + 1 < body.size() ? hex_digit(body[i + 1]) : -1;
        int lo = i + 2 < body.size() ? hex_digit(body[i + 2]) : -1;
        if (hi < 0 || lo < 0) fail("invalid \\x escape in STRING");
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          int v = e - '0';
          for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7';
               ++k)
            v = v * 8 + (body[++i] - '0');
          out += static_cast<char>(v & 0xff);
        } else {
          out += '\\';  // unknown escapes are kept verbatim
          out += e;
        }
    }
  }
  return out;
}

// Python's raw-unicode-escape codec (protocol-0 UNICODE opcode): bytes are Latin-1 code points
// except for \uXXXX and \UXXXXXXXX.
std::string Machine::decode_raw_unicode_escape(std::string_view body) {
  std::string out;
  out.reserve(body.size());
  for (size_t i = 0; i < body.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(body[i]);
    if (c == '\\' && i + 1 < body.size() && (body[i + 1] == 'u' || body[i + 1] == 'U')) {
      size_t digits = body[i + 1] == 'u' ? 4 : 8;
      if (body.size() - (i + 2) < digits) fail("truncated \\u escape in UNICODE");
      uint32_t cp = 0;
      for (size_t k = 0; k < digits; ++k) {
        int d = hex_digit(body[i + 2 + k]);
        if (d < 0) fail("invalid \\u escape in UNICODE");
        cp = cp * 16 + static_cast<uint32_t>(d);
      }
      if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) fail("invalid code point in UNICODE");
      append_utf8(out, cp);
      i += 1 + digits;
    } else {
      append_utf8(out, c);
    }
  }
  return out;
}

Value* Machine::resolve_global(std::string_view module_in, std::string_view name) {
  // Protocols 0-2 spell Python 3's builtins module the Python 2 way.
  std::string_view module = module_in == "__builtin__" ? std::string_view("builtins") : module_in;
  std::string full;
  full.reserve(module.size() + 1 + name.size());
  full.append(module).append(".").append(name);

  const GlobalTable& table = allowed_globals();
  if (auto it = table.find(full); it != table.end()) {
    const AllowedGlobal& g = it->second;
    Value* v = make(g.kind);
    v->text = full;
    if (g.kind == ValueKind::kDType) {
      v->dtype = g.dtype;
    } else {
      v->global = g.global;
      v->storage_class = StorageClass{g.untyped_storage, g.dtype};
    }
    return v;
  }
  if (auto what = unsupported_torch_global(full))
    fail("the checkpoint uses '" + full + "' (" + std::string(*what) +
             "), which modex does not support",
         ErrorKind::kUnsupported);

  Error e(name_ + " at byte " + std::to_string(op_start_) +
              ": refusing to load: the pickle names the global '" + printable(full) +
              "', which is not on the allowlist of tensor and container types (a checkpoint that "
              "runs code is never executed)",
          ErrorKind::kUnsafe);
  if (looks_like_a_class(module, name)) {
    e.hint(
        "this looks like a pickled Python object such as a whole model saved with "
        "torch.save(model); save only the weights instead: torch.save(model.state_dict(), path)");
  }
  throw e;
}

Dims Machine::int_tuple(const Value* v, const char* what) {
  if (!v->is_sequence())
    fail(std::string(what) + " must be a tuple of ints, got " + describe(v, 1));
  if (v->items.size() > limits_.max_rank)
    fail(std::string(what) + " has " + std::to_string(v->items.size()) + " dimensions (at most " +
         std::to_string(limits_.max_rank) + " supported)");
  Dims dims;
  dims.reserve(v->items.size());
  for (const Value* item : v->items) {
    if (!item->is(ValueKind::kInt))
      fail(std::string(what) + " must be a tuple of ints, got " + describe(v, 1));
    dims.push_back(item->integer);
  }
  return dims;
}

std::string Machine::encode_text(const Value* s, const Value* encoding, const char* what) {
  if (!s->is(ValueKind::kString) || !encoding->is(ValueKind::kString))
    fail(std::string(what) + " expects (str, encoding), got " + describe(s, 1) + ", " +
         describe(encoding, 1));
  const std::string& enc = encoding->text;
  if (enc == "utf-8" || enc == "utf8" || enc == "UTF-8") return s->text;
  uint32_t limit;
  if (enc == "latin1" || enc == "latin-1" || enc == "iso-8859-1" || enc == "iso8859-1") {
    limit = 0x100;
  } else if (enc == "ascii") {
    limit = 0x80;
  } else {
    fail(std::string(what) + " with encoding '" + printable(enc) + "' is not supported",
         ErrorKind::kUnsupported);
  }
  // The text is valid UTF-8 (checked when it was read); map each code point to one byte.
  std::string out;
  const std::string& t = s->text;
  for (size_t i = 0; i < t.size();) {
    unsigned char c = static_cast<unsigned char>(t[i]);
    uint32_t cp;
    if (c < 0x80) {
      cp = c;
      i += 1;
    } else if ((c & 0xe0) == 0xc0) {
      cp = ((c & 0x1fu) << 6) | (static_cast<unsigned char>(t[i + 1]) & 0x3fu);
      i += 2;
    } else {
      cp = limit;  // three- and four-byte sequences are beyond Latin-1
      i += (c & 0xf0) == 0xe0 ? 3 : 4;
    }
    if (cp >= limit)
      fail(std::string(what) + ": character outside the '" + printable(enc) + "' range");
    out += static_cast<char>(cp);
  }
  return out;
}

Value* Machine::call(Value* callable, Value* args, bool newobj) {
  const char* opname = newobj ? "NEWOBJ" : "REDUCE";
  if (!callable->is(ValueKind::kGlobal))
    fail(std::string(opname) + " on " + describe(callable, 1) +
         ", which is not an allowlisted callable");
  if (!args->is(ValueKind::kTuple))
    fail(std::string(opname) + " arguments must be a tuple, got " + describe(args, 1));
  const std::vector<Value*>& a = args->items;
  const std::string& fname = callable->text;
  auto arity = [&](size_t lo, size_t hi) {
    if (a.size() < lo || a.size() > hi)
      fail(fname + " takes " +
           (lo == hi ? std::to_string(lo) : std::to_string(lo) + " to " + std::to_string(hi)) +
           " arguments, got " + std::to_string(a.size()));
  };

  switch (callable->global) {
    case Global::kOrderedDict: {
      // OrderedDict.__reduce__ pickles (OrderedDict, ()) and adds the items with SETITEMS.
      arity(0, 1);
      Value* d = make_dict();
      if (!newobj && a.size() == 1) {
        if (!a[0]->is_sequence())
          fail("OrderedDict expects a list of pairs, got " + describe(a[0], 1));
        for (Value* pair : a[0]->items) {
          if (!pair->is_sequence() || pair->items.size() != 2)
            fail("OrderedDict expects a list of pairs, got " + describe(pair, 1));
          if (pair->items[0]->is(ValueKind::kList) || pair->items[0]->is(ValueKind::kDict))
            fail("unhashable dict key of type " +
                 std::string(value_kind_name(pair->items[0]->kind)));
          d->dict->set(pair->items[0], pair->items[1]);
        }
      }
      return d;
    }
    case Global::kRebuildTensor:
    case Global::kRebuildTensorV2:
    case Global::kRebuildTensorV3:
      return rebuild_tensor(callable->global, a);
    case Global::kRebuildParameter:
    case Global::kRebuildParameterWithState:
    case Global::kParameter: {
      if (callable->global == Global::kRebuildParameter) arity(3, 3);
      if (callable->global == Global::kRebuildParameterWithState) arity(4, 4);
      if (callable->global == Global::kParameter) arity(1, 2);
      // A Parameter is its data plus requires_grad, which inference does not need.
      if (!a[0]->is(ValueKind::kTensor))
        fail(fname + " expects a tensor, got " + describe(a[0], 1));
      return a[0];
    }
    case Global::kRebuildFromTypeV2: {
      // (func, new_type, args, state): a tensor subclass; rebuild the plain tensor it wraps.
      arity(4, 4);
      Value* func = a[0];
      Value* new_type = a[1];
      if (!func->is(ValueKind::kGlobal) || func->global == Global::kRebuildFromTypeV2)
        fail(fname + " expects a tensor rebuild function, got " + describe(func, 1));
      if (!new_type->is(ValueKind::kGlobal) ||
          (new_type->global != Global::kTensorClass && new_type->global != Global::kParameter))
        fail(fname + " of type " + describe(new_type, 1) + " is not supported",
             ErrorKind::kUnsupported);
      Value* result = call(func, a[2], false);
      if (!result->is(ValueKind::kTensor)) fail(fname + " did not produce a tensor");
      return result;
    }
    case Global::kSize: {
      arity(0, 1);
      if (a.empty()) return make_sequence(ValueKind::kTuple, {});
      int_tuple(a[0], "torch.Size");  // validates
      return make_sequence(ValueKind::kTuple, a[0]->items);
    }
    case Global::kDevice: {
      arity(1, 2);
      if (!a[0]->is(ValueKind::kString))
        fail("torch.device expects a string, got " + describe(a[0], 1));
      std::string dev = a[0]->text;
      if (a.size() == 2) {
        if (!a[1]->is(ValueKind::kInt))
          fail("torch.device index must be an int, got " + describe(a[1], 1));
        dev += ":" + std::to_string(a[1]->integer);
      }
      return make_text(ValueKind::kString, dev);
    }
    case Global::kCodecsEncode: {
      arity(2, 3);
      return make_text(ValueKind::kBytes, encode_text(a[0], a[1], "_codecs.encode"));
    }
    case Global::kSet:
    case Global::kFrozenSet: {
      arity(0, 1);
      // set.__new__ ignores its argument (set.__init__ fills it), frozenset.__new__ does not.
      if (a.empty() || (newobj && callable->global == Global::kSet))
        return make_sequence(ValueKind::kSet, {});
      if (!a[0]->is_sequence() && !a[0]->is(ValueKind::kSet))
        fail(fname + " expects a list, tuple or set, got " + describe(a[0], 1));
      return make_sequence(ValueKind::kSet, a[0]->items);
    }
    case Global::kByteArray: {
      arity(0, 3);
      if (a.empty() || newobj) return make_text(ValueKind::kBytes, "");
      if (a.size() == 1 && a[0]->is(ValueKind::kBytes))
        return make_text(ValueKind::kBytes, a[0]->text);
      // bytearray(n) would allocate n bytes on the word of the file: not accepted.
      if (a.size() >= 2) return make_text(ValueKind::kBytes, encode_text(a[0], a[1], "bytearray"));
      fail("bytearray expects bytes or (str, encoding), got " + describe(args, 1));
    }
    case Global::kSlice:
      arity(1, 3);
      return make_opaque("slice");
    case Global::kComplex:
      arity(0, 2);
      return make_opaque("complex");
    case Global::kOpaqueClass:
      return make_opaque(fname);
    case Global::kTensorClass:
    case Global::kStorageClass:
      fail("constructing " + fname + " directly is not supported", ErrorKind::kUnsupported);
  }
  fail("unhandled callable " + fname, ErrorKind::kInternal);
}

Value* Machine::persistent_load(Value* pid) {
  // torch.save: ('storage', storage_class, key, location, numel)
  if (!pid->is(ValueKind::kTuple) || pid->items.size() != 5 ||
      !pid->items[0]->is(ValueKind::kString) || pid->items[0]->text != "storage")
    fail("persistent id must be ('storage', class, key, location, numel), got " + describe(pid, 2));
  const Value* cls = pid->items[1];
  const Value* key = pid->items[2];
  const Value* location = pid->items[3];
  const Value* numel = pid->items[4];
  if (!cls->is(ValueKind::kGlobal) || cls->global != Global::kStorageClass)
    fail("persistent id names " + describe(cls, 1) + " where a storage class was expected");
  if (!key->is(ValueKind::kString) || !location->is(ValueKind::kString) ||
      !numel->is(ValueKind::kInt))
    fail("persistent id must be ('storage', class, key, location, numel), got " + describe(pid, 2));
  if (numel->integer < 0) fail("storage '" + printable(key->text) + "' has a negative size");
  size_t itemsize = cls->storage_class.untyped ? 1 : dtype_size(cls->storage_class.dtype);
  if (static_cast<uint64_t>(numel->integer) > std::numeric_limits<uint64_t>::max() / 2 / itemsize)
    fail("storage '" + printable(key->text) + "' declares an impossible size " +
         std::to_string(numel->integer));

  auto it = storages_.find(key->text);
  if (it != storages_.end()) {
    const StorageRef& s = *it->second->storage;
    if (s.cls.untyped != cls->storage_class.untyped || s.cls.dtype != cls->storage_class.dtype ||
        s.numel != numel->integer)
      fail("storage '" + printable(key->text) +
           "' is declared twice with different types or sizes");
    return it->second;
  }
  Value* v = make(ValueKind::kStorage);
  v->storage = std::make_unique<StorageRef>();
  v->storage->key = key->text;
  v->storage->cls = cls->storage_class;
  v->storage->location = location->text;
  v->storage->numel = numel->integer;
  storages_.emplace(key->text, v);
  return v;
}

Value* Machine::rebuild_tensor(Global which, const std::vector<Value*>& a) {
  const char* fname = which == Global::kRebuildTensor     ? "_rebuild_tensor"
                      : which == Global::kRebuildTensorV2 ? "_rebuild_tensor_v2"
                                                          : "_rebuild_tensor_v3";
  // v1: (storage, offset, size, stride)
  // v2: (storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
  // v3: (storage, offset, size, stride, requires_grad, backward_hooks, dtype[, metadata])
  size_t lo = which == Global::kRebuildTensor ? 4 : which == Global::kRebuildTensorV2 ? 6 : 7;
  size_t hi = which == Global::kRebuildTensor ? 4 : lo + 1;
  if (a.size() < lo || a.size() > hi)
    fail(std::string(fname) + " takes " + std::to_string(lo) +
         (lo == hi ? "" : " or " + std::to_string(hi)) + " arguments, got " +
         std::to_string(a.size()));
  if (!a[0]->is(ValueKind::kStorage))
    fail(std::string(fname) + ": first argument must be a storage, got " + describe(a[0], 1));
  if (!a[1]->is(ValueKind::kInt) || a[1]->integer < 0)
    fail(std::string(fname) + ": storage offset must be a non-negative int, got " +
         describe(a[1], 1));
  const StorageRef& storage = *a[0]->storage;

  auto t = std::make_unique<TensorRef>();
  t->storage = a[0];
  t->offset = a[1]->integer;
  t->size = int_tuple(a[2], "tensor size");
  t->stride = int_tuple(a[3], "tensor stride");
  if (t->size.size() != t->stride.size())
    fail("tensor size " + dims_to_string(t->size) + " and stride " + dims_to_string(t->stride) +
         " differ in rank");
  for (size_t i = 0; i < t->size.size(); ++i) {
    if (t->size[i] < 0 || t->stride[i] < 0)
      fail("tensor size " + dims_to_string(t->size) + " / stride " + dims_to_string(t->stride) +
           " must be non-negative");
  }

  // The dtype: the storage's, or for v3 the explicit one (its storage is untyped bytes).
  t->dtype = storage.cls.dtype;
  if (which == Global::kRebuildTensorV3) {
    if (!a[6]->is(ValueKind::kDType))
      fail("_rebuild_tensor_v3: dtype argument must be a torch.dtype, got " + describe(a[6], 1));
    t->dtype = a[6]->dtype;
    if (!storage.cls.untyped && storage.cls.dtype != t->dtype)
      fail("_rebuild_tensor_v3: dtype " + std::string(dtype_name(t->dtype)) +
           " does not match storage '" + printable(storage.key) + "' of " +
           std::string(dtype_name(storage.cls.dtype)));
  }
  int64_t capacity = storage.numel;
  if (storage.cls.untyped) capacity /= static_cast<int64_t>(dtype_size(t->dtype));

  int64_t numel = 0;
  try {
    numel = checked_numel(t->size);
  } catch (const Error& e) {
    fail(std::string(fname) + ": " + e.message());
  }
  if (numel > 0) {
    // Highest element index touched; every term is checked for overflow.
    int64_t last = t->offset;
    for (size_t i = 0; i < t->size.size(); ++i) {
      int64_t term;
      if (__builtin_mul_overflow(t->size[i] - 1, t->stride[i], &term) ||
          __builtin_add_overflow(last, term, &last))
        fail("tensor size " + dims_to_string(t->size) + " / stride " + dims_to_string(t->stride) +
             " overflows");
    }
    if (last >= capacity)
      fail("tensor of size " + dims_to_string(t->size) + ", stride " + dims_to_string(t->stride) +
           " at offset " + std::to_string(t->offset) + " reaches element " + std::to_string(last) +
           " but storage '" + printable(storage.key) + "' holds " + std::to_string(capacity));
  }
  Value* v = make(ValueKind::kTensor);
  v->tensor = std::move(t);
  return v;
}

}  // namespace

Unpickled unpickle(std::span<const uint8_t> bytes, std::string_view name,
                   const UnpickleLimits& limits) {
  return Machine(bytes, name, limits).run();
}

}  // namespace modex::pickle
