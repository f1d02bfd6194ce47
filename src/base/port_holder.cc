#include "base/port_holder.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <vector>

#include <fmt/core.h>

namespace sluice::base {

namespace {

// Socket inodes of the TCP sockets listening on `port` (state 0A) in one /proc/net table.
void listeningInodes(const char* table, uint16_t port, std::vector<std::string>& out) {
  std::ifstream in(table);
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
    fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
        timeout >> inode;
    auto colon = local.rfind(':');
    if (state != "0A" || colon == std::string::npos || inode.empty() || inode == "0") {
      continue;
    }
    unsigned long p = std::strtoul(local.c_str() + colon + 1, nullptr, 16);
    if (p == port) {
      out.push_back("socket:[" + inode + "]");
    }
  }
}

std::string processName(const std::filesystem::path& proc) {
  std::ifstream in(proc / "comm");
  std::string name;
  std::getline(in, name);
  return name;
}

}  // namespace

std::string portHolder(uint16_t port) {
  std::vector<std::string> inodes;
  listeningInodes("/proc/net/tcp", port, inodes);
  listeningInodes("/proc/net/tcp6", port, inodes);
  if (inodes.empty()) {
    return "";
  }
  std::error_code ec;
  for (const auto& proc : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string pid = proc.path().filename().string();
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    std::error_code fd_ec;
    for (const auto& fd : std::filesystem::directory_iterator(proc.path() / "fd", fd_ec)) {
      std::error_code link_ec;
      auto target = std::filesystem::read_symlink(fd.path(), link_ec).string();
      for (const auto& inode : inodes) {
        if (!link_ec && target == inode) {
          return fmt::format("pid {} ({})", pid, processName(proc.path()));
        }
      }
    }
  }
  return "";
}

std::string bindFailure(int err, uint16_t port) {
  std::string why = std::strerror(err);
  if (err == EADDRINUSE) {
    auto holder = portHolder(port);
    why += holder.empty() ? fmt::format(": another process listens on port {}", port)
                          : fmt::format(": port {} is held by {}", port, holder);
  } else if (err == EACCES && port < 1024) {
    why += fmt::format(": port {} is privileged (needs root or CAP_NET_BIND_SERVICE)", port);
  } else if (err == EADDRNOTAVAIL) {
    why += ": the address is not one of this host's";
  }
  return why;
}

}  // namespace sluice::base
