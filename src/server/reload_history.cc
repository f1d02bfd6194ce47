#include "server/reload_history.h"

#include <nlohmann/json.hpp>

namespace sluice::server {

void ReloadHistory::add(ReloadRecord r) {
  ++total_;
  records_.push_back(std::move(r));
  while (records_.size() > kKept) {
    records_.pop_front();
  }
}

std::string ReloadHistory::json() const {
  using nlohmann::json;
  json list = json::array();
  for (auto it = records_.rbegin(); it != records_.rend(); ++it) {
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(it->at.time_since_epoch());
    list.push_back({{"unix_ms", ms.count()},
                    {"trigger", it->trigger},
                    {"applied", it->applied},
                    {"version", it->version},
                    {"duration_ms", it->ms},
                    {"detail", it->detail},
                    {"appeared", it->appeared},
                    {"resolved", it->resolved}});
  }
  // Object names and messages may hold any bytes a manifest carried: replace, never throw.
  return json{{"total", total_}, {"reloads", std::move(list)}}.dump(
             -1, ' ', false, json::error_handler_t::replace) +
         "\n";
}

}  // namespace sluice::server
