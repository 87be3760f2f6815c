// Where the owner of each input partition answers queries: the instances of
// a group announce their HTTP address (`http.advertised_url`) and the input
// partitions they own now on a compacted topic, `<kafka.group_id>-instances`
// (one partition), and read each other's announcements, so that an instance
// asked for a user of a partition it does not own can name the owner (the
// role of the member metadata in Kafka Streams' interactive queries; the
// librdkafka C API has no way to attach data to a group member).
//
// Records: key = the instance (`group/host/pid/n`), value = JSON
// {"url":..,"partitions":[..],"ts_ms":..} (wall clock); a tombstone when the
// instance stops. An instance announces on every assignment change and every
// kAnnounceMs; an announcement older than kStaleMs is ignored (an instance
// killed without its tombstone). When two announcements claim a partition
// (a move in progress), the newer one wins.
//
// Thread-safety: Announce and Close from one thread (the service's polling
// thread); OwnerUrl from any thread; a background thread of its own reads
// the topic every kRefreshMs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "connectors/kafka.h"

namespace clv::stream {

class OwnerDirectory {
 public:
  static constexpr int64_t kAnnounceMs = 10000;
  static constexpr int64_t kStaleMs = 30000;
  static constexpr int kRefreshMs = 1000;

  // Creates the topic if missing (1 partition, cleanup.policy=compact) and
  // starts reading it. `self` names this instance, `url` its address.
  static connectors::Status Open(const connectors::ClientOptions& client, const std::string& topic,
                                 const std::string& self, const std::string& url,
                                 std::unique_ptr<OwnerDirectory>* out);
  ~OwnerDirectory();
  OwnerDirectory(const OwnerDirectory&) = delete;
  OwnerDirectory& operator=(const OwnerDirectory&) = delete;

  const std::string& topic() const { return topic_; }
  // Whether kAnnounceMs passed since the last announcement.
  bool AnnounceDue() const;
  // This instance owns `partitions` now (sent without waiting).
  connectors::Status Announce(const std::vector<int32_t>& partitions);
  // The advertised URL of the instance that announced `partition` last
  // (not this one), if a fresh announcement names it.
  std::optional<std::string> OwnerUrl(int32_t partition) const;
  struct Peer {
    std::string url;
    std::vector<int32_t> partitions;  // sorted
  };
  // The other instances with a fresh announcement and an address, newest
  // first.
  std::vector<Peer> Peers() const;
  // Sends this instance's tombstone and stops reading (bounded wait).
  void Close(int timeout_ms);

 private:
  struct Announcement {
    std::string url;
    std::vector<int32_t> partitions;
    int64_t ts_ms = 0;
  };
  OwnerDirectory(connectors::ClientOptions client, std::string topic, std::string self,
                 std::string url);
  void ReadLoop();

  const connectors::ClientOptions client_;
  const std::string topic_;
  const std::string self_;
  const std::string url_;
  std::unique_ptr<connectors::KafkaSink> sink_;
  int64_t last_announce_ms_ = 0;

  mutable std::mutex mutex_;
  std::map<std::string, Announcement> instances_;  // by instance
  int64_t next_offset_ = 0;                        // read thread only
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread reader_;
};

}  // namespace clv::stream
