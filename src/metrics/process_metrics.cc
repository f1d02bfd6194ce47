// sluice_build_info and the process_* families every Prometheus client library exports, read
// from /proc on each scrape (the scraper's thread; never a worker).
#include <cstdio>
#include <dirent.h>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/resource.h>
#include <unistd.h>

#include <fmt/format.h>

#include "metrics/metrics.h"

#ifndef SLUICE_VERSION
#define SLUICE_VERSION "unknown"
#endif
#ifndef SLUICE_COMMIT
#define SLUICE_COMMIT "unknown"
#endif

namespace sluice::metrics {

namespace {

struct ProcStat {
  double cpu_seconds = 0;
  double start_ticks = 0;
  double virtual_bytes = 0;
  double resident_bytes = 0;
  bool ok = false;
};

// /proc/self/stat: fields after the command (which may hold spaces and parentheses).
ProcStat readStat() {
  ProcStat st;
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) {
    return st;
  }
  const size_t close = line.rfind(')');
  if (close == std::string::npos) {
    return st;
  }
  std::istringstream fields(line.substr(close + 1));
  std::string f;
  // Field 3 (state) comes first; utime 14, stime 15, starttime 22, vsize 23, rss 24.
  double utime = 0, stime = 0;
  for (int n = 3; n <= 24 && fields >> f; ++n) {
    const double v = std::strtod(f.c_str(), nullptr);
    switch (n) {
      case 14:
        utime = v;
        break;
      case 15:
        stime = v;
        break;
      case 22:
        st.start_ticks = v;
        break;
      case 23:
        st.virtual_bytes = v;
        break;
      case 24:
        st.resident_bytes = v * static_cast<double>(sysconf(_SC_PAGESIZE));
        st.ok = true;
        break;
      default:
        break;
    }
  }
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  st.cpu_seconds = (utime + stime) / ticks;
  st.start_ticks /= ticks;
  return st;
}

double bootTime() {
  std::ifstream in("/proc/stat");
  std::string key;
  double value = 0;
  while (in >> key) {
    if (key == "btime") {
      in >> value;
      return value;
    }
    in.ignore(1 << 20, '\n');
  }
  return 0;
}

size_t openFds() {
  size_t n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) {
      n += e->d_name[0] != '.';
    }
    closedir(d);
    --n;  // the directory stream's own descriptor
  }
  return n;
}

}  // namespace

std::string_view buildVersion() {
  return SLUICE_VERSION;
}
std::string_view buildCommit() {
  return SLUICE_COMMIT;
}

void appendBuildInfo(std::string& out) {
  appendHeader(out, "sluice_build_info", "gauge", "Sluice's version and commit (always 1).");
  out += fmt::format("sluice_build_info{{version=\"{}\",commit=\"{}\"}} 1\n",
                     escapeLabel(buildVersion()), escapeLabel(buildCommit()));
}

void appendProcessMetrics(std::string& out) {
  const ProcStat st = readStat();
  if (!st.ok) {
    return;  // no /proc: export nothing rather than zeros
  }
  appendHeader(out, "process_cpu_seconds_total", "counter",
               "Total user and system CPU time spent in seconds.");
  out += fmt::format("process_cpu_seconds_total {:.2f}\n", st.cpu_seconds);
  appendHeader(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  out += fmt::format("process_resident_memory_bytes {:.0f}\n", st.resident_bytes);
  appendHeader(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
  out += fmt::format("process_virtual_memory_bytes {:.0f}\n", st.virtual_bytes);
  appendHeader(out, "process_start_time_seconds", "gauge",
               "Start time of the process since the Unix epoch in seconds.");
  out += fmt::format("process_start_time_seconds {:.2f}\n", bootTime() + st.start_ticks);
  appendHeader(out, "process_open_fds", "gauge", "Number of open file descriptors.");
  out += fmt::format("process_open_fds {}\n", openFds());
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    appendHeader(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    out += fmt::format("process_max_fds {}\n", static_cast<uint64_t>(lim.rlim_cur));
  }
}

}  // namespace sluice::metrics
