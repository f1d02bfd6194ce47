#pragma once

// The YAML reader behind the router file's parser: typed fields with field-path errors.
// Internal to src/config.

#include <chrono>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include <fmt/core.h>
#include <yaml-cpp/yaml.h>

#include "base/strings.h"
#include "config/router_config.h"

namespace sluice::config {

using std::chrono::milliseconds;

class Parser {
 public:
  explicit Parser(ConfigErrors& errors) : errors_(errors) {}

  void error(const std::string& path, const std::string& message) {
    errors_.errors.push_back(path + ": " + message);
  }

  // Checks that `node` is a map whose keys are all in `allowed`.
  bool mapWithKeys(const YAML::Node& node, const std::string& path,
                   std::initializer_list<std::string_view> allowed) {
    if (!node.IsMap()) {
      error(path.empty() ? "<root>" : path, "must be a mapping");
      return false;
    }
    for (const auto& kv : node) {
      std::string key = kv.first.Scalar();
      bool known = false;
      for (auto a : allowed) {
        known = known || a == key;
      }
      if (!known) {
        error(join(path, key), "unknown field");
      }
    }
    return true;
  }

  static std::string join(const std::string& path, std::string_view key) {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
  }

  std::optional<std::string> scalar(const YAML::Node& node, const std::string& path) {
    if (!node.IsScalar()) {
      error(path, "must be a scalar");
      return std::nullopt;
    }
    return node.Scalar();
  }

  void string(const YAML::Node& parent, std::string_view key, const std::string& path,
              std::string& out) {
    if (auto n = parent[std::string(key)]) {
      if (auto s = scalar(n, join(path, key))) {
        out = *s;
      }
    }
  }

  template <class T>
  void uint(const YAML::Node& parent, std::string_view key, const std::string& path, T& out,
            uint64_t min, uint64_t max) {
    auto n = parent[std::string(key)];
    if (!n) {
      return;
    }
    auto s = scalar(n, join(path, key));
    if (!s) {
      return;
    }
    auto v = base::parseUint(*s);
    if (!v || *v < min || *v > max) {
      error(join(path, key), fmt::format("must be an integer in {}..{}, got \"{}\"", min, max, *s));
      return;
    }
    out = static_cast<T>(*v);
  }

  void bytes(const YAML::Node& parent, std::string_view key, const std::string& path, uint64_t& out,
             uint64_t min) {
    auto n = parent[std::string(key)];
    if (!n) {
      return;
    }
    auto s = scalar(n, join(path, key));
    if (!s) {
      return;
    }
    auto v = base::parseByteSize(*s);
    if (!v || *v < min) {
      error(join(path, key),
            fmt::format("must be a size of at least {} bytes such as 64KiB or 32MiB, got \"{}\"",
                        min, *s));
      return;
    }
    out = *v;
  }

  void duration(const YAML::Node& parent, std::string_view key, const std::string& path,
                milliseconds& out) {
    auto n = parent[std::string(key)];
    if (!n) {
      return;
    }
    auto s = scalar(n, join(path, key));
    if (!s) {
      return;
    }
    auto v = base::parseDuration(*s);
    if (!v || v->count() <= 0) {
      error(join(path, key),
            fmt::format("must be a positive duration such as 500ms, 10s or 5m, got \"{}\"", *s));
      return;
    }
    out = *v;
  }

  void address(const YAML::Node& parent, std::string_view key, ListenAddress& out) {
    auto n = parent[std::string(key)];
    if (!n) {
      return;
    }
    std::string path(key);
    if (!mapWithKeys(n, path, {"address", "port"})) {
      return;
    }
    string(n, "address", path, out.address);
    uint(n, "port", path, out.port, 0, 65535);
    if (out.address.empty()) {
      error(join(path, "address"), "must not be empty");
    }
  }

  void boolean(const YAML::Node& parent, std::string_view key, const std::string& path, bool& out) {
    if (auto n = parent[std::string(key)]) {
      if (auto v = scalar(n, join(path, key))) {
        if (*v == "true" || *v == "false") {
          out = *v == "true";
        } else {
          error(join(path, key), "must be true or false");
        }
      }
    }
  }

 private:
  ConfigErrors& errors_;
};

// access_log, metric_names and tracing (observability_config.cc).
void parseObservability(Parser& p, const YAML::Node& root, RouterConfig& config);

}  // namespace sluice::config
