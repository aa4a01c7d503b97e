// Detection: which architecture, under which prefix, with which head, a state dict is.
//
// A candidate is (architecture, layout). Layouts come from two cheap scans of the key names: where
// each family's stem convolution sits (the prefix) and which top-level keys look like a Linear
// head. Every candidate is then checked by walking its architecture in check mode with a problem
// budget of zero, so a wrong candidate costs a few lookups and nothing is allocated; only the
// unique exact match is built. When nothing matches, every candidate is checked fully and the
// closest one's strict-load report becomes the error.
#include "models/zoo.h"

#include <algorithm>
#include <cctype>

#include "models/architectures.h"

namespace modex::models {

namespace {

// Where and how an architecture sits in the state dict.
struct Layout {
  std::string prefix;  // the backbone's key prefix
  std::string head;  // top-level Linear producing the logits, "" for the backbone's own classifier
  bool head_bias = true;
  ClassifierMode backbone_mode = ClassifierMode::kFull;
  int64_t backbone_classes = 0;  // rows of the backbone's own classifier, kept under a head
  int64_t num_classes = 0;       // rows of the final Linear, as the state dict has it
};

struct Candidate {
  const Architecture* arch = nullptr;
  Layout layout;
};

// Stands in for num_classes when the classifier weight is missing (the walk then reports it).
constexpr int64_t kAssumedClasses = 1000;

int64_t leading_dim(const StateDict& w, const std::string& key) {
  const Tensor* t = w.find(key);
  return t != nullptr && t->rank() >= 1 ? t->dim(0) : 0;
}

std::string normalize_arch_name(const std::string& name) {
  std::string out;
  for (char ch : name)
    out += ch == '-' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return out;
}

std::string supported_list() {
  std::string s;
  for (const Architecture& a : architectures()) s += (s.empty() ? "" : ", ") + a.name;
  return s;
}

// Prefixes P such that P + stem_key is a key ("" for a plain model, "backbone." for a wrapped one).
// The stem convolution reads the RGB image, so a real stem has 3 input channels; a key that only
// ends the same way (a block's "layer1.0.conv1.weight" for ResNet's "conv1.weight") does not.
// When no stem qualifies (a damaged state dict), the outermost name match is kept so the report
// can still say what is wrong with it.
std::vector<std::string> find_prefixes(const StateDict& w, const std::string& stem_key) {
  std::vector<std::string> plausible, named;
  for (const auto& [key, tensor] : w.entries()) {
    if (!key.ends_with(stem_key)) continue;
    size_t p = key.size() - stem_key.size();
    if (p > 0 && key[p - 1] != '.') continue;
    std::string prefix = key.substr(0, p);
    if (tensor.rank() == 4 && tensor.dim(1) == 3) plausible.push_back(prefix);
    named.push_back(std::move(prefix));
  }
  if (!plausible.empty() || named.empty()) return plausible;
  return {*std::min_element(
      named.begin(), named.end(),
      [](const std::string& a, const std::string& b) { return a.size() < b.size(); })};
}

// Top-level Linear heads a wrapper may add: "fc", "classifier", "head", each optionally ".N"
// (nn.Sequential(nn.Dropout(), nn.Linear()) makes "classifier.1"), with a rank-2 weight.
std::vector<std::string> find_heads(const StateDict& w) {
  static const char* const kHeadNames[] = {"fc", "classifier", "head"};
  std::vector<std::string> heads;
  for (const auto& [key, tensor] : w.entries()) {
    if (!key.ends_with(".weight") || tensor.rank() != 2) continue;
    std::string_view module(key.data(), key.size() - 7);
    for (const char* name : kHeadNames) {
      if (!module.starts_with(name)) continue;
      std::string_view rest = module.substr(std::string_view(name).size());
      bool index_ok = rest.empty() || (rest.size() >= 2 && rest[0] == '.' &&
                                       std::all_of(rest.begin() + 1, rest.end(), [](char c) {
                                         return std::isdigit(static_cast<unsigned char>(c));
                                       }));
      if (index_ok) heads.emplace_back(module);
    }
  }
  return heads;
}

// The layouts `arch` can take under `prefix`: the whole model (its classifier included), or its
// backbone with one of the top-level heads.
void add_layouts(const StateDict& w, const Architecture& arch, const std::string& prefix,
                 const std::vector<std::string>& heads, std::vector<Candidate>& out) {
  const std::string own_classifier = prefix + arch.classifier + ".weight";
  Layout whole;
  whole.prefix = prefix;
  whole.num_classes = leading_dim(w, own_classifier);
  out.push_back({&arch, whole});
  for (const std::string& head : heads) {
    // At the top level the architecture's own classifier is not an extra head.
    if (prefix.empty() && (head == arch.classifier || head == arch.hidden_classifier)) continue;
    Layout l;
    l.prefix = prefix;
    l.head = head;
    l.head_bias = w.contains(head + ".bias");
    l.num_classes = leading_dim(w, head + ".weight");
    if (w.contains(own_classifier)) {
      l.backbone_mode = ClassifierMode::kFull;
      l.backbone_classes = leading_dim(w, own_classifier);
    } else if (!arch.hidden_classifier.empty() &&
               w.contains(prefix + arch.hidden_classifier + ".weight")) {
      l.backbone_mode = ClassifierMode::kHidden;
    } else {
      l.backbone_mode = ClassifierMode::kNone;
    }
    out.push_back({&arch, std::move(l)});
  }
}

// Walks the candidate through `b` (checking or building); returns the logits.
NetValue walk(NetBuilder& b, const Candidate& c) {
  const Layout& l = c.layout;
  int64_t num_classes = l.num_classes > 0 ? l.num_classes : kAssumedClasses;
  b.set_key_prefix(l.prefix);
  NetValue x = b.image();
  if (l.head.empty()) return c.arch->build(b, x, {ClassifierMode::kFull, num_classes});
  x = c.arch->build(
      b, x, {l.backbone_mode, l.backbone_classes > 0 ? l.backbone_classes : kAssumedClasses});
  b.set_key_prefix("");
  return b.linear(x, l.head, num_classes, l.head_bias);
}

LoadReport check(const StateDict& w, const Candidate& c, size_t max_problems) {
  NetBuilder b(w, nullptr, max_problems);
  walk(b, c);
  return b.finish();
}

std::string describe_candidate(const Candidate& c) {
  std::string s = c.arch->name;
  if (!c.layout.prefix.empty()) s += " under '" + c.layout.prefix + "'";
  if (!c.layout.head.empty()) s += " with head '" + c.layout.head + "'";
  return s;
}

std::string classifier_key(const Candidate& c) {
  return c.layout.head.empty() ? c.layout.prefix + c.arch->classifier + ".weight"
                               : c.layout.head + ".weight";
}

// Every candidate for the given architectures. Families whose stem was not found are tried at the
// top level only when `include_unanchored` (for the closest-match report).
std::vector<Candidate> enumerate(const StateDict& w, const std::vector<const Architecture*>& archs,
                                 bool include_unanchored) {
  std::vector<std::string> heads = find_heads(w);
  std::vector<Candidate> out;
  std::vector<std::pair<std::string, std::vector<std::string>>> prefixes_by_stem;  // a tiny cache
  for (const Architecture* a : archs) {
    auto it = std::find_if(prefixes_by_stem.begin(), prefixes_by_stem.end(),
                           [&](const auto& p) { return p.first == a->stem_key; });
    if (it == prefixes_by_stem.end()) {
      prefixes_by_stem.emplace_back(a->stem_key, find_prefixes(w, a->stem_key));
      it = prefixes_by_stem.end() - 1;
    }
    std::vector<std::string> prefixes = it->second;
    if (prefixes.empty() && include_unanchored) prefixes.push_back("");
    for (const std::string& p : prefixes) add_layouts(w, *a, p, heads, out);
  }
  return out;
}

std::vector<const Architecture*> all_architectures() {
  std::vector<const Architecture*> out;
  for (const Architecture& a : architectures()) out.push_back(&a);
  return out;
}

// The unique exact match among `archs`, or nullopt; `all_matches` receives every exact match
// (more than one means the state dict is ambiguous).
std::optional<Candidate> exact_match(const StateDict& w,
                                     const std::vector<const Architecture*>& archs,
                                     std::vector<Candidate>* all_matches = nullptr) {
  std::vector<Candidate> matches;
  for (const Candidate& c : enumerate(w, archs, false))
    if (check(w, c, 0).ok()) matches.push_back(c);
  if (all_matches) *all_matches = matches;
  if (matches.size() != 1) return std::nullopt;
  return matches.front();
}

// Full checks of every candidate; the one with the fewest problems (ties: more keys matched).
std::pair<Candidate, LoadReport> closest(const StateDict& w,
                                         const std::vector<const Architecture*>& archs) {
  std::optional<std::pair<Candidate, LoadReport>> best;
  for (const Candidate& c : enumerate(w, archs, true)) {
    LoadReport r = check(w, c, NetBuilder::kNoLimit);
    if (!best || r.problem_count() < best->second.problem_count() ||
        (r.problem_count() == best->second.problem_count() && r.matched > best->second.matched))
      best.emplace(c, std::move(r));
  }
  return std::move(*best);
}

Candidate select_candidate(const StateDict& w, const BuildOptions& options) {
  std::vector<const Architecture*> archs = all_architectures();
  if (options.arch) {
    const Architecture* a = find_architecture(normalize_arch_name(*options.arch));
    if (a == nullptr)
      throw Error("unknown architecture '" + *options.arch + "'", ErrorKind::kUnsupported)
          .hint("supported architectures: " + supported_list());
    archs = {a};
  }
  if (options.num_classes && *options.num_classes <= 0)
    throw Error("--num-classes must be positive, got " + std::to_string(*options.num_classes));

  std::vector<Candidate> matches;
  std::optional<Candidate> match = exact_match(w, archs, &matches);
  if (!match && matches.size() > 1) {
    std::string names;
    for (const Candidate& c : matches) names += (names.empty() ? "" : ", ") + describe_candidate(c);
    throw Error("state dict matches several architectures: " + names, ErrorKind::kUnsupported)
        .hint("pass --arch NAME to choose one");
  }
  if (!match) {
    auto [best, report] = closest(w, archs);
    std::string where = describe_candidate(best);
    std::string count = std::to_string(report.problem_count()) +
                        (report.problem_count() == 1 ? " problem" : " problems");
    if (options.arch) {
      Error e("state dict does not match --arch " + best.arch->name + " (" + count + ", as " +
              where + "):\n" + report.describe());
      if (std::optional<Candidate> detected = exact_match(w, all_architectures()))
        e.hint("the state dict is " + describe_candidate(*detected) + "; omit --arch to detect it");
      else
        e.hint("supported architectures: " + supported_list());
      throw e;
    }
    throw Error("state dict matches no supported architecture; closest is " + where + " (" + count +
                    "):\n" + report.describe(),
                ErrorKind::kUnsupported)
        .hint("supported architectures: " + supported_list() +
              ". A renamed or modified model cannot be detected; pass --arch NAME to check one "
              "strictly");
  }

  if (options.num_classes && *options.num_classes != match->layout.num_classes) {
    std::string key = classifier_key(*match);
    Dims actual = w.find(key)->shape();
    Dims expected = actual;
    expected[0] = *options.num_classes;
    throw Error("--num-classes " + std::to_string(*options.num_classes) +
                " disagrees with the checkpoint's " + std::to_string(match->layout.num_classes) +
                " classes: shape mismatch for " + key + ": checkpoint " + dims_to_string(actual) +
                " vs expected " + dims_to_string(expected))
        .tensor(key)
        .hint("omit --num-classes to take it from the classifier");
  }
  return *match;
}

std::optional<WrapperInfo> wrapper_of(const Candidate& c) {
  if (c.layout.prefix.empty() && c.layout.head.empty()) return std::nullopt;
  return WrapperInfo{c.layout.prefix, c.layout.head};
}

// `self.backbone = efficientnet_b0().features` stores the feature extractor's keys without the
// `features.` level (`backbone.0.0.weight`). Seen through a view that puts `features.` back
// (`backbone.features.0.0.weight`), such a state dict is the ordinary backbone + head layout.
// Returns nullopt when no key looks like such a stem (a 3-input-channel `P.0.0.weight`).
std::optional<StateDict> features_alias(const StateDict& w) {
  std::string prefix;
  for (const auto& [key, tensor] : w.entries()) {
    if (!key.ends_with(".0.0.weight") || tensor.rank() != 4 || tensor.dim(1) != 3) continue;
    std::string p = key.substr(0, key.size() - std::string_view("0.0.weight").size());
    if (p.ends_with("features.")) continue;  // already the torchvision layout
    prefix = p;
    break;
  }
  if (prefix.empty()) return std::nullopt;
  StateDict alias;
  for (const auto& [key, tensor] : w.entries())
    alias.insert(key.starts_with(prefix) ? prefix + "features." + key.substr(prefix.size()) : key, tensor);
  return alias;
}

// Detection on the state dict as it is, then (when nothing matches) on its features alias.
// Returns the candidate and the state dict it refers to.
std::pair<Candidate, const StateDict*> select_with_alias(const StateDict& w, std::optional<StateDict>& alias,
                                                         const BuildOptions& options) {
  try {
    return {select_candidate(w, options), &w};
  } catch (const Error& original) {
    if (original.kind() != ErrorKind::kUnsupported) throw;
    alias = features_alias(w);
    if (!alias) throw;
    try {
      return {select_candidate(*alias, options), &*alias};
    } catch (const Error&) {
      throw original;
    }
  }
}

}  // namespace

Detection detect_architecture(const StateDict& weights, const BuildOptions& options) {
  std::optional<StateDict> alias;
  Candidate c = select_with_alias(weights, alias, options).first;
  return {c.arch->name, c.layout.num_classes, wrapper_of(c)};
}

BuiltModel build_model(const StateDict& weights, const BuildOptions& options) {
  std::optional<StateDict> alias;
  auto [c, dict] = select_with_alias(weights, alias, options);
  BuiltModel m;
  NetBuilder b(*dict, &m.graph);
  NetValue logits = walk(b, c);
  b.finish();
  m.graph.add_output(logits.id);
  m.graph.set_output_name(logits.id, "logits");
  m.architecture = c.arch->name;
  m.num_classes = c.layout.num_classes;
  m.default_input_size = c.arch->default_input_size;
  m.wrapper = wrapper_of(c);
  return m;
}

std::vector<std::string> architecture_names() {
  std::vector<std::string> names;
  for (const Architecture& a : architectures()) names.push_back(a.name);
  return names;
}

int64_t default_input_size(const std::string& arch) {
  const Architecture* a = find_architecture(normalize_arch_name(arch));
  if (a == nullptr)
    throw Error("unknown architecture '" + arch + "'", ErrorKind::kUnsupported)
        .hint("supported architectures: " + supported_list());
  return a->default_input_size;
}

}  // namespace modex::models
