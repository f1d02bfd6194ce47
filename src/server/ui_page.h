#pragma once

// The admin status page (/ui): self-contained HTML, script and style sheet compiled into the
// binary (src/server/ui, embedded by cmake/embed_ui.cmake). The script polls the admin JSON
// endpoints (/debug/status, /debug/pools, /debug/traffic, /debug/decisions, /debug/reloads)
// from the same origin; nothing is loaded from anywhere else.

#include <string_view>
#include <vector>

namespace sluice::server {

struct UiAsset {
  std::string_view path;  // "/ui/index.html", "/ui/status.js", ...
  std::string_view type;  // its Content-Type
  std::string_view body;
};

// Every embedded file (generated ui_assets.cc).
const std::vector<UiAsset>& uiAssets();

// The file served at `path` ("/ui" and "/ui/" are the page itself), or null.
const UiAsset* findUiAsset(std::string_view path);

// The headers every page file is served with: a policy that lets the page run only its own
// script and talk only to its own origin, no sniffing, no framing, no caching.
std::string_view uiHeaders();

}  // namespace sluice::server
