// The service's HTTP API: its routes, declared next to the code that answers
// them, served by connectors/http_server (a generic route-table server).
//
// Endpoints (all answers but /, /metrics and /healthz are JSON; bodies in
// docs/OPERATIONS.md):
//   GET /users/{id}   user_json(id): 200 with the user, 404 for an unknown
//                     one, 421 (Misdirected Request) with the handler's error
//                     object for a user of a partition another instance owns
//                     now. The id is taken from
//                     the raw request target and percent-decoded ('+' stays
//                     '+'; '/' as %2F or plain); it must pass the user-id rule
//                     the stream decoder applies (common/user_id.h), else 400.
//   GET /top?n=100&by=clv|churn_risk&scope=local|group
//                     top_json(n, by, scope == group); n in 1..1000 (default
//                     100), by is "clv" (default) or "churn_risk", scope
//                     "local" (default: this instance's partitions) or
//                     "group" (merged over the group's instances), else 400.
//   GET /metrics      metrics_text(), "text/plain; version=0.0.4".
//   GET /healthz      200 {"status":"ok"} while the process serves HTTP.
//   GET /readyz       200 when ready(), else 503; body = ready_detail().
//   GET /api/summary  summary_json().
//   GET / (and /index.html)  the dashboard (one self-contained HTML page);
//                     the only route served without the bearer token.
// Unknown paths, other methods, auth and handler exceptions are answered by
// the server (connectors/http_server.h): 404, 405, 401, 500.
//
// Thread-safety: every ApiHandlers function is called concurrently from the
// server's threads and must be thread-safe.
//
// Example:
//   ApiHandlers handlers;
//   handlers.metrics_text = [&] { return metrics.Render(); };
//   auto status = connectors::HttpServer::Start(options, ApiRoutes(handlers), &server);
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "connectors/http_server.h"

namespace clv::stream {

// The answer to GET /users/{id}.
struct UserAnswer {
  static constexpr int kFound = 200;
  static constexpr int kUnknown = 404;
  static constexpr int kOtherOwner = 421;  // the user's partition is owned by another instance

  int status = kUnknown;
  std::string json;  // kFound: the user's JSON; kOtherOwner: a JSON object with "error"
};

// What the service provides. An unset function makes its endpoint answer 503
// {"error": "... not available"} (readyz: not ready).
struct ApiHandlers {
  // One user (see UserAnswer).
  std::function<UserAnswer(std::string_view user_id)> user_json;
  // JSON of the top n users by "clv" or "churn_risk" (already validated).
  // group: merged over every instance of the group (scope=group).
  std::function<std::string(int n, std::string_view by, bool group)> top_json;
  // Prometheus text exposition format 0.0.4.
  std::function<std::string()> metrics_text;
  // Partitions assigned, state restored, model loaded.
  std::function<bool()> ready;
  // JSON object explaining readiness (body of /readyz, both 200 and 503).
  std::function<std::string()> ready_detail;
  // Dashboard data (docs/OPERATIONS.md, "/api/summary").
  std::function<std::string()> summary_json;
};

// The route table of the endpoints above.
std::vector<connectors::HttpRoute> ApiRoutes(ApiHandlers handlers);

}  // namespace clv::stream
