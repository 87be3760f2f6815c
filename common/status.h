// Status: an error as a value, shared by every layer (connectors, state,
// stream, apps). ok() or a message that names what failed and where.
//
// Example:
//   clv::Status Open(const std::string& path) {
//     if (path.empty()) return clv::Status::Error("state.path: empty");
//     return clv::Status::Ok();
//   }
//
// Thread-safety: a plain value.
#pragma once

#include <string>
#include <utility>

namespace clv {

struct [[nodiscard]] Status {
  bool ok_ = true;
  std::string message;
  static Status Ok() { return {}; }
  static Status Error(std::string msg) { return {false, std::move(msg)}; }
  bool ok() const { return ok_; }
};

}  // namespace clv
