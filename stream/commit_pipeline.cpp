#include "stream/commit_pipeline.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "common/log.h"
#include "stream/stage_timer.h"

namespace clv::stream {

using connectors::Status;

namespace {

// Times the scope into `counter` when there is one.
class OptionalTimer {
 public:
  explicit OptionalTimer(std::atomic<int64_t>* counter) {
    if (counter != nullptr) timer_.emplace(*counter);
  }

 private:
  std::optional<StageTimer> timer_;
};

}  // namespace

// The store writer: one thread, commits written in the order submitted. A
// failed write stops it; the error is reported to the pipeline's thread.
class CommitPipeline::Writer {
 public:
  Writer(state::StateStore& store, std::atomic<int64_t>* store_nanos)
      : store_(store), store_nanos_(store_nanos), thread_([this] { Loop(); }) {}
  ~Writer() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void Submit(const state::CommitBatch* batch) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(batch);
    }
    cv_.notify_all();
  }
  // Blocks until `count` commits are written (wait) or just reports how many
  // are; the first error, if any, in *error.
  uint64_t Written(uint64_t count, bool wait, std::string* error) {
    std::unique_lock lock(mu_);
    if (wait) cv_.wait(lock, [&] { return written_ >= count || !error_.empty(); });
    *error = error_;
    return written_;
  }

 private:
  void Loop() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      // Stopping drains what was handed over; after an error nothing more is written.
      if (queue_.empty() || !error_.empty()) return;
      const state::CommitBatch* batch = queue_.front();
      lock.unlock();
      state::Status status;
      {
        OptionalTimer timer(store_nanos_);
        status = store_.Commit(*batch);
      }
      lock.lock();
      queue_.pop_front();
      if (status.ok()) {
        ++written_;
      } else {
        error_ = "committing state: " + status.message;
      }
      cv_.notify_all();
    }
  }

  state::StateStore& store_;
  std::atomic<int64_t>* store_nanos_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<const state::CommitBatch*> queue_;  // guarded by mu_
  uint64_t written_ = 0;                         // guarded by mu_
  std::string error_;                            // guarded by mu_
  bool stop_ = false;                            // guarded by mu_
  std::thread thread_;                           // last: starts after the members it uses
};

CommitPipeline::CommitPipeline(state::StateStore& store, connectors::KafkaSink& sink, Hooks hooks,
                               int flush_timeout_ms)
    : store_(store), sink_(sink), hooks_(std::move(hooks)), flush_timeout_ms_(flush_timeout_ms) {}

CommitPipeline::~CommitPipeline() = default;

Status CommitPipeline::Fail(std::string message) {
  if (failed_.empty()) failed_ = std::move(message);
  return Status::Error(failed_);
}

void CommitPipeline::Seal(PendingCommit commit) {
  Sealed sealed;
  sealed.commit = std::move(commit);
  // Everything sent so far (scores, alerts, dead letters of these events).
  sealed.mark = sink_.Mark();
  sealed_.push_back(std::move(sealed));
}

bool CommitPipeline::Contains(const std::pair<int32_t, uint64_t>& event_id) const {
  for (const auto& sealed : sealed_) {
    if (sealed.commit.event_ids.count(event_id)) return true;
  }
  return false;
}

Status CommitPipeline::WaitFor(const char* what, bool wait,
                               const std::function<Status(int, bool*)>& poll, bool* done,
                               bool* stopped) {
  if (!wait) return poll(0, done);  // one look, no waiting
  using Clock = std::chrono::steady_clock;
  const auto started = Clock::now();
  const auto deadline = started + std::chrono::milliseconds(flush_timeout_ms_);
  auto next_log = started + std::chrono::milliseconds(kWaitLogMs);
  const auto waited_ms = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
  };
  const auto waiting = [&] {
    int64_t commits = 0;
    for (const Sealed& s : sealed_) commits += s.handed_over ? 0 : 1;
    return commits;
  };
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    const int slice = static_cast<int>(std::clamp<int64_t>(left, 0, kStopCheckMs));
    auto status = poll(slice, done);
    if (!status.ok() || *done) return status;
    if (stop_ != nullptr && stop_->load()) {
      *stopped = true;
      Log(LogLevel::kInfo,
          std::string("stop requested: no longer waiting for Kafka to acknowledge ") + what,
          {{"commits", waiting()}, {"waited_ms", waited_ms()}});
      return Status::Error("stop requested while waiting for Kafka to acknowledge the " +
                           std::string(what) + " of " + std::to_string(waiting()) +
                           " micro-batch commit(s) (waited " + std::to_string(waited_ms()) +
                           " ms): they are not committed; the next start reads those events again");
    }
    if (left <= 0) return Status::Ok();  // *done is false: timed out
    if (Clock::now() >= next_log) {
      next_log += std::chrono::milliseconds(kWaitLogMs);
      Log(LogLevel::kInfo,
          std::string("waiting for Kafka to acknowledge the ") + what + " of a commit",
          {{"commits", waiting()},
           {"waited_ms", waited_ms()},
           {"flush_timeout_ms", flush_timeout_ms_}});
    }
  }
}

Status CommitPipeline::OutputsStage(Sealed& sealed, bool wait, bool* done, bool* stopped) {
  int64_t acked_ms = 0;
  Status status = Status::Ok();
  bool held = false;  // acknowledged, but the gate was closed
  {
    OptionalTimer timer(hooks_.flush_nanos);
    status = WaitFor(
        "outputs", wait,
        [&](int slice_ms, bool* acked) {
          auto waited = sink_.WaitAcked(sealed.mark, slice_ms, acked, &acked_ms);
          held = waited.ok() && *acked && hooks_.may_commit && !hooks_.may_commit();
          if (held) {
            *acked = false;
            std::this_thread::sleep_for(std::chrono::milliseconds(std::min(slice_ms, 20)));
          }
          return waited;
        },
        done, stopped);
  }
  if (*stopped) return status;  // an error, but the pipeline goes on
  if (!status.ok()) return Fail("waiting for the producer before commit: " + status.message);
  if (!*done) {
    if (!wait) return Status::Ok();
    if (held) {
      return Fail("commit held for " + std::to_string(flush_timeout_ms_) +
                  " ms: its outputs are acknowledged, but the group session is in doubt (the "
                  "cluster was not heard from), so its partitions may be another instance's; "
                  "not committed, the next start reads those events again");
    }
    return Fail("waiting for the producer before commit: outputs not acknowledged within " +
                std::to_string(flush_timeout_ms_) + " ms");
  }
  sealed.outputs_acked = true;
  if (hooks_.on_acknowledged) hooks_.on_acknowledged(sealed.commit, acked_ms);
  if (hooks_.send_changelog) {
    bool sent = false;
    status = hooks_.send_changelog(sealed.commit, &sent);
    if (!status.ok()) return Fail("writing the state changelog before commit: " + status.message);
    sealed.changelog_in_flight = sent;
  }
  return Status::Ok();
}

Status CommitPipeline::ChangelogStage(Sealed& sealed, bool wait, bool* done, bool* stopped) {
  Status status = Status::Ok();
  {
    OptionalTimer timer(hooks_.flush_nanos);
    status = WaitFor(
        "state changelog records", wait,
        [&](int slice_ms, bool* acked) {
          return hooks_.changelog_acked(sealed.commit, slice_ms, acked);
        },
        done, stopped);
  }
  if (*stopped) return status;
  if (!status.ok()) {
    return Fail("waiting for the state changelog before commit: " + status.message);
  }
  if (!*done) {
    if (!wait) return Status::Ok();
    return Fail("waiting for the state changelog before commit: records not acknowledged within " +
                std::to_string(flush_timeout_ms_) + " ms");
  }
  sealed.changelog_in_flight = false;
  return Status::Ok();
}

Status CommitPipeline::HandOver(bool wait) {
  if (!failed_.empty()) return Status::Error(failed_);
  for (Sealed& sealed : sealed_) {
    if (sealed.handed_over) continue;
    bool done = false;
    bool stopped = false;
    if (!sealed.outputs_acked) {
      auto status = OutputsStage(sealed, wait, &done, &stopped);
      if (!status.ok() || !done) return status;
    }
    if (sealed.changelog_in_flight) {
      done = false;
      auto status = ChangelogStage(sealed, wait, &done, &stopped);
      if (!status.ok() || !done) return status;
    }
    if (!writer_) writer_ = std::make_unique<Writer>(store_, hooks_.store_nanos);
    sealed.handed_over = true;
    sealed.write_number = ++handed_over_;
    writer_->Submit(&sealed.commit.batch);
    wait = false;  // only the oldest is waited for
  }
  return Status::Ok();
}

Status CommitPipeline::WriteAcknowledged(int max_pending) {
  auto status = HandOver(false);
  if (!status.ok()) return status;
  while (!sealed_.empty()) {
    Sealed& front = sealed_.front();
    const bool must_wait = static_cast<int>(sealed_.size()) > max_pending;
    if (!front.handed_over) {
      if (!must_wait) break;
      status = HandOver(true);
      if (!status.ok()) return status;
    }
    bool popped = false;
    status = PopWritten(must_wait, &popped);
    if (!status.ok()) return status;
    if (!popped) break;
  }
  return Status::Ok();
}

Status CommitPipeline::PopWritten(bool wait, bool* popped) {
  Sealed& front = sealed_.front();
  std::string error;
  uint64_t written = 0;
  {
    OptionalTimer timer(hooks_.flush_nanos);
    written = writer_->Written(front.write_number, wait, &error);
  }
  if (!error.empty()) return Fail(error);
  *popped = written >= front.write_number;
  if (!*popped) return Status::Ok();
  if (hooks_.on_written) hooks_.on_written(front.commit);
  sealed_.pop_front();
  return Status::Ok();
}

Status CommitPipeline::DropUnacknowledged(size_t* dropped) {
  *dropped = 0;
  // Handed over in order: the ones the writer has are written first (a
  // waited Written() returns only once they are), the rest are dropped.
  while (!sealed_.empty() && sealed_.front().handed_over) {
    bool popped = false;
    auto status = PopWritten(true, &popped);
    if (!status.ok()) return status;
  }
  *dropped = sealed_.size();
  sealed_.clear();
  return Status::Ok();
}

}  // namespace clv::stream
