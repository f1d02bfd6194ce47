#include "server/relay.h"

namespace sluice::server {

void SseEvents::operator()(std::string_view event, bool complete) {
  Exchange& x = x_;
  if (complete) {
    std::string_view data = http::SseSplitter::dataOf(event, scratch_);
    if (data.size() > 7 && data.find("\"usage\"") != std::string_view::npos) {
      openai::ChunkInfo info = openai::inspectJson(data);
      if (info.usage) {
        x.usage.update(*info.usage);
        if (hide_usage_ && info.choices_empty) {
          return;  // the usage-only chunk the client did not ask for
        }
      }
    }
    if (data.empty()) {
      out.append(event);  // comments and keep-alives pass untimed
      return;
    }
    if (x.output_budget > 0 && data != "[DONE]" && ++events_ > x.output_budget) {
      x.over_budget = true;  // this event and the rest are not sent
    }
  }
  if (x.over_budget) {
    return;
  }
  const auto now = x.session.worker.context().time.monotonicNow();
  if (first_event_) {
    first_event_ = false;
    x.ttft_ms = base::secondsBetween(x.start, now) * 1e3;
    if (x.series) {
      x.series->ttft.observe(x.ttft_ms / 1e3);
    }
  } else if (x.series) {
    x.series->itl.observe(base::secondsBetween(last_event_, now));
  }
  last_event_ = now;
  if (write_back_ == nullptr ||
      !openai::rewriteModelField(event, write_back_->from, write_back_->to, out)) {
    out.append(event);
  }
}

void UsageCopy::add(std::string_view data) {
  if (!ok_) {
    return;
  }
  if (copy_.size() + data.size() <= kMaxUsageCopyBytes) {
    copy_.append(data);
  } else {
    ok_ = false;
    copy_.clear();
  }
}

void UsageCopy::applyTo(Exchange& x) const {
  if (ok_ && !copy_.empty()) {
    if (auto info = openai::inspectJson(copy_); info.usage) {
      x.usage = *info.usage;
    }
  }
}

}  // namespace sluice::server
