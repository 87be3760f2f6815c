// FakeSink: a connectors::KafkaSink that keeps what it was sent and
// acknowledges only when the test says so, for the processor's and the
// commit pipeline's unit tests. Mark() groups work as in the real sink.
// Not thread-safe (the processing thread only).
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "connectors/kafka.h"

namespace clv::testing {

class FakeSink : public connectors::KafkaSink {
 public:
  struct Sent {
    std::string topic, key, value;
    std::vector<std::pair<std::string, std::string>> headers;
  };

  connectors::Status Send(std::string_view topic, std::string_view key, std::string_view value,
                          int32_t /*partition*/) override {
    sent.push_back({std::string(topic), std::string(key), std::string(value), {}});
    return connectors::Status::Ok();
  }
  connectors::Status SendWithHeaders(
      std::string_view topic, std::string_view key, std::string_view value,
      const std::vector<std::pair<std::string, std::string>>& headers) override {
    sent.push_back({std::string(topic), std::string(key), std::string(value), headers});
    return connectors::Status::Ok();
  }
  connectors::Status Flush(int /*timeout_ms*/) override {
    AckAll();
    return connectors::Status::Ok();
  }
  connectors::Status Prepare(const std::vector<std::string>& /*topics*/,
                             int /*timeout_ms*/) override {
    return connectors::Status::Ok();
  }
  uint64_t Mark() override { return ++marks_; }
  // Done once every group <= mark is acknowledged (groups may be acknowledged
  // out of order, as deliveries of different partitions are).
  connectors::Status WaitAcked(uint64_t mark, int /*timeout_ms*/, bool* done,
                               int64_t* acked_ms) override {
    ++wait_calls;
    if (!delivery_error.empty()) return connectors::Status::Error(delivery_error);
    *done = true;
    if (ack_all_) {
      if (acked_ms != nullptr) *acked_ms = acked_wall_ms;
      return connectors::Status::Ok();
    }
    for (uint64_t m = 1; m <= mark; ++m) *done = *done && acked_.count(m) > 0;
    if (*done && acked_ms != nullptr) *acked_ms = acked_wall_ms;
    return connectors::Status::Ok();
  }
  uint64_t delivered() const override { return acked_.size(); }
  // Every group so far settles (dropped, as the real sink's Purge).
  uint64_t Purge() override {
    ++purges;
    uint64_t dropped = 0;
    for (uint64_t m = 1; m <= marks_; ++m) dropped += acked_.insert(m).second ? 1 : 0;
    return dropped;
  }

  // The test's side.
  void Ack(uint64_t mark) { acked_.insert(mark); }
  // Everything, sent so far and later, is acknowledged.
  void AckAll() { ack_all_ = true; }
  uint64_t marks() const { return marks_; }
  // Values sent to `topic`, in order.
  std::vector<std::string> Values(const std::string& topic) const {
    std::vector<std::string> values;
    for (const auto& s : sent) {
      if (s.topic == topic) values.push_back(s.value);
    }
    return values;
  }

  std::vector<Sent> sent;
  std::string delivery_error;  // non-empty: WaitAcked fails with it
  int64_t acked_wall_ms = 0;
  int wait_calls = 0;
  int purges = 0;

 private:
  uint64_t marks_ = 0;
  std::set<uint64_t> acked_;
  bool ack_all_ = false;
};

}  // namespace clv::testing
