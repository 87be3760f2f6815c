// CommitPipeline: the processor's commits on their way to the store, so the
// next micro-batch runs while the broker acknowledges the last one's outputs.
//
// Contract:
//  * Seal() takes one commit (user states, timers, event ids, offsets, stream
//    time) and tags it with the sink's Mark(): every score, alert and dead
//    letter sent before it belongs to it.
//  * HandOver() gives each sealed commit whose outputs the sink has all
//    acknowledged to the store writer, oldest first; the writer (a thread of
//    its own) writes them in that order. A commit is never written before its
//    outputs are acknowledged, and never after a younger one.
//  * WriteAcknowledged(max_pending) hands over what is acknowledged, pops what
//    is written, and waits (up to the flush timeout) while more than
//    max_pending commits remain. WriteAcknowledged(0) leaves none.
//  * A wait for acknowledgements checks the stop flag (set_stop) every
//    kStopCheckMs: once it is set the call returns an error saying what was
//    not acknowledged, without waiting further and without stopping the
//    pipeline (what is acknowledged later can still be written; what never
//    is stays uncommitted, so the next start reads those events again).
//  * The first failure (a delivery, a timeout, a store write) stops the
//    pipeline: every later call answers that error.
//
// Example:
//   CommitPipeline pipeline(store, sink, hooks);
//   pipeline.Seal(std::move(commit));        // after the batch's outputs were sent
//   status = pipeline.WriteAcknowledged(2);  // keep at most 2 in flight
//
// Thread-safety: one thread calls every method; the writer thread touches only
// the store and `hooks.store_nanos`.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "connectors/kafka.h"
#include "state/state_store.h"

namespace clv::stream {

// One commit as the processor seals it.
struct PendingCommit {
  state::CommitBatch batch;
  // Event ids folded into it (the processor's dedup asks Contains()).
  std::set<std::pair<int32_t, uint64_t>> event_ids;
  std::vector<int64_t> timestamps_ms;  // input timestamps, for the latency
  // State changelog records (stream/changelog.h), written by
  // Hooks::before_write.
  struct ChangelogRecord {
    int32_t partition = 0;
    std::string key;
    std::string value;
  };
  std::vector<ChangelogRecord> changelog;
};

class CommitPipeline {
 public:
  struct Hooks {
    // Time spent waiting for the sink or the writer, and writing (borrowed;
    // may be null).
    std::atomic<int64_t>* flush_nanos = nullptr;
    std::atomic<int64_t>* store_nanos = nullptr;
    // A commit's outputs are all acknowledged, at wall-clock `acked_ms`
    // (called before it is handed to the writer).
    std::function<void(const PendingCommit&, int64_t acked_ms)> on_acknowledged;
    // A commit is in the store (called in commit order, on the caller's thread).
    std::function<void(const PendingCommit&)> on_written;
    // A commit's outputs are all acknowledged and it goes to the writer next
    // (the state changelog is written here; it may add to the batch). An
    // error stops the pipeline.
    std::function<connectors::Status(PendingCommit&)> before_write;
  };
  static constexpr int kDefaultFlushTimeoutMs = 60000;
  // How often a wait for acknowledgements looks at the stop flag.
  static constexpr int kStopCheckMs = 100;
  // How often a long wait for acknowledgements logs what it waits for.
  static constexpr int kWaitLogMs = 5000;

  // `store` and `sink` are borrowed and must outlive the pipeline.
  CommitPipeline(state::StateStore& store, connectors::KafkaSink& sink, Hooks hooks,
                 int flush_timeout_ms = kDefaultFlushTimeoutMs);
  // Writes what was handed over (acknowledged) first; drops the rest.
  ~CommitPipeline();
  CommitPipeline(const CommitPipeline&) = delete;
  CommitPipeline& operator=(const CommitPipeline&) = delete;

  // A flag (borrowed, may be null: no stop) that cuts waits for
  // acknowledgements short, e.g. the service's stop request.
  void set_stop(const std::atomic<bool>* stop) { stop_ = stop; }

  void Seal(PendingCommit commit);
  // Hands every acknowledged commit to the writer, in order; with `wait`,
  // waits up to the flush timeout (or until the stop flag is set) for the
  // oldest one not handed over yet.
  connectors::Status HandOver(bool wait);
  connectors::Status WriteAcknowledged(int max_pending);

  // Sealed commits not yet written.
  size_t pending() const { return sealed_.size(); }
  // Whether an event id is in a sealed commit not yet written.
  bool Contains(const std::pair<int32_t, uint64_t>& event_id) const;
  // The first error; empty while none.
  const std::string& failed() const { return failed_; }

 private:
  class Writer;
  struct Sealed {
    uint64_t mark = 0;  // KafkaSink::Mark() after its outputs
    PendingCommit commit;
    bool handed_over = false;
    uint64_t write_number = 0;  // its place in the writer's order
  };
  connectors::Status Fail(std::string message);
  // Waits up to the flush timeout for the sink to acknowledge `sealed`, in
  // slices that look at the stop flag; *done tells whether it was, *stopped
  // whether the stop flag cut the wait short (then the status is an error).
  connectors::Status WaitForAcknowledgement(const Sealed& sealed, bool* done, int64_t* acked_ms,
                                            bool* stopped);

  state::StateStore& store_;
  connectors::KafkaSink& sink_;
  Hooks hooks_;
  int flush_timeout_ms_;
  const std::atomic<bool>* stop_ = nullptr;
  std::deque<Sealed> sealed_;  // oldest first; popped once written
  uint64_t handed_over_ = 0;
  std::string failed_;
  std::unique_ptr<Writer> writer_;  // started by the first hand-over
};

}  // namespace clv::stream
