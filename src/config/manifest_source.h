#pragma once

// Config sources feed the object store. The manifest directory source reads every .yaml, .yml
// and .json file under a directory (hidden entries skipped, so Kubernetes ConfigMap mounts with
// their ..data symlink swap work) and watches it with inotify: after a burst of changes settles
// (the debounce), only the files whose contents changed are parsed again.

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"
#include "config/object_store.h"

namespace sluice::config {

class ConfigSource {
 public:
  using OnChange = std::function<void(const ObjectStore&, const std::vector<StoreEvent>&)>;
  virtual ~ConfigSource() = default;
  // Watches for changes; `on_change` runs on the source's own thread.
  virtual base::Result<void> start(OnChange on_change) = 0;
  virtual void stop() = 0;
};

class ManifestDirectory final : public ConfigSource {
 public:
  explicit ManifestDirectory(std::string dir,
                             std::chrono::milliseconds debounce = std::chrono::milliseconds(100));
  ~ManifestDirectory() override;

  // Reads the directory now (synchronously) and applies what changed to the store.
  base::Result<std::vector<StoreEvent>> scan();
  const ObjectStore& store() const { return store_; }
  const std::string& dir() const { return dir_; }

  base::Result<void> start(OnChange on_change) override;
  void stop() override;

 private:
  void run();
  void addWatches();

  std::string dir_;
  std::chrono::milliseconds debounce_;
  ObjectStore store_;
  std::map<std::string, size_t> hashes_;  // file -> hash of the contents last parsed
  OnChange on_change_;
  int inotify_fd_ = -1;
  int stop_fd_ = -1;
  std::map<std::string, int> watches_;
  std::thread thread_;
};

}  // namespace sluice::config
