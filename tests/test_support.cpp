#include "tests/test_support.h"

#include <cstdlib>
#include <random>
#include <system_error>

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
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::filesystem::path SourceDir() { return CLV_SOURCE_DIR; }

std::filesystem::path SharedDataPath(const std::string& relative) {
  return SourceDir() / ".." / "shared" / "data" / relative;
}

std::filesystem::path ClvBinary() { return CLV_BINARY; }

}  // namespace clv::testing
