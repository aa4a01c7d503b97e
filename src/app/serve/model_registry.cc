#include "app/serve/model_registry.h"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <sys/stat.h>

#include <ctime>

#include "core/error.h"
#include "core/file_util.h"

namespace modex::app::serve {
namespace fs = std::filesystem;

std::optional<FileStamp> stamp_of(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  FileStamp s;
  s.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  s.size = static_cast<int64_t>(st.st_size);
  s.inode = static_cast<uint64_t>(st.st_ino);
  return s;
}

namespace {

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", tm);
}

}  // namespace

ModelRegistry::ModelRegistry(ModelOptions options, PreprocessOverrides overrides)
    : options_(options), overrides_(std::move(overrides)) {}

ModelRegistry::~ModelRegistry() { stop_watching(); }

std::shared_ptr<const LoadedModel> ModelRegistry::load(const std::string& name, const fs::path& path,
                                                       int64_t version) const {
  auto m = std::make_shared<LoadedModel>();
  m->name = name;
  m->path = path;
  m->version = version;
  m->sha256 = sha256_file(path);
  m->model = Model::load(path, options_);
  m->preprocess = preprocessing_for(*m->model, overrides_, m->preprocess_source);
  m->class_names = class_names_of(*m->model);
  const TensorInfo& in = m->model->inputs().at(0);
  m->dynamic_batch = !in.shape.empty() && in.shape[0] < 0;
  m->loaded_at = utc_now();
  return m;
}

void ModelRegistry::add(const std::string& name, const fs::path& path) {
  {
    std::lock_guard lock(mutex_);
    if (entries_.count(name))
      throw Error(fmt::format("two models are named '{}'", name)).file(path.string()).hint("name them: NAME=PATH");
  }
  std::optional<FileStamp> stamp = stamp_of(path);
  if (!stamp) throw Error("model file not found", ErrorKind::kIo).file(path.string());
  Entry e;
  e.path = path;
  e.loaded_stamp = stamp;
  e.current = load(name, path, 1);
  std::lock_guard lock(mutex_);
  entries_[name] = std::move(e);
}

std::shared_ptr<const LoadedModel> ModelRegistry::get(const std::string& name) const {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : it->second.current;
}

bool ModelRegistry::contains(const std::string& name) const {
  std::lock_guard lock(mutex_);
  return entries_.count(name) > 0;
}

std::vector<std::string> ModelRegistry::names() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [name, e] : entries_) out.push_back(name);
  return out;
}

ModelStatus ModelRegistry::status(const std::string& name) const {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return {};
  return {it->second.current, it->second.reloads, it->second.failed_reloads, it->second.last_error};
}

ReloadResult ModelRegistry::reload(const std::string& name) {
  std::lock_guard serial(reload_mutex_);
  fs::path path;
  int64_t version;
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(name);
    if (it == entries_.end()) return {false, 0, fmt::format("unknown model '{}'", name)};
    path = it->second.path;
    version = it->second.current->version;
  }
  // Stamp before reading: a change during the load shows up at the next poll.
  std::optional<FileStamp> stamp = stamp_of(path);
  ReloadResult result;
  std::shared_ptr<const LoadedModel> fresh;
  try {
    if (!stamp) throw Error("model file not found", ErrorKind::kIo).file(path.string());
    fresh = load(name, path, version + 1);
  } catch (const Error& e) {
    result.error = e.what();
  } catch (const std::bad_alloc&) {
    result.error = fmt::format("{}: out of memory while loading", path.string());
  } catch (const std::exception& e) {
    result.error = fmt::format("{}: {}", path.string(), e.what());
  }
  {
    std::lock_guard lock(mutex_);
    Entry& e = entries_.at(name);
    e.loaded_stamp = stamp;
    e.pending_stamp.reset();
    if (fresh) {
      e.current = fresh;
      ++e.reloads;
      e.last_error.clear();
      result.ok = true;
    } else {
      ++e.failed_reloads;
      e.last_error = result.error;
    }
    result.version = e.current->version;
  }
  if (on_reload) on_reload(name, result);
  return result;
}

int ModelRegistry::poll_changes() {
  std::vector<std::string> due;
  {
    std::lock_guard lock(mutex_);
    for (auto& [name, e] : entries_) {
      std::optional<FileStamp> now = stamp_of(e.path);
      if (now == e.loaded_stamp) {
        e.pending_stamp.reset();
      } else if (now && now == e.pending_stamp) {
        due.push_back(name);  // changed, and unchanged since the last poll
      } else {
        e.pending_stamp = now;  // changed (or vanished): wait for it to settle
      }
    }
  }
  for (const auto& name : due) reload(name);
  return static_cast<int>(due.size());
}

void ModelRegistry::start_watching(std::chrono::milliseconds interval) {
  std::lock_guard lock(watch_mutex_);
  if (watching_) return;
  watching_ = true;
  watcher_ = std::thread([this, interval] {
    std::unique_lock lock(watch_mutex_);
    while (watching_) {
      if (watch_cv_.wait_for(lock, interval, [this] { return !watching_; })) break;
      lock.unlock();
      poll_changes();
      lock.lock();
    }
  });
}

void ModelRegistry::stop_watching() {
  {
    std::lock_guard lock(watch_mutex_);
    if (!watching_) return;
    watching_ = false;
  }
  watch_cv_.notify_all();
  if (watcher_.joinable()) watcher_.join();
}

}  // namespace modex::app::serve
