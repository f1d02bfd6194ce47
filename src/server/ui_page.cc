#include "server/ui_page.h"

namespace sluice::server {

const UiAsset* findUiAsset(std::string_view path) {
  if (path == "/ui" || path == "/ui/") {
    path = "/ui/index.html";
  }
  for (const auto& a : uiAssets()) {
    if (a.path == path) {
      return &a;
    }
  }
  return nullptr;
}

std::string_view uiHeaders() {
  return "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "
         "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
         "frame-ancestors 'none'\r\n"
         "X-Content-Type-Options: nosniff\r\n"
         "X-Frame-Options: DENY\r\n"
         "Referrer-Policy: no-referrer\r\n"
         "Cache-Control: no-store\r\n";
}

}  // namespace sluice::server
