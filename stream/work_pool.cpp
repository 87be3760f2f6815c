// WorkPool; see work_pool.h.
#include "stream/work_pool.h"

#include <algorithm>
#include <thread>

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

int WorkPool::ThreadsFor(int configured) {
  if (configured > 0) return configured;
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

size_t WorkPool::ChunkCount(size_t n, size_t min_chunk) const {
  const size_t most = min_chunk == 0 ? n : n / min_chunk;
  return std::max<size_t>(1, std::min<size_t>(size_, most));
}

std::vector<size_t> WorkPool::Chunks(size_t n, size_t min_chunk) const {
  const size_t chunks = ChunkCount(n, min_chunk);
  std::vector<size_t> bounds(chunks + 1);
  for (size_t c = 0; c <= chunks; ++c) bounds[c] = n * c / chunks;
  return bounds;
}

void WorkPool::RunErased(size_t n, size_t min_chunk, const void* fn, Call call) {
  const size_t chunks = ChunkCount(n, min_chunk);
  if (chunks <= 1) {
    call(fn, 0, 0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    fn_ = fn;
    call_ = call;
    n_ = n;
    chunks_ = chunks;
    remaining_ = static_cast<int>(chunks) - 1;
    ++generation_;
  }
  start_.notify_all();
  call(fn, 0, 0, n / chunks);
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
    const auto w = static_cast<size_t>(worker);
    if (w >= chunks_) continue;  // no chunk this time
    const size_t begin = n_ * w / chunks_;
    const size_t end = n_ * (w + 1) / chunks_;
    const void* fn = fn_;
    const Call call = call_;
    lock.unlock();
    call(fn, worker, begin, end);
    lock.lock();
    if (--remaining_ == 0) done_.notify_one();
  }
}

}  // namespace clv::stream
