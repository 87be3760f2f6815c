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

  // stream.threads as configured (0: the machine's core count, at least 1).
  static int ThreadsFor(int configured);

  int size() const { return size_; }
  // fn is borrowed for the call (no copy, no allocation per loop).
  template <typename Fn>
  void Run(size_t n, size_t min_chunk, const Fn& fn) {
    RunErased(n, min_chunk, &fn, [](const void* f, int worker, size_t begin, size_t end) {
      (*static_cast<const Fn*>(f))(worker, begin, end);
    });
  }
  // The chunks Run() would use for n: the begin of each, then n.
  std::vector<size_t> Chunks(size_t n, size_t min_chunk) const;

 private:
  using Call = void (*)(const void* fn, int worker, size_t begin, size_t end);
  size_t ChunkCount(size_t n, size_t min_chunk) const;
  void RunErased(size_t n, size_t min_chunk, const void* fn, Call call);
  void Loop(int worker);

  int size_ = 1;
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable start_;
  std::condition_variable done_;
  uint64_t generation_ = 0;  // a new loop was posted
  bool quit_ = false;
  const void* fn_ = nullptr;
  Call call_ = nullptr;
  size_t n_ = 0;       // the loop's length ...
  size_t chunks_ = 0;  // ... and chunks: chunk w is [n_ * w / chunks_, n_ * (w + 1) / chunks_)
  int remaining_ = 0;  // helper chunks not finished
};

}  // namespace clv::stream
