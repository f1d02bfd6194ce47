#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>

namespace sluice::base {

// A growable byte buffer that always keeps kPadding readable bytes past its end, so simdjson
// can parse it in place without a copy. Used for request bodies.
class PaddedBuffer {
 public:
  static constexpr size_t kPadding = 64;  // >= SIMDJSON_PADDING

  PaddedBuffer() = default;
  PaddedBuffer(PaddedBuffer&&) noexcept = default;
  PaddedBuffer& operator=(PaddedBuffer&&) noexcept = default;

  void reserve(size_t n) {
    if (n <= capacity_) {
      return;
    }
    auto fresh = std::make_unique<char[]>(n + kPadding);
    if (size_) {
      std::memcpy(fresh.get(), data_.get(), size_);
    }
    std::memset(fresh.get() + size_, 0, n + kPadding - size_);
    data_ = std::move(fresh);
    capacity_ = n;
  }
  void append(const void* p, size_t n) {
    if (n == 0) {
      return;
    }
    if (size_ + n > capacity_) {
      reserve(std::max(size_ + n, capacity_ * 2));
    }
    std::memcpy(data_.get() + size_, p, n);
    size_ += n;
  }
  void append(std::string_view s) { append(s.data(), s.size()); }
  void clear() { size_ = 0; }

  const char* data() const { return data_.get(); }
  char* data() { return data_.get(); }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  bool empty() const { return size_ == 0; }
  std::string_view view() const { return {data_.get(), size_}; }

 private:
  std::unique_ptr<char[]> data_;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

}  // namespace sluice::base
