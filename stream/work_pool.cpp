// WorkPool; see work_pool.h.
#include "stream/work_pool.h"

#include <algorithm>

namespace clv::stream {

WorkPool::WorkPool(int threads) : size_(std::max(1, threads)) {
  threads_.reserve(size_ - 1);
  for (int w = 1; w < size_; ++w) threads_.emplace_back([this, w] { Loop(w); });
}

WorkPool::~WorkPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    quit_ = true;
  }
  start_.notify_all();
  for (auto& thread : threads_) thread.join();
}

std::vector<size_t> WorkPool::Chunks(size_t n, size_t min_chunk) const {
  const size_t most = min_chunk == 0 ? n : n / min_chunk;
  const size_t chunks = std::max<size_t>(1, std::min<size_t>(size_, most));
  std::vector<size_t> bounds(chunks + 1);
  for (size_t c = 0; c <= chunks; ++c) bounds[c] = n * c / chunks;
  return bounds;
}

void WorkPool::Run(size_t n, size_t min_chunk, const std::function<void(int, size_t, size_t)>& fn) {
  std::vector<size_t> bounds = Chunks(n, min_chunk);
  const int chunks = static_cast<int>(bounds.size()) - 1;
  if (chunks <= 1) {
    fn(0, 0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    bounds_ = std::move(bounds);
    fn_ = &fn;
    remaining_ = chunks - 1;
    ++generation_;
  }
  start_.notify_all();
  fn(0, bounds_[0], bounds_[1]);
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [this] { return remaining_ == 0; });
  fn_ = nullptr;
}

void WorkPool::Loop(int worker) {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    start_.wait(lock, [&] { return quit_ || generation_ != seen; });
    if (quit_) return;
    seen = generation_;
    if (worker + 1 >= static_cast<int>(bounds_.size())) continue;  // no chunk this time
    const size_t begin = bounds_[worker];
    const size_t end = bounds_[worker + 1];
    const auto* fn = fn_;
    lock.unlock();
    (*fn)(worker, begin, end);
    lock.lock();
    if (--remaining_ == 0) done_.notify_one();
  }
}

}  // namespace clv::stream
