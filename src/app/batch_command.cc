#include "app/batch_command.h"

#include <fmt/format.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <thread>

#include "core/error.h"
#include "core/file_util.h"
#include "io/image/image.h"

namespace modex::app {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

int64_t shard_of(const std::string& relative_path, int64_t shards) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a, 64-bit: the same on every platform
  for (unsigned char c : relative_path) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return static_cast<int64_t>(h % static_cast<uint64_t>(shards));
}

namespace {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// The first field of each complete CSV line (the image path), for --resume. A last line without
// its newline (an interrupted run) is cut off the file.
std::set<std::string> done_paths(const fs::path& csv) {
  std::set<std::string> done;
  std::string text = read_file_text(csv);
  size_t complete = text.rfind('\n');
  complete = complete == std::string::npos ? 0 : complete + 1;
  if (complete != text.size()) fs::resize_file(csv, complete);
  size_t pos = 0;
  bool header = true;
  while (pos < complete) {
    std::string field;
    bool quoted = pos < complete && text[pos] == '"';
    size_t i = pos + (quoted ? 1 : 0);
    for (; i < complete; ++i) {
      char c = text[i];
      if (quoted) {
        if (c == '"' && i + 1 < complete && text[i + 1] == '"') field += '"', ++i;
        else if (c == '"') quoted = false;
        else field += c;
      } else if (c == ',' || c == '\n') {
        break;
      } else {
        field += c;
      }
    }
    size_t eol = text.find('\n', i);
    // A quoted field may hold newlines; rows modex writes never do in the path column.
    if (!header) done.insert(field);
    header = false;
    pos = eol == std::string::npos ? complete : eol + 1;
  }
  return done;
}

struct Prepared {
  std::vector<size_t> index;  // into the image list, the images that decoded
  Tensor batch;               // their model inputs, one row each
  std::vector<std::pair<size_t, std::string>> failed;
};

class ProgressBar {
 public:
  ProgressBar(int64_t total, bool enabled) : total_(total), enabled_(enabled && ::isatty(2)), t0_(Clock::now()) {}
  void update(int64_t done, bool final = false) {
    if (!enabled_) return;
    auto now = Clock::now();
    if (!final && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    double s = std::chrono::duration<double>(now - t0_).count();
    double rate = s > 0 ? done / s : 0;
    int width = 30;
    int fill = total_ ? static_cast<int>(width * done / total_) : width;
    double eta = rate > 0 ? (total_ - done) / rate : 0;
    std::fprintf(stderr, "\r[%s%s] %lld/%lld %5.1f%% %7.1f img/s ETA %4.0fs", std::string(static_cast<size_t>(fill), '=').c_str(),
                 std::string(static_cast<size_t>(width - fill), ' ').c_str(), static_cast<long long>(done),
                 static_cast<long long>(total_), total_ ? 100.0 * done / total_ : 100.0, rate, eta);
    if (final) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  int64_t total_;
  bool enabled_;
  Clock::time_point t0_, last_{};
};

}  // namespace

int run_batch(const BatchOptions& o) {
  o.pre.validate();
  if (o.batch_size < 1 || o.batch_size > 4096) throw Error("--batch-size must be between 1 and 4096");
  if (o.top < 1) throw Error("--top must be at least 1");
  int64_t shard = 0, shards = 1;
  if (!o.shard.empty()) {
    if (std::sscanf(o.shard.c_str(), "%lld/%lld", reinterpret_cast<long long*>(&shard), reinterpret_cast<long long*>(&shards)) != 2 ||
        shards < 1 || shard < 0 || shard >= shards || o.shard.find('/') == std::string::npos)
      throw Error("--shard must be K/N with 0 <= K < N, got '" + o.shard + "'");
  }
  if (!fs::is_directory(o.dir)) throw Error("not a folder", ErrorKind::kIo).file(o.dir.string());
  std::vector<fs::path> all = collect_images({o.dir});
  std::vector<fs::path> images;
  for (const auto& p : all)
    if (shards == 1 || shard_of(fs::relative(p, o.dir).generic_string(), shards) == shard) images.push_back(p);

  std::set<std::string> done;
  bool exists = fs::exists(o.output);
  if (exists && o.resume) done = done_paths(o.output);
  else if (exists && !o.overwrite)
    throw Error("output exists; use --resume to continue it or --overwrite to replace it", ErrorKind::kIo).file(o.output.string());
  std::vector<fs::path> todo;
  for (const auto& p : images)
    if (!done.count(p.string())) todo.push_back(p);

  auto t0 = Clock::now();
  std::shared_ptr<Model> model = Model::load(o.model, {.threads = o.threads});
  std::string pre_source;
  image::Preprocess pre = preprocessing_for(*model, o.pre, pre_source);
  std::vector<std::string> names = class_names_of(*model);
  Dims one = pre.shape(1);
  size_t item_bytes = static_cast<size_t>(checked_numel(one)) * (pre.output == image::Preprocess::Output::kUInt8 ? 1 : 4);
  DType item_dtype = pre.output == image::Preprocess::Output::kUInt8 ? DType::kUInt8 : DType::kFloat32;

  std::ofstream csv;
  bool fresh = !(exists && o.resume);
  csv.open(o.output, fresh ? std::ios::trunc : std::ios::app);
  if (!csv) throw Error("cannot write", ErrorKind::kIo).file(o.output.string());
  if (fresh) {
    csv << "path,status,class,name,confidence";
    for (int k = 1; k <= o.top; ++k) csv << fmt::format(",top{}_class,top{}_prob", k, k);
    csv << ",error\n";
    csv.flush();
  }

  // Decoding threads share the cores with inference, and each one that takes a core from an
  // inference thread stalls the pool's parallel calls. Automatic (0): one, which keeps up when a
  // batch decodes faster than it infers (mobilenet_v2, 320x240 JPEGs: 1 CPU ms against 7 ms of
  // inference per image), one more each time the model had to wait for its next batch, one
  // fewer when it did not.
  const int max_decoders = o.decode_threads > 0 ? o.decode_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int decode_threads = o.decode_threads > 0 ? o.decode_threads : 1;
  // Each image allocates and frees the same few hundred KB (file bytes, decoded pixels, resized
  // rows), which glibc would return to the kernel (mmap, heap trimming) and fault back in: 90
  // page faults and 0.4 ms of system time per 320x240 JPEG. Keep such blocks in the heap.
  mallopt(M_MMAP_THRESHOLD, 16 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  // Decoding + preprocessing of batch b+1 runs while batch b is in the model, each straight into
  // its row of one of two input tensors used in turn: no per-image buffers, no copies, and no
  // fresh pages to fault in for every batch.
  Dims full_shape = one;
  full_shape[0] = o.batch_size;
  std::array<Tensor, 2> slots{Tensor::empty(item_dtype, full_shape), Tensor::empty(item_dtype, full_shape)};
  auto prepare = [&](size_t begin, Tensor& slot, int threads) {
    size_t end = std::min(todo.size(), begin + static_cast<size_t>(o.batch_size));
    size_t n = end - begin;
    uint8_t* rows = slot.raw_mutable();
    std::vector<std::string> errors(n);
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t i; (i = next++) < n;) {
        try {
          image::preprocess_into(image::load_image(todo[begin + i]), pre, rows + i * item_bytes);
        } catch (const Error& e) {
          errors[i] = e.what();
        }
      }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < std::min<int>(threads, static_cast<int>(n)); ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    Prepared p;
    for (size_t i = 0; i < n; ++i) {
      if (errors[i].empty()) p.index.push_back(begin + i);
      else p.failed.emplace_back(begin + i, errors[i]);
    }
    if (p.index.size() == static_cast<size_t>(o.batch_size)) {
      p.batch = slot;
    } else if (!p.index.empty()) {
      // A short batch (the last one, or one with unreadable images): its decoded rows, packed.
      Dims shape = one;
      shape[0] = static_cast<int64_t>(p.index.size());
      p.batch = Tensor::empty(item_dtype, shape);
      for (size_t k = 0; k < p.index.size(); ++k)
        std::memcpy(p.batch.raw_mutable() + k * item_bytes, rows + (p.index[k] - begin) * item_bytes, item_bytes);
    }
    return p;
  };

  ProgressBar bar(static_cast<int64_t>(todo.size()), o.progress);
  int64_t ok = 0, failed = 0, processed = 0;
  double infer_s = 0;
  std::future<Prepared> next;
  if (!todo.empty()) next = std::async(std::launch::async, prepare, size_t{0}, std::ref(slots[0]), max_decoders);
  for (size_t begin = 0, b = 0; begin < todo.size(); begin += static_cast<size_t>(o.batch_size), ++b) {
    if (o.decode_threads == 0 && b > 0) {
      const bool waited = next.wait_for(std::chrono::seconds(0)) != std::future_status::ready;
      decode_threads = std::clamp(decode_threads + (waited ? 1 : -1), 1, max_decoders);
    }
    Prepared p = next.get();
    size_t following = begin + static_cast<size_t>(o.batch_size);
    if (following < todo.size())
      next = std::async(std::launch::async, prepare, following, std::ref(slots[(b + 1) % 2]), decode_threads);
    std::string rows;
    if (!p.index.empty()) {
      auto ti = Clock::now();
      std::vector<Tensor> out = model->run({p.batch});
      infer_s += std::chrono::duration<double>(Clock::now() - ti).count();
      const Tensor& logits = out.at(0);
      int64_t classes = logits.numel() / static_cast<int64_t>(p.index.size());
      for (size_t k = 0; k < p.index.size(); ++k) {
        std::vector<float> prob = probabilities(logits.data<float>() + static_cast<int64_t>(k) * classes, classes);
        std::vector<int64_t> order(static_cast<size_t>(classes));
        std::iota(order.begin(), order.end(), 0);
        int64_t kk = std::min<int64_t>(o.top, classes);
        std::partial_sort(order.begin(), order.begin() + kk, order.end(),
                          [&](int64_t a, int64_t b) { return prob[static_cast<size_t>(a)] > prob[static_cast<size_t>(b)]; });
        int64_t c = order[0];
        std::string name = c < static_cast<int64_t>(names.size()) ? names[static_cast<size_t>(c)] : "";
        std::string row = fmt::format("{},ok,{},{},{:.6f}", csv_field(todo[p.index[k]].string()), c, csv_field(name),
                                      prob[static_cast<size_t>(c)]);
        for (int64_t t = 0; t < o.top; ++t)
          row += t < kk ? fmt::format(",{},{:.6f}", order[static_cast<size_t>(t)], prob[static_cast<size_t>(order[static_cast<size_t>(t)])]) : ",,";
        rows += row + ",\n";
        ++ok;
      }
    }
    for (const auto& [i, why] : p.failed) {
      std::string row = fmt::format("{},error,,,", csv_field(todo[i].string()));
      for (int t = 0; t < o.top; ++t) row += ",,";
      rows += row + "," + csv_field(why) + "\n";
      ++failed;
    }
    csv << rows;  // whole rows per batch, so an interrupted run leaves complete lines
    csv.flush();
    if (!csv) throw Error("write failed", ErrorKind::kIo).file(o.output.string());
    processed += static_cast<int64_t>(p.index.size() + p.failed.size());
    bar.update(processed);
  }
  bar.update(processed, true);
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();

  nlohmann::ordered_json j;
  j["model"] = o.model.string();
  j["output"] = o.output.string();
  j["images"] = all.size();
  j["shard"] = fmt::format("{}/{}", shard, shards);
  j["in_shard"] = images.size();
  j["already_done"] = images.size() - todo.size();
  j["classified"] = ok;
  j["failed"] = failed;
  j["seconds"] = secs;
  j["images_per_second"] = secs > 0 ? processed / secs : 0.0;
  j["inference_seconds"] = infer_s;
  j["preprocessing"] = pre_source;
  if (o.json) {
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << fmt::format("{}: {} image(s) under {} ({} in shard {}/{}, {} already in the CSV)\n", o.model.string(), all.size(),
                             o.dir.string(), images.size(), shard, shards, images.size() - todo.size());
    std::cout << fmt::format("classified {}, failed {} (rows with status 'error'), {:.1f} s, {:.1f} images/s -> {}\n", ok, failed, secs,
                             secs > 0 ? processed / secs : 0.0, o.output.string());
  }
  return failed ? 1 : 0;
}

void add_batch_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<BatchOptions>();
  auto* cmd = app.add_subcommand("batch", "Classify every image under a folder into a CSV (resumable, shardable)");
  cmd->add_option("model", o->model, "Model file (.onnx, .tflite, .pth/.pt/.safetensors)")->required();
  cmd->add_option("dir", o->dir, "Folder of images (searched recursively)")->required();
  cmd->add_option("--output", o->output, "CSV file to write")->required();
  cmd->add_option("--threads", o->threads, "Inference threads (0: all cores)")->capture_default_str();
  cmd->add_option("--decode-threads", o->decode_threads, "Image decoding threads (0: as many as keep inference busy)")->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size, "Images per inference")->capture_default_str();
  cmd->add_option("--top", o->top, "Classes per row")->capture_default_str();
  cmd->add_flag("--resume", o->resume, "Skip images already in the CSV and append the rest");
  cmd->add_flag("--overwrite", o->overwrite, "Replace an existing CSV");
  cmd->add_option("--shard", o->shard, "K/N: process only shard K of N (by a hash of each image's relative path)");
  cmd->add_flag("--json", o->json, "Print the summary as JSON");
  cmd->add_flag("!--no-progress", o->progress, "No progress bar");
  cmd->add_option("--input-size", o->pre.input_size, "Override the model's input size");
  cmd->add_option("--resize", o->pre.resize, "resize | resize_center_crop")->check(CLI::IsMember({"resize", "resize_center_crop"}));
  cmd->add_option("--mean", o->pre.mean, "Normalisation mean, 3 comma-separated values")->delimiter(',');
  cmd->add_option("--std", o->pre.std, "Normalisation std, 3 comma-separated values")->delimiter(',');
  cmd->add_option("--layout", o->pre.layout, "nchw | nhwc")->check(CLI::IsMember({"nchw", "nhwc"}));
  cmd->callback([o, &exit_code] { exit_code = run_batch(*o); });
}

}  // namespace modex::app
