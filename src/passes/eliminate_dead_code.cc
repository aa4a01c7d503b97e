#include "passes/passes.h"

namespace modex::passes {

bool eliminate_dead_code(ir::Graph& g) {
  bool changed = false;
  for (size_t k = 0; k < g.nodes().size(); ++k) {
    ir::Node& n = g.node(static_cast<ir::NodeId>(k));
    if (n.dead || n.op != ir::OpKind::kIdentity) continue;
    ir::ValueId in = n.inputs[0];
    ir::ValueId out = n.outputs[0];
    // An Identity feeding a graph output straight from a graph input must stay.
    if (g.is_graph_output(out) && (g.value(in).producer < 0)) continue;
    g.replace_value(out, in);
    n.dead = true;
    changed = true;
  }
  size_t nodes_before = g.nodes().size();
  size_t values_before = g.values().size();
  g.compact();
  return changed || g.nodes().size() != nodes_before || g.values().size() != values_before;
}

}  // namespace modex::passes
