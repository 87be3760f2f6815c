// CommitPipeline: the processor's commits on their way to the store, so the
// next micro-batch runs while the broker acknowledges the last one's outputs
// (and its state changelog records).
//
// Contract:
//  * Seal() takes one commit (user states, timers, event ids, offsets, stream
//    time) and tags it with the sink's Mark(): every score, alert and dead
//    letter sent before it belongs to it.
//  * Each commit goes through up to three stages, oldest first: its outputs
//    acknowledged by the sink; then, with a changelog stage (Hooks::
//    send_changelog), its changelog records sent and acknowledged (only one
//    commit's records are in flight at a time, so the changelog's
//    acknowledgements name one commit); then handed to the store writer (a
//    thread of its own), which writes commits in that order. A commit is
//    never written before its outputs and its changelog records are
//    acknowledged, its changelog records are never sent before its outputs
//    are acknowledged, and nothing of it moves before an older commit's.
//  * HandOver(false) and WriteAcknowledged(n) with at most n commits sealed
//    only look (no wait): the caller's thread goes on polling while Kafka
//    acknowledges.
//  * WriteAcknowledged(max_pending) hands over what is acknowledged, pops what
//    is written, and waits (up to the flush timeout) while more than
//    max_pending commits remain. WriteAcknowledged(0) leaves none.
//  * A wait for acknowledgements (outputs or changelog) checks the stop flag (set_stop) every
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
// Thread-safety: one thread calls every method (and every hook but
// store_nanos's timing); the writer thread touches only the store and
// `hooks.store_nanos`.
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
  // State changelog records (stream/changelog.h), sent by
  // Hooks::send_changelog.
  struct ChangelogRecord {
    int32_t partition = 0;
    std::string key;
    std::string value;
    bool tombstone = false;  // no value (`value` unused)
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
    // The changelog stage (both or neither; an error from either stops the
    // pipeline). send_changelog: the commit's outputs are all acknowledged;
    // queue its changelog records without waiting (*sent false: it has
    // none, it goes to the writer at once). changelog_acked: wait up to
    // timeout_ms (0: only look) for the records sent to be acknowledged;
    // *done once they are (it may then add to the batch, e.g. the changelog
    // checkpoint), false while some are in flight.
    std::function<connectors::Status(PendingCommit&, bool* sent)> send_changelog;
    std::function<connectors::Status(PendingCommit&, int timeout_ms, bool* done)> changelog_acked;
    // May be empty. False while this instance may have lost its partitions
    // without knowing it yet (connectors::KafkaSource::SessionInDoubt): a
    // commit whose outputs are acknowledged waits as if they were not, so
    // that nothing of it reaches the changelog or the store; if they turn out
    // lost it is dropped (DropUnacknowledged).
    std::function<bool()> may_commit;
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
  // Moves every commit as far as the acknowledgements allow, in order
  // (changelog records sent, handed to the writer); with `wait`, waits up
  // to the flush timeout per stage (or until the stop flag is set) for the
  // oldest one not handed over yet.
  connectors::Status HandOver(bool wait);
  connectors::Status WriteAcknowledged(int max_pending);
  // Waits for the commits handed to the writer (their outputs and changelog
  // records are acknowledged: they are in Kafka) and drops every other one
  // without writing it; returns how many were dropped (*dropped). The caller
  // must drop their outputs and changelog records still in flight (
  // KafkaSink::Purge, ChangelogIo::Purge), e.g. because their partitions
  // were lost to another instance, which reads those events again.
  connectors::Status DropUnacknowledged(size_t* dropped);

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
    bool outputs_acked = false;
    bool changelog_in_flight = false;  // its changelog records sent, not yet acknowledged
    bool handed_over = false;
    uint64_t write_number = 0;  // its place in the writer's order
  };
  connectors::Status Fail(std::string message);
  // Calls poll(slice_ms, done) in slices of at most kStopCheckMs that look
  // at the stop flag, up to the flush timeout: *done tells whether `what`
  // (e.g. "outputs") was acknowledged, *stopped whether the stop flag cut
  // the wait short (then the status is an error). Without `wait`, one
  // poll(0, done) and no waiting.
  connectors::Status WaitFor(const char* what, bool wait,
                             const std::function<connectors::Status(int, bool*)>& poll, bool* done,
                             bool* stopped);
  // One stage of the oldest commit not handed over: *done when it passed.
  connectors::Status OutputsStage(Sealed& sealed, bool wait, bool* done, bool* stopped);
  connectors::Status ChangelogStage(Sealed& sealed, bool wait, bool* done, bool* stopped);
  // Pops the oldest commit (handed over) once the writer has written it,
  // waiting for that with `wait`; *popped says whether it was.
  connectors::Status PopWritten(bool wait, bool* popped);

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
