// The models `modex serve` holds, by name, with hot reload. Each load produces an immutable
// LoadedModel (engine, preprocessing, class names, version); requests take a shared_ptr to the
// current one, so a reload swaps the pointer while in-flight requests finish on the old model.
// A file that fails to load leaves the previous version serving and is reported.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <modex/runtime.h>

#include "app/classify.h"
#include "io/image/preprocess.h"

namespace modex::app::serve {

struct LoadedModel {
  std::string name;
  std::filesystem::path path;
  int64_t version = 0;  // 1 for the first load, +1 for each successful reload
  std::string sha256;   // of the file this version was loaded from
  std::string loaded_at;  // UTC, ISO 8601
  std::shared_ptr<Model> model;
  image::Preprocess preprocess;
  std::string preprocess_source;
  std::vector<std::string> class_names;
  bool dynamic_batch = false;  // the input's batch dim is dynamic: requests can be batched
};

// What identifies a file's content cheaply: a replacement (rename over, or rewrite) changes it.
struct FileStamp {
  int64_t mtime_ns = 0;
  int64_t size = -1;
  uint64_t inode = 0;
  bool operator==(const FileStamp&) const = default;
};
std::optional<FileStamp> stamp_of(const std::filesystem::path& path);

struct ReloadResult {
  bool ok = false;
  int64_t version = 0;  // the version now serving
  std::string error;    // when !ok
};

struct ModelStatus {
  std::shared_ptr<const LoadedModel> current;
  int64_t reloads = 0, failed_reloads = 0;
  std::string last_error;  // of the last failed reload, "" after a success
};

class ModelRegistry {
 public:
  ModelRegistry(ModelOptions options, PreprocessOverrides overrides);
  ~ModelRegistry();

  // Loads the first version; throws modex::Error (unreadable model, duplicate name).
  void add(const std::string& name, const std::filesystem::path& path);

  std::shared_ptr<const LoadedModel> get(const std::string& name) const;  // nullptr: unknown
  bool contains(const std::string& name) const;
  std::vector<std::string> names() const;
  ModelStatus status(const std::string& name) const;

  // Loads the file again; on failure the old version keeps serving. Reloads are serialised.
  ReloadResult reload(const std::string& name);
  // Reloads the models whose file changed and has then stayed unchanged for one poll (so a file
  // still being written is not picked up half-way). Returns how many reloads were attempted.
  int poll_changes();
  // A thread that calls poll_changes() every `interval` until stop_watching() or destruction.
  void start_watching(std::chrono::milliseconds interval);
  void stop_watching();

  // Called after each reload attempt (name, result), e.g. for metrics and logs.
  std::function<void(const std::string&, const ReloadResult&)> on_reload;

 private:
  struct Entry {
    std::filesystem::path path;
    std::shared_ptr<const LoadedModel> current;
    std::optional<FileStamp> loaded_stamp;   // the file as last tried (success or failure)
    std::optional<FileStamp> pending_stamp;  // a change seen by the last poll, waiting to settle
    int64_t reloads = 0, failed_reloads = 0;
    std::string last_error;
  };
  std::shared_ptr<const LoadedModel> load(const std::string& name, const std::filesystem::path& path,
                                          int64_t version) const;

  ModelOptions options_;
  PreprocessOverrides overrides_;
  mutable std::mutex mutex_;   // guards entries_ (held briefly)
  std::mutex reload_mutex_;    // serialises loads
  std::map<std::string, Entry> entries_;

  std::mutex watch_mutex_;
  std::condition_variable watch_cv_;
  bool watching_ = false;
  std::thread watcher_;
};

}  // namespace modex::app::serve
