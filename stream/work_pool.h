// WorkPool: a fixed set of threads that run one data-parallel loop at a time
// for the processor (stream.threads).
//
// Run(n, min_chunk, fn) cuts [0, n) into at most size() contiguous chunks of
// at least `min_chunk` items and calls fn(worker, begin, end) once per chunk:
// chunk 0 on the calling thread (worker 0), the others on the pool's threads
// (workers 1..size()-1); it returns when every chunk is done. A loop too
// small for two chunks runs inline as fn(0, 0, n), so small batches pay no
// hand-off. The chunks depend only on n, min_chunk and size(), and each
// worker index runs at most one chunk at a time, so per-worker scratch
// (a decoder, a scorer) needs no locks. fn must not throw.
//
// Thread-safety: Run() from one thread at a time (the processing thread).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace clv::stream {

class WorkPool {
 public:
  // `threads` workers in all, the calling thread included (1: no threads).
  explicit WorkPool(int threads);
  ~WorkPool();
  WorkPool(const WorkPool&) = delete;
  WorkPool& operator=(const WorkPool&) = delete;

  int size() const { return size_; }
  void Run(size_t n, size_t min_chunk, const std::function<void(int, size_t, size_t)>& fn);
  // The chunks Run() would use for n: the begin of each, then n.
  std::vector<size_t> Chunks(size_t n, size_t min_chunk) const;

 private:
  void Loop(int worker);

  int size_ = 1;
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable start_;
  std::condition_variable done_;
  uint64_t generation_ = 0;  // a new loop was posted
  bool quit_ = false;
  const std::function<void(int, size_t, size_t)>* fn_ = nullptr;
  std::vector<size_t> bounds_;  // chunk w is [bounds_[w], bounds_[w + 1])
  int remaining_ = 0;           // helper chunks not finished
};

}  // namespace clv::stream
