// Read-only HTTP server of the service: query API, Prometheus metrics,
// health/readiness probes and the dashboard page.
//
// Contract:
//  * The server owns a small fixed pool of threads (HttpServerOptions::threads);
//    nothing it does runs on the caller's or the processing thread. It never
//    writes state: every endpoint is a GET that calls one of HttpHandlers.
//  * Endpoints (all answers but /, /metrics and /healthz are JSON):
//      GET /users/{id}   user_json(id); nullopt -> 404. The id is taken from
//                        the raw request target and percent-decoded; it must
//                        be 1..256 bytes without control characters, else 400.
//      GET /top?n=100&by=clv|churn_risk
//                        top_json(n, by); n in 1..1000 (default 100), by is
//                        "clv" (default) or "churn_risk", else 400.
//      GET /metrics      metrics_text(), "text/plain; version=0.0.4".
//      GET /healthz      200 {"status":"ok"} while the process serves HTTP.
//      GET /readyz       200 when ready(), else 503; body = ready_detail().
//      GET /api/summary  summary_json() (schema in docs/OPERATIONS.md).
//      GET /             the dashboard (one self-contained HTML page).
//    Unknown path -> 404, other methods -> 405 (with an Allow header), a
//    handler that throws -> 500; all with {"error": "...", "status": N}.
//  * With a token configured every request except GET / (the static page,
//    which carries no data and asks the browser user for the token) needs
//    `Authorization: Bearer <token>`, else 401 (compared in constant time).
//  * Abuse limits: request line/headers are capped by cpp-httplib (8 KiB),
//    bodies by max_body_bytes (413), a connection that sends nothing for
//    read_timeout_ms is closed, keep-alive connections are recycled after
//    keep_alive_max_requests requests or keep_alive_timeout_ms idle.
//    A client that drips one byte per read_timeout_ms still holds a worker
//    thread; `threads` such clients at once stall the HTTP API (never the
//    stream). Bind to 127.0.0.1 (the default) or put a proxy in front.
//
// Thread-safety: every HttpHandlers function is called concurrently from the
// server's threads and must be thread-safe. Start/Stop/port may be called
// from any one owning thread. Stop() waits for in-flight requests to finish
// and is idempotent; the destructor calls it.
//
// Example:
//   HttpHandlers handlers;
//   handlers.metrics_text = [&] { return metrics.Render(); };
//   std::unique_ptr<HttpServer> server;
//   auto status = HttpServer::Start({.bind = "127.0.0.1", .port = 8080}, handlers, &server);
//   if (!status.ok()) { ... status.message names bind address and port ... }
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "connectors/kafka.h"  // Status

namespace clv::config {
struct HttpOptions;
}  // namespace clv::config

namespace clv::connectors {

struct HttpServerOptions {
  // Address to listen on. Default: loopback only.
  std::string bind = "127.0.0.1";
  // TCP port. 0 binds a free ephemeral port (tests); read it with port().
  // Note: in the service config http.port = 0 means "no HTTP server"; the
  // service then does not call Start() at all (see FromConfig).
  int port = 0;
  // Bearer token required on every request but GET /. Empty: no auth.
  std::string token = "";
  // Worker threads serving connections (bounded; connections beyond this wait
  // in the accept queue).
  int threads = 4;
  // A connection that sends nothing for this long is closed.
  int read_timeout_ms = 2000;
  int write_timeout_ms = 2000;
  // Keep-alive: requests per connection and idle time before closing.
  int keep_alive_max_requests = 20;
  int keep_alive_timeout_ms = 1000;
  // Largest accepted request body (all endpoints are GET: bodies are useless).
  int max_body_bytes = 4096;
};

// Options for the service from config.http (bind, port, token; the rest
// default). Returns nullopt when config.http.port is 0 (server disabled).
std::optional<HttpServerOptions> FromConfig(const config::HttpOptions& http);

// What the service provides. Each function is called on HTTP threads and must
// be thread-safe. An unset function makes its endpoint answer 503
// {"error": "... not available"} (readyz: not ready).
struct HttpHandlers {
  // JSON of one user, or nullopt when the user is unknown (-> 404).
  std::function<std::optional<std::string>(std::string_view user_id)> user_json;
  // JSON of the top n users by "clv" or "churn_risk" (already validated).
  std::function<std::string(int n, std::string_view by)> top_json;
  // Prometheus text exposition format 0.0.4.
  std::function<std::string()> metrics_text;
  // Partitions assigned, state restored, model loaded.
  std::function<bool()> ready;
  // JSON object explaining readiness (body of /readyz, both 200 and 503).
  std::function<std::string()> ready_detail;
  // Dashboard data (docs/OPERATIONS.md, "/api/summary").
  std::function<std::string()> summary_json;
};

class HttpServer {
 public:
  virtual ~HttpServer() = default;
  // Binds and starts serving on the server's own threads. Error (naming
  // bind:port and the reason) when the address cannot be bound or the options
  // are out of range.
  static Status Start(const HttpServerOptions& options, HttpHandlers handlers,
                      std::unique_ptr<HttpServer>* server);
  // The bound port (the real one when options.port was 0).
  virtual int port() const = 0;
  // Stops accepting, finishes in-flight requests, joins the threads.
  virtual void Stop() = 0;
};

// The dashboard page (connectors/dashboard.html, embedded at build time).
std::string_view DashboardHtml();

}  // namespace clv::connectors
