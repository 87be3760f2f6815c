// Helpers shared by the test suites.
//
//  * TempDir: a fresh directory under $TMPDIR, removed at destruction.
//  * SharedDataPath("cdnow/CDNOW_sample.txt"): ../shared/data/... beside the
//    repo; RequireSharedData() skips with a clear message when absent, but
//    fails under CI=true (nothing may skip in CI).
//  * InCi(): CI=true in the environment.
//  * WaitUntil(): polls a condition until it holds or time is up.
//  * RawClient: a raw TCP connection to a local server, for HTTP clients
//    that misbehave (half requests, pipelining, garbage).
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace clv::testing {

bool InCi();

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

std::filesystem::path SourceDir();
std::filesystem::path SharedDataPath(const std::string& relative);
// Path to the built `clv` executable.
std::filesystem::path ClvBinary();

// A child process (fork + exec), stdout and stderr to files. Killed (SIGKILL)
// at destruction if still running.
class Subprocess {
 public:
  Subprocess(const std::vector<std::string>& argv, const std::filesystem::path& log_prefix);
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  bool running();
  // Waits up to timeout_ms; returns the exit status (signal n -> 128+n), or
  // -1 on timeout.
  int Wait(int timeout_ms);
  void Signal(int signal_number);
  int pid() const { return pid_; }
  std::string Stdout() const;
  std::string Stderr() const;

 private:
  int pid_ = -1;
  int status_ = -1;
  std::filesystem::path stdout_path_, stderr_path_;
};

// Runs a command to completion (timeout -> killed, returns -1).
int RunCommand(const std::vector<std::string>& argv, const std::filesystem::path& log_prefix,
               int timeout_ms, std::string* output = nullptr);

std::string ReadFile(const std::filesystem::path& path);

// Polls `condition` every step_ms until it holds or timeout_ms pass; its last
// answer.
bool WaitUntil(const std::function<bool()>& condition, int timeout_ms, int step_ms = 50);

// A TCP connection to 127.0.0.1:port, closed at destruction.
class RawClient {
 public:
  explicit RawClient(int port);
  ~RawClient();
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return connected_; }
  // Sends all of `bytes`; false if the connection took less.
  bool Send(std::string_view bytes);
  // Reads until the server closes, or `guard_ms` pass. True on a close (EOF
  // or reset); everything read is in received().
  bool ReadUntilClosed(int guard_ms = 10000);
  // True when the server has closed this connection (checked for `wait_ms`).
  bool ClosedByServer(int wait_ms);
  const std::string& received() const { return received_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string received_;
};

}  // namespace clv::testing

// Skips the test (or fails it under CI=true) when a shared data file is missing.
#define CLV_REQUIRE_SHARED_DATA(path_expr)                                       \
  do {                                                                           \
    auto clv_required_path_ = (path_expr);                                       \
    if (!std::filesystem::exists(clv_required_path_)) {                          \
      if (::clv::testing::InCi()) {                                              \
        FAIL() << "required data file missing under CI: " << clv_required_path_; \
      }                                                                          \
      GTEST_SKIP() << "data file not found: " << clv_required_path_              \
                   << " (clone ../shared beside the repo to run this test)";     \
    }                                                                            \
  } while (0)
