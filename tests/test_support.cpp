#include "tests/test_support.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <system_error>
#include <thread>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

namespace clv::testing {

bool InCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

TempDir::TempDir() {
  std::random_device random;
  auto base = std::filesystem::temp_directory_path();
  for (;;) {
    path_ = base / ("clvtest-" + std::to_string(random()) + std::to_string(random()));
    std::error_code error;
    if (std::filesystem::create_directory(path_, error)) break;
  }
}

TempDir::~TempDir() {
  // CLVTEST_KEEP_FAILED=1 keeps a failed test's files (logs, states) to look at.
  const char* keep = std::getenv("CLVTEST_KEEP_FAILED");
  if (keep != nullptr && *keep != '\0' && *keep != '0' && ::testing::Test::HasFailure()) {
    std::fprintf(stderr, "CLVTEST_KEEP_FAILED: kept %s\n", path_.c_str());
    return;
  }
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::filesystem::path SourceDir() { return CLV_SOURCE_DIR; }

std::filesystem::path SharedDataPath(const std::string& relative) {
  return SourceDir() / ".." / "shared" / "data" / relative;
}

std::filesystem::path ClvBinary() { return CLV_BINARY; }

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

Subprocess::Subprocess(const std::vector<std::string>& argv,
                       const std::filesystem::path& log_prefix)
    : stdout_path_(log_prefix.string() + ".stdout"), stderr_path_(log_prefix.string() + ".stderr") {
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_ = fork();
  if (pid_ == 0) {
    int out = open(stdout_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    int err = open(stderr_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(out, 1);
    dup2(err, 2);
    execv(args[0], args.data());
    _exit(127);
  }
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && running()) {
    kill(pid_, SIGKILL);
    Wait(10000);
  }
}

bool Subprocess::running() {
  if (pid_ <= 0 || status_ != -1) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == 0) return true;
  status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return false;
}

int Subprocess::Wait(int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return status_;
}

void Subprocess::Signal(int signal_number) {
  if (running()) kill(pid_, signal_number);
}

std::string Subprocess::Stdout() const { return ReadFile(stdout_path_); }
std::string Subprocess::Stderr() const { return ReadFile(stderr_path_); }

int RunCommand(const std::vector<std::string>& argv, const std::filesystem::path& log_prefix,
               int timeout_ms, std::string* output) {
  Subprocess process(argv, log_prefix);
  int status = process.Wait(timeout_ms);
  if (status == -1) {
    process.Signal(SIGKILL);
    process.Wait(5000);
  }
  if (output) *output = process.Stdout() + process.Stderr();
  return status;
}

bool WaitUntil(const std::function<bool()>& condition, int timeout_ms, int step_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(step_ms));
  }
  return condition();
}

RawClient::RawClient(int port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
}

RawClient::~RawClient() {
  if (fd_ >= 0) ::close(fd_);
}

bool RawClient::Send(std::string_view bytes) {
  return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
         static_cast<ssize_t>(bytes.size());
}

bool RawClient::ReadUntilClosed(int guard_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(guard_ms);
  while (std::chrono::steady_clock::now() < until) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    char buffer[4096];
    const ssize_t got = ::recv(fd_, buffer, sizeof(buffer), 0);
    if (got <= 0) return true;
    received_.append(buffer, static_cast<size_t>(got));
  }
  return false;
}

bool RawClient::ClosedByServer(int wait_ms) {
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, wait_ms) <= 0) return false;
  char byte = 0;
  return ::recv(fd_, &byte, 1, MSG_PEEK) <= 0;
}

}  // namespace clv::testing
