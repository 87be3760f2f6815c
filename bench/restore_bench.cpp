// Restore speed of the state changelog (stream/changelog.h): how fast an
// instance with an empty store gets a partition set back, the figure a
// failover without standbys waits for (issue 11: 1M users in under 30 s).
//
// Writes `users` changelog user records (the encoding the service writes,
// with a realistic state: aggregates, 16 recent event ids, an LSTM state of
// `model_floats` floats) and a marker per partition to a fresh changelog
// topic through the service's own changelog writer, then restores every
// partition into an empty RocksDB in a temp dir with RestorePartition, as
// an instance does when the partitions are assigned to it. Prints the write
// and restore rates and the restore time next to the 30 s ceiling.
//
// On the embedded broker by default; on a real one with CLV_REAL_KAFKA=host:port.
// Usage: restore_bench [users=1000000] [partitions=8] [model_floats=64]
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "config/config.h"
#include "connectors/kafka.h"
#include "state/state_store.h"
#include "stream/changelog.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace stream = clv::stream;
namespace state = clv::state;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

int Fail(const std::string& what, const clv::connectors::Status& status) {
  std::fprintf(stderr, "restore_bench: %s: %s\n", what.c_str(), status.message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t users = argc > 1 ? std::atoll(argv[1]) : 1000000;
  const int partitions = argc > 2 ? std::atoi(argv[2]) : 8;
  const int model_floats = argc > 3 ? std::atoi(argv[3]) : 64;
  if (users <= 0 || partitions <= 0 || model_floats < 0) {
    std::fprintf(stderr, "usage: restore_bench [users>0] [partitions>0] [model_floats>=0]\n");
    return 2;
  }
  const char* real = std::getenv("CLV_REAL_KAFKA");
  std::unique_ptr<clv::connectors::EmbeddedBroker> broker;
  clv::connectors::ClientOptions client;
  const std::string topic = "restore-bench-" + std::to_string(::getpid());
  if (real != nullptr) {
    client.bootstrap_servers = real;
    auto status = clv::connectors::EnsureTopics(client, {topic}, partitions, 1,
                                                {{"cleanup.policy", "compact"}});
    if (!status.ok()) return Fail("creating " + topic, status);
  } else {
    auto status = clv::connectors::EmbeddedBroker::Start(1, partitions, &broker);
    if (!status.ok()) return Fail("starting the embedded broker", status);
    client.bootstrap_servers = broker->bootstrap_servers();
    status = broker->CreateTopic(topic, partitions);
    if (!status.ok()) return Fail("creating " + topic, status);
  }
  std::printf("restore_bench: %lld users, %d partitions, %d model floats, %s broker (%s)\n",
              static_cast<long long>(users), partitions, model_floats,
              real != nullptr ? "real" : "embedded", client.bootstrap_servers.c_str());

  std::unique_ptr<stream::ChangelogIo> io;
  auto status = stream::OpenKafkaChangelog(client, topic, &io);
  if (!status.ok()) return Fail("opening the changelog", status);

  // A user as the service writes it after some activity.
  stream::ChangelogUser user;
  user.state.seq = 40;
  user.state.aggregates.events = 40;
  user.state.aggregates.purchases = 6;
  user.state.clv = 123.45;
  user.state.p_purchase = 0.4;
  user.state.churn_risk = 0.2;
  user.state.score_ts_ms = 1735689600000;
  user.state.next_timer_ms = 1738368000000;
  for (uint64_t i = 0; i < 16; ++i)
    user.state.recent_event_ids.push_back(i * 0x9e3779b97f4a7c15ULL);
  user.state.model_state.assign(static_cast<size_t>(model_floats), 0.25F);
  user.positions["events"] = 0;

  const auto write_started = Clock::now();
  int64_t bytes = 0;
  std::string key;
  for (int64_t i = 0; i < users; ++i) {
    const auto partition = static_cast<int32_t>(i % partitions);
    key = "user-" + std::to_string(i);
    user.state.partition = partition;
    user.positions["events"] = i / partitions;
    const std::string value = stream::EncodeChangelogUser(user);
    bytes += static_cast<int64_t>(key.size() + value.size());
    status = io->Send(partition, key, &value);
    if (!status.ok()) return Fail("writing the changelog", status);
    if ((i + 1) % 200000 == 0) {
      std::fprintf(stderr, "  ... %lld users written\n", static_cast<long long>(i + 1));
    }
  }
  for (int32_t p = 0; p < partitions; ++p) {
    stream::ChangelogMarker marker;
    marker.writer = "restore_bench";
    marker.stream_time_ms = 1735689600000;
    marker.inputs.push_back({"events", users / partitions + 1, 1735689600000});
    const std::string value = stream::EncodeChangelogMarker(marker);
    status = io->Send(p, stream::kMarkerKey, &value);
    if (!status.ok()) return Fail("writing a marker", status);
  }
  bool timed_out = false;
  status = io->Flush(600000, nullptr, &timed_out);
  if (!status.ok()) return Fail("flushing the changelog", status);
  const double write_s = Since(write_started);
  std::printf("write     %10lld users %8.1f MB in %6.2fs  %9.0f users/s %7.1f MB/s\n",
              static_cast<long long>(users), static_cast<double>(bytes) / 1e6, write_s,
              static_cast<double>(users) / write_s, static_cast<double>(bytes) / 1e6 / write_s);

  const auto dir =
      std::filesystem::temp_directory_path() / ("restore-bench-" + std::to_string(::getpid()));
  clv::config::StateOptions options;
  options.dir = dir.string();
  std::unique_ptr<state::StateStore> store;
  status = state::OpenRocksDbStore(options, &store);
  if (!status.ok()) return Fail("opening RocksDB in " + options.dir, status);

  const auto restore_started = Clock::now();
  int64_t restored_users = 0;
  int64_t restored_bytes = 0;
  for (int32_t p = 0; p < partitions; ++p) {
    stream::RestoredPartition restored;
    stream::RestoreProgress stats;
    status = stream::RestorePartition(*io, *store, p, &restored, &stats,
                                      [p](const stream::RestoreProgress& progress) {
                                        std::fprintf(stderr, "  ... partition %d: %lld records\n",
                                                     p, static_cast<long long>(progress.records));
                                      });
    if (!status.ok()) return Fail("restoring partition " + std::to_string(p), status);
    restored_users += stats.users;
    restored_bytes += stats.bytes;
  }
  const double restore_s = Since(restore_started);
  std::printf("restore   %10lld users %8.1f MB in %6.2fs  %9.0f users/s %7.1f MB/s\n",
              static_cast<long long>(restored_users), static_cast<double>(restored_bytes) / 1e6,
              restore_s, static_cast<double>(restored_users) / restore_s,
              static_cast<double>(restored_bytes) / 1e6 / restore_s);
  const double per_million = restore_s * 1e6 / static_cast<double>(restored_users);
  std::printf("ceiling   1M users restored in <= 30 s: %.1f s per 1M users (%s)\n", per_million,
              per_million <= 30 ? "met" : "NOT met");
  store.reset();
  std::filesystem::remove_all(dir);
  if (real != nullptr) (void)clv::connectors::DeleteTopics(client, {topic});
  return restored_users == users ? 0 : 1;
}
