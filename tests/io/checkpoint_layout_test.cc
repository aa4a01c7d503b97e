// Finding the weights and the config inside a checkpoint's object, and stripping wrapper
// prefixes, on hand-built pickles.
#include "io/pytorch/checkpoint_layout.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "io/pytorch/unpickler.h"
#include "io_test_util.h"

namespace modex {
namespace {

using pickle::Unpickled;
using test::PickleWriter;

// {'a': tensor, 'b': tensor} on storage `key`.
PickleWriter& tensors_dict(PickleWriter& w, const std::string& key,
                           std::vector<std::string> names = {"a", "b"}) {
  w.empty_dict().mark();
  for (const std::string& n : names) w.str(n).tensor_v2("FloatStorage", key, 4, 0, {4}, {1});
  return w.setitems();
}

Unpickled unpickle(const PickleWriter& w) { return pickle::unpickle(w.span()); }

TEST(CheckpointLayout, TopLevelStateDict) {
  PickleWriter w;
  w.proto(2);
  tensors_dict(w, "0").stop();
  Unpickled u = unpickle(w);
  pytorch::StateDictLocation loc = pytorch::find_state_dict(u.root);
  EXPECT_EQ(loc.key, "");
  EXPECT_EQ(loc.dict->size(), 2u);
}

TEST(CheckpointLayout, ConventionalKeysInOrderOfPreference) {
  // Each conventional key alone, then two at once: the earlier one in the list wins.
  for (const char* key : pytorch::kStateDictKeys) {
    SCOPED_TRACE(key);
    PickleWriter w;
    w.proto(2).empty_dict().mark().str("epoch").integer(3).str(key);
    tensors_dict(w, "0").str("optimizer_state_dict");
    tensors_dict(w, "1", {"exp_avg"}).setitems().stop();
    Unpickled u = unpickle(w);
    pytorch::StateDictLocation loc = pytorch::find_state_dict(u.root);
    EXPECT_EQ(loc.key, key);
  }
  PickleWriter both;
  both.proto(2).empty_dict().mark().str("weights");
  tensors_dict(both, "0", {"x"}).str("state_dict");
  tensors_dict(both, "1", {"y"}).setitems().stop();
  Unpickled u = unpickle(both);
  EXPECT_EQ(pytorch::find_state_dict(u.root).key, "state_dict");
}

TEST(CheckpointLayout, ConventionalKeyWithoutTensorsIsPassedOver) {
  // 'model' holds a string (an architecture name): the weights are under 'state_dict'.
  PickleWriter w;
  w.proto(2)
      .empty_dict()
      .mark()
      .str("model")
      .str("resnet18")
      .str("net")
      .empty_dict()
      .str("state_dict");
  tensors_dict(w, "0").setitems().stop();
  Unpickled u = unpickle(w);
  EXPECT_EQ(pytorch::find_state_dict(u.root).key, "state_dict");
}

TEST(CheckpointLayout, NestedConventionalKeys) {
  PickleWriter w;
  w.proto(2).empty_dict().mark().str("model").empty_dict().str("state_dict");
  tensors_dict(w, "0").setitem().setitems().stop();
  Unpickled u = unpickle(w);
  EXPECT_EQ(pytorch::find_state_dict(u.root).key, "model.state_dict");
  // Three levels is beyond the search.
  PickleWriter deep;
  deep.proto(2).empty_dict().str("model").empty_dict().str("model").empty_dict().str("state_dict");
  tensors_dict(deep, "0").setitem().setitem().setitem().stop();
  Unpickled d = unpickle(deep);
  EXPECT_THROW(pytorch::find_state_dict(d.root), Error);
}

TEST(CheckpointLayout, AnyDictOfOnlyTensors) {
  PickleWriter w;
  w.proto(2).empty_dict().mark().str("step").integer(10).str("mixed").empty_dict().mark().str("t");
  w.tensor_v2("FloatStorage", "9", 1, 0, {}, {}).str("n").integer(1).setitems().str("ema");
  tensors_dict(w, "0").setitems().stop();
  Unpickled u = unpickle(w);
  EXPECT_EQ(pytorch::find_state_dict(u.root).key, "ema");
}

TEST(CheckpointLayout, NoTensorsOrNoDict) {
  PickleWriter none;
  none.proto(2).empty_dict().mark().str("epoch").integer(1).setitems().stop();
  Unpickled u = unpickle(none);
  try {
    pytorch::find_state_dict(u.root);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no tensors found"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("'epoch'"), std::string::npos);
  }
  PickleWriter list;
  list.proto(2).empty_list().stop();
  Unpickled l = unpickle(list);
  try {
    pytorch::find_state_dict(l.root);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
  }
}

TEST(CheckpointLayout, ConfigFromNestedDictThenTopLevel) {
  PickleWriter w;
  w.proto(2).empty_dict().mark();
  w.str("config")
      .empty_dict()
      .mark()
      .str("model_name")
      .str("effnet")
      .str("input_size")
      .int_tuple({3, 240, 240})
      .setitems();
  w.str("arch").str("ignored: config wins").str("num_classes").integer(7);
  w.str("classes").mark().str("x").str("y").op('l');
  w.setitems().stop();
  Unpickled u = unpickle(w);
  CheckpointConfig c = pytorch::read_config(u.root);
  EXPECT_EQ(c.architecture, "effnet");
  EXPECT_EQ(c.input_size, 240);
  EXPECT_EQ(c.num_classes, 7);
  EXPECT_EQ(c.class_names, (std::vector<std::string>{"x", "y"}));
}

TEST(CheckpointLayout, ConfigValuesOfOtherTypesAreIgnored) {
  PickleWriter w;
  w.proto(2).empty_dict().mark();
  w.str("architecture").integer(5).str("num_classes").str("ten").str("input_size").empty_list();
  w.str("class_names").mark().str("a").integer(2).op('l').str("classes").integer(10);
  w.setitems().stop();
  Unpickled u = unpickle(w);
  CheckpointConfig c = pytorch::read_config(u.root);
  EXPECT_FALSE(c.architecture);
  EXPECT_FALSE(c.num_classes);
  EXPECT_FALSE(c.input_size);
  EXPECT_TRUE(c.class_names.empty());
}

StateDict named(std::vector<std::string> names) {
  StateDict sd;
  for (std::string& n : names) sd.insert(std::move(n), Tensor::scalar_float(0));
  return sd;
}

std::vector<std::string> names_of(const StateDict& sd) {
  std::vector<std::string> out;
  for (const auto& [n, t] : sd.entries()) out.push_back(n);
  return out;
}

TEST(CheckpointLayout, WrapperPrefixes) {
  struct Case {
    std::vector<std::string> in, out, stripped;
  };
  const Case cases[] = {
      {{"module.a", "module.b.c"}, {"a", "b.c"}, {"module."}},
      {{"_orig_mod.module.a", "_orig_mod.module.b"}, {"a", "b"}, {"_orig_mod.", "module."}},
      {{"module._orig_mod.a"}, {"a"}, {"module.", "_orig_mod."}},
      {{"module.module.a"}, {"a"}, {"module.", "module."}},
      {{"module.a", "b"}, {"module.a", "b"}, {}},
      {{"module."}, {"module."}, {}},  // stripping would leave an empty name
      {{"modules.a"}, {"modules.a"}, {}},
      {{}, {}, {}},
  };
  for (const Case& c : cases) {
    StateDict sd = named(c.in);
    std::vector<std::string> stripped;
    pytorch::strip_wrapper_prefixes(sd, stripped);
    EXPECT_EQ(names_of(sd), c.out);
    EXPECT_EQ(stripped, c.stripped);
  }
}

TEST(CheckpointLayout, MetadataConfig) {
  CheckpointConfig c = pytorch::config_from_metadata(
      {{"arch", "vit"}, {"num_classes", "0"}, {"classes", "[\"p\"]"}, {"input_size", "[\"a\"]"}});
  EXPECT_EQ(c.architecture, "vit");
  EXPECT_FALSE(c.num_classes);  // must be positive
  EXPECT_EQ(c.class_names, std::vector<std::string>{"p"});
  EXPECT_FALSE(c.input_size);
}

}  // namespace
}  // namespace modex
