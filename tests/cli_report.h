// Helpers of the tests that drive the `clv` binary's offline commands (gen,
// fit-baseline, train, eval) and read their JSON reports.
#pragma once

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/test_support.h"

namespace clv::testing {

// Runs `clv ARGS...` with its output in dir/name; returns the exit code.
inline int Clv(const TempDir& dir, const std::string& name, std::vector<std::string> args,
               int timeout_ms, std::string* output) {
  args.insert(args.begin(), ClvBinary().string());
  return RunCommand(args, dir.path() / name, timeout_ms, output);
}

// Every number anywhere in `value` is finite: the path of the first that is
// not, else "".
inline std::string FirstNonFinite(const nlohmann::json& value, const std::string& path) {
  if (value.is_number()) return std::isfinite(value.get<double>()) ? "" : path;
  if (value.is_structured()) {
    size_t index = 0;
    for (auto it = value.begin(); it != value.end(); ++it, ++index) {
      std::string key = value.is_object() ? it.key() : std::to_string(index);
      if (auto bad = FirstNonFinite(*it, path + "/" + key); !bad.empty()) return bad;
    }
  }
  return "";
}

// The model of an eval report whose name starts with `prefix`, or null.
inline const nlohmann::json* ModelNamed(const nlohmann::json& report, const std::string& prefix) {
  for (const auto& model : report["models"]) {
    if (model["name"].get<std::string>().rfind(prefix, 0) == 0) return &model;
  }
  return nullptr;
}

}  // namespace clv::testing
