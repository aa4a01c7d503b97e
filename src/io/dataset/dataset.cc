#include "io/dataset/dataset.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

#include "core/error.h"
#include "core/file_util.h"

namespace modex::dataset {

namespace fs = std::filesystem;

std::string_view dataset_type_name(DatasetType t) {
  switch (t) {
    case DatasetType::kAuto: return "auto";
    case DatasetType::kClassification: return "classification";
    case DatasetType::kDetection: return "detection";
    case DatasetType::kFlat: return "flat";
  }
  return "auto";
}

DatasetType parse_dataset_type(std::string_view name) {
  for (DatasetType t : {DatasetType::kAuto, DatasetType::kClassification, DatasetType::kDetection, DatasetType::kFlat}) {
    if (name == dataset_type_name(t)) return t;
  }
  throw Error(fmt::format("unknown dataset type '{}'", name)).hint("use auto, classification, detection or flat");
}

bool is_image_file(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp";
}

namespace {

bool hidden(const fs::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

// Sorted non-hidden entries; unreadable folders are treated as empty.
std::vector<fs::directory_entry> entries(const fs::path& dir) {
  std::vector<fs::directory_entry> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    if (!hidden(it->path())) out.push_back(*it);
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.path() < b.path(); });
  return out;
}

std::vector<fs::path> subdirs(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : entries(dir)) {
    if (is_dir(e.path())) out.push_back(e.path());
  }
  return out;
}

// Images under dir (recursively when asked), each folder visited once even through symlink loops.
void collect(const fs::path& dir, bool recursive, std::set<fs::path>& visited, std::vector<fs::path>& out) {
  std::error_code ec;
  fs::path canon = fs::canonical(dir, ec);
  if (ec || !visited.insert(canon).second) return;
  for (const auto& e : entries(dir)) {
    if (is_dir(e.path())) {
      if (recursive) collect(e.path(), true, visited, out);
    } else if (is_image_file(e.path()) && fs::is_regular_file(e.path(), ec)) {
      out.push_back(e.path());
    }
  }
}

std::vector<fs::path> images_in(const fs::path& dir, bool recursive) {
  std::set<fs::path> visited;
  std::vector<fs::path> out;
  collect(dir, recursive, visited, out);
  return out;
}

struct SplitChoice {
  fs::path dir;
  std::string name;
  std::string reason;
};

// The first split folder under base (val, then test, then train) that accepts(dir).
template <typename Accept>
std::optional<SplitChoice> choose_split(const fs::path& base, Accept accepts) {
  static const std::vector<std::pair<std::string, std::vector<std::string>>> kSplits = {
      {"val", {"val", "valid", "validation"}}, {"test", {"test"}}, {"train", {"train"}}};
  std::vector<std::string> missing;
  for (const auto& [split, names] : kSplits) {
    for (const std::string& n : names) {
      const fs::path d = base / n;
      if (is_dir(d) && accepts(d)) {
        std::string reason;
        if (split == "val") {
          reason = "validation split (preferred)";
        } else if (split == "test") {
          reason = "no usable val split";
        } else {
          reason = "no usable val or test split: calibrating on training images";
        }
        return SplitChoice{d, n, reason};
      }
    }
  }
  return std::nullopt;
}

// Classes = subfolders of dir holding at least one image (searched recursively).
std::vector<std::pair<std::string, std::vector<fs::path>>> classes_in(const fs::path& dir) {
  std::vector<std::pair<std::string, std::vector<fs::path>>> out;
  for (const fs::path& d : subdirs(dir)) {
    std::vector<fs::path> imgs = images_in(d, true);
    if (!imgs.empty()) out.emplace_back(d.filename().string(), std::move(imgs));
  }
  return out;
}

std::optional<DatasetInfo> try_classification(const fs::path& root) {
  DatasetInfo info;
  info.root = root;
  info.type = DatasetType::kClassification;
  fs::path base = root;
  if (auto s = choose_split(root, [](const fs::path& d) { return !classes_in(d).empty(); })) {
    base = s->dir;
    info.split = s->name;
    info.split_reason = s->reason;
    info.layout = "DIR/<split>/<class>/<image>";
  } else {
    info.layout = "DIR/<class>/<image>";
    info.split_reason = "no split folders";
  }
  auto classes = classes_in(base);
  if (classes.empty()) return std::nullopt;
  info.image_root = base;
  for (auto& [name, imgs] : classes) {
    const int index = static_cast<int>(info.classes.size());
    info.classes.push_back({name, static_cast<int64_t>(imgs.size())});
    for (auto& p : imgs) info.images.push_back({std::move(p), index});
  }
  return info;
}

std::optional<DatasetInfo> try_detection(const fs::path& root) {
  auto has_images = [](const fs::path& d) { return !images_in(d, true).empty(); };
  auto make = [&](const fs::path& dir, std::string layout, std::string split, std::string reason) {
    DatasetInfo info;
    info.root = root;
    info.type = DatasetType::kDetection;
    info.layout = std::move(layout);
    info.image_root = dir;
    info.split = std::move(split);
    info.split_reason = std::move(reason);
    for (auto& p : images_in(dir, true)) info.images.push_back({std::move(p), -1});
    return info;
  };
  for (const char* prefix : {"images", "output/images"}) {
    const fs::path base = root / prefix;
    if (!is_dir(base)) continue;
    if (auto s = choose_split(base, has_images)) {
      return make(s->dir, fmt::format("DIR/{}/<split>/<image>", prefix), s->name, s->reason);
    }
    if (!images_in(base, false).empty()) return make(base, fmt::format("DIR/{}/<image>", prefix), "", "no split folders");
  }
  // Roboflow-style YOLO exports: DIR/<split>/images/.
  if (auto s = choose_split(root, [&](const fs::path& d) { return is_dir(d / "images") && has_images(d / "images"); })) {
    return make(s->dir / "images", "DIR/<split>/images/<image>", s->name, s->reason);
  }
  return std::nullopt;
}

std::optional<DatasetInfo> try_flat(const fs::path& root) {
  std::vector<fs::path> imgs = images_in(root, false);
  if (imgs.empty()) return std::nullopt;
  DatasetInfo info;
  info.root = root;
  info.type = DatasetType::kFlat;
  info.layout = "DIR/<image>";
  info.image_root = root;
  info.split_reason = "flat folder";
  for (auto& p : imgs) info.images.push_back({std::move(p), -1});
  return info;
}

}  // namespace

DatasetInfo discover(const fs::path& dir, DatasetType type) {
  if (!fs::exists(dir)) throw Error("dataset folder not found", ErrorKind::kIo).file(dir.string());
  if (!is_dir(dir)) throw Error("dataset path is not a folder", ErrorKind::kIo).file(dir.string());
  std::optional<DatasetInfo> found;
  switch (type) {
    case DatasetType::kClassification: found = try_classification(dir); break;
    case DatasetType::kDetection: found = try_detection(dir); break;
    case DatasetType::kFlat: found = try_flat(dir); break;
    case DatasetType::kAuto:
      found = try_detection(dir);
      if (!found) found = try_classification(dir);
      if (!found) found = try_flat(dir);
      break;
  }
  if (!found || found->images.empty()) {
    const char* expected = "";
    switch (type) {
      case DatasetType::kClassification: expected = "expected DIR/{val,test,train}/<class>/<image> or DIR/<class>/<image>"; break;
      case DatasetType::kDetection: expected = "expected DIR/images/{val,test,train}/<image> or DIR/output/images/{val,test,train}/<image>"; break;
      case DatasetType::kFlat: expected = "expected images directly inside the folder"; break;
      case DatasetType::kAuto: expected = "expected a classification, detection (YOLO) or flat image folder"; break;
    }
    throw Error(type == DatasetType::kAuto ? std::string("no images found (.jpg, .jpeg, .png, .bmp)")
                                           : fmt::format("no {} dataset found (.jpg, .jpeg, .png, .bmp images)", dataset_type_name(type)),
                ErrorKind::kInvalidInput)
        .file(dir.string())
        .hint(expected);
  }
  return std::move(*found);
}

uint64_t SplitMix64::next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::below(uint64_t bound) {
  // Rejection sampling: drop the top sliver of the range that would make some values likelier.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t v;
  do {
    v = next();
  } while (v >= limit);
  return v % bound;
}

namespace {

template <typename T>
void shuffle(std::vector<T>& v, SplitMix64& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

}  // namespace

std::vector<Sample> sample(const DatasetInfo& info, int64_t n, uint64_t seed) {
  check(n > 0, fmt::format("the number of samples must be positive, got {}", n));
  // Group by class (one group when there are none), each shuffled, then interleaved.
  const size_t groups = std::max<size_t>(1, info.classes.size());
  std::vector<std::vector<const Sample*>> by_class(groups);
  for (const Sample& s : info.images) {
    const size_t g = s.class_index >= 0 && static_cast<size_t>(s.class_index) < groups ? static_cast<size_t>(s.class_index) : 0;
    by_class[g].push_back(&s);
  }
  SplitMix64 rng(seed);
  for (auto& g : by_class) shuffle(g, rng);
  std::vector<size_t> order(groups);
  for (size_t i = 0; i < groups; ++i) order[i] = i;
  shuffle(order, rng);

  std::vector<Sample> out;
  const size_t want = static_cast<size_t>(std::min<int64_t>(n, static_cast<int64_t>(info.images.size())));
  out.reserve(want);
  for (size_t round = 0; out.size() < want; ++round) {
    for (size_t g : order) {
      if (round < by_class[g].size() && out.size() < want) out.push_back(*by_class[g][round]);
    }
  }
  return out;
}

Tensor CalibrationSet::stacked() const {
  if (batches.empty()) return {};
  Dims shape = batches[0].shape();
  shape[0] = 0;
  for (const Tensor& b : batches) shape[0] += b.dim(0);
  Tensor out = Tensor::empty(batches[0].dtype(), shape);
  size_t off = 0;
  for (const Tensor& b : batches) {
    std::memcpy(out.raw_mutable() + off, b.raw(), b.nbytes());
    off += b.nbytes();
  }
  return out;
}

CalibrationSet load_batches(const std::vector<Sample>& samples, const image::Preprocess& pre, const LoadOptions& options) {
  check(options.batch_size > 0, fmt::format("batch size must be positive, got {}", options.batch_size));
  const DType dtype = pre.output == image::Preprocess::Output::kUInt8 ? DType::kUInt8 : DType::kFloat32;
  const size_t sample_bytes = static_cast<size_t>(checked_numel(pre.shape(1))) * dtype_size(dtype);
  int threads = options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
  threads = std::max(1, std::min(threads, 64));

  CalibrationSet set;
  const int64_t total = static_cast<int64_t>(samples.size());
  std::atomic<int64_t> done{0};
  auto last_report = std::chrono::steady_clock::now();
  if (options.progress) options.progress(0, total);

  // Chunks of a few batches bound the memory held by decoded-but-unbatched images.
  const size_t chunk = static_cast<size_t>(std::max<int64_t>(options.batch_size, 1)) * 2 + static_cast<size_t>(threads);
  std::vector<uint8_t> pending;  // preprocessed samples not yet in a full batch
  std::vector<Sample> pending_samples;
  auto flush = [&](bool all) {
    const size_t per_batch = static_cast<size_t>(options.batch_size);
    size_t start = 0;
    while (pending_samples.size() - start >= per_batch || (all && pending_samples.size() > start)) {
      const size_t n = std::min(per_batch, pending_samples.size() - start);
      Tensor t = Tensor::empty(dtype, pre.shape(static_cast<int64_t>(n)));
      std::memcpy(t.raw_mutable(), pending.data() + start * sample_bytes, n * sample_bytes);
      set.batches.push_back(std::move(t));
      for (size_t i = 0; i < n; ++i) set.used.push_back(pending_samples[start + i]);
      start += n;
    }
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(start * sample_bytes));
    pending_samples.erase(pending_samples.begin(), pending_samples.begin() + static_cast<std::ptrdiff_t>(start));
  };

  for (size_t first = 0; first < samples.size(); first += chunk) {
    const size_t count = std::min(chunk, samples.size() - first);
    std::vector<std::vector<uint8_t>> slots(count);
    std::vector<std::string> errors(count);
    std::atomic<size_t> next{0};
    auto work = [&](bool reporter) {
      for (size_t i; (i = next.fetch_add(1)) < count;) {
        const Sample& s = samples[first + i];
        try {
          image::Image img = image::load_image(s.path, options.decode);
          std::vector<uint8_t> buf(sample_bytes);
          image::preprocess_into(img, pre, buf.data());
          slots[i] = std::move(buf);
        } catch (const Error& e) {
          errors[i] = e.message().empty() ? e.what() : e.message();
        } catch (const std::bad_alloc&) {
          errors[i] = "out of memory";
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
        done.fetch_add(1);
        if (reporter && options.progress) {
          auto now = std::chrono::steady_clock::now();
          if (now - last_report > std::chrono::milliseconds(100)) {
            last_report = now;
            options.progress(done.load(), total);
          }
        }
      }
    };
    std::vector<std::thread> pool;
    const size_t extra = std::min<size_t>(static_cast<size_t>(threads - 1), count > 0 ? count - 1 : 0);
    pool.reserve(extra);
    try {
      for (size_t t = 0; t < extra; ++t) pool.emplace_back(work, false);
    } catch (const std::system_error&) {
      // Fewer threads than asked (resource limits): the calling thread does the rest.
    }
    work(true);
    for (auto& t : pool) t.join();
    for (size_t i = 0; i < count; ++i) {
      if (!errors[i].empty() || slots[i].size() != sample_bytes) {
        set.skipped.push_back({samples[first + i].path, errors[i].empty() ? "decode failed" : errors[i]});
        continue;
      }
      pending.insert(pending.end(), slots[i].begin(), slots[i].end());
      pending_samples.push_back(samples[first + i]);
    }
    flush(false);
  }
  flush(true);
  if (options.progress) options.progress(total, total);
  return set;
}

}  // namespace modex::dataset
