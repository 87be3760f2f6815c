// A full disk under the state directory: the commit that does not fit fails
// with an error naming the directory (no abort, also not when the store is
// closed afterwards), every commit that succeeded before it is still there
// when the store is opened again with room, and writing goes on from there.
//
// The disk is a small tmpfs mounted for the test, so it needs root (as CI
// and the development machines run); elsewhere it skips, but not under CI.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <gtest/gtest.h>
#include <sys/mount.h>

#include "config/config.h"
#include "state/rocksdb_store.h"
#include "state/state_store.h"
#include "state/user_state.h"
#include "tests/test_support.h"

namespace clv::state {
namespace {

// A tmpfs of `size` mounted at `dir` for the life of the object.
class SmallDisk {
 public:
  SmallDisk(const std::filesystem::path& dir, const std::string& size) : dir_(dir) {
    std::filesystem::create_directories(dir_);
    const std::string data = "size=" + size;
    if (mount("tmpfs", dir_.c_str(), "tmpfs", 0, data.c_str()) != 0) {
      error_ = std::strerror(errno);
    }
  }
  ~SmallDisk() {
    if (error_.empty()) umount2(dir_.c_str(), MNT_DETACH);
  }
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;
  const std::string& error() const { return error_; }
  bool Resize(const std::string& size) {
    const std::string data = "size=" + size;
    return mount("tmpfs", dir_.c_str(), "tmpfs", MS_REMOUNT, data.c_str()) == 0;
  }

 private:
  std::filesystem::path dir_;
  std::string error_;
};

UserState StateWithSeq(uint64_t seq) {
  UserState state;
  state.seq = seq;
  state.aggregates.events = static_cast<int64_t>(seq);
  state.fp16 = false;  // incompressible-ish bytes fill the disk quickly
  state.model_state.resize(256);
  for (size_t i = 0; i < state.model_state.size(); ++i) {
    state.model_state[i] = static_cast<float>((seq * 2654435761u + i * 40503u) % 100003) / 7.0f;
  }
  return state;
}

CommitBatch BatchNumber(int64_t n) {
  CommitBatch batch;
  for (int i = 0; i < 50; ++i) {
    batch.users.push_back({"u" + std::to_string(n) + "-" + std::to_string(i),
                           StateWithSeq(static_cast<uint64_t>(n))});
  }
  batch.offsets.push_back({"clickstream", 0, n + 1});
  return batch;
}

TEST(StateDiskFull, FailsNamingTheDirectoryAndLosesNoCommit) {
  if (geteuid() != 0) {
    if (testing::InCi()) FAIL() << "this test mounts a tmpfs and needs root (CI runs as root)";
    GTEST_SKIP() << "needs root to mount a small tmpfs";
  }
  testing::TempDir temp;
  const std::filesystem::path mount_dir = temp.path() / "disk";
  SmallDisk disk(mount_dir, "3m");
  ASSERT_EQ(disk.error(), "") << "mounting a tmpfs at " << mount_dir;
  config::StateOptions options;
  options.dir = (mount_dir / "state").string();

  int64_t last_ok = -1;
  std::string failure;
  {
    std::unique_ptr<StateStore> store;
    Status open = OpenRocksDbStore(options, &store);
    ASSERT_TRUE(open.ok()) << open.message;
    for (int64_t n = 0; n < 100000; ++n) {
      Status commit = store->Commit(BatchNumber(n));
      if (!commit.ok()) {
        failure = commit.message;
        break;
      }
      last_ok = n;
    }
    // Closing the store after the failed write must not abort the process.
  }
  ASSERT_NE(failure, "") << "3 MB never filled up";
  ASSERT_GE(last_ok, 0) << "the first commit already failed: " << failure;
  EXPECT_NE(failure.find(options.dir), std::string::npos) << failure;
  EXPECT_NE(failure.find("No space left"), std::string::npos) << failure;

  ASSERT_TRUE(disk.Resize("256m")) << std::strerror(errno);
  std::unique_ptr<StateStore> store;
  Status reopen = OpenRocksDbStore(options, &store);
  ASSERT_TRUE(reopen.ok()) << reopen.message;
  std::optional<int64_t> offset;
  ASSERT_TRUE(store->GetOffset("clickstream", 0, &offset).ok());
  ASSERT_TRUE(offset.has_value());
  // Every successful commit is there; the failed one is all or nothing.
  EXPECT_GE(*offset, last_ok + 1);
  EXPECT_LE(*offset, last_ok + 2);
  for (int64_t n : {int64_t{0}, last_ok / 2, last_ok}) {
    std::optional<UserState> user;
    ASSERT_TRUE(store->GetUser("u" + std::to_string(n) + "-49", &user).ok());
    ASSERT_TRUE(user.has_value()) << "commit " << n << " of " << last_ok << " was lost";
    EXPECT_EQ(*user, StateWithSeq(static_cast<uint64_t>(n)));
  }
  // And the store goes on where it stopped.
  Status next = store->Commit(BatchNumber(*offset));
  EXPECT_TRUE(next.ok()) << next.message;
}

}  // namespace
}  // namespace clv::state
