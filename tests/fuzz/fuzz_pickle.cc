// Fuzzes the restricted unpickler alone (the input is data.pkl), then the code that looks for
// the weights and the config in whatever value tree came out.
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/error.h"
#include "io/pytorch/checkpoint_layout.h"
#include "io/pytorch/unpickler.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    modex::pickle::Unpickled u = modex::pickle::unpickle(std::span<const uint8_t>(data, size));
    volatile size_t sink = modex::pickle::describe(u.root, 4).size();
    (void)sink;
    modex::CheckpointConfig config = modex::pytorch::read_config(u.root);
    (void)config;
    modex::pytorch::StateDictLocation where = modex::pytorch::find_state_dict(u.root);
    sink = where.dict->size();
  } catch (const modex::Error&) {
  }
  return 0;
}
