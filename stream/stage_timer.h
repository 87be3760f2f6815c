// StageTimer: adds the wall time of a scope to a nanosecond counter (the
// processor's and service loop's "where the time goes" counters).
//
// Thread-safety: the counter is atomic; a StageTimer belongs to one thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace clv::stream {

// Adds the nanoseconds since `started` to `counter` when it goes out of scope.
class StageTimer {
 public:
  explicit StageTimer(std::atomic<int64_t>& counter)
      : counter_(counter), started_(std::chrono::steady_clock::now()) {}
  ~StageTimer() {
    counter_.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::steady_clock::now() - started_)
                           .count(),
                       std::memory_order_relaxed);
  }
  StageTimer(const StageTimer&) = delete;
  StageTimer& operator=(const StageTimer&) = delete;

 private:
  std::atomic<int64_t>& counter_;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace clv::stream
