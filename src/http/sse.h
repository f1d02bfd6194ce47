#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace sluice::http {

// Splits a byte stream into Server-Sent Events. An event ends at a blank line ("\n\n" or
// "\r\n\r\n"). Bytes of an incomplete event are kept until the rest arrives; an event that grows
// past `max_event_bytes` is released as it is (oversize), so memory stays bounded.
class SseSplitter {
 public:
  explicit SseSplitter(size_t max_event_bytes = 1 << 20) : max_event_bytes_(max_event_bytes) {}

  // Calls on_event(std::string_view event, bool complete) for each complete event in order,
  // the view including its terminating blank line. Views are valid only during the call.
  template <class F>
  void feed(std::string_view data, F&& on_event) {
    if (pending_.empty()) {
      size_t used = scan(data, on_event);
      data.remove_prefix(used);
      keep(data, on_event);
      return;
    }
    pending_.append(data);
    size_t used = scan(pending_, on_event);
    pending_.erase(0, used);
    if (pending_.size() > max_event_bytes_) {
      on_event(std::string_view(pending_), false);
      pending_.clear();
    }
  }

  // What is left when the stream ends (an unterminated final event).
  std::string_view pending() const { return pending_; }
  void clear() { pending_.clear(); }

  // The payload of an event's data lines, joined with '\n' as the SSE spec says; "" if none.
  // `scratch` is used only when there are several data lines.
  static std::string_view dataOf(std::string_view event, std::string& scratch);

 private:
  // Returns the number of bytes consumed by complete events.
  template <class F>
  size_t scan(std::string_view buf, F& on_event) {
    size_t start = 0;
    size_t pos = 0;
    while (true) {
      size_t nl = buf.find('\n', pos);
      if (nl == std::string_view::npos) {
        break;
      }
      size_t next = nl + 1;
      size_t end = 0;
      if (next < buf.size() && buf[next] == '\n') {
        end = next + 1;
      } else if (next + 1 < buf.size() && buf[next] == '\r' && buf[next + 1] == '\n') {
        end = next + 2;
      }
      if (end != 0) {
        on_event(buf.substr(start, end - start), true);
        start = end;
        pos = end;
      } else {
        pos = next;
      }
    }
    return start;
  }

  template <class F>
  void keep(std::string_view rest, F& on_event) {
    if (rest.size() > max_event_bytes_) {
      on_event(rest, false);
      return;
    }
    pending_.assign(rest);
  }

  size_t max_event_bytes_;
  std::string pending_;
};

}  // namespace sluice::http
