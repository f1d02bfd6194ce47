#include "config/manifest_source.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <poll.h>
#include <set>
#include <sstream>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <fmt/core.h>

#include "base/log.h"

namespace sluice::config {

namespace fs = std::filesystem;

namespace {

bool hidden(const fs::path& p) {
  auto name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

bool manifestFile(const fs::path& p) {
  auto ext = p.extension().string();
  return ext == ".yaml" || ext == ".yml" || ext == ".json";
}

}  // namespace

ManifestDirectory::ManifestDirectory(std::string dir, std::chrono::milliseconds debounce)
    : dir_(std::move(dir)), debounce_(debounce) {}

ManifestDirectory::~ManifestDirectory() {
  stop();
}

base::Result<std::vector<StoreEvent>> ManifestDirectory::scan() {
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) {
    return base::Error{fmt::format("--manifests {}: {}", dir_,
                                   fs::exists(dir_, ec) ? "not a directory" : "no such directory")};
  }
  std::vector<std::string> files;
  fs::recursive_directory_iterator it(dir_, fs::directory_options::follow_directory_symlink, ec);
  if (ec) {
    return base::Error{fmt::format("--manifests {}: {}", dir_, ec.message())};
  }
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) {
      break;
    }
    if (hidden(it->path())) {
      if (it->is_directory(ec)) {
        it.disable_recursion_pending();
      }
      continue;
    }
    if (it->is_regular_file(ec) && manifestFile(it->path())) {
      files.push_back(it->path().string());
    }
  }
  std::sort(files.begin(), files.end());
  std::vector<StoreEvent> events;
  std::set<std::string> present;
  for (const auto& path : files) {
    std::string rel = fs::relative(path, dir_, ec).string();
    if (ec || rel.empty()) {
      rel = path;
    }
    present.insert(rel);
    std::ifstream in(path, std::ios::binary);
    std::string text;
    bool readable = in.is_open();
    std::string unreadable = readable ? "" : std::strerror(errno);
    if (readable) {
      // Sized from the file (never a blanket 32 MiB buffer: that cost 20 ms a file); one byte
      // over the limit is enough for the parser to refuse it.
      std::error_code size_ec;
      const auto size = fs::file_size(path, size_ec);
      const size_t want =
          std::min<size_t>(size_ec ? kMaxManifestBytes : size, kMaxManifestBytes) + 1;
      text.resize(want);
      in.read(text.data(), static_cast<std::streamsize>(want));
      readable = !in.bad();
      unreadable = readable ? "" : std::strerror(errno);
      text.resize(static_cast<size_t>(in.gcount()));
    }
    size_t h = std::hash<std::string>{}(text) ^ text.size();
    auto prev = hashes_.find(rel);
    if (prev != hashes_.end() && prev->second == h) {
      continue;  // unchanged
    }
    hashes_[rel] = h;
    ParseResult result;
    if (!readable) {
      result.errors.push_back({rel, "", "cannot read the file: " + unreadable});
    } else {
      result = parseManifests(text, rel);
    }
    auto ev = store_.applySource(rel, std::move(result));
    events.insert(events.end(), ev.begin(), ev.end());
  }
  for (auto h = hashes_.begin(); h != hashes_.end();) {
    if (present.count(h->first) == 0) {
      auto ev = store_.removeSource(h->first);
      events.insert(events.end(), ev.begin(), ev.end());
      h = hashes_.erase(h);
    } else {
      ++h;
    }
  }
  return events;
}

void ManifestDirectory::addWatches() {
  constexpr uint32_t kMask = IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
                             IN_MODIFY | IN_DELETE_SELF | IN_ATTRIB;
  std::vector<std::string> dirs{dir_};
  std::error_code ec;
  fs::recursive_directory_iterator it(dir_, fs::directory_options::follow_directory_symlink, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec)) {
      if (hidden(it->path())) {
        it.disable_recursion_pending();
        continue;
      }
      dirs.push_back(it->path().string());
    }
  }
  for (const auto& d : dirs) {
    if (watches_.count(d) == 0) {
      int wd = inotify_add_watch(inotify_fd_, d.c_str(), kMask);
      if (wd >= 0) {
        watches_[d] = wd;
      }
    }
  }
}

base::Result<void> ManifestDirectory::start(OnChange on_change) {
  on_change_ = std::move(on_change);
  inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd_ < 0) {
    return base::Error{fmt::format("inotify: {}", std::strerror(errno))};
  }
  stop_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  addWatches();
  thread_ = std::thread([this] { run(); });
  return {};
}

void ManifestDirectory::run() {
  char buf[16384];
  bool pending = false;
  while (true) {
    pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    // Debounce: after the first event, wait until the directory has been quiet this long.
    int timeout = pending ? static_cast<int>(debounce_.count()) : -1;
    int n = poll(fds, 2, timeout);
    if (n < 0 && errno != EINTR) {
      SLUICE_LOG(Error, "config", "watching {} failed: {}", dir_, std::strerror(errno));
      return;
    }
    if (fds[1].revents & POLLIN) {
      return;
    }
    if (n > 0 && (fds[0].revents & POLLIN)) {
      while (read(inotify_fd_, buf, sizeof(buf)) > 0) {
      }
      pending = true;
      continue;
    }
    if (n == 0 && pending) {
      pending = false;
      addWatches();
      const size_t errors_before = store_.errorCount();
      auto events = scan();
      if (!events) {
        SLUICE_LOG(Error, "config", "{}", events.error().message);
        continue;
      }
      // Errors that appeared, changed or went away matter even when no object changed.
      if (!events->empty() || errors_before > 0 || store_.errorCount() > 0) {
        on_change_(store_, *events);
      }
    }
  }
}

void ManifestDirectory::stop() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    ssize_t w = write(stop_fd_, &one, sizeof(one));
    (void)w;
    thread_.join();
  }
  if (inotify_fd_ >= 0) {
    close(inotify_fd_);
    inotify_fd_ = -1;
  }
  if (stop_fd_ >= 0) {
    close(stop_fd_);
    stop_fd_ = -1;
  }
}

}  // namespace sluice::config
