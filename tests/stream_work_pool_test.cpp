// WorkPool: the chunks of a loop cover it once, a worker runs one chunk at a
// time, and a loop too small for two chunks stays on the calling thread.
#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "stream/work_pool.h"

namespace clv::stream {
namespace {

TEST(WorkPool, ChunksCoverTheLoopOnceEachOnItsOwnWorker) {
  WorkPool pool(4);
  ASSERT_EQ(pool.size(), 4);
  for (size_t n : {0u, 1u, 7u, 64u, 65u, 1000u, 4099u}) {
    SCOPED_TRACE(n);
    std::vector<std::atomic<int>> hits(n);
    std::vector<std::atomic<int>> busy(pool.size());
    std::atomic<int> calls{0};
    std::atomic<int> overlapping{0};
    std::vector<std::thread::id> thread_of(pool.size());
    pool.Run(n, 16, [&](int worker, size_t begin, size_t end) {
      if (busy[worker].fetch_add(1) != 0) ++overlapping;
      thread_of[worker] = std::this_thread::get_id();
      ++calls;
      for (size_t i = begin; i < end; ++i) ++hits[i];
      busy[worker].fetch_sub(1);
    });
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << i;
    EXPECT_EQ(overlapping.load(), 0);
    const auto bounds = pool.Chunks(n, 16);
    EXPECT_EQ(calls.load(), static_cast<int>(bounds.size()) - 1);
    EXPECT_EQ(bounds.front(), 0u);
    EXPECT_EQ(bounds.back(), n);
    EXPECT_EQ(thread_of[0], std::this_thread::get_id()) << "chunk 0 runs on the caller";
    for (int w = 1; w < calls.load(); ++w) EXPECT_NE(thread_of[w], std::this_thread::get_id());
  }
  // At least min_chunk items per chunk, at most one chunk per worker.
  EXPECT_EQ(pool.Chunks(31, 16).size(), 2u);  // one chunk: inline
  EXPECT_EQ(pool.Chunks(32, 16).size(), 3u);
  EXPECT_EQ(pool.Chunks(100000, 16).size(), 5u);
}

TEST(WorkPool, RunsManyLoopsBackToBack) {
  WorkPool pool(3);
  std::atomic<int64_t> sum{0};
  for (int loop = 0; loop < 2000; ++loop) {
    pool.Run(300, 10, [&](int, size_t begin, size_t end) {
      int64_t local = 0;
      for (size_t i = begin; i < end; ++i) local += static_cast<int64_t>(i);
      sum += local;
    });
  }
  EXPECT_EQ(sum.load(), 2000LL * (299 * 300 / 2));
}

TEST(WorkPool, OneWorkerRunsInline) {
  WorkPool pool(1);
  int calls = 0;
  pool.Run(100000, 1, [&](int worker, size_t begin, size_t end) {
    EXPECT_EQ(worker, 0);
    EXPECT_EQ(begin, 0u);
    EXPECT_EQ(end, 100000u);
    ++calls;
  });
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace clv::stream
