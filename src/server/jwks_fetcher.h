#pragma once

// Fetches a JWKS document from a URL on its own thread (never on a worker): once at start, then
// every refresh interval; each new document is handed to the callback, which rebuilds the
// filters. https URLs are verified against the system CAs and the host name.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "base/result.h"

namespace sluice::server {

class JwksFetcher {
 public:
  using OnKeys = std::function<void(const std::string& jwks)>;
  JwksFetcher(std::string url, std::chrono::milliseconds refresh, std::chrono::milliseconds timeout,
              OnKeys on_keys);
  ~JwksFetcher();
  JwksFetcher(const JwksFetcher&) = delete;
  JwksFetcher& operator=(const JwksFetcher&) = delete;

  // One GET, bounded by `timeout`: the body of a 200 response, or why not.
  static base::Result<std::string> fetch(const std::string& url, std::chrono::milliseconds timeout);
  void start();
  void stop();

 private:
  std::string url_;
  std::chrono::milliseconds refresh_;
  std::chrono::milliseconds timeout_;
  OnKeys on_keys_;
  std::string last_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace sluice::server
