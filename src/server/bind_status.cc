#include "server/bind_status.h"

#include <algorithm>

#include <fmt/core.h>

namespace sluice::server {

void markUnboundListeners(std::vector<router::ObjectStatus>& status,
                          const router::RouteTable& table, const UnboundPorts& unbound) {
  for (const auto& [port, why] : unbound) {
    auto group = table.ports.find(port);
    if (group == table.ports.end()) {
      continue;
    }
    for (const auto& lr : group->second) {
      auto st = std::find_if(status.begin(), status.end(), [&](const router::ObjectStatus& s) {
        return s.key == "Gateway/" + lr->gateway;
      });
      if (st == status.end()) {
        continue;
      }
      const std::string message = fmt::format("cannot listen on {}:{}: {}", lr->address, port, why);
      for (auto& ls : st->listeners) {
        if (ls.name != lr->name) {
          continue;
        }
        ls.conditions.erase(std::remove_if(ls.conditions.begin(), ls.conditions.end(),
                                           [](const router::Condition& c) {
                                             return c.type == "Accepted" || c.type == "Programmed";
                                           }),
                            ls.conditions.end());
        ls.conditions.push_back({"Accepted", false, "PortUnavailable", message});
        ls.conditions.push_back({"Programmed", false, "Invalid", message});
      }
      for (auto& c : st->conditions) {
        if (c.type == "Programmed") {
          c = {"Programmed", false, "Invalid", fmt::format("listener {}: {}", lr->name, message)};
        }
      }
    }
  }
}

}  // namespace sluice::server
