#include "stream/owner_directory.h"

#include <algorithm>
#include <chrono>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "common/time.h"

namespace clv::stream {

using connectors::Status;

OwnerDirectory::OwnerDirectory(connectors::ClientOptions client, std::string topic,
                               std::string self, std::string url)
    : client_(std::move(client)),
      topic_(std::move(topic)),
      self_(std::move(self)),
      url_(std::move(url)) {}

Status OwnerDirectory::Open(const connectors::ClientOptions& client, const std::string& topic,
                            const std::string& self, const std::string& url,
                            std::unique_ptr<OwnerDirectory>* out) {
  int partitions = 0;
  if (!connectors::PartitionCount(client, topic, &partitions).ok() || partitions <= 0) {
    auto status = connectors::EnsureTopics(client, {topic}, 1, 1, {{"cleanup.policy", "compact"}});
    if (!status.ok()) {
      return Status::Error("creating the instance directory topic '" + topic +
                           "' (http.advertised_url): " + status.message);
    }
  }
  std::unique_ptr<OwnerDirectory> directory(new OwnerDirectory(client, topic, self, url));
  auto status = connectors::KafkaSink::Create(client, &directory->sink_);
  if (!status.ok()) return status;
  directory->reader_ = std::thread([d = directory.get()] { d->ReadLoop(); });
  *out = std::move(directory);
  return Status::Ok();
}

OwnerDirectory::~OwnerDirectory() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (reader_.joinable()) reader_.join();
}

bool OwnerDirectory::AnnounceDue() const {
  return WallClockMs() - last_announce_ms_ >= kAnnounceMs;
}

Status OwnerDirectory::Announce(const std::vector<int32_t>& partitions) {
  const int64_t now = WallClockMs();
  last_announce_ms_ = now;
  const nlohmann::json value = {{"url", url_}, {"partitions", partitions}, {"ts_ms", now}};
  return sink_->Send(topic_, self_, value.dump(), 0);
}

std::optional<std::string> OwnerDirectory::OwnerUrl(int32_t partition) const {
  const int64_t now = WallClockMs();
  std::lock_guard lock(mutex_);
  const Announcement* newest = nullptr;
  for (const auto& [instance, a] : instances_) {
    if (instance == self_ || now - a.ts_ms > kStaleMs) continue;
    if (!std::binary_search(a.partitions.begin(), a.partitions.end(), partition)) continue;
    if (newest == nullptr || a.ts_ms > newest->ts_ms) newest = &a;
  }
  if (newest == nullptr) return std::nullopt;
  return newest->url;
}

std::vector<OwnerDirectory::Peer> OwnerDirectory::Peers() const {
  const int64_t now = WallClockMs();
  std::vector<std::pair<int64_t, Peer>> fresh;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [instance, a] : instances_) {
      if (instance == self_ || now - a.ts_ms > kStaleMs || a.url.empty()) continue;
      fresh.push_back({a.ts_ms, Peer{a.url, a.partitions}});
    }
  }
  std::stable_sort(fresh.begin(), fresh.end(),
                   [](const auto& x, const auto& y) { return x.first > y.first; });
  std::vector<Peer> peers;
  for (auto& [ts, peer] : fresh) {
    std::sort(peer.partitions.begin(), peer.partitions.end());
    peers.push_back(std::move(peer));
  }
  return peers;
}

void OwnerDirectory::Close(int timeout_ms) {
  (void)sink_->Send(topic_, self_, std::string_view(), 0);  // empty: gone
  auto flushed = sink_->Flush(std::max(1, timeout_ms));
  if (!flushed.ok()) {
    Log(LogLevel::kWarn, "instance directory: the stop announcement was not acknowledged",
        {{"topic", topic_}, {"error", flushed.message}});
  }
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (reader_.joinable()) reader_.join();
}

void OwnerDirectory::ReadLoop() {
  int failures = 0;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      if (stopping_) return;
    }
    std::map<std::string, std::optional<Announcement>> seen;
    int64_t end = 0;
    int64_t log_start = 0;
    auto status = connectors::ReadPartitionToEnd(
        client_, topic_, 0, next_offset_,
        [&](const connectors::LogRecord& record) {
          std::string instance(record.key);
          if (!record.value || record.value->empty()) {
            seen[instance] = std::nullopt;
            return Status::Ok();
          }
          auto json = nlohmann::json::parse(*record.value, nullptr, /*allow_exceptions=*/false);
          if (!json.is_object() || !json.contains("url") || !json["url"].is_string() ||
              !json.contains("partitions") || !json["partitions"].is_array() ||
              !json.contains("ts_ms") || !json["ts_ms"].is_number_integer()) {
            return Status::Ok();  // not an announcement of this version: ignored
          }
          Announcement a;
          a.url = json["url"].get<std::string>();
          for (const auto& p : json["partitions"]) {
            if (p.is_number_integer()) a.partitions.push_back(p.get<int32_t>());
          }
          std::sort(a.partitions.begin(), a.partitions.end());
          a.ts_ms = json["ts_ms"].get<int64_t>();
          seen[instance] = std::move(a);
          return Status::Ok();
        },
        &end, &log_start, 5000);
    if (status.ok()) {
      failures = 0;
      next_offset_ = std::max(next_offset_, end);
      std::lock_guard lock(mutex_);
      for (auto& [instance, a] : seen) {
        if (a) {
          instances_[instance] = std::move(*a);
        } else {
          instances_.erase(instance);
        }
      }
    } else if (++failures == 1 || failures % 60 == 0) {
      Log(LogLevel::kWarn, "instance directory: reading its topic failed (retrying)",
          {{"topic", topic_}, {"error", status.message}});
    }
    std::unique_lock lock(mutex_);
    wake_.wait_for(lock, std::chrono::milliseconds(kRefreshMs), [&] { return stopping_; });
    if (stopping_) return;
  }
}

}  // namespace clv::stream
