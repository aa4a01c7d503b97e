// The restricted unpickler on hand-built pickles: every value opcode, the allowlist and each way
// of refusing, malformed input (underflow, bad memo, huge lengths, truncation), and the limits.
#include "io/pytorch/unpickler.h"

#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "io_test_util.h"

namespace modex {
namespace {

using pickle::Global;
using pickle::Unpickled;
using pickle::Value;
using pickle::ValueKind;
using test::PickleWriter;

Unpickled load(const PickleWriter& w, const pickle::UnpickleLimits& limits = {}) {
  return pickle::unpickle(w.span(), "data.pkl", limits);
}

// Unpickles expecting an Error of `kind`; returns its message.
std::string error_of(const PickleWriter& w, ErrorKind kind,
                     const pickle::UnpickleLimits& limits = {}) {
  try {
    load(w, limits);
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(kind)) << e.what();
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no error";
  return "";
}

const Value* dict_get(const Value* d, const std::string& key) {
  EXPECT_TRUE(d->is(ValueKind::kDict));
  return d->dict->find(key);
}

// ---------------------------------------------------------------------------------------------
// Values

TEST(Unpickler, Scalars) {
  PickleWriter w;
  w.proto(2)
      .mark()
      .none()
      .boolean(true)
      .boolean(false)
      .integer(7)
      .integer(300)
      .integer(-5)
      .integer(70000)
      .integer(-3000000000LL)
      .binfloat(-1.25)
      .str("héllo")
      .short_str("s")
      .short_bytes(std::string("\0\xff", 2))
      .tuple()
      .stop();
  Unpickled u = load(w);
  const Value* t = u.root;
  ASSERT_TRUE(t->is(ValueKind::kTuple));
  ASSERT_EQ(t->items.size(), 12u);
  EXPECT_TRUE(t->items[0]->is(ValueKind::kNone));
  EXPECT_TRUE(t->items[1]->boolean);
  EXPECT_FALSE(t->items[2]->boolean);
  EXPECT_EQ(t->items[3]->integer, 7);
  EXPECT_EQ(t->items[4]->integer, 300);
  EXPECT_EQ(t->items[5]->integer, -5);
  EXPECT_EQ(t->items[6]->integer, 70000);
  EXPECT_EQ(t->items[7]->integer, -3000000000LL);
  EXPECT_EQ(t->items[8]->real, -1.25);
  EXPECT_EQ(t->items[9]->text, "héllo");
  EXPECT_TRUE(t->items[9]->is(ValueKind::kString));
  EXPECT_EQ(t->items[10]->text, "s");
  EXPECT_TRUE(t->items[11]->is(ValueKind::kBytes));
  EXPECT_EQ(t->items[11]->text, std::string("\0\xff", 2));
}

TEST(Unpickler, LongIntegers) {
  PickleWriter w;
  w.proto(2).mark();
  w.op(0x8a).op(0);                                                  // LONG1 0 bytes -> 0
  w.op(0x8a).op(1).op(0xff);                                         // -1
  w.op(0x8a).op(2).op(0x00).op(0x80);                                // -32768
  w.op(0x8a).op(9).raw(std::string(8, '\xff')).op(0x7f);             // does not fit in int64
  w.op(0x8a).op(10).raw(std::string("\x01\0\0\0\0\0\0\0\0\0", 10));  // 1 with redundant zero bytes
  w.op(0x8b).raw(std::string("\x03\0\0\0", 4)).raw(std::string("\x00\x00\x01", 3));  // LONG4 65536
  w.tuple().stop();
  Unpickled u = load(w);
  const auto& items = u.root->items;
  ASSERT_EQ(items.size(), 6u);
  EXPECT_EQ(items[0]->integer, 0);
  EXPECT_EQ(items[1]->integer, -1);
  EXPECT_EQ(items[2]->integer, -32768);
  EXPECT_TRUE(items[3]->is(ValueKind::kBigInt));
  EXPECT_EQ(items[4]->integer, 1);
  EXPECT_EQ(items[5]->integer, 65536);
}

TEST(Unpickler, Protocol4StringsBytesAndFrames) {
  PickleWriter inner;
  inner.mark();
  inner.op(0x8d);  // BINUNICODE8
  std::string s8 = "eight";
  std::string len8;
  test::put_le(len8, s8.size(), 8);
  inner.raw(len8).raw(s8);
  inner.op(0x8e).raw(len8).raw("bytes");                      // BINBYTES8
  inner.op(0x96).raw(len8).raw("array");                      // BYTEARRAY8
  inner.op('B').raw(std::string("\x02\0\0\0", 4)).raw("ab");  // BINBYTES
  inner.op(0x8f).mark().integer(1).integer(2).op(0x90);       // EMPTY_SET + ADDITEMS
  inner.mark().integer(3).op(0x91);                           // FROZENSET
  inner.tuple().stop();
  std::string frame_len;
  test::put_le(frame_len, inner.bytes().size(), 8);
  PickleWriter full;
  full.proto(4).op(0x95).raw(frame_len).raw(inner.bytes());
  Unpickled u = load(full);
  const auto& items = u.root->items;
  ASSERT_EQ(items.size(), 6u);
  EXPECT_EQ(items[0]->text, "eight");
  EXPECT_EQ(items[1]->text, "bytes");
  EXPECT_TRUE(items[2]->is(ValueKind::kBytes));
  EXPECT_EQ(items[3]->text, "ab");
  ASSERT_TRUE(items[4]->is(ValueKind::kSet));
  EXPECT_EQ(items[4]->items.size(), 2u);
  ASSERT_TRUE(items[5]->is(ValueKind::kSet));
  EXPECT_EQ(items[5]->items[0]->integer, 3);
}

TEST(Unpickler, ContainersAndSharedReferences) {
  // l = []; d = {'a': l, 'b': l}; l.append(1) after memoisation: both keys see the same list.
  PickleWriter w;
  w.proto(2)
      .empty_dict()
      .binput(0)
      .empty_list()
      .binput(1)
      .op('0')
      .mark()
      .str("a")
      .binget(1)
      .str("b")
      .binget(1)
      .setitems();
  w.binget(1).integer(1).append();
  w.op('0');  // POP the list again
  w.stop();
  Unpickled u = load(w);
  const Value* a = dict_get(u.root, "a");
  const Value* b = dict_get(u.root, "b");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a, b);
  ASSERT_EQ(a->items.size(), 1u);
  EXPECT_EQ(a->items[0]->integer, 1);
}

TEST(Unpickler, DictKeepsOrderAndLaterValueWins) {
  PickleWriter w;
  w.proto(2)
      .empty_dict()
      .mark()
      .str("z")
      .integer(1)
      .str("a")
      .integer(2)
      .str("z")
      .integer(3)
      .integer(5)
      .integer(6)
      .setitems()
      .stop();
  Unpickled u = load(w);
  const auto& items = u.root->dict->items();
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].first->text, "z");
  EXPECT_EQ(items[0].second->integer, 3);
  EXPECT_EQ(items[1].first->text, "a");
  EXPECT_EQ(items[2].first->integer, 5);
}

TEST(Unpickler, TextOpcodes) {
  // Protocol 0 forms: INT (incl. the bool spellings), LONG, FLOAT, STRING, UNICODE, PUT/GET,
  // LIST, DICT, TUPLE.
  PickleWriter w;
  w.mark();
  w.raw("I42\n").raw("I01\n").raw("I00\n").raw("L-12345678901L\n").raw("F2.5\n");
  w.raw("S'it\\'s\\x41\\n'\n").raw("Vcaf\\u00e9 \xe9\n");
  w.raw("p7\n").op('0').raw("g7\n");
  w.raw("(I1\nI2\nl").raw("(S'k'\nI3\nd");
  w.tuple().stop();
  Unpickled u = load(w);
  const auto& items = u.root->items;
  ASSERT_EQ(items.size(), 9u);
  EXPECT_EQ(items[0]->integer, 42);
  EXPECT_TRUE(items[1]->is(ValueKind::kBool) && items[1]->boolean);
  EXPECT_TRUE(items[2]->is(ValueKind::kBool) && !items[2]->boolean);
  EXPECT_EQ(items[3]->integer, -12345678901LL);
  EXPECT_EQ(items[4]->real, 2.5);
  EXPECT_EQ(items[5]->text, "it'sA\n");
  EXPECT_EQ(items[6]->text, "café é");  // PUT 7, POP, GET 7
  ASSERT_TRUE(items[7]->is(ValueKind::kList));
  EXPECT_EQ(items[7]->items.size(), 2u);
  EXPECT_EQ(dict_get(items[8], "k")->integer, 3);
}

TEST(Unpickler, MemoForms) {
  PickleWriter w;
  w.proto(4).str("x").memoize().op('0').str("y").long_binput(100000).op('0');
  w.mark().binget(0).long_binget(100000).op('2').tuple().stop();  // DUP duplicates the top
  Unpickled u = load(w);
  ASSERT_EQ(u.root->items.size(), 3u);
  EXPECT_EQ(u.root->items[0]->text, "x");
  EXPECT_EQ(u.root->items[1]->text, "y");
  EXPECT_EQ(u.root->items[2], u.root->items[1]);
}

TEST(Unpickler, PopMarkDiscardsAFrame) {
  PickleWriter w;
  w.proto(2).integer(1).mark().integer(2).integer(3).op('1').stop();
  EXPECT_EQ(load(w).root->integer, 1);
  // POP on an empty frame pops the mark itself, as CPython does.
  PickleWriter w2;
  w2.proto(2).integer(9).mark().op('0').stop();
  EXPECT_EQ(load(w2).root->integer, 9);
}

TEST(Unpickler, HarmlessGlobals) {
  PickleWriter w;
  w.proto(2).mark();
  w.global("_codecs", "encode").str("\xc3\xa9\x01").str("latin1").op(0x86).reduce();  // 'é\x01'
  w.global("__builtin__", "set").empty_list().integer(1).append().op(0x85).reduce();
  w.global("__builtin__", "frozenset").empty_list().op(0x85).reduce();
  w.global("__builtin__", "bytearray").short_bytes("q").op(0x85).reduce();
  w.global("builtins", "slice").integer(1).integer(2).none().op(0x87).reduce();
  w.global("builtins", "complex").binfloat(1).binfloat(2).op(0x86).reduce();
  w.global("torch", "Size").int_tuple({2, 3}).op(0x85).reduce();
  w.global("torch", "device").str("cuda").integer(1).op(0x86).reduce();
  w.global("torch", "float16");
  w.global("collections", "OrderedDict")
      .mark()
      .str("k")
      .integer(4)
      .op(0x86)
      .op('l')
      .op(0x85)
      .reduce();
  w.global("argparse", "Namespace")
      .empty_tuple()
      .newobj()
      .empty_dict()
      .str("lr")
      .binfloat(0.1)
      .setitem()
      .build();
  w.global("numpy.core.multiarray", "scalar")
      .global("numpy", "dtype")
      .str("f8")
      .op(0x85)
      .reduce()
      .short_bytes("12345678")
      .op(0x86)
      .reduce();
  w.tuple().stop();
  Unpickled u = load(w);
  const auto& items = u.root->items;
  ASSERT_EQ(items.size(), 12u);
  EXPECT_EQ(items[0]->text, std::string("\xe9\x01", 2));
  EXPECT_TRUE(items[0]->is(ValueKind::kBytes));
  EXPECT_TRUE(items[1]->is(ValueKind::kSet));
  EXPECT_EQ(items[1]->items.size(), 1u);
  EXPECT_TRUE(items[2]->is(ValueKind::kSet));
  EXPECT_EQ(items[3]->text, "q");
  EXPECT_TRUE(items[4]->is(ValueKind::kOpaque));
  EXPECT_TRUE(items[5]->is(ValueKind::kOpaque));
  ASSERT_TRUE(items[6]->is(ValueKind::kTuple));
  EXPECT_EQ(items[6]->items[1]->integer, 3);
  EXPECT_EQ(items[7]->text, "cuda:1");
  ASSERT_TRUE(items[8]->is(ValueKind::kDType));
  EXPECT_EQ(items[8]->dtype, DType::kFloat16);
  EXPECT_EQ(dict_get(items[9], "k")->integer, 4);
  EXPECT_TRUE(items[10]->is(ValueKind::kOpaque));
  EXPECT_TRUE(items[11]->is(ValueKind::kOpaque));
}

TEST(Unpickler, CodecsEncodeRejectsCharactersOutsideLatin1) {
  PickleWriter w;
  w.proto(2).global("_codecs", "encode").str("\xe2\x9c\x93").str("latin1").op(0x86).reduce().stop();
  EXPECT_NE(error_of(w, ErrorKind::kInvalidInput).find("latin1"), std::string::npos);
}

TEST(Unpickler, ByteArrayOfALengthIsRefused) {
  // bytearray(10**12) would allocate on the file's word.
  PickleWriter w;
  w.proto(2).global("builtins", "bytearray").integer(1 << 30).op(0x85).reduce().stop();
  error_of(w, ErrorKind::kInvalidInput);
}

// ---------------------------------------------------------------------------------------------
// Refusals

struct Refused {
  const char* module;
  const char* name;
  const char* shown;
};

TEST(Unpickler, RefusesEveryGlobalOffTheAllowlist) {
  const Refused cases[] = {
      {"os", "system", "os.system"},
      {"posix", "system", "posix.system"},
      {"nt", "system", "nt.system"},
      {"builtins", "eval", "builtins.eval"},
      {"builtins", "exec", "builtins.exec"},
      {"__builtin__", "getattr", "builtins.getattr"},
      {"__builtin__", "__import__", "builtins.__import__"},
      {"subprocess", "Popen", "subprocess.Popen"},
      {"subprocess", "check_output", "subprocess.check_output"},
      {"torch.storage", "_load_from_bytes", "torch.storage._load_from_bytes"},
      {"torch", "load", "torch.load"},
      {"copyreg", "_reconstructor", "copyreg._reconstructor"},
      {"collections", "OrderedDictX", "collections.OrderedDictX"},
      {"torch._utils", "_rebuild_tensor_v2.__globals__",
       "torch._utils._rebuild_tensor_v2.__globals__"},
  };
  for (const Refused& c : cases) {
    SCOPED_TRACE(c.shown);
    PickleWriter w;
    w.proto(2).global(c.module, c.name).str("touch /tmp/x").op(0x85).reduce().stop();
    std::string msg = error_of(w, ErrorKind::kUnsafe);
    EXPECT_NE(msg.find(std::string("the global '") + c.shown + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("refusing to load"), std::string::npos);
    EXPECT_NE(msg.find("data.pkl at byte 2"), std::string::npos) << msg;

    // The same through STACK_GLOBAL (protocol 4) and INST (protocol 0).
    PickleWriter w4;
    w4.proto(4).stack_global(c.module, c.name).stop();
    EXPECT_NE(error_of(w4, ErrorKind::kUnsafe).find(c.shown), std::string::npos);
    PickleWriter w0;
    w0.mark().raw("i").raw(c.module).raw("\n").raw(c.name).raw("\n").stop();
    EXPECT_NE(error_of(w0, ErrorKind::kUnsafe).find(c.shown), std::string::npos);
  }
}

TEST(Unpickler, RefusedClassesGetAStateDictHint) {
  PickleWriter w;
  w.proto(2).global("__main__", "Net").empty_tuple().newobj().stop();
  try {
    load(w);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsafe);
    EXPECT_NE(e.hint_text().find("torch.save(model.state_dict(), path)"), std::string::npos);
  }
  PickleWriter fn;
  fn.proto(2).global("os", "system").stop();
  try {
    load(fn);
    FAIL();
  } catch (const Error& e) {
    EXPECT_TRUE(e.hint_text().empty());  // a function is not a model
  }
}

TEST(Unpickler, GlobalNamesAreMadePrintable) {
  PickleWriter w;
  w.proto(2).global("os\x1b[31m", "system").stop();
  std::string msg = error_of(w, ErrorKind::kUnsafe);
  EXPECT_NE(msg.find("os\\x1b[31m.system"), std::string::npos) << msg;
}

TEST(Unpickler, ExtensionRegistryIsRefused) {
  PickleWriter w;
  w.proto(2).op(0x82).op(1).stop();
  error_of(w, ErrorKind::kUnsafe);
}

TEST(Unpickler, RefusalHappensBeforeAnyCall) {
  // The refused global is never even pushed: a REDUCE after it cannot run.
  PickleWriter w;
  w.proto(2)
      .global("collections", "OrderedDict")
      .empty_tuple()
      .reduce()
      .global("os", "system")
      .str("x")
      .op(0x85)
      .reduce()
      .op('0')
      .stop();
  EXPECT_NE(error_of(w, ErrorKind::kUnsafe).find("'os.system'"), std::string::npos);
}

TEST(Unpickler, CallingNonCallablesFails) {
  PickleWriter dict_call;
  dict_call.proto(2).empty_dict().empty_tuple().reduce().stop();
  error_of(dict_call, ErrorKind::kInvalidInput);
  PickleWriter storage_call;
  storage_call.proto(2)
      .global("torch", "FloatStorage")
      .integer(1000000000)
      .op(0x85)
      .reduce()
      .stop();
  error_of(storage_call, ErrorKind::kUnsupported);
  PickleWriter args_not_tuple;
  args_not_tuple.proto(2).global("collections", "OrderedDict").empty_list().reduce().stop();
  error_of(args_not_tuple, ErrorKind::kInvalidInput);
  PickleWriter build_on_int;
  build_on_int.proto(2).integer(1).empty_dict().build().stop();
  error_of(build_on_int, ErrorKind::kInvalidInput);
}

TEST(Unpickler, UnsupportedButSafeTorchGlobals) {
  PickleWriter q;
  q.proto(2).global("torch._utils", "_rebuild_qtensor").stop();
  EXPECT_NE(error_of(q, ErrorKind::kUnsupported).find("quantized"), std::string::npos);
  PickleWriter next_buffer;
  next_buffer.proto(5).op(0x97).stop();
  error_of(next_buffer, ErrorKind::kUnsupported);
  PickleWriter proto6;
  proto6.proto(6).none().stop();
  error_of(proto6, ErrorKind::kUnsupported);
  PickleWriter persid;
  persid.raw("P0\n").stop();
  error_of(persid, ErrorKind::kUnsupported);
}

// ---------------------------------------------------------------------------------------------
// Malformed input

TEST(Unpickler, StackUnderflow) {
  const std::string ops[] = {".",    "R",    "s",    "a", "b",    "0",    "2",
                             "\x85", "\x86", "\x87", "Q", "\x93", "\x81", std::string("q\0", 2),
                             "\x94"};
  for (const std::string& op : ops) {
    SCOPED_TRACE(testing::PrintToString(op));
    PickleWriter w;
    w.proto(2).raw(op).stop();
    EXPECT_NE(error_of(w, ErrorKind::kInvalidInput).find("data.pkl at byte 2"), std::string::npos);
  }
  // Items below a MARK are not visible to the ops inside it.
  PickleWriter w;
  w.proto(2).integer(1).integer(2).mark().op(0x86).stop();
  EXPECT_NE(error_of(w, ErrorKind::kInvalidInput).find("stack underflow"), std::string::npos);
}

TEST(Unpickler, MissingMark) {
  for (char op : {'t', 'l', 'd', 'e', 'u', '1'}) {
    PickleWriter w;
    w.proto(2).empty_list().empty_dict().op(static_cast<uint8_t>(op)).stop();
    EXPECT_NE(error_of(w, ErrorKind::kInvalidInput).find("MARK"), std::string::npos) << op;
  }
}

TEST(Unpickler, BadMemoIndex) {
  PickleWriter w;
  w.proto(2).integer(1).binput(3).binget(4).stop();
  std::string msg = error_of(w, ErrorKind::kInvalidInput);
  EXPECT_NE(msg.find("memo index 4"), std::string::npos);
  EXPECT_NE(msg.find("byte 6"), std::string::npos) << msg;
  PickleWriter long_get;
  long_get.proto(2).long_binget(0xffffffffu).stop();
  error_of(long_get, ErrorKind::kInvalidInput);
  PickleWriter text_get;
  text_get.raw("g-1\n").stop();
  error_of(text_get, ErrorKind::kInvalidInput);
  PickleWriter put_empty;
  put_empty.proto(2).binput(0).stop();  // nothing to memoize
  error_of(put_empty, ErrorKind::kInvalidInput);
}

TEST(Unpickler, HugeLengthsAreCheckedBeforeAllocating) {
  const std::string max32("\xff\xff\xff\xff", 4);
  const std::string max64(8, '\xff');
  const std::string opcodes[] = {
      "X" + max32,     // BINUNICODE
      "B" + max32,     // BINBYTES
      "T" + max32,     // BINSTRING (negative length)
      "\x8d" + max64,  // BINUNICODE8
      "\x8e" + max64,  // BINBYTES8
      "\x96" + max64,  // BYTEARRAY8
      "\x95" + max64,  // FRAME
      "\x8b" + max32,  // LONG4 (negative length)
      "\x8b" + std::string("\xff\xff\xff\x7f", 4),
      "\x8c\xff",  // SHORT_BINUNICODE past the end
      "U\x10",     // SHORT_BINSTRING
      "C\x10",     // SHORT_BINBYTES
      "\x8a\x40",  // LONG1
  };
  for (const std::string& op : opcodes) {
    SCOPED_TRACE(testing::PrintToString(op));
    PickleWriter w;
    w.proto(4).raw(op).raw("abc");
    error_of(w, ErrorKind::kInvalidInput);
  }
}

TEST(Unpickler, Truncation) {
  PickleWriter w;
  w.proto(2).tensor_v2("FloatStorage", "0", 4, 0, {2, 2}, {2, 1}).stop();
  const std::string& full = w.bytes();
  for (size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE(n);
    PickleWriter cut;
    cut.raw(full.substr(0, n));
    error_of(cut, ErrorKind::kInvalidInput);
  }
}

TEST(Unpickler, InvalidUtf8AndUnknownOpcodes) {
  PickleWriter utf8;
  utf8.proto(2).str("\xc3\x28").stop();
  EXPECT_NE(error_of(utf8, ErrorKind::kInvalidInput).find("UTF-8"), std::string::npos);
  PickleWriter surrogate;
  surrogate.proto(2).str("\xed\xa0\x80").stop();
  error_of(surrogate, ErrorKind::kInvalidInput);
  PickleWriter overlong;
  overlong.proto(2).str("\xc0\xaf").stop();
  error_of(overlong, ErrorKind::kInvalidInput);
  PickleWriter unknown;
  unknown.proto(2).op(0xff).stop();
  EXPECT_NE(error_of(unknown, ErrorKind::kInvalidInput).find("0xff"), std::string::npos);
}

TEST(Unpickler, WrongContainerOperations) {
  PickleWriter append_dict;
  append_dict.proto(2).empty_dict().integer(1).append().stop();
  error_of(append_dict, ErrorKind::kInvalidInput);
  PickleWriter setitem_list;
  setitem_list.proto(2).empty_list().integer(1).integer(2).setitem().stop();
  error_of(setitem_list, ErrorKind::kInvalidInput);
  PickleWriter odd;
  odd.proto(2).empty_dict().mark().integer(1).setitems().stop();
  error_of(odd, ErrorKind::kInvalidInput);
  PickleWriter unhashable;
  unhashable.proto(2).empty_dict().empty_list().integer(1).setitem().stop();
  EXPECT_NE(error_of(unhashable, ErrorKind::kInvalidInput).find("unhashable"), std::string::npos);
  PickleWriter additems_list;
  additems_list.proto(4).empty_list().mark().integer(1).op(0x90).stop();
  error_of(additems_list, ErrorKind::kInvalidInput);
  PickleWriter stack_global_ints;
  stack_global_ints.proto(4).integer(1).integer(2).op(0x93).stop();
  error_of(stack_global_ints, ErrorKind::kInvalidInput);
}

TEST(Unpickler, ValueLimit) {
  pickle::UnpickleLimits limits;
  limits.max_values = 100;
  PickleWriter w;
  w.proto(2).mark();
  for (int i = 0; i < 200; ++i) w.none();
  w.tuple().stop();
  EXPECT_NE(error_of(w, ErrorKind::kInvalidInput, limits).find("more than 100 values"),
            std::string::npos);
  // DUP and BINGET push without creating values: the stack has its own cap.
  PickleWriter dup;
  dup.proto(2).none();
  for (int i = 0; i < 200; ++i) dup.op('2');
  dup.stop();
  error_of(dup, ErrorKind::kInvalidInput, limits);
  PickleWriter marks;
  marks.proto(2).raw(std::string(200, '('));
  error_of(marks, ErrorKind::kInvalidInput, limits);
  PickleWriter memo;
  memo.proto(2).none();
  for (uint32_t i = 0; i < 200; ++i) memo.long_binput(i);
  memo.stop();
  error_of(memo, ErrorKind::kInvalidInput, limits);
}

TEST(Unpickler, DeepNestingNeedsNoRecursion) {
  // 200,000 lists each inside the previous one: built, described and destroyed without
  // recursing on the depth.
  constexpr int kDepth = 200000;
  PickleWriter w;
  w.proto(2);
  for (int i = 0; i < kDepth; ++i) w.empty_list();
  for (int i = 0; i < kDepth - 1; ++i) w.append();
  w.stop();
  Unpickled u = load(w);
  int depth = 0;
  for (const Value* v = u.root; v->is(ValueKind::kList) && !v->items.empty(); v = v->items[0])
    ++depth;
  EXPECT_EQ(depth, kDepth - 1);
  EXPECT_LT(pickle::describe(u.root).size(), 100u);
}

TEST(Unpickler, CyclesAreHarmless) {
  // l = []; l.append(l)
  PickleWriter w;
  w.proto(2).empty_list().binput(0).binget(0).append().stop();
  Unpickled u = load(w);
  ASSERT_EQ(u.root->items.size(), 1u);
  EXPECT_EQ(u.root->items[0], u.root);
  EXPECT_LT(pickle::describe(u.root, 10).size(), 1000u);
}

// ---------------------------------------------------------------------------------------------
// Tensors and storages

TEST(Unpickler, RebuildTensorV2) {
  PickleWriter w;
  w.proto(2).tensor_v2("HalfStorage", "7", 24, 4, {2, 3}, {6, 2}).stop();
  Unpickled u = load(w);
  ASSERT_TRUE(u.root->is(ValueKind::kTensor));
  const pickle::TensorRef& t = *u.root->tensor;
  EXPECT_EQ(t.dtype, DType::kFloat16);
  EXPECT_EQ(t.offset, 4);
  EXPECT_EQ(t.size, (Dims{2, 3}));
  EXPECT_EQ(t.stride, (Dims{6, 2}));
  EXPECT_EQ(t.storage->storage->key, "7");
  EXPECT_EQ(t.storage->storage->numel, 24);
}

TEST(Unpickler, EveryStorageClass) {
  const std::pair<const char*, DType> classes[] = {
      {"FloatStorage", DType::kFloat32}, {"DoubleStorage", DType::kFloat64},
      {"HalfStorage", DType::kFloat16},  {"BFloat16Storage", DType::kBFloat16},
      {"LongStorage", DType::kInt64},    {"IntStorage", DType::kInt32},
      {"ShortStorage", DType::kInt16},   {"CharStorage", DType::kInt8},
      {"ByteStorage", DType::kUInt8},    {"BoolStorage", DType::kBool},
  };
  for (const auto& [cls, dtype] : classes) {
    for (const char* module : {"torch", "torch.cuda"}) {
      PickleWriter w;
      w.proto(2).global("torch._utils", "_rebuild_tensor_v2").mark();
      w.mark()
          .str("storage")
          .global(module, cls)
          .str("0")
          .str("cuda:0")
          .integer(3)
          .tuple()
          .binpersid();
      w.integer(0).int_tuple({3}).int_tuple({1}).boolean(false).none().tuple().reduce().stop();
      Unpickled u = load(w);
      EXPECT_EQ(u.root->tensor->dtype, dtype) << cls;
    }
  }
}

TEST(Unpickler, TiedStoragesShareOneValue) {
  PickleWriter w;
  w.proto(2)
      .mark()
      .tensor_v2("FloatStorage", "0", 6, 0, {6}, {1})
      .tensor_v2("FloatStorage", "0", 6, 2, {2, 2}, {2, 1})
      .tuple()
      .stop();
  Unpickled u = load(w);
  EXPECT_EQ(u.root->items[0]->tensor->storage, u.root->items[1]->tensor->storage);
  // The same key declared with another type or size is contradictory.
  PickleWriter bad;
  bad.proto(2)
      .mark()
      .tensor_v2("FloatStorage", "0", 6, 0, {6}, {1})
      .tensor_v2("IntStorage", "0", 6, 0, {6}, {1})
      .tuple()
      .stop();
  EXPECT_NE(error_of(bad, ErrorKind::kInvalidInput).find("declared twice"), std::string::npos);
}

TEST(Unpickler, TensorExtentMustFitTheStorage) {
  struct Case {
    int64_t numel, offset;
    std::vector<int64_t> size, stride;
    bool ok;
  };
  const Case cases[] = {
      {6, 0, {2, 3}, {3, 1}, true},
      {6, 1, {2, 3}, {3, 1}, false},  // one past the end
      {7, 1, {2, 3}, {3, 1}, true},
      {6, 0, {3, 2}, {1, 3}, true},  // transposed
      {6, 0, {3, 2}, {1, 4}, false},
      {1, 0, {}, {}, true},          // 0-dim
      {0, 0, {}, {}, false},         // 0-dim needs an element
      {0, 5, {0, 3}, {3, 1}, true},  // empty tensors touch nothing
      {3, 0, {4}, {0}, true},        // expanded (stride 0)
      {10, 0, {1LL << 62, 4}, {4, 1}, false},
      {10, 0, {2, 2}, {1LL << 62, 1}, false},  // overflow in the extent
      {10, 9223372036854775807LL, {1}, {1}, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(dims_to_string(c.size) + " / " + dims_to_string(c.stride) + " @" +
                 std::to_string(c.offset));
    PickleWriter w;
    w.proto(2).tensor_v2("FloatStorage", "0", c.numel, c.offset, c.size, c.stride).stop();
    if (c.ok) {
      EXPECT_NO_THROW(load(w));
    } else {
      error_of(w, ErrorKind::kInvalidInput);
    }
  }
}

TEST(Unpickler, MalformedTensorArguments) {
  auto rebuild = [](auto&& args) {
    PickleWriter w;
    w.proto(2).global("torch._utils", "_rebuild_tensor_v2").mark();
    args(w);
    w.tuple().reduce().stop();
    return w;
  };
  // Negative sizes and strides, rank mismatch, non-int sizes, a non-storage, a negative offset,
  // too few arguments, too many dimensions.
  error_of(rebuild([](PickleWriter& w) {
             w.storage("FloatStorage", "0", 4)
                 .integer(0)
                 .int_tuple({-1})
                 .int_tuple({1})
                 .boolean(false)
                 .none();
           }),
           ErrorKind::kInvalidInput);
  error_of(rebuild([](PickleWriter& w) {
             w.storage("FloatStorage", "0", 4)
                 .integer(0)
                 .int_tuple({2})
                 .int_tuple({-1})
                 .boolean(false)
                 .none();
           }),
           ErrorKind::kInvalidInput);
  error_of(rebuild([](PickleWriter& w) {
             w.storage("FloatStorage", "0", 4)
                 .integer(0)
                 .int_tuple({2, 2})
                 .int_tuple({1})
                 .boolean(false)
                 .none();
           }),
           ErrorKind::kInvalidInput);
  error_of(rebuild([](PickleWriter& w) {
             w.storage("FloatStorage", "0", 4)
                 .integer(0)
                 .mark()
                 .str("2")
                 .tuple()
                 .int_tuple({1})
                 .boolean(false)
                 .none();
           }),
           ErrorKind::kInvalidInput);
  error_of(rebuild([](PickleWriter& w) {
             w.str("storage").integer(0).int_tuple({2}).int_tuple({1}).boolean(false).none();
           }),
           ErrorKind::kInvalidInput);
  error_of(rebuild([](PickleWriter& w) {
             w.storage("FloatStorage", "0", 4)
                 .integer(-1)
                 .int_tuple({2})
                 .int_tuple({1})
                 .boolean(false)
                 .none();
           }),
           ErrorKind::kInvalidInput);
  error_of(
      rebuild([](PickleWriter& w) { w.storage("FloatStorage", "0", 4).integer(0).int_tuple({2}); }),
      ErrorKind::kInvalidInput);
  error_of(rebuild([](PickleWriter& w) {
             std::vector<int64_t> ones(65, 1);
             w.storage("FloatStorage", "0", 4)
                 .integer(0)
                 .int_tuple(ones)
                 .int_tuple(ones)
                 .boolean(false)
                 .none();
           }),
           ErrorKind::kInvalidInput);
}

TEST(Unpickler, MalformedPersistentIds) {
  PickleWriter short_pid;
  short_pid.proto(2)
      .mark()
      .str("storage")
      .global("torch", "FloatStorage")
      .str("0")
      .tuple()
      .binpersid()
      .stop();
  error_of(short_pid, ErrorKind::kInvalidInput);
  PickleWriter not_storage;
  not_storage.proto(2)
      .mark()
      .str("module")
      .global("torch", "FloatStorage")
      .str("0")
      .str("cpu")
      .integer(1)
      .tuple()
      .binpersid()
      .stop();
  error_of(not_storage, ErrorKind::kInvalidInput);
  PickleWriter not_a_class;
  not_a_class.proto(2)
      .mark()
      .str("storage")
      .global("torch", "Size")
      .str("0")
      .str("cpu")
      .integer(1)
      .tuple()
      .binpersid()
      .stop();
  error_of(not_a_class, ErrorKind::kInvalidInput);
  PickleWriter negative;
  negative.proto(2).storage("FloatStorage", "0", -1).stop();
  error_of(negative, ErrorKind::kInvalidInput);
  PickleWriter huge;
  huge.proto(2).storage("DoubleStorage", "0", INT64_MAX).stop();
  error_of(huge, ErrorKind::kInvalidInput);
  PickleWriter int_key;
  int_key.proto(2)
      .mark()
      .str("storage")
      .global("torch", "FloatStorage")
      .integer(0)
      .str("cpu")
      .integer(1)
      .tuple()
      .binpersid()
      .stop();
  error_of(int_key, ErrorKind::kInvalidInput);
}

TEST(Unpickler, OtherRebuildFunctions) {
  // v1 (4 args), parameters, tensor subclasses and v3 with an untyped storage and explicit dtype.
  PickleWriter w;
  w.proto(2).mark();
  w.global("torch._utils", "_rebuild_tensor")
      .mark()
      .storage("FloatStorage", "a", 4)
      .integer(0)
      .int_tuple({4})
      .int_tuple({1})
      .tuple()
      .reduce();
  w.global("torch._utils", "_rebuild_parameter")
      .mark()
      .tensor_v2("FloatStorage", "b", 2, 0, {2}, {1})
      .boolean(true)
      .global("collections", "OrderedDict")
      .empty_tuple()
      .reduce()
      .tuple()
      .reduce();
  w.global("torch._utils", "_rebuild_parameter_with_state")
      .mark()
      .tensor_v2("FloatStorage", "c", 2, 0, {2}, {1})
      .boolean(true)
      .empty_dict()
      .empty_dict()
      .tuple()
      .reduce();
  w.global("torch.nn.parameter", "Parameter")
      .mark()
      .tensor_v2("FloatStorage", "d", 1, 0, {}, {})
      .boolean(false)
      .tuple()
      .newobj();
  w.global("torch._tensor", "_rebuild_from_type_v2")
      .mark()
      .global("torch._utils", "_rebuild_tensor_v2");
  w.global("torch.nn.parameter", "Parameter")
      .mark()
      .storage("FloatStorage", "e", 3)
      .integer(0)
      .int_tuple({3})
      .int_tuple({1})
      .boolean(false)
      .none()
      .tuple()
      .empty_dict()
      .tuple()
      .reduce();
  w.global("torch._utils", "_rebuild_tensor_v3")
      .mark()
      .storage("UntypedStorage", "f", 8)
      .integer(1)
      .int_tuple({3})
      .int_tuple({1})
      .boolean(false)
      .none()
      .global("torch", "uint16")
      .tuple()
      .reduce();
  w.tuple().stop();
  Unpickled u = load(w);
  const auto& items = u.root->items;
  ASSERT_EQ(items.size(), 6u);
  for (const Value* v : items) EXPECT_TRUE(v->is(ValueKind::kTensor)) << pickle::describe(v);
  EXPECT_EQ(items[0]->tensor->storage->storage->key, "a");
  EXPECT_EQ(items[3]->tensor->size, Dims{});
  EXPECT_EQ(items[4]->tensor->storage->storage->key, "e");
  EXPECT_EQ(items[5]->tensor->dtype, DType::kUInt16);
  EXPECT_TRUE(items[5]->tensor->storage->storage->cls.untyped);

  // v3: 8 bytes hold 4 uint16 elements; offset 1 + 4 elements does not fit.
  PickleWriter too_far;
  too_far.proto(2)
      .global("torch._utils", "_rebuild_tensor_v3")
      .mark()
      .storage("UntypedStorage", "f", 8)
      .integer(1)
      .int_tuple({4})
      .int_tuple({1})
      .boolean(false)
      .none()
      .global("torch", "uint16")
      .tuple()
      .reduce()
      .stop();
  error_of(too_far, ErrorKind::kInvalidInput);
  // v3 with a typed storage of another dtype.
  PickleWriter mismatch;
  mismatch.proto(2)
      .global("torch._utils", "_rebuild_tensor_v3")
      .mark()
      .storage("FloatStorage", "g", 8)
      .integer(0)
      .int_tuple({4})
      .int_tuple({1})
      .boolean(false)
      .none()
      .global("torch", "int32")
      .tuple()
      .reduce()
      .stop();
  error_of(mismatch, ErrorKind::kInvalidInput);
  // _rebuild_from_type_v2 cannot recurse into itself.
  PickleWriter nested;
  nested.proto(2)
      .global("torch._tensor", "_rebuild_from_type_v2")
      .mark()
      .global("torch._tensor", "_rebuild_from_type_v2")
      .global("torch", "Tensor")
      .empty_tuple()
      .empty_dict()
      .tuple()
      .reduce()
      .stop();
  error_of(nested, ErrorKind::kInvalidInput);
  // A parameter of something that is not a tensor.
  PickleWriter param_of_int;
  param_of_int.proto(2)
      .global("torch._utils", "_rebuild_parameter")
      .mark()
      .integer(1)
      .boolean(true)
      .none()
      .tuple()
      .reduce()
      .stop();
  error_of(param_of_int, ErrorKind::kInvalidInput);
}

TEST(Unpickler, ErrorsNameTheEntryAndOffset) {
  PickleWriter w;
  w.proto(2).integer(1).op('R').stop();
  try {
    pickle::unpickle(w.span(), "archive/data.pkl");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("archive/data.pkl at byte 4: ", 0), 0u) << e.what();
  }
}

}  // namespace
}  // namespace modex
